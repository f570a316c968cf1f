"""``MaskwiseTrainer(consistency=Consistency(...))`` inside a real ``transformers.Trainer`` run
(tiny BERT classifier built from a config): the loss gains exactly ``weight`` times the
consistency of a masked second view, the second view is masked where the masker says, and bad
settings fail when the Consistency is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from maskwise.functional import consistency_loss
from maskwise.nn import TokenMask

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from maskwise.integrations.hf import Consistency, MaskwiseTrainer  # noqa: E402
from tests.integrations.test_hf_trainer import PAD, VOCAB, token_lists, training_args  # noqa: E402

pytestmark = pytest.mark.hf


def tiny_classifier() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


def examples(n: int) -> list[dict[str, Any]]:
    return [{"input_ids": ids, "labels": i % 2} for i, ids in enumerate(token_lists(n))]


def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), PAD)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
    return {
        "input_ids": ids,
        "attention_mask": (ids != PAD).long(),
        "labels": torch.tensor([f["labels"] for f in features]),
    }


def test_the_loss_gains_the_consistency_of_a_masked_view(tmp_path: Path) -> None:
    model = tiny_classifier()
    batch = collate(examples(8))
    masker = TokenMask(0.5, mask_id=3, special_ids=[PAD, 1, 2], seed=0)
    cons = Consistency(masker, weight=0.7, kind="kl")
    trainer = MaskwiseTrainer(
        model=model, args=training_args(tmp_path), data_collator=collate, consistency=cons
    )
    model.train()
    got = trainer.compute_loss(model, batch)
    # The same by hand: the plain loss, plus 0.7 x KL(clean || masked view from the same seed).
    out = model(**batch)
    view = dict(batch)
    view["input_ids"] = TokenMask(0.5, mask_id=3, special_ids=[PAD, 1, 2], seed=0)(
        batch["input_ids"], attention_mask=batch["attention_mask"]
    )[0]
    del view["labels"]
    want = out.loss + 0.7 * consistency_loss(model(**view).logits, out.logits, kind="kl")
    torch.testing.assert_close(got, want)


def test_a_trainer_run_with_consistency(tmp_path: Path) -> None:
    masker = TokenMask(0.3, mask_id=3, special_ids=[PAD, 1, 2], seed=0)
    trainer = MaskwiseTrainer(
        model=tiny_classifier(),
        args=training_args(tmp_path, max_steps=3),
        train_dataset=examples(24),
        data_collator=collate,
        consistency=Consistency(masker, weight=1.0, kind="sym_kl"),
    )
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))


def test_bad_settings_fail_when_built() -> None:
    masker = TokenMask(0.3, mask_id=3)
    with pytest.raises(ValueError, match="weight"):
        Consistency(masker, weight=-1.0)
    with pytest.raises(ValueError, match="kind"):
        Consistency(masker, kind="mse")
    with pytest.raises(TypeError, match="masker"):
        Consistency(0.3)
    with pytest.raises(TypeError, match="Consistency"):
        MaskwiseTrainer(model=tiny_classifier(), consistency=masker)  # type: ignore[arg-type]


def test_labels_are_read_before_trainer_pops_them(tmp_path: Path) -> None:
    """With label smoothing Trainer's compute_loss pops ``labels`` from the inputs; the
    consistency term must still count only the labelled positions, and a DynamicMask masker
    still gets the attention mask (padding never masked)."""
    from maskwise.nn import DynamicMask

    model = tiny_classifier()
    batch = collate(examples(8))
    inner = TokenMask(0.5, mask_id=3, seed=0)  # padding is not a special id here
    seen: list[torch.Tensor] = []
    inner.register_forward_hook(lambda m, args, kwargs, out: seen.append(out[1]), with_kwargs=True)
    cons = Consistency(DynamicMask(inner, 0.5), weight=1.0)
    args = training_args(tmp_path, label_smoothing_factor=0.1)
    trainer = MaskwiseTrainer(model=model, args=args, data_collator=collate, consistency=cons)
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    assert torch.isfinite(loss)
    assert seen and not bool(seen[0][batch["attention_mask"] == 0].any())  # no padding masked
