"""maskwise collators and integrations inside real ``transformers.Trainer`` runs (tiny models
built from configs, no downloads): dynamic masks without a callback, the fields Trainer drops,
``MaskwiseTrainer`` on both ``compute_loss`` signatures, one controller update per step, the
reliability of the labelled rows only, and a warning when a controller can never be fed."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from maskwise.collators import IndexedDataset, MLMCollator
from maskwise.dynamic import ReliabilityController

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from maskwise.integrations import hf  # noqa: E402
from maskwise.integrations.hf import MaskwiseCallback, MaskwiseTrainer  # noqa: E402

pytestmark = pytest.mark.hf

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP, MASK)
VOCAB = 100


def token_lists(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(12, 24, (), generator=g))
        out.append([CLS, *torch.randint(4, VOCAB, (length,), generator=g).tolist(), SEP])
    return out


def word_examples(n: int) -> list[dict[str, list[int]]]:
    """Examples with word ids: every two tokens of the body form a word."""
    return [
        {"input_ids": ids, "word_ids": [-1, *[j // 2 for j in range(len(ids) - 2)], -1]}
        for ids in token_lists(n)
    ]


def collator(rate: Any = 0.3, **kwargs: Any) -> MLMCollator:
    kwargs.setdefault("seed", 0)
    return MLMCollator(
        mask_id=MASK, pad_id=PAD, vocab_size=VOCAB, special_ids=SPECIAL, rate=rate, **kwargs
    )


def controller(signal: str = "accuracy", **kwargs: Any) -> ReliabilityController:
    kwargs.setdefault("target", 2.0 if signal == "loss" else 0.5)
    return ReliabilityController(
        0.15,
        signal=signal,
        gain=0.1,
        momentum=0.0,
        max_delta=0.02,
        min_rate=0.0,
        max_rate=0.9,
        direction="seed",
        **kwargs,
    )


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
    )
    return transformers.BertForMaskedLM(config)


def training_args(tmp_path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("max_steps", 2)
    kwargs.setdefault("remove_unused_columns", False)
    kwargs.setdefault("logging_strategy", "no")
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
        **kwargs,
    )


def messages(caught: list[warnings.WarningMessage], text: str) -> list[str]:
    return [str(w.message) for w in caught if text in str(w.message)]


# --------------------------------------------------------------------------------------------
# 12.1: dynamic masks without MaskwiseCallback; the fields Trainer drops


def test_plain_trainer_gets_new_keyed_masks_every_epoch(tmp_path: Path) -> None:
    coll = collator()
    seen: dict[int, list[torch.Tensor]] = defaultdict(list)

    def recording(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        idx = [f["idx"] for f in features]
        batch = coll(features)
        for row, i in enumerate(idx):
            seen[i].append(batch["labels"][row].clone())
        return batch

    trainer = transformers.Trainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=-1, num_train_epochs=3),
        train_dataset=IndexedDataset(token_lists(16)),
        data_collator=recording,
    )
    trainer.train()
    assert sorted(seen) == list(range(16)) and all(len(v) == 3 for v in seen.values())
    assert coll.epoch == 0  # nobody called set_epoch
    repeats = sum(torch.equal(v[a], v[b]) for v in seen.values() for a, b in ((0, 1), (1, 2)))
    assert repeats <= 1, f"{repeats} masks repeated from one epoch to the next"


def test_callback_warns_when_trainer_drops_the_index(tmp_path: Path) -> None:
    coll = collator()
    trainer = transformers.Trainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=1, remove_unused_columns=True),
        train_dataset=IndexedDataset(token_lists(8)),
        data_collator=coll,
        callbacks=[MaskwiseCallback(coll)],
    )
    with pytest.warns(UserWarning, match=r"remove_unused_columns=True.*'idx'"):
        trainer.train()


def test_no_warning_when_the_index_is_kept_or_absent(tmp_path: Path) -> None:
    for data, remove in ((IndexedDataset(token_lists(8)), False), (token_lists(8), True)):
        coll = collator()
        trainer = transformers.Trainer(
            model=tiny_bert(),
            args=training_args(tmp_path, max_steps=1, remove_unused_columns=remove),
            train_dataset=data,
            data_collator=coll,
            callbacks=[MaskwiseCallback(coll)],
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train()
        assert not messages(caught, "remove_unused_columns")


def test_maskwise_trainer_warns_for_a_datasets_index_column(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"input_ids": token_lists(8)}).map(
        lambda _, i: {"idx": i}, with_indices=True
    )
    coll = collator()
    trainer = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=1, remove_unused_columns=True),
        train_dataset=data,
        data_collator=coll,
    )
    with pytest.warns(UserWarning, match=r"remove_unused_columns=True.*'idx'"):
        trainer.train()


def test_word_masking_fails_fast_when_trainer_drops_the_word_ids(tmp_path: Path) -> None:
    coll = collator(unit="word")
    args = training_args(tmp_path, max_steps=1, remove_unused_columns=True)
    with_callback = transformers.Trainer(
        model=tiny_bert(),
        args=args,
        train_dataset=word_examples(8),
        data_collator=coll,
        callbacks=[MaskwiseCallback(coll)],
    )
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        with_callback.train()
    # Without the callback the collator's own error says the same.
    plain = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=word_examples(8), data_collator=coll
    )
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        plain.train()


# --------------------------------------------------------------------------------------------
# 12.6: MaskwiseTrainer


def test_maskwise_trainer_on_the_compute_loss_of_transformers_4_40(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers 4.40-4.45: compute_loss(model, inputs, return_outputs=False), no
    num_items_in_batch."""

    def compute_loss(self: Any, model: Any, inputs: dict, return_outputs: bool = False) -> Any:
        outputs = model(**inputs)
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    monkeypatch.setattr(transformers.Trainer, "compute_loss", compute_loss)
    c = controller()
    coll = collator(c)
    trainer = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=2),
        train_dataset=token_lists(16),
        data_collator=coll,
        controller=c,
    )
    assert trainer.train().global_step == 2
    assert c.updates == 2


def test_a_controller_given_to_trainer_and_callback_is_updated_once_per_step(
    tmp_path: Path,
) -> None:
    c = controller("loss")
    coll = collator(c)
    trainer = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=4, logging_strategy="steps", logging_steps=1),
        train_dataset=token_lists(32),
        data_collator=coll,
        controller=c,
        callbacks=[MaskwiseCallback(coll, controller=c)],
    )
    trainer.train()
    assert c.updates == 4
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 4 and all("maskwise_rate" in h for h in logged)


def test_reliability_is_computed_on_the_labelled_rows_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[int, ...], int]] = []
    real = hf.reliability

    def spy(logits: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> Any:
        calls.append((tuple(logits.shape), int((labels != -100).sum())))
        return real(logits, labels, **kwargs)

    monkeypatch.setattr(hf, "reliability", spy)
    c = controller()
    seen: list[torch.Tensor] = []

    def recording(features: list[Any]) -> dict[str, torch.Tensor]:
        batch = collator(c)(features)
        seen.append(batch["labels"])
        return batch

    trainer = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=2),
        train_dataset=token_lists(16),
        data_collator=recording,
        controller=c,
    )
    trainer.train()
    assert len(calls) == 2 and c.updates == 2
    for (shape, n_labelled), labels in zip(calls, seen):
        n = int((labels != -100).sum())
        assert shape == (n, VOCAB) and n_labelled == n  # (N, V): labelled rows, not B x L x V


def test_callback_warns_once_when_its_controller_gets_nothing(tmp_path: Path) -> None:
    c = controller("accuracy")
    coll = collator(c)
    trainer = transformers.Trainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=3, logging_strategy="steps", logging_steps=1),
        train_dataset=token_lists(32),
        data_collator=coll,
        callbacks=[MaskwiseCallback(coll, controller=c)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert len(messages(caught, "signal='accuracy'")) == 1
    assert c.updates == 0
    # Fed by MaskwiseTrainer: no warning.
    c2 = controller("accuracy")
    coll2 = collator(c2)
    fed = MaskwiseTrainer(
        model=tiny_bert(),
        args=training_args(tmp_path, max_steps=2),
        train_dataset=token_lists(16),
        data_collator=coll2,
        controller=c2,
        callbacks=[MaskwiseCallback(coll2, controller=c2)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fed.train()
    assert not messages(caught, "signal='accuracy'") and c2.updates == 2


class NoLogits(nn.Module):
    """A model whose outputs carry a loss but no logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: Any = None, labels: Any = None
    ) -> dict[str, torch.Tensor]:
        return {"loss": self.embed(input_ids).pow(2).mean()}


def test_maskwise_trainer_warns_once_when_outputs_have_no_logits(tmp_path: Path) -> None:
    c = controller()
    trainer = MaskwiseTrainer(
        model=NoLogits(),
        args=training_args(tmp_path, max_steps=3),
        train_dataset=token_lists(32),
        data_collator=collator(c),
        controller=c,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert len(messages(caught, "logits")) == 1 and c.updates == 0
