"""Per-item test statistics: each task's items add up to its own test metric (so an item-level
bootstrap tests the number the table shows), and the summary's item-level difference pools the
paired seeds and resamples items."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from maskwise.experiments.engine import TrainConfig, Variant, train_run
from maskwise.experiments.items import bleu_statistics, item_metric
from maskwise.experiments.metrics import bleu
from maskwise.experiments.summary import item_difference
from tests.experiments.synth import sentences, write_lines, write_text_dir

FEW = TrainConfig(epochs=1, max_steps=3)
CPU = torch.device("cpu")


def test_bleu_statistics_sum_to_sacrebleu_corpus_bleu() -> None:
    hyps = ["the cat sat on the mat", "a dog runs", "hello there world", ""]
    refs = [["the cat sat on a mat"], ["a dog ran"], ["hello world"], ["nothing"]]
    rows = np.asarray(bleu_statistics(hyps, refs))
    assert rows.shape == (4, 10)
    assert item_metric("bleu")(rows) == pytest.approx(bleu(hyps, refs))
    # pooled over seeds: the corpus of both seeds' outputs
    two = np.stack([rows, rows[[1, 0, 2, 3]]], axis=1)  # (items, seeds, stats)
    assert item_metric("bleu")(two) == pytest.approx(bleu(hyps * 2, refs * 2))


def test_item_metric_kinds() -> None:
    assert item_metric("mean")(np.array([1.0, 0.0, 1.0, 1.0])) == 0.75
    assert item_metric("perplexity")(np.array([[3.0, 2], [1.0, 2]])) == pytest.approx(math.e)
    with pytest.raises(ValueError, match="item kind must be one of"):
        item_metric("median")


def test_classification_items_add_up_to_the_test_accuracy(tmp_path: Path) -> None:
    from maskwise.experiments.tasks.text import TextClassification

    write_text_dir(tmp_path, n_train=40, n_dev=12, n_test=30)
    task = TextClassification(tmp_path, vocab_size=200, max_len=16, dim=16, layers=1)
    r = train_run(task, Variant("static", 0.2), 0, config=FEW)
    assert r.test_items is not None and r.test_items["kind"] == "mean"
    assert len(r.test_items["values"]) == 30 and set(r.test_items["values"]) <= {0, 1}
    assert np.mean(r.test_items["values"]) == pytest.approx(r.test["accuracy"])


def test_lm_items_add_up_to_the_test_perplexity(tmp_path: Path) -> None:
    from maskwise.experiments.tasks.lm import LanguageModeling
    from tests.experiments.test_lm import _sentences_file

    task = LanguageModeling(
        _sentences_file(tmp_path), dim=32, heads=2, layers=1, seq_len=32, batch_size=4
    )
    model = task.build_model().eval()
    items = task.item_scores(model, "test", CPU)
    assert items["kind"] == "perplexity" and len(items["values"]) == len(task.rows["test"])
    ppl = item_metric("perplexity")(np.asarray(items["values"]))
    assert ppl == pytest.approx(task.evaluate(model, "test", CPU)["perplexity"], rel=1e-5)


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_seq2seq_items_add_up_to_the_test_metric(tmp_path: Path, kind: str) -> None:
    import json

    from maskwise.experiments.tasks.seq2seq import summarization, translation

    tiny = {"dim": 32, "heads": 2, "layers": 1, "vocab_size": 200, "beam": 1}
    if kind == "translation":
        write_lines(tmp_path / "c.xx", sentences(60, 1))
        write_lines(tmp_path / "c.yy", [s.upper() for s in sentences(60, 1)])
        task = translation(tmp_path / "c.xx", src_lang="xx", tgt_lang="yy", **tiny)
    else:
        rows = [{"text": s * 2, "summary": s} for s in sentences(60, 2)]
        (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        task = summarization(tmp_path / "d.jsonl", **tiny)
    model = task.build_model().eval()
    refs = [r[0] for r in task.splits["test"].references]
    # fixed outputs that score neither 0 nor 100: each reference less its last word
    fixed = [" ".join(r.split()[:-1]) or "x" for r in refs]
    task.decode = lambda *args, **kwargs: fixed[: args[3] if len(args) > 3 else None]  # type: ignore[method-assign]
    items = task.item_scores(model, "test", CPU)
    metric = task.final_metrics(model, "test", CPU)[task.metric]
    assert 5.0 < metric < 100.0
    assert items["kind"] == ("bleu" if kind == "translation" else "mean")
    assert item_metric(items["kind"])(np.asarray(items["values"])) == pytest.approx(metric)


def _run(seed: int, values: list[float], items: str = "abc") -> dict:
    return {"seed": seed, "test_items": {"kind": "mean", "items": items, "values": values}}


def test_item_difference_pools_paired_seeds() -> None:
    base = {2: _run(2, [0, 0, 1, 1]), 3: _run(3, [0, 1, 1, 1]), 4: _run(4, [1, 1, 1, 1])}
    always = [_run(2, [1, 1, 1, 1]), _run(3, [1, 1, 1, 1])]  # seed 4: no masked run
    d = item_difference(always, base, higher_is_better=True)
    assert d is not None and (d["n"], d["seeds"]) == (4, 2)
    assert d["mean"] == pytest.approx(1.0 - 5 / 8)  # pooled accuracy over the paired seeds
    assert 0.0 <= d["ci_low"] < d["mean"] < d["ci_high"] <= 1.0  # 4 items: coarse
    assert d["method"] == "item bootstrap percentile"
    same = item_difference([base[2], base[3]], base, higher_is_better=True)
    assert same is not None and same["mean"] == same["ci_low"] == same["ci_high"] == 0.0
    # lower is better: the sign flips
    worse = item_difference(always, base, higher_is_better=False)
    assert worse is not None and worse["mean"] == pytest.approx(-d["mean"])
    assert item_difference([{"seed": 2}], base, True) is None  # nothing recorded
    assert item_difference([_run(2, [1, 1])], base, True) is None  # other items
    assert item_difference([_run(2, [1, 1, 1, 1], items="xyz")], base, True) is None
    # a diverged seed (NaN) is left out, the others still count
    nan = float("nan")
    d2 = item_difference([*always, _run(4, [nan, 1, 1, 1])], base, higher_is_better=True)
    assert d2 == d
    # seeds that scored different items (a held-out speaker per seed) are not pooled
    moved = {2: _run(2, [0, 0, 1, 1], "s2"), 3: _run(3, [0, 1, 1, 1], "s3")}
    spk = [_run(2, [1, 1, 1, 1], "s2"), _run(3, [1, 1, 1, 1], "s3")]
    assert item_difference(spk, moved, True) is None
