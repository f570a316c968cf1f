"""The cross-task evidence summary: rows computed from the per-run records of ``results.json``
files, as JSON, Markdown and a forest plot (``maskwise report``; SPEC.md, "Evidence protocol").

Every number of a row is recomputed from the runs it cites, so a summary cannot drift from the
results it summarises:

* ``n_seeds``, ``mean``, ``std``: the arm's evaluation seeds with a finite test metric, their
  mean and sample std (null below two seeds); a diverged run (NaN) is counted in
  ``failed_seeds``, not averaged;
* ``diff``: the paired difference to the unmasked arm over the seeds both scored (a paired t
  interval, :func:`~maskwise.experiments.stats.paired_difference`), signed so that positive
  means better than no masking, with ``n`` the number of pairs; null for the unmasked arm and
  below two pairs;
* ``verdict``: ``helps`` / ``no effect`` / ``hurts`` from that interval (null without one);
* ``baseline_best_epoch_fraction``: mean over the unmasked arm's evaluation runs of best dev
  epoch / epoch budget (above 0.6: "baseline still fitting");
* ``compute_s``: CPU seconds of the arm's evaluation runs plus every tuning run of its kind
  (each run's process time: with one thread per run it does not depend on ``--jobs`` or on what
  else shares the machine).

Extra keys (beyond SPEC.md's): ``kind``, ``failed_seeds``, ``train_mean``, ``gap_mean`` (train -
test, positive = better on training data), ``best_epoch_fraction`` (the arm's own),
``tuning_runs``, ``detectable`` (the smallest paired effect the seeds detect at 80 % power, from
the observed spread of the differences), ``item_diff`` (where the runs recorded per-item test
statistics, :mod:`maskwise.experiments.items`: the difference of the metric on the test items,
the paired seeds pooled, with a 95 % percentile interval from 1,000 bootstrap resamples of the
test items, each resample keeping an item's every seed together:
:func:`~maskwise.experiments.stats.paired_bootstrap_items`; ``n`` items, ``seeds``; null where
the seeds scored different items). It measures test-set sampling noise with the trained
models fixed, not seed-to-seed variance: evidence beside ``diff``, not instead of it.
``source`` is the results file.

With ``against=ARM`` (``maskwise report --against static``) every difference, interval and
verdict is to that arm instead of the unmasked one (an arm label such as ``static 0.25`` or a
kind such as ``static``: the tuned arm of that kind), and the verdicts read ``better`` /
``within noise`` / ``worse``; the row names it in ``against``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LEGACY_MESSAGE",
    "SUMMARY_FIELDS",
    "evidence_rows",
    "finite_json",
    "forest_plot",
    "load_results",
    "report",
    "rows_markdown",
]

#: The fields of every ``summary.json`` row (SPEC.md).
SUMMARY_FIELDS = (
    "task",
    "data",
    "setting",
    "arm",
    "metric",
    "higher_is_better",
    "n_seeds",
    "mean",
    "std",
    "diff",
    "verdict",
    "baseline_best_epoch_fraction",
    "compute_s",
)

LEGACY_MESSAGE = (
    "written before the evidence protocol (its runs have no 'role'): rerun it with "
    "`maskwise run` to report it"
)


def load_results(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """The ``results.json`` of each path (a results file, or a folder holding one)."""
    out = []
    for p in paths:
        path = Path(p)
        file = path / "results.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"{p}: no results.json there.")
        try:
            result = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{file}: not a readable results file ({e}).") from None
        out.append((file, result))
    return out


def _fraction(run: dict[str, Any]) -> float:
    from maskwise.experiments.stats import best_epoch_fraction

    return best_epoch_fraction(run["best_epoch"], run["budget"])


def _std(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def _finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number, else None (a diverged run's metric)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: strict JSON (no NaN, Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def _mean(xs: Iterable[Any]) -> float | None:
    values = [v for v in map(_finite, xs) if v is not None]
    return statistics.fmean(values) if values else None


def _compute(run: dict[str, Any]) -> float:
    """A run's compute: its process's CPU seconds (wall seconds for runs recorded without)."""
    return float(run.get("cpu_seconds") or run["seconds"])


def item_difference(
    runs: Sequence[dict[str, Any]], base: dict[int, dict[str, Any]], higher_is_better: bool
) -> dict[str, Any] | None:
    """The item-level paired difference of ``runs`` to the unmasked ``base`` runs (by seed),
    the seeds pooled: a bootstrap over the test items (see the module docstring). It needs the
    same test items in every pair (the same ``items`` fingerprint and kind, finite values); a
    seed that differs is left out, and when the seeds scored different items (the speech
    task's per-seed speakers) there is nothing to pool: None."""
    import numpy as np

    from maskwise.experiments import stats
    from maskwise.experiments.items import item_metric

    pairs = []
    for r in runs:
        m, b = r.get("test_items"), base.get(r["seed"], {}).get("test_items")
        if not m or not b or (m["kind"], m.get("items")) != (b["kind"], b.get("items")):
            continue
        mv, bv = np.asarray(m["values"], dtype=float), np.asarray(b["values"], dtype=float)
        if mv.shape == bv.shape and np.isfinite(mv).all() and np.isfinite(bv).all():
            pairs.append((m["kind"], m.get("items"), mv, bv))
    if not pairs or len({(k, i, mv.shape) for k, i, mv, _ in pairs}) != 1 or len(pairs[0][2]) < 2:
        return None
    d = stats.paired_bootstrap_items(
        np.stack([p[2] for p in pairs], axis=1),
        np.stack([p[3] for p in pairs], axis=1),
        metric=item_metric(pairs[0][0]),
        higher_is_better=higher_is_better,
        n_resamples=1000,
        seed=0,
    )
    return {**d.as_dict(), "n": d.n, "seeds": len(pairs)}


#: Verdicts against another arm than the unmasked one.
AGAINST_VERDICTS = {"helps": "better", "no effect": "within noise", "hurts": "worse"}


def evidence_rows(
    result: dict[str, Any], source: str | None = None, *, against: str | None = None
) -> list[dict[str, Any]]:
    """One summary row per evaluated arm of a results dict (``results.json``), the arm compared
    with first: the unmasked one, or ``against`` (an arm label or kind; ``ValueError`` when the
    results have no such arm)."""
    from maskwise.experiments import stats

    runs = result.get("runs", [])
    if any("role" not in r for r in runs):
        raise ValueError(f"{source or result.get('task')}: {LEGACY_MESSAGE}.")
    metric, hib = result["metric"], result["higher_is_better"]
    evals = [r for r in runs if r["role"] == "eval"]
    arms: dict[str, list[dict[str, Any]]] = {}
    for r in evals:
        arms.setdefault(r["arm"], []).append(r)
    none_label = next((a for a, rs in arms.items() if rs[0]["kind"] == "none"), None)
    nones = arms.get(none_label, []) if none_label else []
    base_fraction = statistics.fmean(_fraction(r) for r in nones) if nones else None
    base_label = none_label
    if against is not None:
        base_label = against if against in arms else None
        base_label = base_label or next(
            (a for a, rs in arms.items() if rs[0]["kind"] == against), None
        )
        if base_label is None:
            raise ValueError(
                f"{source or result.get('task')}: no evaluated arm {against!r} to compare "
                f"against (arms: {sorted(arms)})."
            )
    base = {r["seed"]: r for r in arms.get(base_label, [])} if base_label else {}
    rows = []
    for arm, rs in sorted(arms.items(), key=lambda kv: kv[0] != base_label):
        kind = rs[0]["kind"]
        scored = [(r, _finite(r["test"].get(metric))) for r in rs]
        test = [v for _, v in scored if v is not None]
        diff, detectable, item_diff = None, None, None
        verdict: str | None = None
        pairs = [
            (v, b)
            for r, v in scored
            if r["seed"] in base
            and v is not None
            and (b := _finite(base[r["seed"]]["test"].get(metric))) is not None
        ]
        if arm != base_label and len(pairs) >= 2:
            masked, baseline = [p[0] for p in pairs], [p[1] for p in pairs]
            d = stats.paired_difference(masked, baseline, higher_is_better=hib, method="t")
            diff = {**d.as_dict(), "n": d.n}
            verdict = stats.verdict(d)
            if against is not None:
                verdict = AGAINST_VERDICTS[verdict]
            spread = statistics.stdev(a - b for a, b in pairs)
            detectable = stats.detectable_effect(spread, len(pairs))
        if arm != base_label:
            item_diff = item_difference(rs, base, hib)
        tune = [r for r in runs if r["role"] == "tune" and r["kind"] == kind]
        rows.append(
            {
                "task": result["task"],
                "data": result.get("data") or "",
                "setting": rs[0]["setting"],
                "arm": arm,
                "metric": metric,
                "higher_is_better": hib,
                "n_seeds": len(test),
                "mean": statistics.fmean(test) if test else None,
                "std": _std(test),
                "diff": diff,
                "verdict": verdict,
                "baseline_best_epoch_fraction": base_fraction,
                "compute_s": sum(_compute(r) for r in rs + tune),
                "kind": kind,
                "failed_seeds": len(rs) - len(test),
                "train_mean": _mean(r["train"].get(metric) for r in rs),
                "gap_mean": _mean(r.get("gap") for r in rs),
                "best_epoch_fraction": statistics.fmean(_fraction(r) for r in rs),
                "tuning_runs": len(tune),
                "detectable": detectable,
                "item_diff": item_diff,
                "source": source,
                **({"against": base_label} if against is not None else {}),
            }
        )
    return rows


def _scale(row: dict[str, Any]) -> tuple[float, str]:
    """Accuracy in percent (points for differences); other metrics as they are."""
    return (100.0, " pp") if row["metric"] == "accuracy" else (1.0, "")


def _num(x: float, scale: float) -> str:
    return f"{scale * x:.2f}"


def _spread(row: dict[str, Any], scale: float, metric: str) -> str:
    if row["mean"] is None:
        return "-"
    std = "" if row["std"] is None else f" ± {_num(row['std'], scale)}"
    failed = f" ({row['failed_seeds']} diverged)" if row.get("failed_seeds") else ""
    return f"{_num(row['mean'], scale)}{std} {metric}{failed}"


def _setting(row: dict[str, Any]) -> str:
    """The setting, and in a table across results files the folder a row comes from (two
    commands on one setting, e.g. two rate grids, stay apart)."""
    source = row.get("source")
    if not source:
        return str(row["setting"])
    path = Path(source)
    folder = path.parent.name if path.name == "results.json" else path.name
    return f"{row['setting']} (`{folder}`)"


def _interval(diff: dict[str, Any] | None, scale: float, unit: str) -> str:
    if diff is None:
        return "-"
    low, high = scale * diff["ci_low"], scale * diff["ci_high"]
    return f"{scale * diff['mean']:+.2f}{unit} [{low:+.2f}, {high:+.2f}]"


def rows_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The summary table: one line per arm, the paired difference with its 95 % CI, the verdict,
    the smallest paired effect the seeds detect (80 % power, from the observed spread of the
    differences), the baseline's best-epoch fraction (flagged when still fitting) and the
    compute; where runs recorded per-item test statistics, the item-level difference (a
    bootstrap over test items, seeds pooled) beside the seed-level one."""
    from maskwise.experiments.stats import still_fitting

    items = any(row.get("item_diff") for row in rows)
    against = any("against" in row for row in rows)
    lines = [
        "| task | data | setting | arm | seeds | test (mean ± std) | "
        + ("paired diff to the reference arm [95 % CI] " if against else "paired diff [95 % CI] ")
        + ("| items, seeds fixed: diff [95 % CI] " if items else "")
        + "| verdict | detectable | baseline best epoch | compute (min) |",
        "|---|---|---|---|---|---|---|" + ("---|" if items else "") + "---|---|---|---|",
    ]
    for row in rows:
        scale, unit = _scale(row)
        metric = row["metric"] + (" %" if scale == 100.0 else "")
        cell = _interval(row["diff"], scale, unit)
        if items:
            cell += " | " + _interval(row.get("item_diff"), scale, unit)
        frac = row["baseline_best_epoch_fraction"]
        fit = (
            "-"
            if frac is None
            else f"{frac:.2f}" + (" **still fitting**" if still_fitting(frac) else "")
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    row["task"],
                    row["data"],
                    _setting(row),
                    row["arm"] + (" (reference)" if row.get("against") == row["arm"] else ""),
                    str(row["n_seeds"]),
                    _spread(row, scale, metric),
                    cell,
                    row["verdict"] or "-",
                    "-" if row["detectable"] is None else f"{scale * row['detectable']:.2f}{unit}",
                    fit,
                    f"{row['compute_s'] / 60:.1f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def forest_plot(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """A forest plot of the masked arms' paired differences and CIs (one panel per metric, a
    line at 0 = no effect); None when matplotlib is missing or no row has a difference."""
    shown = [r for r in rows if r["diff"] is not None]
    if not shown:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metrics = list(dict.fromkeys(r["metric"] for r in shown))
    heights = [len([r for r in shown if r["metric"] == m]) for m in metrics]
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(8, 1.2 + 0.32 * sum(heights) + 0.6 * len(metrics)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
        constrained_layout=True,
    )
    colors = {"helps": "tab:green", "hurts": "tab:red", "no effect": "tab:gray"}
    colors |= {AGAINST_VERDICTS[k]: c for k, c in list(colors.items())}
    to = "the reference arm" if any("against" in r for r in shown) else "no masking"
    for ax, metric in zip(axes[:, 0], metrics):
        mine = [r for r in shown if r["metric"] == metric]
        scale, unit = _scale(mine[0])
        for y, r in enumerate(reversed(mine)):
            d = r["diff"]
            c = colors[r["verdict"]]
            ax.plot([scale * d["ci_low"], scale * d["ci_high"]], [y, y], color=c, lw=2)
            ax.plot([scale * d["mean"]], [y], "o", color=c)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels(
            [f"{r['task']} | {r['setting']} | {r['arm']}" for r in reversed(mine)], fontsize=7
        )
        ax.set_xlabel(
            f"paired test {metric} difference to {to}{unit or ''} (positive = better; 95 % CI)"
        )
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


#: Metrics where lower is better, whatever the folder's own metric (``report(metric=...)``).
LOWER_IS_BETTER = ("loss", "perplexity")


def on_metric(result: dict[str, Any], metric: str, source: str) -> dict[str, Any]:
    """``result`` compared on another ``metric`` its runs recorded on test (``bleu_beam``,
    ``rougeL_mean``...): the item-level statistics, which are the folder metric's, are left
    out. Raises ``ValueError`` when an evaluation run lacks the metric."""
    if metric == result["metric"]:
        return result
    missing = [r["arm"] for r in result["runs"] if r["role"] == "eval" and metric not in r["test"]]
    if missing:
        raise ValueError(f"{source}: no test {metric!r} in the runs of {sorted(set(missing))}.")
    return {
        **result,
        "metric": metric,
        "higher_is_better": metric not in LOWER_IS_BETTER,
        "runs": [{**r, "test_items": None} for r in result["runs"]],
    }


def report(
    paths: Iterable[str | Path],
    out: str | Path | None = None,
    *,
    metric: str | None = None,
    against: str | None = None,
) -> list[dict[str, Any]]:
    """Summary rows of every results file in ``paths``, on each folder's metric or on
    ``metric`` (:func:`on_metric`), compared with the unmasked arm or with ``against``
    (:func:`evidence_rows`); with ``out``, write ``summary.json``, ``summary.md`` and
    ``forest.png`` there. Raises ``ValueError`` naming a file that cannot be read, predates
    the protocol or lacks the ``against`` arm."""
    rows: list[dict[str, Any]] = []
    for file, result in load_results(paths):
        if metric is not None:
            result = on_metric(result, metric, str(file))
        rows += evidence_rows(result, source=str(file), against=against)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(finite_json(rows), indent=1, allow_nan=False))
        md = rows_markdown(rows)
        if forest_plot(rows, out / "forest.png") is not None:
            md += "\n![paired differences](forest.png)\n"
        (out / "summary.md").write_text(md)
    return rows
