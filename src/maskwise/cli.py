"""The ``maskwise`` command: ``maskwise demo``, ``maskwise run TASK``, ``maskwise report DIR...``.

The tasks, their options, their default data and how to build them come from
:mod:`maskwise.experiments.registry`; this module only turns arguments into a run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import maskwise
from maskwise.dynamic.controller import DIRECTIONS, SIGNALS
from maskwise.functional.consistency import CONSISTENCY_KINDS

CONTROLLER_OPTIONS = ("signal", "target", "direction", "min_rate", "max_rate")
FAST_EVAL_ITEMS = 32  # --fast: items scored per split (a smoke test, not a measurement)


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers ({text!r} given)"
        ) from None
    if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
        raise argparse.ArgumentTypeError(f"expected one or more rates in [0, 1] ({text!r} given)")
    return rates


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] ({text!r} given)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] ({text!r} given)")
    return value


def _int_at_least(low: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low} ({text!r} given)")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(1, text)


def _non_negative_int(text: str) -> int:
    return _int_at_least(0, text)


def _weight_decays(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated finite numbers >= 0 ({text!r} given)"
        )
    return values


def _target(text: str) -> float | str:
    if text == "best":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'best' ({text!r} given)") from None


def _variants(text: str) -> list[str]:
    from maskwise.experiments.engine import CONTROLLERS, VARIANTS

    names = [x.strip() for x in text.split(",") if x.strip()]
    named = [f"dynamic:{c}" for c in CONTROLLERS]
    bad = [n for n in names if n not in VARIANTS and n not in named]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"variants must be among {', '.join(VARIANTS + tuple(named))} ({text!r} given)"
        )
    return names


def _common(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--seeds",
        type=_positive_int,
        default=5,
        help="evaluation seeds per arm: fresh, paired across arms (default 5)",
    )
    g.add_argument(
        "--tune-seeds",
        type=_non_negative_int,
        default=2,
        help="seeds on which each arm's settings (rates, the baseline's weight decay) are "
        "tuned on dev before evaluation (default 2; evaluation seeds come after them)",
    )
    g.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="runs trained in parallel processes, one torch thread each; results are "
        "identical to --jobs 1 with --threads 1 (default 1)",
    )
    g.add_argument("--out", type=Path, default=None, help=f"output directory (default runs/{name})")
    g.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="earlier results folders: their runs with the same data, training, variant and "
        "controller settings and seed are taken instead of trained again (e.g. to add an arm "
        "to a finished comparison); the report counts them",
    )
    g.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    g.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: the models are small, and one thread was 5x faster "
        "than two on a shared 2-core machine)",
    )
    g.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs (default: the task's)"
    )
    g.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        help="stop a run after N epochs without a better dev metric (default: train all epochs)",
    )
    g.add_argument(
        "--fast",
        action="store_true",
        help="a smoke test of seconds: 6 steps per run, 1 seed, one static rate, "
        f"{FAST_EVAL_ITEMS} items scored per split",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _masking(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("masking")
    g.add_argument(
        "--masking",
        type=_variants,
        default=["none", "static", "dynamic"],
        help="comma-separated variants from none, static, dynamic, schedule, consistency and "
        "the named controllers: dynamic (the default, = dynamic:hold: no masking until the "
        "dev loss rises above its lowest, then as much as holds the gap between training and "
        "dev loss where it was at the lowest dev loss), dynamic:overfit (the same, closing "
        "the gap to 0), dynamic:gap (closing the gap from the first epoch), "
        "dynamic:accuracy (the task's training-accuracy curriculum, the default before), "
        "dynamic:seed (the seed documents' literal rule: reliable predictions -> less "
        "masking), dynamic:easy (per-token weights flipped: reliably predicted tokens masked "
        "more), dynamic:examples (a rate per example, higher for the examples the model "
        "already fits; text classification) (default none,static,dynamic)",
    )
    g.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="static rates swept, chosen on dev (default: the task's)",
    )
    g.add_argument(
        "--baseline-weight-decay",
        type=_weight_decays,
        default=None,
        metavar="WD[,WD...]",
        help="weight decays tuned on dev for the unmasked arm, so that it gets a "
        "regularisation sweep of its own (default: the task's weight decay only)",
    )
    g.add_argument(
        "--setting",
        default=None,
        help="the setting's name in the report (default: the model and training-set size)",
    )
    g.add_argument(
        "--signal", default=None, choices=SIGNALS, help="controller signal (every dynamic arm)"
    )
    g.add_argument(
        "--target",
        type=_target,
        default=None,
        help="controller target: a number, or 'best' (heldout_gap: the gap at the lowest dev loss)",
    )
    g.add_argument("--direction", default=None, choices=DIRECTIONS, help="controller direction")
    g.add_argument("--min-rate", type=_probability, default=None, help="controller's smallest rate")
    g.add_argument("--max-rate", type=_probability, default=None, help="controller's largest rate")
    g.add_argument(
        "--no-tracker", action="store_true", help="dynamic: no per-key difficulty weights"
    )
    g.add_argument(
        "--consistency-weight",
        type=float,
        default=None,
        help="consistency: weight of the consistency term (default 1)",
    )
    g.add_argument(
        "--consistency-kind",
        choices=CONSISTENCY_KINDS,
        default=None,
        help="consistency: kl (the clean view teaches the masked one, default), sym_kl, js",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``maskwise``: ``demo``, and ``run`` with one sub-command per registered
    task (its own options under ``maskwise run TASK --help``)."""
    from maskwise.experiments import registry

    parser = argparse.ArgumentParser(
        prog="maskwise",
        description=(
            "maskwise: masking for training and fine-tuning PyTorch models "
            "(input, output, attention and dynamic masks)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"maskwise {maskwise.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help=registry.DEMO_HELP, description=registry.DEMO_DESCRIPTION)
    _common(demo, "demo")

    rep = sub.add_parser(
        "report",
        help="one summary across results folders: paired differences, CIs, verdicts",
        description="Read the results.json of each DIR (written by `maskwise run`) and write "
        "summary.json, summary.md and forest.png (the paired differences to no masking with "
        "their 95 % CIs) to --out. Every number is recomputed from the per-run records.",
    )
    rep.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="results folders or files")
    rep.add_argument(
        "--out", type=Path, default=Path("runs/summary"), help="output folder (default %(default)s)"
    )
    rep.add_argument(
        "--metric",
        default=None,
        help="compare on another test metric the runs recorded (e.g. bleu_beam, rougeL_mean) "
        "instead of each folder's own; item-level intervals are left out (they are the "
        "folder metric's)",
    )
    rep.add_argument(
        "--against",
        default=None,
        metavar="ARM",
        help="compare every arm with this one instead of no masking: an arm (e.g. 'static "
        "0.25') or a kind ('static': the tuned static arm); verdicts read better / within "
        "noise / worse",
    )

    run = sub.add_parser(
        "run",
        help="one task: none / static / dynamic on real data",
        description="Compare masking variants on one task and write results.json, results.md "
        f"and plots to --out. Data: --data PATH, or ${registry.DATA_ENV} (a folder holding "
        "the documented layout); `maskwise run TASK --help` shows a task's data and options.",
    )
    tasks = run.add_subparsers(dest="task", metavar="TASK", title="tasks", required=True)
    for spec in registry.specs():
        p = tasks.add_parser(spec.name, help=spec.help, description=spec.description)
        default = (
            spec.data if spec.data in spec.builtin_data else f"${registry.DATA_ENV}/{spec.data}"
        )
        p.add_argument(
            "--data",
            default=None,
            metavar="PATH",
            help=f"the data (default {default}); fits: {spec.dataset}",
        )
        if spec.options:
            g = p.add_argument_group(f"{spec.name} options")
            for opt in spec.options:
                g.add_argument(opt.flag, **opt.argparse_kwargs())
        _masking(p)
        _common(p, spec.name)
    return parser


def make_task(args: argparse.Namespace) -> Any:
    """The task of ``maskwise run`` from its arguments: the registered task's factory, on the
    data of ``--data`` or ``$MASKWISE_DATA``, with the task's own options."""
    from maskwise.experiments import registry

    spec = registry.get(args.task)
    try:
        data = registry.resolve_data(spec, args.data)
        return spec.build(data, **{opt.dest: getattr(args, opt.dest) for opt in spec.options})
    except ValueError as e:  # no data, or a loader's message naming the file and the problem
        raise SystemExit(f"maskwise run {args.task}: {e}") from None


def configure(task: Any, args: argparse.Namespace) -> Any:
    """Apply the controller and training options (and ``--fast``) to ``task``'s configs. The
    controller options change every dynamic arm, named controllers included (they are kept in
    ``task.controller_overrides`` and applied after the arm's own settings)."""
    overrides: dict[str, Any] = {}
    for name in CONTROLLER_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_tracker", False):
        overrides["tracker"] = False
    task.controller = replace(task.controller, **overrides)
    task.controller_overrides = overrides
    cfg = replace(task.train_config, device=args.device)
    if getattr(args, "consistency_weight", None) is not None:
        if not 0 <= args.consistency_weight < float("inf"):
            raise SystemExit(
                "--consistency-weight must be a finite number >= 0 "
                f"({args.consistency_weight} given)"
            )
        cfg = replace(cfg, consistency_weight=args.consistency_weight)
    if getattr(args, "consistency_kind", None) is not None:
        cfg = replace(cfg, consistency_kind=args.consistency_kind)
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if getattr(args, "patience", None) is not None:
        cfg = replace(cfg, patience=args.patience)
    if args.fast:
        cfg = replace(cfg, epochs=min(cfg.epochs, 2), max_steps=6, eval_limit=FAST_EVAL_ITEMS)
    task.train_config = cfg
    return task


def _data_name(args: argparse.Namespace) -> str:
    """The data's name in the report: the last two parts of its path (``speech/fsdd``)."""
    from maskwise.experiments import registry

    spec = registry.get(args.task)
    given = args.data
    if given is None or given in spec.builtin_data:
        return given or spec.data
    return "/".join(Path(given).resolve().parts[-2:])


def _check_device(parser: argparse.ArgumentParser, device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        parser.error(f"--device: not a device ({device!r} given); use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        parser.error(f"--device: cpu or cuda ({device!r} given)")


def _check_writable(parser: argparse.ArgumentParser, out: Path) -> None:
    """Fail now, not after training, when the results cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".maskwise-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        parser.error(f"--out {out}: cannot write there ({e.strerror or e})")


def _report(result: dict[str, Any], out: Path) -> None:
    from maskwise.experiments.report import to_markdown

    print()
    print(to_markdown(result))
    print(f"Results, plots and the dynamic run's rate / reliability trace written to {out}/")
    for name, file in result["plots"].items():
        print(f"  {name}: {out / file}")


def _summary(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from maskwise.experiments.summary import report, rows_markdown

    _check_writable(parser, args.out)
    try:
        rows = report(args.dirs, args.out, metric=args.metric, against=args.against)
    except ValueError as e:
        raise SystemExit(f"maskwise report: {e}") from None
    print(rows_markdown(rows))
    print(f"summary.json, summary.md and forest.png written to {args.out}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "report":
        return _summary(parser, args)
    import torch

    _check_device(parser, args.device)
    if args.jobs > 1 and args.threads > 1:
        parser.error(
            f"--jobs {args.jobs} runs one torch thread per worker: drop --threads {args.threads} "
            "(or use --jobs 1 with threads)"
        )

    from maskwise.experiments.registry import demo_task
    from maskwise.experiments.report import compare

    torch.set_num_threads(args.threads)
    if not args.quiet:  # something on the screen at once: data loading can take a while
        what = "demo" if args.command == "demo" else f"run {args.task}"
        print(f"maskwise {what}: preparing the data and the task ...", flush=True)
    if args.command == "demo":
        task, name, variants, rates = demo_task(), "demo", ["none", "static", "dynamic"], None
        data = "digits"
    else:
        task, name, variants, rates = make_task(args), args.task, args.masking, args.rates
        data = _data_name(args)
    if args.fast and rates is None:  # a smoke test: one static rate, not the sweep
        rates = list(task.default_rates[:1])
    task = configure(task, args)
    from maskwise.experiments.engine import Variant

    try:  # every setting is checked here, before any training
        for arm in variants:
            if arm.startswith("dynamic"):
                named = arm.partition(":")[2] or None
                Variant("dynamic", controller=named).controller_config(task).build()
    except ValueError as e:
        parser.error(f"controller settings: {e}")
    out = args.out or Path("runs") / name
    _check_writable(parser, out)
    for d in args.reuse:
        if not (d / "results.json").is_file():
            parser.error(f"--reuse {d}: no results.json there")
    from maskwise.experiments import registry

    runner = compare if args.command == "demo" else registry.get(args.task).run or compare
    result = runner(
        task,
        variants=variants,
        rates=rates,
        seeds=1 if args.fast else args.seeds,
        tune_seeds=args.tune_seeds,
        jobs=args.jobs,
        baseline_weight_decays=getattr(args, "baseline_weight_decay", None),
        setting=getattr(args, "setting", None),
        data=data,
        out=out,
        quiet=args.quiet,
        command="maskwise " + shlex.join(argv),
        reuse=args.reuse,
    )
    _report(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
