"""The ``maskwise`` command: ``maskwise demo`` and ``maskwise run TASK``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import maskwise

TASKS = (
    "text-classification",
    "image-classification",
    "speech-classification",
    "language-modeling",
    "translation",
    "summarization",
)
DEFAULT_DATA = {
    "text-classification": "../shared/data/text/sst2",
    "image-classification": "digits",
    "speech-classification": "../shared/data/speech/fsdd",
    "language-modeling": "../shared/data/lm/tinyshakespeare",
    "translation": "../shared/data/mt/multi30k",
    "summarization": "../shared/data/summarization/scitldr",
}


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


def _variants(text: str) -> list[str]:
    from maskwise.experiments.engine import VARIANTS

    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"variants must be among {', '.join(VARIANTS)} ({text!r} given)"
        )
    return names


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3, help="runs per variant and rate (default 3)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/<task>)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the models are small, and one thread was 5x faster "
        "than two on a shared 2-core machine)",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the task's)")
    p.add_argument("--fast", action="store_true", help="a few steps per run, 1 seed: a smoke test")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskwise",
        description=(
            "maskwise: masking for training and fine-tuning PyTorch models "
            "(input, output, attention and dynamic masks)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"maskwise {maskwise.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="image classification on scikit-learn's digits: none / static / dynamic masking",
        description="Train a small ViT on 300 of scikit-learn's 8x8 digits without masking, with static "
        "patch masking (rate chosen on dev) and with dynamic masking, 3 seeds each; print the "
        "comparison and write results and plots.",
    )
    _common(demo)

    run = sub.add_parser(
        "run",
        help="one task: none / static / dynamic on real data",
        description="Compare masking variants on one task and write results.json, "
        "results.md and plots to --out.",
    )
    run.add_argument("task", choices=TASKS)
    run.add_argument(
        "--data", default=None, help="data path (default: the task's folder under ../shared/data)"
    )
    run.add_argument(
        "--masking",
        type=_variants,
        default=["none", "static", "dynamic"],
        help="comma-separated variants from none, static, dynamic, schedule (default none,static,dynamic)",
    )
    run.add_argument(
        "--rates",
        type=_rates,
        default=None,
        help="static rates swept, chosen on dev (default: the task's)",
    )
    run.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="image, translation, summarization: the first N training items; "
        "language-modeling: the first N training characters",
    )
    run.add_argument("--masker", default=None, help="image: patch (default), block or erase")
    run.add_argument("--model", default=None, help="image: vit (default) or cnn")
    run.add_argument(
        "--signal", default=None, help="controller signal: accuracy, confidence, loss, loss_gap"
    )
    run.add_argument("--target", type=float, default=None, help="controller target")
    run.add_argument("--direction", default=None, help="controller direction: curriculum or seed")
    run.add_argument("--min-rate", type=float, default=None, help="controller's smallest rate")
    run.add_argument("--max-rate", type=float, default=None, help="controller's largest rate")
    run.add_argument(
        "--no-tracker", action="store_true", help="dynamic: no per-key difficulty weights"
    )
    run.add_argument(
        "--pack", action="store_true", help="language-modeling: pack documents with document masks"
    )
    run.add_argument("--source-field", default=None, help="summarization JSONL: source field")
    run.add_argument("--target-field", default=None, help="summarization JSONL: target field")
    run.add_argument(
        "--src-lang",
        default=None,
        help="translation: source language suffix of the files (default de)",
    )
    run.add_argument(
        "--tgt-lang",
        default=None,
        help="translation: target language suffix of the files (default en)",
    )
    run.add_argument(
        "--target-file",
        default=None,
        help="translation with --data SOURCE_FILE: the aligned target file (default: the source "
        "name with the language suffix swapped)",
    )
    run.add_argument(
        "--tokens",
        default=None,
        choices=("char", "bpe"),
        help="language-modeling: characters (default) or byte-level BPE",
    )
    run.add_argument(
        "--key-drop",
        action="store_true",
        help="language-modeling: masked variants also drop attention keys at the masking rate",
    )
    _common(run)
    return parser


def make_task(args: argparse.Namespace) -> Any:
    """Build the task object of ``maskwise run`` from its arguments."""
    data = args.data or DEFAULT_DATA[args.task]
    if data != "digits" and not Path(data).exists():
        raise SystemExit(f"maskwise run {args.task}: data not found at {data} (pass --data PATH).")
    if args.task == "text-classification":
        from maskwise.experiments.classification import TextClassification

        return TextClassification(data)
    if args.task == "image-classification":
        from maskwise.experiments.classification import ImageClassification

        return ImageClassification(
            data,
            train_size=args.train_size,
            masker=args.masker or "patch",
            model=args.model or "vit",
        )
    if args.task == "speech-classification":
        from maskwise.experiments.classification import SpeechClassification

        return SpeechClassification(data)
    from maskwise.experiments import sequence

    return sequence.make_task(args.task, data, args)


def _build_task(args: argparse.Namespace) -> Any:
    try:
        return make_task(args)
    except ValueError as e:  # a loader's message names the file and the problem
        raise SystemExit(f"maskwise run {args.task}: {e}") from None


def _configure(task: Any, args: argparse.Namespace) -> Any:
    ctrl = task.controller
    for name in ("signal", "target", "direction", "min_rate", "max_rate"):
        value = getattr(args, name, None)
        if value is not None:
            ctrl = replace(ctrl, **{name: value})
    if getattr(args, "no_tracker", False):
        ctrl = replace(ctrl, tracker=False)
    task.controller = ctrl
    cfg = replace(task.train_config, device=args.device)
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.fast:
        cfg = replace(cfg, epochs=min(cfg.epochs, 2), max_steps=6)
    task.train_config = cfg
    return task


def _report(result: dict[str, Any], out: Path) -> None:
    from maskwise.experiments.report import to_markdown

    print()
    print(to_markdown(result))
    print(f"Results, plots and the dynamic run's rate / reliability trace written to {out}/")
    for name, file in result["plots"].items():
        print(f"  {name}: {out / file}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command = "maskwise " + shlex.join(argv)
    if args.command is None:
        parser.print_help()
        return 0
    import torch

    from maskwise.experiments.report import compare

    if args.threads < 1:
        parser.error(f"--threads must be >= 1 ({args.threads} given)")
    torch.set_num_threads(args.threads)
    if args.command == "demo":
        from maskwise.experiments.classification import ImageClassification

        task = _configure(ImageClassification("digits", train_size=300), args)
        out = args.out or Path("runs/demo")
        seeds = 1 if args.fast else args.seeds
        result = compare(task, seeds=seeds, out=out, quiet=args.quiet, command=command)
        _report(result, out)
        return 0
    task = _configure(_build_task(args), args)
    out = args.out or Path("runs") / args.task
    seeds = 1 if args.fast else args.seeds
    result = compare(
        task,
        variants=args.masking,
        rates=args.rates,
        seeds=seeds,
        out=out,
        quiet=args.quiet,
        command=command,
    )
    _report(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
