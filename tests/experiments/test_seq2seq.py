"""Translation and summarization (one Seq2SeqTask): end to end for a few steps on slices of the
shared data and on synthetic files; decoding a briefly trained model gives words; the metrics
are those of the task."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from maskwise.experiments.engine import Task, TrainConfig, Variant, train_run
from maskwise.experiments.report import setting_of
from maskwise.experiments.tasks.seq2seq import (
    SUMMARIZATION_DEFAULTS,
    TRANSLATION_DEFAULTS,
    summarization,
    translation,
)
from tests.experiments.synth import WORDS, sentences, shared, write_lines

FEW = TrainConfig(epochs=1, max_steps=3)
TINY_S2S = {
    "dim": 32,
    "heads": 2,
    "layers": 1,
    "batch_size": 8,
    "vocab_size": 200,
    "select_size": 8,
    "train_eval_size": 8,
}


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def _slice_gz(src: Path, dst: Path, n: int) -> None:
    with gzip.open(src, "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(n)]
    write_lines(dst, lines)


def test_the_two_tasks_share_one_class_and_differ_in_their_configs(tmp_path: Path) -> None:
    mt = tmp_path / "mt"
    for split, n in (("train", 40), ("val", 6), ("test", 6)):
        write_lines(mt / f"{split}.xx", sentences(n, 1))
        write_lines(mt / f"{split}.yy", [s.upper() for s in sentences(n, 1)])
    summ = tmp_path / "summ.jsonl"
    summ.write_text("".join(json.dumps({"text": s * 3, "summary": s}) + "\n" for s in WORDS * 3))
    a = translation(mt, src_lang="xx", tgt_lang="yy", vocab_size=100)
    b = summarization(summ, vocab_size=100)
    assert type(a) is type(b) and isinstance(a, Task) and isinstance(b, Task)
    assert (a.name, a.metric, b.name, b.metric) == (
        "translation",
        "bleu",
        "summarization",
        "rougeL",
    )
    assert a.config.max_src == TRANSLATION_DEFAULTS.max_src == 40
    assert b.config.max_src == SUMMARIZATION_DEFAULTS.max_src == 128
    assert (a.config.no_repeat_ngram, b.config.no_repeat_ngram) == (0, 4)
    assert a.controller is not b.controller and a.controller.target != b.controller.target
    with pytest.raises(TypeError, match="max_source"):
        translation(mt, src_lang="xx", tgt_lang="yy", max_source=3)


def test_translation_on_a_slice_of_multi30k(tmp_path: Path) -> None:
    root = shared("mt", "multi30k")
    for split, n in (("train", 120), ("val", 16), ("test_2016_flickr", 16)):
        for lang in ("de", "en"):
            _slice_gz(root / f"{split}.{lang}.gz", tmp_path / f"{split}.{lang}.gz", n)
    task = translation(tmp_path, **TINY_S2S, max_src=24, max_tgt=24)
    assert task.describe()["sizes"] == {"train": 120, "dev": 16, "test": 16}
    for variant in (Variant("none"), Variant("dynamic")):
        r = train_run(task, variant, 0, config=FEW)
        assert r.steps == 3 and _finite(r.test) and set(r.test) == {"loss", "bleu", "bleu_beam"}
        assert set(r.train) == {"loss", "bleu"}  # beam search on dev and test only
        assert 0.0 <= r.test["bleu"] <= 100.0 and 0.0 <= r.test["bleu_beam"] <= 100.0
    test = task.splits["test"]
    assert [(x["input"], x["reference"]) for x in r.samples] == [
        (test.sources[i], test.references[i][0]) for i in range(3)
    ]
    model = task.build_model().eval()
    hyps = task.decode(model, "test", torch.device("cpu"), limit=4)
    assert [x["output"] for x in task.samples(model, torch.device("cpu"))] == hyps[:3]
    beams = task.decode(model, "test", torch.device("cpu"), limit=4, beam=3)
    assert len(beams) == 4 and all(isinstance(h, str) for h in beams)
    metrics = task.final_metrics(model, "test", torch.device("cpu"), limit=4)
    refs = task.splits["test"].references[:4]
    assert (
        metrics["bleu_beam"]
        == task.score(task.decode(model, "test", "cpu", 4, beam=4), refs)["bleu"]
    )
    assert len(hyps) == 4 and all(isinstance(h, str) for h in hyps)


def test_translation_on_a_file_pair(tmp_path: Path) -> None:
    src, tgt = sentences(60, 1), [s.upper() for s in sentences(60, 1)]
    write_lines(tmp_path / "corpus.xx", src)
    write_lines(tmp_path / "corpus.yy", tgt)
    task = translation(tmp_path / "corpus.xx", src_lang="xx", tgt_lang="yy", **TINY_S2S)
    assert task.describe()["sizes"] == {"train": 54, "dev": 3, "test": 3}
    assert train_run(task, Variant("static", 0.2), 0, config=FEW).steps == 3


@pytest.mark.parametrize(
    ("side", "src_masked", "tgt_masked"),
    [("both", True, True), ("source", True, False), ("target", False, True)],
)
def test_mask_side_masks_only_that_side(
    tmp_path: Path, side: str, src_masked: bool, tgt_masked: bool
) -> None:
    from maskwise.experiments.tokenizers import MASK
    from maskwise.nn import DynamicMask

    src, tgt = sentences(60, 1), [s.upper() for s in sentences(60, 1)]
    write_lines(tmp_path / "corpus.xx", src)
    write_lines(tmp_path / "corpus.yy", tgt)
    task = translation(
        tmp_path / "corpus.xx", src_lang="xx", tgt_lang="yy", mask_side=side, **TINY_S2S
    )
    assert task.describe()["masking"].startswith("[MASK] over")
    masked = {"both": "source + decoder inputs", "source": "source", "target": "decoder inputs"}
    assert setting_of(task).endswith(f", 54 train pairs, masking {masked[side]}")
    seen = {}

    def capture(model, src, src_len, tgt_in, tgt_len):  # type: ignore[no-untyped-def]
        seen["src"], seen["tgt"] = src, tgt_in
        return type(task).logits(model, src, src_len, tgt_in, tgt_len)

    task.logits = capture  # type: ignore[method-assign]
    batch = next(iter(task.train_batches(0, torch.Generator().manual_seed(0))))
    masker = DynamicMask(task.make_masker(0.5, seed=0), 0.5).train()
    task.train_step(task.build_model(), masker, batch, torch.device("cpu"))
    assert bool((seen["src"] == MASK).any()) == src_masked
    assert bool((seen["tgt"] == MASK).any()) == tgt_masked
    with pytest.raises(ValueError, match="mask_side must be one of"):
        translation(tmp_path / "corpus.xx", src_lang="xx", tgt_lang="yy", mask_side="decoder")
    with pytest.raises(ValueError, match="dim must be a positive multiple of heads=4"):
        translation(tmp_path / "corpus.xx", src_lang="xx", tgt_lang="yy", dim=30)


def test_decoding_produces_text(tmp_path: Path) -> None:
    """A tiny model trained briefly on a copy task (words -> upper case) decodes to words."""
    src = sentences(400, 2)
    for split, sl in (
        ("train", slice(0, 360)),
        ("val", slice(360, 380)),
        ("test", slice(380, 400)),
    ):
        write_lines(tmp_path / f"{split}.xx", src[sl])
        write_lines(tmp_path / f"{split}.yy", [s.upper() for s in src[sl]])
    task = translation(
        tmp_path,
        src_lang="xx",
        tgt_lang="yy",
        dim=32,
        heads=2,
        layers=1,
        batch_size=16,
        vocab_size=200,
        max_src=12,
        max_tgt=12,
        select_size=20,
        train_eval_size=20,
    )
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(6):
        model.train()
        for batch in task.train_batches(epoch, torch.Generator().manual_seed(epoch)):
            loss = task.train_step(model, None, batch, torch.device("cpu")).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    hyps = task.decode(model, "test", torch.device("cpu"))
    assert len(hyps) == 20 and all(h.strip() for h in hyps)
    vocab = {w.upper() for w in WORDS}
    assert sum(w in vocab for h in hyps for w in h.split()) >= len(hyps)  # real words, detokenised
    assert task.final_metrics(model, "test", torch.device("cpu"))["bleu"] > 0


@pytest.mark.parametrize(
    ("name", "files", "fields"),
    [
        ("scitldr", ("train.jsonl", "dev.jsonl", "test.jsonl"), ("source", "target")),
        (
            "dialogsum",
            ("dialogsum.train.jsonl", "dialogsum.dev.jsonl", "dialogsum.test.jsonl"),
            ("dialogue", "summary"),
        ),
    ],
)
def test_summarization_on_slices_of_scitldr_and_dialogsum(
    tmp_path: Path, name: str, files: tuple[str, ...], fields: tuple[str, str]
) -> None:
    root = shared("summarization", name)
    for f, n in zip(files, (60, 10, 10)):
        with open(root / f, encoding="utf-8") as fh:
            (tmp_path / f).write_text("".join(next(fh) for _ in range(n)), encoding="utf-8")
    task = summarization(tmp_path, **TINY_S2S, max_src=64, max_tgt=24)
    assert task.describe()["data"] == f"{tmp_path} ({fields[0]} -> {fields[1]})"
    assert task.describe()["sizes"] == {"train": 60, "dev": 10, "test": 10}
    assert max(len(r) for r in task.splits["test"].references) > 1  # several references
    r = train_run(task, Variant("dynamic"), 0, config=FEW)
    assert r.steps == 3 and _finite(r.test)
    assert set(r.test) == {
        "loss",
        "rouge1",
        "rouge2",
        "rougeL",
        "rouge1_max",
        "rouge2_max",
        "rougeL_max",
        "rouge1_mean",
        "rouge2_mean",
        "rougeL_mean",
        "rougeL_beam",
    }
    assert r.test["rougeL_max"] >= r.test["rougeL_mean"] - 1e-9
    assert r.test["rougeL_max"] >= r.test["rougeL"] - 1e-9


def test_summarization_fields_and_a_single_file(tmp_path: Path) -> None:
    rows = [{"doc": s, "tldr": [s.split()[0]], "other": 1} for s in sentences(40, 3)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="--source-field"):
        summarization(path, **TINY_S2S)
    task = summarization(path, source_field="doc", target_field="tldr", **TINY_S2S)
    assert task.describe()["sizes"] == {"train": 36, "dev": 2, "test": 2}
    assert train_run(task, Variant("none"), 0, config=FEW).steps == 3
