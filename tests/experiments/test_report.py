"""maskwise.experiments.report.compare and maskwise.experiments.summary: results.json follows the
documented schema (``maskwise.experiments/2``: runs with SPEC.md's fields and roles), the summary
rows are recomputed from the runs (checked against scipy's own paired t test), results.md holds
the tables, ``report`` writes summary.json / summary.md / forest.png, the plots are PNG files."""

from __future__ import annotations

import datetime
import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from maskwise.experiments.engine import TrainConfig
from maskwise.experiments.report import SCHEMA, compare, to_markdown
from maskwise.experiments.summary import SUMMARY_FIELDS, evidence_rows, report, rows_markdown
from maskwise.experiments.tasks.image import ImageClassification

PNG = b"\x89PNG\r\n\x1a\n"
TOP = {
    "schema",
    "task",
    "data",
    "setting",
    "metric",
    "higher_is_better",
    "item_name",
    "command",
    "machine",
    "created",
    "settings",
    "runs",
    "summary",
    "sweep",
    "plots",
}
RUN = {  # SPEC.md's fields, then the engine's
    "arm",
    "setting",
    "seed",
    "role",
    "train",
    "dev",
    "test",
    "best_epoch",
    "epochs_run",
    "seconds",
    "cpu_seconds",
    "kind",
    "budget",
    "task",
    "variant",
    "rate",
    "weight_decay",
    "gap",
    "epochs",
    "steps",
    "epoch_time_s",
    "items_per_s",
    "history",
    "samples",
    "test_items",
}


def strict_json(text: str) -> Any:
    """JSON as the standard defines it: NaN and Infinity are not numbers there."""

    def reject(name: str) -> None:
        raise ValueError(f"the file holds {name}, which is not valid JSON")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def comparison(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], Path, TrainConfig]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before the per-test autouse fixture of conftest.py
    try:
        out = tmp_path_factory.mktemp("compare")
        task = ImageClassification("digits", train_size=64)
        cfg = TrainConfig(epochs=2, max_steps=3, lr=2e-3)
        result = compare(
            task,
            variants=("none", "static", "schedule", "dynamic"),
            rates=(0.1, 0.3),
            seeds=3,
            tune_seeds=1,
            baseline_weight_decays=(0.01, 0.1),
            data="digits",
            out=out,
            config=cfg,
            command="maskwise test",
            quiet=True,
        )
    finally:
        torch.set_num_threads(threads)
    return result, out, cfg


def test_results_json_schema(comparison: tuple[dict[str, Any], Path, TrainConfig]) -> None:
    result, out, cfg = comparison
    saved = strict_json((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))  # the file is the returned dict
    assert set(saved) == TOP
    assert saved["schema"] == SCHEMA == "maskwise.experiments/2"
    assert (saved["task"], saved["metric"], saved["higher_is_better"], saved["item_name"]) == (
        "image-classification",
        "accuracy",
        True,
        "images",
    )
    assert saved["data"] == "digits"
    assert saved["setting"] == "ViT d=64 x2, 64 train images, masker patch"
    assert saved["command"] == "maskwise test"
    assert isinstance(saved["machine"], str) and saved["machine"]
    assert datetime.datetime.fromisoformat(saved["created"]).tzinfo is not None
    settings = saved["settings"]
    assert settings["train"] == asdict(cfg)
    assert settings["rates"] == [0.1, 0.3] and settings["baseline_weight_decays"] == [0.01, 0.1]
    assert settings["tune_seeds"] == [0] and settings["eval_seeds"] == [1, 2, 3]
    assert settings["variants"] == ["none", "static", "schedule", "dynamic"]
    assert settings["data"]["sizes"] == {"train": 64, "dev": 270, "test": 449}


def test_runs_have_roles_and_paired_eval_seeds(
    comparison: tuple[dict[str, Any], Path, TrainConfig],
) -> None:
    result = comparison[0]
    runs = result["runs"]
    tune = [r for r in runs if r["role"] == "tune"]
    evals = [r for r in runs if r["role"] == "eval"]
    # tuning: 2 weight decays, 2 static and 2 schedule rates on seed 0; dynamic has no sweep
    assert sorted(r["arm"] for r in tune) == sorted(
        ["none wd 0.01", "none wd 0.1", "static 0.1", "static 0.3", "schedule 0.1", "schedule 0.3"]
    )
    assert {r["seed"] for r in tune} == {0}
    assert len(evals) == 4 * 3
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in evals:
        by_kind.setdefault(r["kind"], []).append(r)
    assert {k: [r["seed"] for r in rs] for k, rs in by_kind.items()} == {
        k: [1, 2, 3] for k in ("none", "static", "schedule", "dynamic")
    }  # fresh seeds, the same for every arm, never a tuning seed
    for kind, rs in by_kind.items():
        assert len({r["arm"] for r in rs}) == 1  # one chosen setting per arm
        cands = [r for r in tune if r["kind"] == kind]
        if cands:  # the chosen one has the best dev metric (test never looked at)
            best = max(cands, key=lambda r: r["dev"]["accuracy"])
            assert rs[0]["arm"] == best["arm"]
            assert result["settings"]["chosen"][kind] == best["arm"]
    for r in runs:
        assert set(r) == RUN
        assert r["setting"] == result["setting"] and r["budget"] == 2
        assert r["epochs_run"] == r["epochs"] == len(r["history"]) == 2
        assert r["seconds"] >= r["epoch_time_s"] > 0
        assert 1 <= r["best_epoch"] <= r["epochs_run"]
        assert r["gap"] == pytest.approx(r["train"]["accuracy"] - r["test"]["accuracy"])
        assert all(("rate" in h) == (r["kind"] != "none") for h in r["history"])
    none_eval = by_kind["none"][0]
    assert none_eval["weight_decay"] in (0.01, 0.1)  # the tuned weight decay is what it ran


def test_summary_rows_recomputed_from_the_runs(
    comparison: tuple[dict[str, Any], Path, TrainConfig],
) -> None:
    import scipy.stats

    result = comparison[0]
    rows = result["summary"]
    evals = [r for r in result["runs"] if r["role"] == "eval"]
    base = {r["seed"]: r["test"]["accuracy"] for r in evals if r["kind"] == "none"}
    assert [row["kind"] for row in rows] == ["none", "static", "schedule", "dynamic"]
    for row in rows:
        assert set(SUMMARY_FIELDS) <= set(row)
        mine = [r for r in evals if r["arm"] == row["arm"]]
        test = [r["test"]["accuracy"] for r in mine]
        assert row["n_seeds"] == 3
        assert row["mean"] == pytest.approx(statistics.fmean(test))
        assert row["std"] == pytest.approx(statistics.stdev(test))
        assert row["baseline_best_epoch_fraction"] == pytest.approx(
            statistics.fmean(r["best_epoch"] / 2 for r in evals if r["kind"] == "none")
        )
        tune_s = sum(
            r["cpu_seconds"]
            for r in result["runs"]
            if r["role"] == "tune" and r["kind"] == row["kind"]
        )
        assert row["compute_s"] == pytest.approx(sum(r["cpu_seconds"] for r in mine) + tune_s)
        assert row["tuning_runs"] == (0 if row["kind"] == "dynamic" else 2)
        if row["kind"] == "none":
            assert row["diff"] is None and row["verdict"] is None
            continue
        masked = [r["test"]["accuracy"] for r in sorted(mine, key=lambda r: r["seed"])]
        baseline = [base[s] for s in sorted(base)]
        d = [m - b for m, b in zip(masked, baseline)]
        assert row["diff"]["mean"] == pytest.approx(statistics.fmean(d))
        assert row["diff"]["method"] == "paired t" and row["diff"]["n"] == 3
        if statistics.pstdev(d) > 0:  # scipy's own paired t interval is the reference
            ci = scipy.stats.ttest_rel(masked, baseline).confidence_interval(0.95)
            assert (row["diff"]["ci_low"], row["diff"]["ci_high"]) == pytest.approx(
                (ci.low, ci.high)
            )
        expected = (
            "helps"
            if row["diff"]["ci_low"] > 0
            else "hurts"
            if row["diff"]["ci_high"] < 0
            else "no effect"
        )
        assert row["verdict"] == expected
    assert evidence_rows(result) == rows  # the same function, from the saved runs


def test_sweep_marks_the_best_dev_candidate(
    comparison: tuple[dict[str, Any], Path, TrainConfig],
) -> None:
    result = comparison[0]
    sweep = result["sweep"]
    for kind in ("none", "static", "schedule"):
        rows = [row for row in sweep if row["kind"] == kind]
        assert len(rows) == 2 and sum(row["chosen"] for row in rows) == 1
        chosen = next(row for row in rows if row["chosen"])
        assert chosen["dev_mean"] == max(row["dev_mean"] for row in rows)
        assert chosen["arm"] == result["settings"]["chosen"][kind]


def _runs(kind: str, arm: str, tests: list[float], *, role: str = "eval") -> list[dict]:
    return [
        {
            "arm": arm,
            "kind": kind,
            "setting": "s",
            "seed": seed,
            "role": role,
            "train": {"ppl": 5.0},
            "dev": {"ppl": t},
            "test": {"ppl": t},
            "gap": t - 5.0,
            "best_epoch": 2,
            "budget": 4,
            "seconds": 10.0,
            "cpu_seconds": 8.0,
        }
        for seed, t in enumerate(tests, start=2)
    ]


def test_rows_lower_is_better_diverged_runs_and_unequal_seeds() -> None:
    nan = float("nan")
    result = {
        "task": "lm",
        "metric": "ppl",
        "higher_is_better": False,
        "runs": _runs("none", "none", [10.0, 11.0, 12.0, 13.0])
        + _runs("static", "static 0.1", [9.0, 10.5, nan, 12.0])  # seed 4 diverged
        + _runs("static", "static 0.2", [9.0, 9.0], role="tune")
        + _runs("dynamic", "dynamic", [10.0, nan]),  # one usable pair only
    }
    rows = evidence_rows(result)
    none, static, dynamic = rows
    assert (
        none["diff"] is None
        and none["n_seeds"] == 4
        and none["std"] == pytest.approx(statistics.stdev([10.0, 11.0, 12.0, 13.0]))
    )
    # perplexity: lower is better, so the differences are baseline - masked = 1, 0.5, 1
    assert static["n_seeds"] == 3 and static["failed_seeds"] == 1
    assert static["diff"]["mean"] == pytest.approx(2.5 / 3) and static["diff"]["n"] == 3
    assert static["mean"] == pytest.approx(statistics.fmean([9.0, 10.5, 12.0]))
    assert static["compute_s"] == 6 * 8.0 and static["tuning_runs"] == 2
    assert static["baseline_best_epoch_fraction"] == 0.5
    assert dynamic["diff"] is None and dynamic["verdict"] is None and dynamic["std"] is None
    md = rows_markdown(rows)
    assert "(1 diverged)" in md and "| - | - |" in md  # no interval, no verdict, not a crash
    json.dumps(rows, allow_nan=False)  # strict JSON as they are
    no_base = evidence_rows({**result, "runs": result["runs"][4:]})
    assert all(row["diff"] is None for row in no_base)
    assert no_base[0]["baseline_best_epoch_fraction"] is None


def test_results_markdown_shows_each_arms_samples_of_the_first_eval_seed() -> None:
    from maskwise.experiments.report import _samples_markdown

    def run(arm: str, seed: int, role: str, output: str) -> dict[str, Any]:
        item = {"input": "Wie geht`s?\nGut.", "reference": "How are you?", "output": output}
        return {"arm": arm, "seed": seed, "role": role, "samples": [item]}

    runs = [
        run("static 0.1", 0, "tune", "tuning output"),
        run("none", 3, "eval", "later seed"),
        run("none", 2, "eval", "how are you?"),
        run("static 0.1", 2, "eval", "how is it?"),
    ]
    assert _samples_markdown(runs) == [
        "",
        "Sample outputs on fixed test items (evaluation seed 2, every arm):",
        "",
        "1. input: `` Wie geht`s?⏎Gut. ``  ",
        "   reference: `` How are you? ``  ",
        "   none: `` how are you? ``  ",
        "   static 0.1: `` how is it? ``  ",
    ]
    assert _samples_markdown([{**r, "samples": []} for r in runs]) == []


def test_results_markdown_and_plots(comparison: tuple[dict[str, Any], Path, TrainConfig]) -> None:
    result, out, _ = comparison
    assert result["plots"] == {"dynamic_rate": "dynamic_rate.png", "curves": "curves.png"}
    for file in result["plots"].values():
        data = (out / file).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    md = (out / "results.md").read_text()
    assert md.startswith(to_markdown(result))
    assert rows_markdown(result["summary"]).strip() in md
    assert "| arm | runs | dev accuracy (%) | test accuracy (%) | gap (%) | chosen |" in md
    assert "![curves](curves.png)" in md and "![dynamic_rate](dynamic_rate.png)" in md
    header = (out / "dynamic_monitor.csv").read_text().splitlines()[0].split(",")
    assert {"step", "rate", "masked_fraction"} <= set(header)


def test_report_writes_summary_json_markdown_and_forest_plot(
    comparison: tuple[dict[str, Any], Path, TrainConfig], tmp_path: Path
) -> None:
    _, out, _ = comparison
    rows = report([out, out / "results.json"], tmp_path / "summary")  # a folder or its file
    saved = strict_json((tmp_path / "summary" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    assert len(rows) == 8 and all(set(SUMMARY_FIELDS) <= set(r) for r in rows)
    assert (tmp_path / "summary" / "forest.png").read_bytes().startswith(PNG)
    md = (tmp_path / "summary" / "summary.md").read_text()
    assert md.startswith(rows_markdown(rows)) and "![paired differences](forest.png)" in md


def test_report_refuses_results_from_before_the_protocol(tmp_path: Path) -> None:
    legacy = {"task": "t", "metric": "accuracy", "higher_is_better": True, "runs": [{"seed": 0}]}
    (tmp_path / "results.json").write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match="before the evidence protocol"):
        report([tmp_path])
    with pytest.raises(ValueError, match="no results.json"):
        report([tmp_path / "missing"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable results file"):
        report([tmp_path / "bad"])


def test_reuse_takes_the_same_runs_and_trains_only_the_new_arm(
    comparison: tuple[dict[str, Any], Path, TrainConfig], tmp_path: Path
) -> None:
    import torch

    from maskwise.experiments import protocol

    first, out, cfg = comparison
    trained: list[str] = []
    real = protocol.train_run

    def counting(task: Any, variant: Any, seed: int, **kwargs: Any) -> Any:
        trained.append(f"{variant.label} seed {seed}")
        return real(task, variant, seed, **kwargs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(protocol, "train_run", counting)
            again = compare(
                ImageClassification("digits", train_size=64),
                variants=("none", "static", "dynamic", "dynamic:gap"),
                rates=(0.1, 0.3),
                seeds=3,
                tune_seeds=1,
                baseline_weight_decays=(0.01, 0.1),
                data="digits",
                out=tmp_path / "again",
                config=cfg,
                command="maskwise test again",
                quiet=True,
                reuse=[out],
            )
            other = compare(  # other training settings: nothing is the same run
                ImageClassification("digits", train_size=64),
                variants=("none",),
                seeds=1,
                tune_seeds=0,
                config=TrainConfig(epochs=2, max_steps=2, lr=2e-3),
                quiet=True,
                reuse=[out],
            )
    finally:
        torch.set_num_threads(threads)
    # Only the new arm trained: 3 evaluation seeds of dynamic gap (then the other settings' run).
    assert trained == [f"dynamic gap seed {s}" for s in (1, 2, 3)] + ["none seed 0"]
    assert other["settings"]["reused"]["runs"] == 0
    reused = [r for r in again["runs"] if "reused_from" in r]
    assert len(reused) == 13 and {r["reused_from"] for r in reused} == {str(out)}
    assert again["settings"]["reused"] == {"from": [str(out)], "runs": 13}
    # A reused run is the stored run; the shared arms' rows are the same numbers.
    key = ("arm", "seed", "role")
    stored = {tuple(r[k] for k in key): r for r in first["runs"]}
    for r in reused:
        original = stored[tuple(r[k] for k in key)]
        assert {k: v for k, v in r.items() if k != "reused_from"} == original
    rows = {row["arm"]: row for row in first["summary"]}
    for row in again["summary"]:
        if row["arm"] in ("none wd 0.01", "none wd 0.1", "static 0.1", "static 0.3", "dynamic"):
            assert (
                row["diff"] == rows[row["arm"]]["diff"] and row["mean"] == rows[row["arm"]]["mean"]
            )
    assert "Reused: 13 of 16 runs taken from" in (tmp_path / "again" / "results.md").read_text()


def test_report_on_another_recorded_metric(
    comparison: tuple[dict[str, Any], Path, TrainConfig],
) -> None:
    result, out, _ = comparison
    rows = report([out], metric="loss")
    assert {r["metric"] for r in rows} == {"loss"} and not any(r["higher_is_better"] for r in rows)
    assert all(r["item_diff"] is None for r in rows)  # the items are the accuracy's
    evals = [r for r in result["runs"] if r["role"] == "eval"]
    base = {r["seed"]: r["test"]["loss"] for r in evals if r["kind"] == "none"}
    static = next(r for r in rows if r["kind"] == "static")
    mine = [r for r in evals if r["arm"] == static["arm"]]
    want = statistics.fmean(base[r["seed"]] - r["test"]["loss"] for r in mine)  # lower: better
    assert static["diff"]["mean"] == pytest.approx(want)
    assert report([out], metric="accuracy") == report([out])  # the folder's own metric
    with pytest.raises(ValueError, match="no test 'bleu_beam'"):
        report([out], metric="bleu_beam")


def test_report_against_another_arm(comparison: tuple[dict[str, Any], Path, TrainConfig]) -> None:
    result, out, _ = comparison
    evals = [r for r in result["runs"] if r["role"] == "eval"]
    static_arm = next(r["arm"] for r in evals if r["kind"] == "static")
    for against in ("static", static_arm):  # a kind (its tuned arm) or the arm's label
        rows = report([out], against=against)
        assert rows[0]["arm"] == static_arm and rows[0]["diff"] is None
        assert {r["against"] for r in rows} == {static_arm}
    ref = {r["seed"]: r["test"]["accuracy"] for r in evals if r["arm"] == static_arm}
    none = next(r for r in rows if r["kind"] == "none")
    mine = [r for r in evals if r["kind"] == "none"]
    want = statistics.fmean(r["test"]["accuracy"] - ref[r["seed"]] for r in mine)
    assert none["diff"]["mean"] == pytest.approx(want)
    assert none["verdict"] in ("better", "within noise", "worse")
    # the unmasked arm's best-epoch fraction is still the baseline's
    plain = {r["arm"]: r for r in report([out])}
    assert (
        none["baseline_best_epoch_fraction"] == plain[none["arm"]]["baseline_best_epoch_fraction"]
    )
    assert none["compute_s"] == plain[none["arm"]]["compute_s"]
    md = rows_markdown(rows)
    assert "paired diff to the reference arm" in md and f"{static_arm} (reference)" in md
    with pytest.raises(ValueError, match="no evaluated arm 'consistency 0.9'"):
        report([out], against="consistency 0.9")
