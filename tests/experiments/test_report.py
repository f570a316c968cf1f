"""maskwise.experiments.report.compare: results.json follows the documented schema
(``maskwise.experiments/1``), results.md holds the tables, the plots are PNG files."""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from maskwise.experiments.engine import TrainConfig
from maskwise.experiments.report import SCHEMA, compare, to_markdown
from maskwise.experiments.tasks.image import ImageClassification

PNG = b"\x89PNG\r\n\x1a\n"
TOP = {
    "schema",
    "task",
    "metric",
    "higher_is_better",
    "item_name",
    "command",
    "machine",
    "created",
    "settings",
    "runs",
    "summary",
    "plots",
}
RUN = {
    "variant",
    "rate",
    "seed",
    "train",
    "dev",
    "test",
    "gap",
    "best_epoch",
    "epochs",
    "steps",
    "epoch_time_s",
    "items_per_s",
    "history",
}
SUMMARY = {
    "variant",
    "rate",
    "chosen",
    "n",
    "test_mean",
    "test_std",
    "dev_mean",
    "dev_std",
    "train_mean",
    "gap_mean",
    "gap_std",
    "best_epoch_mean",
    "epoch_time_s",
    "items_per_s",
}


def strict_json(text: str) -> Any:
    """JSON as the standard defines it: NaN and Infinity are not numbers there."""

    def reject(name: str) -> None:
        raise ValueError(f"results.json holds {name}, which is not valid JSON")

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
            seeds=2,
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
    assert saved["schema"] == SCHEMA == "maskwise.experiments/1"
    assert (saved["task"], saved["metric"], saved["higher_is_better"], saved["item_name"]) == (
        "image-classification",
        "accuracy",
        True,
        "images",
    )
    assert saved["command"] == "maskwise test"
    assert isinstance(saved["machine"], str) and saved["machine"]
    assert datetime.datetime.fromisoformat(saved["created"]).tzinfo is not None
    settings = saved["settings"]
    assert set(settings) == {"data", "train", "controller", "rates", "seeds", "variants"}
    assert settings["train"] == asdict(cfg)
    assert settings["rates"] == [0.1, 0.3] and settings["seeds"] == [0, 1]
    assert settings["variants"] == ["none", "static", "schedule", "dynamic"]
    assert settings["data"]["sizes"] == {"train": 64, "dev": 270, "test": 449}
    assert settings["controller"]["initial_rate"] == 0.1


def test_results_runs(comparison: tuple[dict[str, Any], Path, TrainConfig]) -> None:
    runs = comparison[0]["runs"]
    # none, static x 2 rates, schedule x 2 rates, dynamic; 2 seeds each
    assert len(runs) == 12
    assert sorted((r["variant"], r["rate"], r["seed"]) for r in runs) == sorted(
        [
            (v, rate, s)
            for v, rate in [
                ("none", 0.0),
                ("static", 0.1),
                ("static", 0.3),
                ("schedule", 0.1),
                ("schedule", 0.3),
                ("dynamic", 0.1),
            ]
            for s in (0, 1)
        ]
    )
    for r in runs:
        assert RUN <= set(r)
        for split in ("train", "dev", "test"):
            assert set(r[split]) >= {"accuracy", "loss"}
            assert all(isinstance(v, float) for v in r[split].values())
        assert r["gap"] == pytest.approx(r["train"]["accuracy"] - r["test"]["accuracy"])
        assert isinstance(r["best_epoch"], int) and 1 <= r["best_epoch"] <= r["epochs"]
        assert r["steps"] == 3 and r["epochs"] == 2  # 2 batches of 32 per epoch, max_steps 3
        assert r["epoch_time_s"] > 0 and r["items_per_s"] > 0
        assert [h["epoch"] for h in r["history"]] == [1, 2]
        for h in r["history"]:
            assert {"epoch", "step", "train_loss", "dev_accuracy", "dev_loss"} <= set(h)
            assert ("rate" in h) == (r["variant"] != "none")


def test_results_summary(comparison: tuple[dict[str, Any], Path, TrainConfig]) -> None:
    summary = comparison[0]["summary"]
    assert [(row["variant"], row["rate"]) for row in summary] == [
        ("none", 0.0),
        ("static", 0.1),
        ("static", 0.3),
        ("schedule", 0.1),
        ("schedule", 0.3),
        ("dynamic", 0.1),
    ]
    for row in summary:
        assert SUMMARY <= set(row)
        assert isinstance(row["chosen"], bool) and row["n"] == 2
        assert all(math.isfinite(row[k]) for k in SUMMARY - {"variant", "chosen"})
    for variant in ("static", "schedule"):
        rows = [row for row in summary if row["variant"] == variant]
        chosen = [row for row in rows if row["chosen"]]
        assert len(chosen) == 1  # one chosen row per swept variant
        assert chosen[0]["dev_mean"] == max(row["dev_mean"] for row in rows)
    assert all(row["chosen"] for row in summary if row["variant"] in ("none", "dynamic"))
    assert math.isfinite(summary[-1]["rate_final_mean"])


def test_results_markdown_and_plots(comparison: tuple[dict[str, Any], Path, TrainConfig]) -> None:
    result, out, _ = comparison
    assert result["plots"] == {"dynamic_rate": "dynamic_rate.png", "curves": "curves.png"}
    for file in result["plots"].values():
        data = (out / file).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    md = (out / "results.md").read_text()
    assert md.startswith(to_markdown(result))
    assert (
        "| variant | rate | test accuracy (%) | train - test gap (%) | dev accuracy (%) "
        "| best epoch | s / epoch | images / s |"
    ) in md
    assert "| variant | rate | dev accuracy (%) | test accuracy (%) | gap (%) | chosen |" in md
    assert "![curves](curves.png)" in md and "![dynamic_rate](dynamic_rate.png)" in md
    table = md.split("Sweep")[0]
    assert (
        sum(line.startswith("| static |") for line in table.splitlines()) == 1
    )  # only the chosen rate
    header = (out / "dynamic_monitor.csv").read_text().splitlines()[0].split(",")
    assert {"step", "rate", "masked_fraction"} <= set(header)
