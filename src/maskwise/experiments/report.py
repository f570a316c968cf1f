"""Run a comparison (variants x rates x seeds) and write it as JSON, Markdown and PNG plots.

Results JSON (``results.json``), schema ``maskwise.experiments/1``::

    {
      "schema": "maskwise.experiments/1",
      "task": "image-classification", "metric": "accuracy", "higher_is_better": true,
      "item_name": "images", "command": "maskwise run ...", "machine": "...", "created": "...",
      "settings": {"data": {...}, "train": {...}, "controller": {...}, "rates": [...],
                   "seeds": [...], "variants": [...]},
      "runs": [{"variant", "rate", "seed", "train": {metric: value}, "dev": {...}, "test": {...},
                "gap", "best_epoch", "epochs", "steps", "epoch_time_s", "items_per_s",
                "history": [{"epoch", "step", "train_loss", "dev_<metric>", "rate", ...}]}],
      "summary": [{"variant", "rate", "chosen", "n", "test_mean", "test_std", "dev_mean",
                   "dev_std", "train_mean", "gap_mean", "gap_std", "best_epoch_mean",
                   "epoch_time_s", "items_per_s"}],
      "plots": {"dynamic_rate": "<file>.png", "curves": "<file>.png"}
    }

``summary`` has one row per (variant, rate); for ``static``, ``schedule`` and ``consistency``
the row whose mean dev metric is best has ``chosen: true`` (the rate is chosen on dev, never on
test). ``gap`` is ``train - test`` of the metric, signed so that positive means better on the
training data.
"""

from __future__ import annotations

import datetime
import json
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

from maskwise.experiments.engine import RunResult, Task, TrainConfig, Variant, train_run

__all__ = ["SCHEMA", "compare", "machine", "summarise", "to_markdown"]

SCHEMA = "maskwise.experiments/1"


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


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = list(xs)
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(
    task: Task, runs: Sequence[RunResult], budget: int | None = None
) -> list[dict[str, Any]]:
    """One row per (variant, rate), with the dev-chosen rate of each swept variant marked.

    ``best_epoch_fraction`` is where the best dev epoch fell in the epoch ``budget`` (default:
    the task's): near 1, the model was still improving when training stopped.
    """
    budget = budget or task.train_config.epochs
    groups: dict[tuple[str, float], list[RunResult]] = {}
    for r in runs:
        groups.setdefault((r.variant, r.rate), []).append(r)
    rows: list[dict[str, Any]] = []
    m = task.metric
    for (variant, rate), rs in groups.items():
        test_mean, test_std = _mean_std([r.test[m] for r in rs])
        dev_mean, dev_std = _mean_std([r.dev[m] for r in rs])
        gap_mean, gap_std = _mean_std([r.gap for r in rs])
        rows.append(
            {
                "variant": variant,
                "rate": rate,
                "chosen": variant in ("none", "dynamic"),
                "n": len(rs),
                "test_mean": test_mean,
                "test_std": test_std,
                "dev_mean": dev_mean,
                "dev_std": dev_std,
                "train_mean": statistics.fmean(r.train[m] for r in rs),
                "gap_mean": gap_mean,
                "gap_std": gap_std,
                "best_epoch_mean": statistics.fmean(r.best_epoch for r in rs),
                "best_epoch_fraction": statistics.fmean(r.best_epoch / budget for r in rs),
                "epoch_time_s": statistics.fmean(r.epoch_time_s for r in rs),
                "items_per_s": statistics.fmean(r.items_per_s for r in rs),
                **(
                    {
                        "rate_final_mean": statistics.fmean(
                            r.history[-1].get("rate", float("nan")) for r in rs
                        )
                    }
                    if variant == "dynamic"
                    else {}
                ),
            }
        )
    for variant in ("static", "schedule", "consistency"):  # swept rates: the best on dev
        cands = [row for row in rows if row["variant"] == variant]
        if cands:
            key = (
                (lambda row: row["dev_mean"])
                if task.higher_is_better
                else (lambda row: -row["dev_mean"])
            )
            max(cands, key=key)["chosen"] = True
    order = {"none": 0, "static": 1, "schedule": 2, "consistency": 3, "dynamic": 4}
    rows.sort(key=lambda row: (order[row["variant"]], row["rate"]))
    return rows


def _fmt(x: float, pct: bool) -> str:
    return f"{100 * x:.2f}" if pct else f"{x:.3f}"


def _spread(row: dict[str, Any], name: str, pct: bool) -> str:
    """``mean ± std`` of ``row``'s ``{name}_mean`` and ``{name}_std``."""
    return f"{_fmt(row[f'{name}_mean'], pct)} ± {_fmt(row[f'{name}_std'], pct)}"


def _cells(*cells: str) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _still_fitting(result: dict[str, Any]) -> list[str]:
    """A warning line when the unmasked baseline's best dev epoch fell in the last 40 % of the
    budget: it was still fitting, so the comparison does not test regularisation."""
    from maskwise.experiments.stats import still_fitting

    for row in result["summary"]:
        fraction = row.get("best_epoch_fraction")
        if row["variant"] == "none" and fraction is not None and still_fitting(fraction):
            return [
                "",
                f"**Baseline still fitting: not a test of regularisation.** The unmasked "
                f"model's best dev epoch fell at {fraction:.0%} of the budget; raise `--epochs` "
                "(with `--patience` to stop once dev stops improving).",
            ]
    return []


def to_markdown(result: dict[str, Any]) -> str:
    """The comparison table (chosen rows), the sweep table and the settings, as Markdown."""
    metric, pct = result["metric"], result["metric"] == "accuracy"
    unit = " (%)" if pct else ""
    item = result["item_name"]
    lines = [
        f"### {result['task']}",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Data: {json.dumps(result['settings']['data'])}  ",
        f"Seeds: {len(result['settings']['seeds'])}; rate chosen on dev; gap = train - test{unit}, "
        "positive = better on the training data.",
        "",
        _cells(
            "variant",
            "rate",
            f"test {metric}{unit}",
            f"train - test gap{unit}",
            f"dev {metric}{unit}",
            "best epoch",
            "s / epoch",
            f"{item} / s",
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        if not row["chosen"]:
            continue
        rate = (
            "-"
            if row["variant"] == "none"
            else (
                f"{row['rate']:g} -> {row['rate_final_mean']:.2f}"
                if row["variant"] == "dynamic"
                else f"{row['rate']:g}"
            )
        )
        lines.append(
            _cells(
                row["variant"],
                rate,
                _spread(row, "test", pct),
                _spread(row, "gap", pct),
                _fmt(row["dev_mean"], pct),
                f"{row['best_epoch_mean']:.1f}",
                f"{row['epoch_time_s']:.2f}",
                f"{row['items_per_s']:.0f}",
            )
        )
    lines += _still_fitting(result)
    sweep = [
        row for row in result["summary"] if row["variant"] in ("static", "schedule", "consistency")
    ]
    if sweep:
        lines += [
            "",
            f"Sweep (dev {metric} chooses; test shown for completeness):",
            "",
            f"| variant | rate | dev {metric}{unit} | test {metric}{unit} | gap{unit} | chosen |",
            "|---|---|---|---|---|---|",
        ]
        for row in sweep:
            lines.append(
                _cells(
                    row["variant"],
                    f"{row['rate']:g}",
                    _spread(row, "dev", pct),
                    _spread(row, "test", pct),
                    _fmt(row["gap_mean"], pct),
                    "yes" if row["chosen"] else "",
                )
            )
    return "\n".join(lines) + "\n"


def _plot_curves(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metric = result["metric"]
    chosen = {(row["variant"], row["rate"]) for row in result["summary"] if row["chosen"]}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    groups: dict[tuple[str, float], list[list[dict[str, float]]]] = {}
    for run in result["runs"]:
        if (run["variant"], run["rate"]) in chosen:
            groups.setdefault((run["variant"], run["rate"]), []).append(run["history"])
    colors = {
        "none": "tab:gray",
        "static": "tab:blue",
        "schedule": "tab:green",
        "consistency": "tab:purple",
        "dynamic": "tab:red",
    }
    for (variant, rate), hists in groups.items():
        n = min(len(h) for h in hists)
        epochs = [hists[0][i]["epoch"] for i in range(n)]
        dev = [statistics.fmean(h[i][f"dev_{metric}"] for h in hists) for i in range(n)]
        label = variant if variant in ("none", "dynamic") else f"{variant} {rate:g}"
        ax1.plot(epochs, dev, marker="o", ms=3, color=colors[variant], label=label)
        if variant != "none":
            rates = [
                statistics.fmean(h[i].get("rate", float("nan")) for h in hists) for i in range(n)
            ]
            ax2.plot(epochs, rates, marker="o", ms=3, color=colors[variant], label=label)
    ax1.set(
        xlabel="epoch",
        ylabel=f"dev {metric}",
        title=f"{result['task']}: dev {metric} (mean over seeds)",
    )
    ax2.set(xlabel="epoch", ylabel="masking rate (end of epoch)", title="rate")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class _Progress:
    """rich progress bars when rich is installed, one line per run otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.rich = None
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

    def run(self, label: str):  # noqa: ANN201
        if self.rich is not None:
            tid = self.rich.add_task(label, total=None, msg="")

            def cb(step: int, total: int, msg: str) -> None:
                self.rich.update(tid, completed=step, total=total, msg=msg)  # type: ignore[union-attr]

            return cb
        if not self.quiet:
            print(label, flush=True)
        return None


def compare(
    task: Task,
    *,
    variants: Sequence[str] = ("none", "static", "dynamic"),
    rates: Sequence[float] | None = None,
    seeds: int = 3,
    out: str | Path | None = None,
    config: TrainConfig | None = None,
    command: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train every (variant, rate, seed) of ``task``; write ``results.json``, ``results.md`` and
    the plots under ``out`` (when given); return the results dict (schema above)."""
    rates = tuple(rates if rates is not None else task.default_rates)
    cfg = config or task.train_config
    jobs: list[Variant] = []
    for kind in variants:
        if kind in ("static", "schedule", "consistency"):
            jobs += [Variant(kind, r) for r in rates]
        else:
            jobs.append(Variant(kind, task.controller.initial_rate if kind == "dynamic" else 0.0))
    runs: list[RunResult] = []
    with _Progress(quiet) as progress:
        for v in jobs:
            for seed in range(seeds):
                runs.append(
                    train_run(
                        task,
                        v,
                        seed,
                        config=cfg,
                        progress=progress.run(f"{v.label:<14} seed {seed}"),
                    )
                )
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "task": task.name,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "item_name": task.item_name,
        "command": command or "maskwise " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "data": task.describe(),
            "train": asdict(cfg),
            "controller": asdict(task.controller),
            "rates": list(rates),
            "seeds": list(range(seeds)),
            "variants": list(variants),
        },
        "runs": [r.to_dict() for r in runs],
        "summary": summarise(task, runs, cfg.epochs),
        "plots": {},
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        dyn = next((r for r in runs if r.variant == "dynamic" and r.monitor is not None), None)
        if dyn is not None and dyn.monitor is not None:
            dyn.monitor.to_csv(out / "dynamic_monitor.csv")
            try:
                dyn.monitor.plot(
                    out / "dynamic_rate.png",
                    title=f"{task.name}: dynamic rate and reliability (seed {dyn.seed})",
                )
                result["plots"]["dynamic_rate"] = "dynamic_rate.png"
            except ImportError:
                pass
        if _plot_curves(result, out / "curves.png") is not None:
            result["plots"]["curves"] = "curves.png"
        (out / "results.json").write_text(json.dumps(result, indent=1))
        md = to_markdown(result)
        for name, file in result["plots"].items():
            md += f"\n![{name}]({file})\n"
        (out / "results.md").write_text(md)
    return result
