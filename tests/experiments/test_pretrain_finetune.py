"""``maskwise run pretrain-finetune``: the pretraining arms' collators do what they claim, a
checkpoint is cached by its settings and not trained again, both stages run end to end on small
slices (CLI and ``maskwise report``), bad input is refused with a message, and the fine-tuning
step runs in a real ``lightning.Trainer`` with ``MaskwiseLightningCallback``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from maskwise.experiments.pretraining import (  # noqa: E402
    PRETRAIN_ARMS,
    EncoderConfig,
    PretrainConfig,
    encode_mlm,
    make_collator,
    pretrain,
)
from maskwise.experiments.tasks.pretrain import PretrainFinetune, read_corpus  # noqa: E402
from maskwise.experiments.tokenizers import train_wordpiece  # noqa: E402
from tests.experiments.synth import sentences, write_text, write_text_dir  # noqa: E402

# Long made-up words, so a small WordPiece vocabulary cuts them into several pieces.
LONG = ["xylophonic", "quarrelsome", "zebrafishes", "unbelievably", "marmalades", "kryptonite"]


def _corpus(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in sentences(n, seed):
        pick = torch.randint(len(LONG), (2,), generator=g).tolist()
        out.append(f"{s} {LONG[pick[0]]} {LONG[pick[1]]}")
    return out


@pytest.fixture(autouse=True)
def _cache_in_tmp(cache_dir: Path) -> None:
    """Tokenizers and checkpoints go to the test's folder ($MASKWISE_CACHE), never ~/.cache."""


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_wordpiece(_corpus(200), 60)


def _examples(tokenizer: Any, n: int = 200) -> list[dict[str, list[int]]]:
    return encode_mlm(tokenizer, _corpus(n, seed=1), 64)


def test_decay_arm_is_30_percent_at_step_0_and_15_at_the_end(tokenizer: Any) -> None:
    collator, controller = make_collator(PretrainConfig("decay", steps=100), 60)
    assert controller is None
    examples = _examples(tokenizer)
    fractions = []
    for step, expected in ((0, 0.30), (50, 0.225), (100, 0.15), (500, 0.15)):
        collator.set_step(step)
        assert collator.rate == pytest.approx(expected)
        batch = collator([dict(e) for e in examples])
        maskable = (batch["attention_mask"] == 1) & (batch["input_ids"] != 2)  # not [CLS]
        maskable &= torch.roll(batch["attention_mask"], -1, 1) == 1  # nor [SEP] (last real)
        fractions.append(float((batch["labels"] != -100).sum() / maskable.sum()))
    assert fractions[0] == pytest.approx(0.30, abs=0.04)
    assert fractions[2] == pytest.approx(0.15, abs=0.03)


def test_word_arm_masks_whole_words_and_token_arm_does_not(tokenizer: Any) -> None:
    examples = _examples(tokenizer)
    words = [torch.tensor(e["word_ids"]) for e in examples]
    assert any(int((w == w.max()).sum()) > 1 for w in words), "no word of several pieces"

    def split_words(arm: str) -> tuple[int, int]:
        collator, _ = make_collator(PretrainConfig(arm, seed=3), 60)
        batch = collator([dict(e) for e in examples])
        labelled = batch["labels"] != -100
        split = masked = 0
        for i, w in enumerate(words):
            row = labelled[i, : len(w)]
            for word in w[w >= 0].unique():
                picked = row[w == word]
                masked += int(picked.any())
                split += int(picked.any() and not picked.all())
        return split, masked

    split, masked = split_words("word")
    assert masked > 20 and split == 0  # every masked word is masked whole
    split, masked = split_words("token")
    assert split > 0  # token masking does cut words (so the check above can fail)


def test_span_arm_masks_runs_longer_than_single_tokens(tokenizer: Any) -> None:
    examples = _examples(tokenizer, 300)

    def mean_run(arm: str) -> float:
        collator, _ = make_collator(PretrainConfig(arm, seed=5), 60)
        labelled = collator([dict(e) for e in examples])["labels"] != -100
        starts = labelled & ~torch.nn.functional.pad(labelled, (1, 0))[:, :-1]
        return float(labelled.sum() / starts.sum())

    assert mean_run("span") > 1.8 > mean_run("token")


def test_dynamic_arm_is_the_library_default_with_a_15_percent_floor() -> None:
    from maskwise.dynamic import GAP_DEFAULTS

    collator, controller = make_collator(PretrainConfig("dynamic"), 60)
    assert controller is not None and collator.rate == pytest.approx(0.15)
    assert (controller.signal, controller.start, controller.target) == (
        GAP_DEFAULTS.signal,
        GAP_DEFAULTS.start,
        GAP_DEFAULTS.target,
    )
    assert (controller.min_rate, controller.max_rate) == (0.15, GAP_DEFAULTS.max_rate)


def _tiny(tokenizer: Any, tmp_path: Path, arm: str = "dynamic", steps: int = 4) -> Any:
    enc = EncoderConfig(tokenizer.get_vocab_size(), hidden=64, layers=1, max_len=32)
    cfg = PretrainConfig(arm, steps=steps, batch_size=8, eval_every=2)
    texts = _corpus(48, seed=2)
    return pretrain(cfg, enc, tokenizer, texts[:40], texts[40:], cache=tmp_path / "cache")


def test_pretraining_records_curves_and_is_cached_by_its_settings(
    tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    folder, record = _tiny(tokenizer, tmp_path)
    assert not record["cached"] and (folder / "model.safetensors").is_file()
    curves = record["curves"]
    assert [p[0] for p in curves["eval_loss"]] == [2, 4]  # Trainer evaluated: eval_loss fed
    assert curves["train_loss"] and curves["rate"] and curves["rate"][0][1] == 0.15
    assert math.isfinite(record["heldout"]["mlm_loss"]) and record["heldout"]["mlm_loss"] > 0

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached checkpoint was trained again")

    monkeypatch.setattr(transformers.Trainer, "train", fail)
    again, cached = _tiny(tokenizer, tmp_path)
    assert again == folder and cached["cached"] and cached["heldout"] == record["heldout"]
    with pytest.raises(AssertionError, match="trained again"):
        _tiny(tokenizer, tmp_path, steps=6)  # another setting: another checkpoint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arm": "bert"}, "arm must be one of"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"lr": float("nan")}, "lr must be a finite number"),
    ],
)
def test_bad_pretraining_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**kwargs)


def test_bad_task_input_is_refused_with_a_message(tmp_path: Path) -> None:
    data = write_text_dir(tmp_path / "data")
    with pytest.raises(ValueError, match="not a folder"):
        PretrainFinetune(data, corpus=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt file with text"):
        read_corpus(tmp_path / "empty")
    with pytest.raises(ValueError, match="pretrain_arms must be among"):
        PretrainFinetune(data, pretrain_arms="token,bert")
    with pytest.raises(ValueError, match="init must be one of"):
        PretrainFinetune(data, init="bert")
    with pytest.raises(ValueError, match="call prepare"):
        PretrainFinetune(data, vocab_size=80).build_model()


def test_a_corpus_folder_is_read_line_by_line(tmp_path: Path) -> None:
    write_text(tmp_path / "c" / "b.txt", "second file\n")
    write_text(tmp_path / "c" / "a.txt", "first line\n\n  second line  \n")
    assert read_corpus(tmp_path / "c") == ["first line", "second line", "second file"]


def test_both_stages_end_to_end_with_the_report(tmp_path: Path, capsys: Any) -> None:
    from maskwise.cli import main

    data = write_text_dir(tmp_path / "data", n_train=60)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "pretrain-finetune", "--data", str(data), "--fast", "--quiet"]
    argv += ["--pretrain-arms", "token,decay", "--hidden", "64", "--layers", "1"]
    argv += ["--masking", "none,static", "--cache", str(cache), "--out", str(out)]
    assert main(argv) == 0
    pre = json.loads((out / "pretraining" / "pretrain.json").read_text())
    assert list(pre["arms"]) == ["token", "decay"]
    assert pre["arms"]["decay"]["curves"]["rate"][0][1] > 0.15  # decays from 0.30
    assert "held-out MLM loss" in (out / "pretraining" / "pretrain.md").read_text()
    fine = json.loads((out / "finetune" / "results.json").read_text())
    assert {r["arm"] for r in fine["runs"]} == {"none", "static 0.1", "drop 0.1"}
    arms = json.loads((out / "pretraining-arms" / "results.json").read_text())
    assert [row["arm"] for row in arms["summary"]] == [
        "pretrained token",
        "scratch",
        "pretrained decay",
    ]
    first = {r["arm"]: r for r in arms["runs"]}
    assert first["pretrained token"]["test"] == next(
        r["test"] for r in fine["runs"] if r["arm"] == "none"
    )  # the same runs, not trained twice
    capsys.readouterr()
    folders = [str(out / "finetune"), str(out / "pretraining-arms")]
    assert main(["report", *folders, "--out", str(tmp_path / "summary")]) == 0
    assert "pretrained decay" in capsys.readouterr().out


def test_fine_tuning_step_in_a_lightning_trainer(tmp_path: Path) -> None:
    L = pytest.importorskip("lightning")
    from maskwise.dynamic import ReliabilityController
    from maskwise.integrations.lightning import MaskwiseLightningCallback
    from maskwise.nn import DynamicMask

    data = write_text_dir(tmp_path / "data", n_train=64)
    task = PretrainFinetune(data, init="scratch", vocab_size=80, hidden=64, layers=1)
    controller = ReliabilityController.default()
    masker = DynamicMask(task.make_masker(0.0, seed=0), controller)
    logged: list[float] = []

    class FineTune(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = task.build_model()
            self.masker = masker

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return task.train_step(self.model, self.masker, batch, self.device).loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            loss = task.evaluate(self.model, "dev", self.device)["loss"]
            logged.append(loss)
            self.log("val_loss", loss, batch_size=1)

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    batches = list(task.train_batches(0, torch.Generator().manual_seed(0)))
    module = FineTune()
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=[MaskwiseLightningCallback(controller=controller)],
    )
    trainer.fit(
        module,
        train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None),
        val_dataloaders=torch.utils.data.DataLoader([0], batch_size=None),
    )
    assert trainer.global_step == len(batches) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))
    assert logged and controller.reference == pytest.approx(logged[-1])  # val_loss fed
    assert PRETRAIN_ARMS == ("token", "word", "span", "decay", "dynamic")


def test_pretraining_progress_is_shown_unless_quiet(tmp_path: Path, capsys: Any) -> None:
    data = write_text_dir(tmp_path / "data", n_train=40)
    kwargs = dict(pretrain_arms="token", vocab_size=80, hidden=64, layers=1, pretrain_steps=2)
    task = PretrainFinetune(data, cache=tmp_path / "cache", **kwargs)
    task.prepare(quiet=True)
    assert capsys.readouterr().out == ""
    task.prepare(quiet=False)  # cached now: the bar still ends on the arm's line
    assert "pretrained token: held-out MLM loss" in capsys.readouterr().out


def test_the_tokenizer_is_cached_so_reruns_get_the_same_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WordPiece training breaks ties differently in every process; the checkpoints are keyed
    # by the tokenizer, so a rerun must load the saved one, not train another.
    import maskwise.experiments.tokenizers as tokenizers
    from maskwise.experiments.pretraining import cached_wordpiece

    texts = _corpus(80)
    first = cached_wordpiece(texts, 60, cache=tmp_path)
    assert [p.name.startswith("wordpiece-") for p in tmp_path.iterdir()] == [True]

    def fail(*args: Any) -> None:
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr(tokenizers, "train_wordpiece", fail)
    assert cached_wordpiece(texts, 60, cache=tmp_path).to_str() == first.to_str()
    with pytest.raises(AssertionError, match="trained again"):
        cached_wordpiece(texts, 61, cache=tmp_path)  # another vocabulary: another tokenizer
