"""MLMCollator with a real Hugging Face tokenizer and model, all offline.

A WordPiece tokenizer is trained here on SST-2 sentences from the shared data folder, wrapped in
``transformers.PreTrainedTokenizerFast``, and a tiny ``BertForMaskedLM`` takes a training step
on the collated batches (plain ``DataLoader`` and ``transformers.Trainer``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import transformers  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from torch.utils.data import DataLoader  # noqa: E402

from maskwise.collators import MLMCollator  # noqa: E402
from maskwise.functional import word_ids_from_encoding  # noqa: E402

pytestmark = pytest.mark.hf

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
IGNORE = -100


def _sst2_train() -> Path:
    # Module-scoped twin of the ``shared_data`` fixture in conftest.py (same path logic).
    env = os.environ.get("MASKWISE_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    path = root / "text" / "sst2" / "stsa.binary.train"
    if not path.is_file():
        pytest.skip(f"SST-2 training file not found at {path} (set MASKWISE_DATA)")
    return path


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    lines = _sst2_train().read_text(encoding="utf-8").splitlines()[:3000]
    # Each line is "<label> <sentence>"; keep the sentence.
    return [line.split(" ", 1)[1] for line in lines if " " in line]


@pytest.fixture(scope="module")
def tok(sentences: list[str]) -> Any:
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=2000, special_tokens=SPECIAL_TOKENS)
    wp.train_from_iterator(sentences, trainer)
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    wp.decoder = decoders.WordPiece()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=wp,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


@pytest.fixture(scope="module")
def examples(tok: Any, sentences: list[str]) -> list[dict[str, list[int]]]:
    """64 tokenized sentences (the longest ones, so truncation and multi-piece words occur)."""
    chosen = sorted(sentences[:500], key=len, reverse=True)[:64]
    enc = tok(chosen, truncation=True, max_length=64)
    word_ids = word_ids_from_encoding(enc)  # (64, L) long, -1 for special tokens and padding
    rows = []
    for i in range(len(chosen)):
        n = len(enc["input_ids"][i])
        rows.append(
            {
                "input_ids": enc["input_ids"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "word_ids": word_ids[i, :n].tolist(),
            }
        )
    return rows


def test_tokenizer(tok: Any) -> None:
    assert 1000 < len(tok) <= 2000
    assert tok.mask_token_id is not None and tok.pad_token_id is not None
    assert set(tok.all_special_ids) == {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def test_word_ids_from_encoding(tok: Any, sentences: list[str]) -> None:
    chosen = sentences[:64]
    enc = tok(chosen, truncation=True, max_length=64)
    word_ids = word_ids_from_encoding(enc)
    lengths = [len(ids) for ids in enc["input_ids"]]
    assert word_ids.dtype == torch.long
    assert word_ids.shape == (64, max(lengths))
    assert max(lengths) == 64  # some sentence was truncated
    for i, n in enumerate(lengths):
        expected = [-1 if w is None else w for w in enc.word_ids(i)]
        assert word_ids[i, :n].tolist() == expected
        assert (word_ids[i, n:] == -1).all()
    # Some words are split into several pieces, so whole-word masking is not token masking.
    assert any(
        len(ids) > len(set(w for w in ws if w >= 0)) + 2
        for ids, ws in zip(enc["input_ids"], word_ids.tolist())
    )
    # A single (unbatched) text gives a 1-D tensor.
    single = tok(chosen[0], truncation=True, max_length=64)
    assert word_ids_from_encoding(single).tolist() == [
        -1 if w is None else w for w in single.word_ids()
    ]


def tiny_bert(vocab_size: int) -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return transformers.BertForMaskedLM(config)


@pytest.mark.parametrize("unit", ["token", "word"])
def test_dataloader_and_bert_step(tok: Any, examples: list[dict], unit: str) -> None:
    collator = MLMCollator.from_tokenizer(tok, seed=0, unit=unit)
    loader = DataLoader(examples, batch_size=16, collate_fn=collator)
    batch = next(iter(loader))
    assert sorted(batch) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    assert batch["input_ids"].shape == batch["labels"].shape == (16, 64)

    # The collated batch respects the tokenizer: specials and padding are never targets.
    original = torch.full((16, 64), tok.pad_token_id)
    for i, ex in enumerate(examples[:16]):
        original[i, : len(ex["input_ids"])] = torch.tensor(ex["input_ids"])
    masked = batch["labels"] != IGNORE
    assert masked.sum() > 20
    assert torch.equal(batch["labels"][masked], original[masked])
    assert not (masked & torch.isin(original, torch.tensor(tok.all_special_ids))).any()
    assert not (masked & (batch["attention_mask"] == 0)).any()
    if unit == "word":
        # Whole words on real WordPiece output: every piece of a chosen word is masked.
        n_multi = 0
        for i, ex in enumerate(examples[:16]):
            wid = torch.tensor(ex["word_ids"])
            for w in set(ex["word_ids"]) - {-1}:
                m = masked[i, : len(wid)][wid == w]
                assert bool(m.all()) or not bool(m.any())
                n_multi += len(m) > 1 and bool(m.all())
        assert n_multi > 0

    model = tiny_bert(len(tok))
    out = model(**batch)
    assert torch.isfinite(out.loss)
    # Nearly uniform logits at initialisation: the loss is about log(vocab size).
    assert abs(out.loss.item() - math.log(len(tok))) < 1.5
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out.loss.backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(changed) > len(changed) // 2


@pytest.mark.parametrize("unit", ["token", "word"])
def test_trainer_data_collator(tok: Any, examples: list[dict], tmp_path: Path, unit: str) -> None:
    pytest.importorskip("accelerate")  # transformers.Trainer needs it
    # By default Trainer drops the example fields its model's forward does not name (word_ids,
    # idx) before the collator sees them: whole-word masking needs remove_unused_columns=False.
    collator = MLMCollator.from_tokenizer(tok, seed=0, unit=unit)
    model = tiny_bert(len(tok))
    before = [p.detach().clone() for p in model.parameters()]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=unit == "token",
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=examples[:32],
        data_collator=collator,
    )
    result = trainer.train()
    assert result.global_step == 2
    assert math.isfinite(result.training_loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_callback_gives_new_keyed_masks_every_epoch(
    tok: Any, examples: list[dict], tmp_path: Path
) -> None:
    pytest.importorskip("accelerate")
    from maskwise.collators import IndexedDataset
    from maskwise.integrations.hf import MaskwiseCallback

    collator = MLMCollator.from_tokenizer(tok, seed=0)
    seen: dict[tuple[int, int], torch.Tensor] = {}  # (epoch, idx) -> labels

    def recording_collator(features):
        idx = [f["idx"] for f in features]
        batch = collator(features)
        for row, i in enumerate(idx):
            seen[(collator.epoch, i)] = batch["labels"][row]
        return batch

    data = IndexedDataset([{"input_ids": e["input_ids"]} for e in examples[:16]])
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = transformers.Trainer(
        model=tiny_bert(len(tok)),
        args=args,
        train_dataset=data,
        data_collator=recording_collator,
        callbacks=[MaskwiseCallback(collator)],
    )
    trainer.train()
    assert {e for e, _ in seen} == {0, 1}
    differs = [not torch.equal(seen[(0, i)], seen[(1, i)]) for i in range(16)]
    assert sum(differs) >= 12  # each example's mask is redrawn; a few may agree by chance
    with pytest.raises(TypeError, match="set_epoch"):
        MaskwiseCallback(object())
