"""Whole-word masking from what a fast tokenizer returns: ``offset_mapping``
(``return_offsets_mapping=True``, as transformers' own collator takes) or the encoding's word
ids with ``None`` for special tokens, so no hand-written ``word_ids`` in ``Dataset.map``.

The tokenizers are trained here on a few sentences (no downloads)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from maskwise.collators import MLMCollator

pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers  # noqa: E402

SENTENCES = [
    "the unbelievably quick brown foxes jumped over extraordinarily lazy dogs",
    "tokenization of uncommonly long words splits them into several pieces",
    "masked language modelling hides whole words from the encoder",
    "a collator pads examples and draws the masks for every batch",
    "reproducible masks come from counters keyed by the example index",
    "overfitting shrinks when the model cannot memorise surface forms",
    "researchers compared dynamic and static masking on sentiment classification",
    "transformers read subword units produced by wordpiece or byte pair encoding",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tok() -> Any:
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # A vocabulary too small for whole words: long words are split into several pieces.
    wp.train_from_iterator(
        SENTENCES, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIAL_TOKENS)
    )
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=wp,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def word_groups(masked: torch.Tensor, words: list[int | None]) -> dict[int, list[bool]]:
    """Word id -> masked flags of its tokens."""
    groups: dict[int, list[bool]] = {}
    for j, w in enumerate(words):
        if w is not None:
            groups.setdefault(w, []).append(bool(masked[j]))
    return groups


def check_whole_words(batch: dict[str, torch.Tensor], enc: Any) -> int:
    """Every word all masked or none; returns how many multi-piece words were masked."""
    masked = batch["labels"] != -100
    multi = 0
    for i in range(masked.shape[0]):
        for flags in word_groups(masked[i], enc.word_ids(i)).values():
            assert all(flags) or not any(flags), flags
            multi += len(flags) > 1 and all(flags)
    return multi


def test_offset_mapping_gives_whole_words(tok: Any) -> None:
    enc = tok(SENTENCES, return_offsets_mapping=True)
    assert any(len(set(enc.word_ids(i)) - {None}) < len(enc.word_ids(i)) - 2 for i in range(8))
    examples = [
        {"input_ids": enc["input_ids"][i], "offset_mapping": enc["offset_mapping"][i]}
        for i in range(len(SENTENCES))
    ]
    multi = 0
    for seed in range(4):
        c = MLMCollator.from_tokenizer(tok, unit="word", rate=0.4, seed=seed)
        batch = c(examples)
        assert sorted(batch) == ["attention_mask", "input_ids", "labels"]  # offsets consumed
        multi += check_whole_words(batch, enc)
    assert multi > 0


def test_encoding_word_ids_with_none_give_the_same_masks(tok: Any) -> None:
    enc = tok(SENTENCES, return_offsets_mapping=True)
    from_offsets = [
        {"input_ids": enc["input_ids"][i], "offset_mapping": enc["offset_mapping"][i]}
        for i in range(8)
    ]
    from_word_ids = [
        {"input_ids": enc["input_ids"][i], "word_ids": enc.word_ids(i)} for i in range(8)
    ]
    assert from_word_ids[0]["word_ids"][0] is None
    make = lambda: MLMCollator.from_tokenizer(tok, unit="word", rate=0.4, seed=3)  # noqa: E731
    a, b = make()(from_offsets), make()(from_word_ids)
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    check_whole_words(b, enc)


def test_token_masking_drops_the_offsets(tok: Any) -> None:
    enc = tok(SENTENCES[:2], return_offsets_mapping=True)
    examples = [{k: enc[k][i] for k in enc} for i in range(2)]
    batch = MLMCollator.from_tokenizer(tok, seed=0)(examples)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]


def test_datasets_map_output_through_a_dataloader(tok: Any) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": SENTENCES}).map(
        lambda b: tok(b["text"], return_offsets_mapping=True, return_special_tokens_mask=True),
        batched=True,
        remove_columns=["text"],
    )
    c = MLMCollator.from_tokenizer(tok, unit="word", rate=0.4, seed=0)
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=c)))
    assert "offset_mapping" not in batch and "special_tokens_mask" not in batch
    check_whole_words(batch, tok(SENTENCES))


def test_missing_word_fields_name_both_sources_and_trainer() -> None:
    c = MLMCollator(mask_id=3, pad_id=0, vocab_size=50, unit="word", seed=0)
    with pytest.raises(ValueError, match=r"word_ids.*offset_mapping.*remove_unused_columns"):
        c([{"input_ids": [5, 6, 7]}])


# --------------------------------------------------------------------------------------------
# property: offsets and word ids describe the same words, so they give the same masks


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.integers(1, 3), min_size=1, max_size=8),  # pieces per word
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**32),
)
def test_offsets_and_word_ids_agree(rows: list[list[int]], seed: int) -> None:
    examples_offsets, examples_words = [], []
    for pieces in rows:
        offsets, words, pos = [(0, 0)], [None], 0  # [CLS]
        for w, n in enumerate(pieces):
            for _ in range(n):
                offsets.append((pos, pos + 2))  # pieces of a word touch
                words.append(w)
                pos += 2
            pos += 1  # a space between words
        offsets.append((0, 0))  # [SEP]
        words.append(None)
        ids = [1, *range(10, 10 + len(offsets) - 2), 2]
        examples_offsets.append({"input_ids": ids, "offset_mapping": offsets})
        examples_words.append({"input_ids": ids, "word_ids": words})
    make = lambda: MLMCollator(  # noqa: E731
        mask_id=3, pad_id=0, vocab_size=50, special_ids=[1, 2], unit="word", rate=0.5, seed=seed
    )
    a, b = make()(examples_offsets), make()(examples_words)
    assert torch.equal(a["labels"], b["labels"])
    masked = a["labels"] != -100
    for i, ex in enumerate(examples_words):
        for flags in word_groups(masked[i], ex["word_ids"]).values():
            assert all(flags) or not any(flags)
