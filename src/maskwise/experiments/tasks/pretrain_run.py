"""``maskwise run pretrain-finetune``: both stages, their progress bars and their results folders
(see :mod:`maskwise.experiments.tasks.pretrain`).

* :func:`pretrain_all`: every pretraining arm, loaded from the cache or trained (in worker
  processes with ``--jobs``), with a progress bar per arm;
* :func:`write_pretraining`: ``pretraining/``: ``pretrain.json`` (records and curves),
  ``pretrain.md`` (the table) and ``pretrain_curves.png`` (training loss, held-out MLM loss and
  rate over steps, per arm);
* :func:`run`: the pretraining, then ``finetune/`` (the masking arms, dropped tokens merged in
  as ``drop R``) and ``pretraining-arms/`` (each pretraining arm and from scratch, fine-tuned
  without masking, compared with the ``--init`` checkpoint), each a ``results.json`` that
  ``maskwise report`` reads.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import multiprocessing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from maskwise.experiments.report import compare, sweep_rows, write_result
from maskwise.experiments.summary import evidence_rows, finite_json

if TYPE_CHECKING:
    from maskwise.experiments.tasks.pretrain import PretrainFinetune

__all__ = ["merge_runs", "pretrain_all", "pretraining_markdown", "run", "write_pretraining"]


def _one(task: PretrainFinetune, arm: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    return task.pretrain_one(arm)


def pretrain_all(task: PretrainFinetune, *, jobs: int = 1, quiet: bool = True) -> dict[str, Any]:
    """Every arm of ``task.pretrain_arms`` pretrained or loaded from the cache; ``jobs > 1``:
    that many arms at once in ``spawn`` workers (one torch thread each; a line per finished
    arm), else in this process with a progress bar per arm (none when ``quiet``)."""
    arms = list(task.pretrain_arms)
    records: dict[str, Any] = {}
    if jobs > 1 and len(arms) > 1:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(min(jobs, len(arms)), mp_context=ctx) as pool:
            futures = {pool.submit(_one, task, arm): arm for arm in arms}
            for fut in cf.as_completed(futures):
                arm = futures[fut]
                records[arm] = fut.result()
                if not quiet:
                    print(_line(records[arm]), flush=True)
        return {arm: records[arm] for arm in arms}
    bars = None
    if not quiet:
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            bars = Progress(
                TextColumn("pretrain {task.description:<8}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[msg]}"),
            )
        except ImportError:
            bars = None
    if bars is not None:
        bars.start()
    try:
        for arm in arms:
            cb = None
            if bars is not None:
                tid = bars.add_task(arm, total=task.pretrain_settings(arm).steps, msg="")

                def cb(step: int, total: int, msg: str, tid: Any = tid) -> None:
                    bars.update(tid, completed=step, msg=msg)  # type: ignore[union-attr]

            records[arm] = task.pretrain_one(arm, progress=cb)
            if bars is not None:
                bars.update(tid, completed=bars.tasks[-1].total, msg=_line(records[arm]))
            elif not quiet:
                print(_line(records[arm]), flush=True)
    finally:
        if bars is not None:
            bars.stop()
    return records


def _line(record: dict[str, Any]) -> str:
    h = record["heldout"]
    how = "cached" if record.get("cached") else f"{record['seconds'] / 60:.1f} min"
    return (
        f"pretrained {record['arm']}: held-out MLM loss {h['mlm_loss']:.3f}, "
        f"accuracy {100 * h['mlm_accuracy']:.1f} % ({how})"
    )


def _last(points: Sequence[Sequence[float]]) -> float | None:
    return float(points[-1][1]) if points else None


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def pretraining_markdown(records: dict[str, Any], command: str | None = None) -> str:
    """The pretraining table: per arm the rate at the first and last log, the last training and
    held-out (the arm's own masking) losses, and the fixed-mask held-out MLM loss and accuracy
    (the same 15 % token masks for every arm: the comparable figures)."""
    lines = ["### Pretraining (masked language modelling)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    first = next(iter(records.values()))
    s, e = first["settings"], first["encoder"]
    lines += [
        f"BERT d={e['hidden']} x{e['layers']}, vocabulary {e['vocab_size']}, {s['steps']} steps "
        f"of {s['batch_size']} texts (about {first['tokens_per_step'] * s['steps'] / 1e6:.2f} M "
        f"tokens), {first['train_texts']} training and {first['heldout_texts']} held-out texts; "
        "Hugging Face Trainer with MaskwiseTrainer + MaskwiseCallback.",
        "",
        "| arm | rate first -> last | train loss (last) | held-out loss, own masking (last) | "
        "held-out MLM loss, fixed 15 % masks | masked-token accuracy (%) | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, r in records.items():
        c = r["curves"]
        rates = c["rate"]
        rate = f"{rates[0][1]:.3f} -> {rates[-1][1]:.3f}" if rates else "-"
        h = r["heldout"]
        lines.append(
            f"| {arm} | {rate} | {_f(_last(c['train_loss']))} | {_f(_last(c['eval_loss']))} | "
            f"{h['mlm_loss']:.3f} | {100 * h['mlm_accuracy']:.1f} | {r['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(records: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    for arm, r in records.items():
        for ax, key in zip(axes, ("train_loss", "eval_loss", "rate")):
            pts = r["curves"][key]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=2, label=arm)
    titles = ("training MLM loss", "held-out MLM loss (the arm's own masking)", "masking rate")
    for ax, title in zip(axes, titles):
        ax.set(xlabel="step", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_pretraining(records: dict[str, Any], out: Path, command: str | None = None) -> None:
    """``out/pretrain.json``, ``out/pretrain.md`` and ``out/pretrain_curves.png``."""
    out.mkdir(parents=True, exist_ok=True)
    saved = {arm: {k: v for k, v in r.items() if k != "checkpoint"} for arm, r in records.items()}
    for arm, r in records.items():
        saved[arm]["checkpoint"] = Path(r["checkpoint"]).name  # the cache key, not a local path
    doc = {"command": command, "arms": saved}
    (out / "pretrain.json").write_text(json.dumps(finite_json(doc), indent=1))
    md = pretraining_markdown(records, command)
    if _plot(records, out / "pretrain_curves.png") is not None:
        md += "\n![pretraining curves](pretrain_curves.png)\n"
    (out / "pretrain.md").write_text(md)


def merge_runs(
    base: dict[str, Any], runs: Sequence[dict[str, Any]], *, setting: str | None = None
) -> dict[str, Any]:
    """``base`` (a results dict) with its runs replaced by ``runs``, its sweep and summary rows
    recomputed (and every run's ``setting`` set to ``setting`` when given)."""
    result = copy.deepcopy(base)
    result["runs"] = [dict(r) for r in runs]
    if setting is not None:
        result["setting"] = setting
        for r in result["runs"]:
            r["setting"] = setting
    result["settings"]["variants"] = list(dict.fromkeys(r["arm"] for r in result["runs"]))
    result["sweep"] = sweep_rows(result["metric"], result["runs"], result["settings"]["chosen"])
    result["summary"] = evidence_rows(result)
    result["plots"] = {}
    return result


def _write(result: dict[str, Any], out: Path) -> dict[str, Any]:
    return write_result(finite_json(result), out)


def _relabel(runs: Sequence[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    return [{**r, "arm": arm} for r in runs if r["role"] == "eval"]


def run(
    task: PretrainFinetune,
    *,
    variants: Sequence[str] = ("none", "static", "consistency", "dynamic"),
    rates: Sequence[float] | None = None,
    seeds: int = 5,
    tune_seeds: int = 2,
    jobs: int = 1,
    baseline_weight_decays: Sequence[float] | None = None,
    setting: str | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    quiet: bool = False,
    command: str | None = None,
    reuse: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Both stages (module docstring); returns the fine-tuning comparison (``finetune/``)."""
    out = Path(out) if out is not None else Path("runs") / task.name
    task.prepare(jobs=jobs, quiet=quiet)
    write_pretraining(task.records, out / "pretraining", command)
    if not quiet:
        print((out / "pretraining" / "pretrain.md").read_text(), flush=True)
    common = dict(
        rates=rates,
        seeds=seeds,
        tune_seeds=tune_seeds,
        jobs=jobs,
        data=data,
        quiet=quiet,
        command=command,
        reuse=reuse,
    )
    variants = list(dict.fromkeys(["none", *variants]))  # every comparison is against none
    main_task = task.variant(masker="mask")
    main = compare(
        main_task,
        variants=variants,
        baseline_weight_decays=baseline_weight_decays,
        setting=setting,
        out=out / "finetune",
        **common,  # type: ignore[arg-type]
    )
    if "static" in variants:  # dropped tokens: the static arm with the drop masker
        drop = compare(task.variant(masker="drop"), variants=["static"], **common)  # type: ignore[arg-type]
        dropped = [
            {**r, "arm": r["arm"].replace("static", "drop", 1)}
            for r in drop["runs"]
            if r["kind"] == "static"
        ]
        main = _write(merge_runs(main, main["runs"] + dropped), out / "finetune")
    none = [r for r in main["runs"] if r["kind"] == "none"]
    arms = _relabel(none, f"pretrained {task.init}" if task.init != "scratch" else "scratch")
    others = ["scratch", *task.pretrain_arms]
    for init in [i for i in others if i != task.init]:
        res = compare(task.variant(init=init, masker="mask"), variants=["none"], **common)  # type: ignore[arg-type]
        arms += _relabel(res["runs"], "scratch" if init == "scratch" else f"pretrained {init}")
    d = main_task.describe()
    both = merge_runs(
        main,
        arms,
        setting=f"{d['model']} from each pretraining arm, no fine-tuning masking, "
        f"{d['sizes']['train']} train examples",
    )
    _write(both, out / "pretraining-arms")
    # The fine-tuning comparison, its plots named from ``out`` (what ``maskwise run`` prints).
    return {**main, "plots": {k: f"finetune/{v}" for k, v in main["plots"].items()}}
