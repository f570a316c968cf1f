"""Run the evidence protocol on one task and write it as JSON, Markdown and PNG plots.

Results JSON (``results.json``), schema ``maskwise.experiments/2``::

    {
      "schema": "maskwise.experiments/2",
      "task": "image-classification", "data": "digits", "setting": "ViT d=64 x2, 300 train
      images", "metric": "accuracy", "higher_is_better": true, "item_name": "images",
      "command": "maskwise run ...", "machine": "...", "created": "...",
      "settings": {"data": {...}, "train": {...}, "controller": {...}, "rates": [...],
                   "baseline_weight_decays": [...], "tune_seeds": [...], "eval_seeds": [...],
                   "jobs": 2, "variants": [...], "chosen": {kind: arm}},
      "runs": [{"arm", "kind", "setting", "seed", "role", "train": {metric: value}, "dev",
                "test", "best_epoch", "epochs_run", "budget", "seconds", "variant", "rate",
                "weight_decay", "gap", "epochs", "steps", "epoch_time_s", "items_per_s",
                "history": [{"epoch", "step", "train_loss", "dev_<metric>", "rate", ...}],
                "samples": [{"input", "reference", "output"}],  # sequence tasks; else []
                "test_items": {"kind", "values"}}],  # per-item test statistics, or null
      "summary": [the rows of maskwise.experiments.summary.evidence_rows],
      "sweep": [{"arm", "kind", "n", "dev_mean", "test_mean", "gap_mean", "chosen"}],
      "plots": {"dynamic_rate": "<file>.png", "curves": "<file>.png"}
    }

``role`` is ``"tune"`` (a candidate setting on a tuning seed: chosen on dev, never on test) or
``"eval"`` (an arm's chosen setting on a fresh evaluation seed). ``gap`` is ``train - test`` of
the metric, signed so that positive means better on the training data.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from maskwise.experiments.engine import RunResult, Task, TrainConfig, Variant
from maskwise.experiments.protocol import Job, Protocol, plan_arms, run_protocol
from maskwise.experiments.reuse import Reuse
from maskwise.experiments.summary import evidence_rows, finite_json

__all__ = [
    "SCHEMA",
    "compare",
    "machine",
    "record",
    "setting_of",
    "sweep_rows",
    "to_markdown",
    "write_result",
]

SCHEMA = "maskwise.experiments/2"


def machine() -> str:
    """One line: CPU model, logical CPUs, torch version and threads, GPU if any."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    threads = torch.get_num_threads()
    return (
        f"{name}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({threads} thread{'s' if threads > 1 else ''}){gpu}, "
        f"Python {platform.python_version()}"
    )


def sweep_rows(
    metric: str, runs: Sequence[dict[str, Any]], chosen: dict[str, str]
) -> list[dict[str, Any]]:
    """The tuning sweep: one row per candidate tuned on dev (mean dev and test metric over the
    tuning seeds), marked ``chosen`` when it is the arm's choice (``chosen``: arm -> label, as
    :func:`~maskwise.experiments.protocol.choose` made it; test is shown, never used)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["role"] == "tune":
            groups.setdefault(r["arm"], []).append(r)
    return [
        {
            "arm": arm,
            "kind": rs[0]["kind"],
            "n": len(rs),
            "dev_mean": statistics.fmean(r["dev"][metric] for r in rs),
            "test_mean": statistics.fmean(r["test"][metric] for r in rs),
            "gap_mean": statistics.fmean(r["gap"] for r in rs),
            "chosen": chosen.get(rs[0]["kind"]) == arm,
        }
        for arm, rs in groups.items()
    ]


def _fmt(x: float | None, pct: bool) -> str:
    if x is None:  # a diverged run's metric
        return "-"
    return f"{100 * x:.2f}" if pct else f"{x:.3f}"


def _still_fitting(result: dict[str, Any]) -> list[str]:
    """A warning line when the unmasked baseline's best dev epoch fell in the last 40 % of the
    budget: it was still fitting, so the comparison does not test regularisation."""
    from maskwise.experiments.stats import still_fitting

    for row in result["summary"]:
        fraction = row.get("baseline_best_epoch_fraction")
        if fraction is not None and still_fitting(fraction):
            return [
                "",
                f"**Baseline still fitting: not a test of regularisation.** The unmasked "
                f"model's best dev epoch fell at {fraction:.0%} of the budget; raise `--epochs` "
                "(with `--patience` to stop once dev stops improving).",
            ]
    return []


def _reused_line(result: dict[str, Any]) -> str:
    """The Protocol line's note on runs taken from earlier folders (``--reuse``), if any."""
    reused = result["settings"].get("reused") or {}
    if not reused.get("runs"):
        return ""
    sources = sorted({r["reused_from"] for r in result["runs"] if "reused_from" in r})
    return (
        f"  \nReused: {reused['runs']} of {len(result['runs'])} runs taken from "
        f"{', '.join(sources)} (`--reuse`: the same data, training, variant and controller "
        "settings and seeds, so the same runs; trained there, not here)."
    )


def to_markdown(result: dict[str, Any]) -> str:
    """The evaluated arms (paired differences, CIs, verdicts), the tuning sweep and the
    settings, as Markdown."""
    from maskwise.experiments.summary import rows_markdown

    metric, pct = result["metric"], result["metric"] == "accuracy"
    unit = " (%)" if pct else ""
    s = result["settings"]
    lines = [
        f"### {result['task']}: {result['setting']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Data: {json.dumps(s['data'])}  ",
        f"Protocol: settings chosen on dev with tuning seeds {s['tune_seeds']}, evaluated on "
        f"fresh seeds {s['eval_seeds']} (paired: same initialisation, batch order and split "
        f"in every arm); {s['train']['epochs']} epochs"
        + (f", patience {s['train']['patience']}" if s["train"].get("patience") else "")
        + "; paired t 95 % CI of the test difference to no masking."
        + _reused_line(result),
        "",
        rows_markdown(result["summary"]).rstrip("\n"),
    ]
    lines += _still_fitting(result)
    if result["sweep"]:
        lines += [
            "",
            f"Tuning sweep (mean over the tuning seeds; dev {metric} chooses, test shown only "
            "for completeness):",
            "",
            f"| arm | runs | dev {metric}{unit} | test {metric}{unit} | gap{unit} | chosen |",
            "|---|---|---|---|---|---|",
        ]
        for row in result["sweep"]:
            lines.append(
                f"| {row['arm']} | {row['n']} | {_fmt(row['dev_mean'], pct)} | "
                f"{_fmt(row['test_mean'], pct)} | {_fmt(row['gap_mean'], pct)} | "
                f"{'yes' if row['chosen'] else ''} |"
            )
    lines += _samples_markdown(result["runs"])
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """``text`` on one line, as inline code (newlines shown as ``⏎``; backticks kept)."""
    one = text.replace("\r", "").replace("\n", "⏎")
    return f"`` {one} ``"


def _samples_markdown(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Each arm's outputs on the same fixed test items, from the first evaluation seed (the same
    seed in every arm): the text behind the metric."""
    evals = [r for r in runs if r.get("role") == "eval" and r.get("samples")]
    if not evals:
        return []
    seed = min(r["seed"] for r in evals)
    first = [r for r in evals if r["seed"] == seed]
    lines = ["", f"Sample outputs on fixed test items (evaluation seed {seed}, every arm):"]
    for i, item in enumerate(first[0]["samples"]):
        lines += [
            "",
            f"{i + 1}. input: {_quote(item['input'])}  ",
            f"   reference: {_quote(item['reference'])}  ",
        ]
        lines += [
            f"   {r['arm']}: {_quote(r['samples'][i]['output'])}  "
            for r in first
            if i < len(r["samples"])
        ]
    return lines


def _epoch_mean(hists: list[list[dict[str, Any]]], i: int, key: str) -> float:
    """Mean over seeds of ``key`` at epoch ``i`` (NaN, stored as null in results.json, and a
    missing key count as NaN)."""
    values = [h[i].get(key) for h in hists]
    return statistics.fmean(math.nan if v is None else float(v) for v in values)


def _plot_curves(result: dict[str, Any], path: Path) -> Path | None:
    """Per epoch, mean over each evaluated arm's seeds: the dev metric, the masking rate and,
    for controlled arms, the controller's state: its smoothed signal (accuracy, or the relative
    train / held-out loss gap of ``dynamic gap``) and how unequal its tracker's per-key weights
    are (largest / mean)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metric = result["metric"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    (ax1, ax2), (ax3, ax4) = axes
    groups: dict[str, list[list[dict[str, float]]]] = {}
    kinds: dict[str, str] = {}
    for run in result["runs"]:
        if run["role"] == "eval":
            groups.setdefault(run["arm"], []).append(run["history"])
            kinds[run["arm"]] = run["kind"]
    colors = {
        "none": "tab:gray",
        "static": "tab:blue",
        "schedule": "tab:green",
        "consistency": "tab:purple",
        "dynamic": "tab:red",
    }
    seen: dict[str, int] = {}  # arms of one kind (dynamic, dynamic seed): dashed after the first
    for arm, hists in groups.items():
        n = min(len(h) for h in hists)  # early stopping: the epochs every seed ran
        epochs = [hists[0][i]["epoch"] for i in range(n)]
        dev = [statistics.fmean(h[i][f"dev_{metric}"] for h in hists) for i in range(n)]
        seen[kinds[arm]] = seen.get(kinds[arm], -1) + 1
        style = {"color": colors[kinds[arm]], "ls": ("-", "--", ":")[min(seen[kinds[arm]], 2)]}
        ax1.plot(epochs, dev, marker="o", ms=2, label=arm, **style)
        if kinds[arm] != "none":
            rates = [_epoch_mean(hists, i, "rate") for i in range(n)]
            ax2.plot(epochs, rates, marker="o", ms=2, label=arm, **style)
        for ax, key in ((ax3, "signal"), (ax4, "key_weight_spread")):
            if any(key in h[0] for h in hists):
                values = [_epoch_mean(hists, i, key) for i in range(n)]
                ax.plot(epochs, values, marker="o", ms=2, label=arm, **style)
    ax1.set(
        xlabel="epoch",
        ylabel=f"dev {metric}",
        title=f"{result['task']}: dev {metric} (mean over evaluation seeds)",
    )
    ax2.set(xlabel="epoch", ylabel="masking rate (end of epoch)", title="rate")
    ax3.set(xlabel="epoch", ylabel="smoothed signal", title="controller signal (end of epoch)")
    ax4.set(xlabel="epoch", ylabel="largest / mean key weight", title="tracker: per-key weights")
    for ax, what in ((ax3, "no controller"), (ax4, "no per-key weights")):
        if not ax.lines:
            ax.text(0.5, 0.5, f"{what} in these arms", ha="center", va="center", alpha=0.6)
            ax.set(xticks=[], yticks=[])
    for ax in (ax1, ax2, ax3, ax4):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class _Progress:
    """rich progress bars when rich is installed, one line per run otherwise; with parallel
    workers, one line per finished run."""

    def __init__(self, quiet: bool, total: int | None = None) -> None:
        self.quiet = quiet
        self.rich = None
        self.finished, self.total = 0, total
        if not quiet:
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self.rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[msg]}"),
                    TimeElapsedColumn(),
                )
            except ImportError:
                pass

    def __enter__(self) -> _Progress:
        if self.rich is not None:
            self.rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)

    def run(self, job: Job):  # noqa: ANN201
        label = f"{job.variant.label:<16} seed {job.seed} ({job.role})"
        if self.rich is not None:
            tid = self.rich.add_task(label, total=None, msg="")

            def cb(step: int, total: int, msg: str) -> None:
                self.rich.update(tid, completed=step, total=total, msg=msg)  # type: ignore[union-attr]

            return cb
        if not self.quiet:
            print(label, flush=True)
        return None

    def done(self, job: Job, r: RunResult, metric: str) -> None:
        """One line per finished run (parallel workers report nothing while they train)."""
        self.finished += 1
        if self.quiet or self.rich is not None and self.total is None:
            return
        line = (
            f"[{self.finished}] {job.variant.label} seed {job.seed} ({job.role}): "
            f"dev {metric} {r.dev[metric]:.4f}, best epoch {r.best_epoch}/{r.epochs}, "
            f"{r.seconds:.0f} s"
        )
        if self.rich is not None:
            self.rich.console.print(line)
        else:
            print(line, flush=True)


def setting_of(task: Task) -> str:
    """A short name of the data regime, the model and the masker, e.g. ``"ViT d=64 x2, 300
    train images, masker drop"`` (a task whose :meth:`describe` gives ``"setting"`` names its
    own)."""
    d = task.describe()
    if "setting" in d:
        return str(d["setting"])
    sizes = d.get("sizes", {})
    model = d.get("model", task.name)
    train = sizes.get("train")
    name = f"{model}, {train} train {task.item_name}" if train is not None else str(model)
    return name + (f", masker {d['masker']}" if "masker" in d else "")


def record(job: Job, r: RunResult, *, setting: str, budget: int) -> dict[str, Any]:
    """A run as ``results.json`` lists it: the result's fields plus ``arm``, ``kind``,
    ``setting``, ``role``, ``epochs_run`` and ``budget`` (SPEC.md)."""
    d = r.to_dict()
    d.update(
        arm=job.variant.label,
        kind=job.variant.kind,
        setting=setting,
        role=job.role,
        epochs_run=r.epochs,
        budget=budget,
    )
    return d


def compare(
    task: Task,
    *,
    variants: Sequence[str] = ("none", "static", "dynamic"),
    rates: Sequence[float] | None = None,
    seeds: int = 5,
    tune_seeds: int = 2,
    jobs: int = 1,
    baseline_weight_decays: Sequence[float] | None = None,
    setting: str | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    config: TrainConfig | None = None,
    command: str | None = None,
    quiet: bool = False,
    reuse: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Run the evidence protocol on ``task`` (:mod:`maskwise.experiments.protocol`): tune every
    arm with a choice on dev with ``tune_seeds`` seeds, then train each arm's chosen setting on
    ``seeds`` fresh paired seeds, ``jobs`` runs at a time. Write ``results.json``,
    ``results.md`` and the plots under ``out`` (when given); return the results dict (schema
    above).

    Args:
        variants: the arms' kinds, from ``none``, ``static``, ``consistency``, ``schedule``,
            ``dynamic``.
        rates: the rates swept for ``static`` / ``consistency`` / ``schedule`` (default: the
            task's).
        baseline_weight_decays: weight decays tuned on dev for the unmasked arm (default: the
            task's own only).
        setting: the setting's name in the report (default from the task's description).
        data: the data's name in the report (e.g. the folder given).
        reuse: earlier results folders whose runs of the same settings are taken instead of
            trained again (:class:`~maskwise.experiments.reuse.Reuse`).
    """
    rates = tuple(rates if rates is not None else task.default_rates)
    cfg = config or task.train_config
    protocol = Protocol(tune_seeds=tune_seeds, eval_seeds=seeds, jobs=jobs)
    arms = plan_arms(task, variants, rates, baseline_weight_decays)
    setting = setting or setting_of(task)
    total = sum(len(a.candidates) * tune_seeds for a in arms if a.tuned) + len(arms) * seeds
    lookup = Reuse(task, cfg, reuse) if reuse else None
    with _Progress(quiet, total=total if jobs > 1 else None) as progress:
        pairs, chosen = run_protocol(
            task,
            arms,
            protocol,
            config=cfg,
            progress=progress.run,
            done=lambda job, r: progress.done(job, r, task.metric),
            lookup=lookup,
        )
    runs = [record(job, r, setting=setting, budget=cfg.epochs) for job, r in pairs]
    if lookup is not None:
        for (j, _), run in zip(pairs, runs):
            if (source := lookup.source(j)) is not None:
                run["reused_from"] = source
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "task": task.name,
        "data": data or str(task.describe().get("data", "")),
        "setting": setting,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "item_name": task.item_name,
        "command": command or "maskwise " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "data": task.describe(),
            "train": asdict(cfg),
            # The plain dynamic arm's settings (the library default, or before issue 16 the
            # task's own controller); named ones below.
            "controller": asdict(Variant("dynamic").controller_config(task)),
            "named_controllers": {
                j.variant.arm: asdict(j.variant.controller_config(task))
                for j, _ in pairs
                if j.variant.controller is not None
            },
            "rates": list(rates),
            "baseline_weight_decays": list(baseline_weight_decays or []),
            "tune_seeds": protocol.tune,
            "eval_seeds": protocol.eval,
            "seeds": protocol.eval,
            "jobs": jobs,
            "variants": list(variants),
            "chosen": {kind: v.label for kind, v in chosen.items()},
            "reused": {
                "from": [str(d) for d in reuse],
                "runs": sum(1 for r in runs if "reused_from" in r),
            },
        },
        "runs": runs,
        "summary": [],
        "sweep": [],
        "plots": {},
    }
    result["sweep"] = sweep_rows(task.metric, runs, result["settings"]["chosen"])
    result["summary"] = evidence_rows(result)
    result = finite_json(result)  # strict JSON: a diverged run's NaN becomes null
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        dynamic = [(j, r) for j, r in pairs if j.role == "eval" and r.variant == "dynamic"]
        dynamic.sort(key=lambda p: p[0].variant.controller is not None)  # the default first
        job, dyn = dynamic[0] if dynamic else (None, None)
        if job is not None and dyn is not None and dyn.monitor is not None:
            dyn.monitor.to_csv(out / "dynamic_monitor.csv")
            try:
                dyn.monitor.plot(
                    out / "dynamic_rate.png",
                    title=f"{task.name}: {job.variant.arm} rate and reliability (seed {dyn.seed})",
                )
                result["plots"]["dynamic_rate"] = "dynamic_rate.png"
            except ImportError:
                pass
        write_result(result, out)
    return result


def write_result(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write one comparison to ``out``: its training curves (``curves.png``, when matplotlib is
    installed), ``results.json`` and ``results.md`` with the plots linked."""
    out.mkdir(parents=True, exist_ok=True)
    if _plot_curves(result, out / "curves.png") is not None:
        result["plots"]["curves"] = "curves.png"
    (out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    md = to_markdown(result)
    for name, file in result["plots"].items():
        md += f"\n![{name}]({file})\n"
    (out / "results.md").write_text(md)
    return result
