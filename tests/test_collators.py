"""Tests for ``maskwise.collators``: MLMCollator, T5Collator, IndexedDataset, pad_examples.

Vocabulary used throughout: ids 0..4 are special ([PAD], [CLS], [SEP], [MASK], [UNK]), ids
900..999 are extra special ids (so a random replacement that ignored ``special_ids`` would hit
one about 10% of the time), and examples draw their word tokens from 5..899.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from maskwise.collators import IndexedDataset, MLMCollator, T5Collator, pad_examples
from tests.reference import text as reference

PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
VOCAB = 1000
EXTRA_SPECIAL = tuple(range(900, 1000))
SPECIAL = (PAD, CLS, SEP, MASK, UNK, *EXTRA_SPECIAL)
FIRST_WORD, END_WORD = 5, 900  # word tokens are drawn from [FIRST_WORD, END_WORD)
IGNORE = -100


# --------------------------------------------------------------------------------------------
# helpers


def mlm(**kwargs: Any) -> MLMCollator:
    kwargs.setdefault("seed", 0)
    return MLMCollator(mask_id=MASK, pad_id=PAD, vocab_size=VOCAB, special_ids=SPECIAL, **kwargs)


def make_examples(
    n: int, *, min_len: int = 8, max_len: int = 40, seed: int = 0, words: bool = False
) -> list[Any]:
    """``n`` sequences ``[CLS] body [SEP]`` with random body lengths in [min_len, max_len].

    With ``words=True`` every example is a dict with ``word_ids``: the body is cut into words of
    1 to 3 tokens, [CLS]/[SEP] get -1.
    """
    g = torch.Generator().manual_seed(seed)
    out: list[Any] = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (), generator=g))
        body = torch.randint(FIRST_WORD, END_WORD, (length,), generator=g).tolist()
        ids = [CLS, *body, SEP]
        if not words:
            out.append(ids)
            continue
        wid: list[int] = []
        w = 0
        while len(wid) < length:
            size = int(torch.randint(1, 4, (), generator=g))
            wid.extend([w] * size)
            w += 1
        out.append({"input_ids": ids, "word_ids": [-1, *wid[:length], -1]})
    return out


def padded_ids(examples: Sequence[Any], **kwargs: Any) -> torch.Tensor:
    """The uncorrupted, padded input_ids of ``examples`` (what the collator starts from)."""
    return pad_examples(examples, pad_id=PAD, **kwargs)["input_ids"]


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor, as (start, end) with end exclusive."""
    return reference.runs(row.tolist())


def batches_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_batches_equal(xs: list[dict], ys: list[dict]) -> None:
    assert len(xs) == len(ys)
    for i, (x, y) in enumerate(zip(xs, ys)):
        assert batches_equal(x, y), f"batch {i} differs"


class FakeTokenizer:
    """The attributes of a Hugging Face tokenizer that ``MLMCollator.from_tokenizer`` reads."""

    def __init__(
        self,
        *,
        mask_token_id: int | None = MASK,
        pad_token_id: int | None = PAD,
        all_special_ids: Sequence[int] = (PAD, CLS, SEP, MASK, UNK),
        padding_side: str = "right",
        vocab_size: int = VOCAB,
    ) -> None:
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.all_special_ids = list(all_special_ids)
        self.padding_side = padding_side
        self._vocab_size = vocab_size

    def __len__(self) -> int:
        return self._vocab_size


# --------------------------------------------------------------------------------------------
# MLMCollator: input forms, padding, output structure


def test_plain_lists_keys_dtypes_shapes() -> None:
    examples = [[CLS, 10, 11, 12, SEP], [CLS, 20, SEP], [CLS, 30, 31, 32, 33, 34, SEP]]
    batch = mlm()(examples)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    for key in batch:
        assert batch[key].dtype == torch.long, key
        assert batch[key].shape == (3, 7), key
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
    ]
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == PAD).all()
    assert (batch["labels"][pad] == IGNORE).all()


@pytest.mark.parametrize("form", ["tuple", "tensor", "int32 tensor", "dict", "dict of tensors"])
def test_example_forms_give_the_same_batch(form: str) -> None:
    examples = make_examples(8, seed=3)
    converted: list[Any] = {
        "tuple": lambda: [tuple(e) for e in examples],
        "tensor": lambda: [torch.tensor(e) for e in examples],
        "int32 tensor": lambda: [torch.tensor(e, dtype=torch.int32) for e in examples],
        "dict": lambda: [{"input_ids": e} for e in examples],
        "dict of tensors": lambda: [
            {"input_ids": torch.tensor(e), "attention_mask": torch.ones(len(e), dtype=torch.long)}
            for e in examples
        ],
    }[form]()
    expected = mlm(rate=0.4)(examples)
    got = mlm(rate=0.4)(converted)
    assert batches_equal(got, expected)
    assert got["input_ids"].dtype == torch.long


def test_dicts_with_extra_fields() -> None:
    examples = [
        {"input_ids": [CLS, 10, 11, SEP], "token_type_ids": [0, 0, 1, 1], "label": 1},
        {"input_ids": [CLS, 20, SEP], "token_type_ids": [0, 1, 1], "label": 0},
        {"input_ids": [CLS, 30, 31, 32, 33, SEP], "token_type_ids": [0, 0, 0, 1, 1, 1], "label": 2},
    ]
    batch = mlm()(examples)
    assert sorted(batch) == ["attention_mask", "input_ids", "label", "labels", "token_type_ids"]
    assert batch["token_type_ids"].tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 1],
    ]
    assert batch["label"].tolist() == [1, 0, 2]
    assert batch["label"].shape == (3,)
    assert batch["token_type_ids"].dtype == torch.long


def test_scalar_tensor_and_float_fields_are_stacked() -> None:
    examples = [
        {"input_ids": [CLS, 10, SEP], "label": torch.tensor(3), "weight": 0.5},
        {"input_ids": [CLS, 11, 12, SEP], "label": torch.tensor(4), "weight": 2.0},
    ]
    batch = mlm()(examples)
    assert batch["label"].tolist() == [3, 4]
    assert batch["weight"].dtype.is_floating_point
    assert batch["weight"].tolist() == [0.5, 2.0]


@pytest.mark.parametrize("multiple, longest, width", [(8, 10, 16), (8, 16, 16), (5, 3, 5)])
def test_pad_to_multiple_of(multiple: int, longest: int, width: int) -> None:
    examples = [[CLS, *range(10, 10 + longest - 2), SEP], [CLS, 50, SEP]]
    batch = mlm(pad_to_multiple_of=multiple, rate=1.0)(examples)
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].shape == (2, width), key
    assert batch["attention_mask"].sum(1).tolist() == [longest, 3]
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == PAD).all()
    assert (batch["labels"][pad] == IGNORE).all()
    # rate=1.0: every real non-special token is a target, none of the padding.
    assert (batch["labels"] != IGNORE).sum(1).tolist() == [longest - 2, 1]


def test_padding_side_left() -> None:
    examples = make_examples(16, seed=5, words=False)
    c = mlm(padding_side="left", rate=0.3)
    batch = c(examples)
    lengths = [len(e) for e in examples]
    width = max(lengths)
    assert batch["input_ids"].shape == (16, width)
    original = padded_ids(examples, padding_side="left")
    for i, n in enumerate(lengths):
        assert batch["attention_mask"][i].tolist() == [0] * (width - n) + [1] * n
        assert (batch["input_ids"][i, : width - n] == PAD).all()
        assert (batch["labels"][i, : width - n] == IGNORE).all()
        # The real tokens sit at the right end: [CLS] first, [SEP] last, never masked.
        assert int(original[i, width - n]) == CLS and int(batch["input_ids"][i, width - n]) == CLS
        assert int(batch["input_ids"][i, -1]) == SEP
    masked = batch["labels"] != IGNORE
    assert torch.equal(batch["labels"][masked], original[masked])
    assert torch.equal(batch["input_ids"][~masked], original[~masked])
    assert masked.any()


def test_labels_and_unmasked_inputs_match_the_original() -> None:
    examples = make_examples(64, seed=7)
    original = padded_ids(examples)
    batch = mlm(rate=0.3)(examples)
    masked = batch["labels"] != IGNORE
    assert masked.sum() > 100
    # -100 wherever not masked; the original id wherever masked.
    assert (batch["labels"][~masked] == IGNORE).all()
    assert torch.equal(batch["labels"][masked], original[masked])
    # Positions that are not targets are never touched.
    assert torch.equal(batch["input_ids"][~masked], original[~masked])
    # Most masked positions are changed (80% [MASK] + ~10% random).
    assert (batch["input_ids"][masked] != original[masked]).float().mean() > 0.8


def test_rate_one_masks_exactly_the_non_special_real_tokens() -> None:
    # Special ids also inside the sequences, not only at the ends.
    examples = [
        [CLS, 10, UNK, 11, 950, 12, SEP],
        [CLS, 20, SEP, 21, SEP],
        [CLS, UNK, SEP],
    ]
    batch = mlm(rate=1.0)(examples)
    original = padded_ids(examples)
    real = batch["attention_mask"].bool()
    special = torch.isin(original, torch.tensor(SPECIAL))
    assert torch.equal(batch["labels"] != IGNORE, real & ~special)


# --------------------------------------------------------------------------------------------
# MLMCollator: special ids, padding and the 80/10/10 split, over many batches


@pytest.fixture(scope="module")
def many_mlm_batches() -> tuple[list[dict], list[torch.Tensor]]:
    """48 batches of 32 rows at the default rate 0.15: about 1.5e5 maskable tokens."""
    c = mlm(seed=11)
    batches, originals = [], []
    for b in range(48):
        examples = make_examples(32, min_len=60, max_len=140, seed=1000 + b)
        batches.append(c(examples))
        originals.append(padded_ids(examples))
    return batches, originals


def test_special_and_padding_never_masked_nor_drawn(many_mlm_batches) -> None:
    batches, originals = many_mlm_batches
    special = torch.tensor(SPECIAL)
    n_random = 0
    for batch, original in zip(batches, originals):
        masked = batch["labels"] != IGNORE
        real = batch["attention_mask"].bool()
        is_special = torch.isin(original, special)
        assert not (masked & ~real).any(), "padding masked"
        assert not (masked & is_special).any(), "special token masked"
        # Special tokens and padding are left as they were.
        assert torch.equal(batch["input_ids"][is_special | ~real], original[is_special | ~real])
        out = batch["input_ids"]
        random = masked & (out != MASK) & (out != original)
        n_random += int(random.sum())
        assert not torch.isin(out[random], special).any(), "a random replacement is a special id"
        assert ((out >= 0) & (out < VOCAB)).all()
    # Non-vacuous: about 10% of ~2e4 masked tokens are random replacements.
    assert n_random > 1000


def test_masked_rate_is_the_rate(many_mlm_batches) -> None:
    batches, originals = many_mlm_batches
    special = torch.tensor(SPECIAL)
    n_masked = sum(int((b["labels"] != IGNORE).sum()) for b in batches)
    n_valid = sum(
        int((b["attention_mask"].bool() & ~torch.isin(o, special)).sum())
        for b, o in zip(batches, originals)
    )
    assert n_valid > 100_000
    # Bernoulli(0.15) over n >= 1e5 tokens has sd sqrt(.15 * .85 / n) <= 0.0011, so +-0.01 is
    # about 9 sd: a correct collator never fails it, a bias of 0.01 or more always does.
    assert abs(n_masked / n_valid - 0.15) < 0.01


def test_80_10_10_split(many_mlm_batches) -> None:
    batches, originals = many_mlm_batches
    n = n_mask = n_same = n_random = 0
    for batch, original in zip(batches, originals):
        masked = batch["labels"] != IGNORE
        out, orig = batch["input_ids"][masked], original[masked]
        n += int(masked.sum())
        n_mask += int((out == MASK).sum())
        n_same += int((out == orig).sum())
        n_random += int(((out != MASK) & (out != orig)).sum())
    assert n >= 20_000
    assert n_mask + n_same + n_random == n
    # Binomial sd at n >= 2e4 is at most 0.0028 (for 0.8), so +-0.02 is > 7 sd. A random draw
    # equals the original with probability 1/895, which moves 10% by 1e-4 only.
    assert abs(n_mask / n - 0.8) < 0.02
    assert abs(n_same / n - 0.1) < 0.02
    assert abs(n_random / n - 0.1) < 0.02


def test_custom_split_all_mask_token() -> None:
    examples = make_examples(16, seed=2)
    batch = mlm(rate=0.5, replace_prob=1.0, random_prob=0.0)(examples)
    masked = batch["labels"] != IGNORE
    assert masked.any()
    assert (batch["input_ids"][masked] == MASK).all()


def test_special_tokens_mask_is_honoured() -> None:
    examples = [
        {"input_ids": [CLS, 10, 11, 12, 13, SEP], "special_tokens_mask": [1, 0, 1, 0, 1, 1]},
        {"input_ids": [CLS, 20, 21, SEP], "special_tokens_mask": [1, 1, 0, 1]},
    ]
    batch = mlm(rate=1.0)(examples)
    assert "special_tokens_mask" not in batch
    assert (batch["labels"] != IGNORE).tolist() == [
        [False, True, False, True, False, False],
        [False, False, True, False, False, False],
    ]


# --------------------------------------------------------------------------------------------
# MLMCollator: whole words and spans


def test_word_unit_masks_whole_words() -> None:
    c = mlm(unit="word", rate=0.3, seed=4)
    n_words = n_chosen = n_multi_chosen = n_multi_kept = 0
    for b in range(10):
        examples = make_examples(32, min_len=20, max_len=60, seed=200 + b, words=True)
        batch = c(examples)
        assert "word_ids" not in batch
        masked = batch["labels"] != IGNORE
        for i, ex in enumerate(examples):
            wid = ex["word_ids"]
            assert not masked[i, len(wid) :].any()
            for w in set(wid) - {-1}:
                pos = [j for j, x in enumerate(wid) if x == w]
                m = masked[i, pos]
                assert bool(m.all()) or not bool(m.any()), f"word {w} of row {i} partly masked"
                n_words += 1
                n_chosen += bool(m.all())
                if len(pos) > 1:
                    n_multi_chosen += bool(m.all())
                    n_multi_kept += not bool(m.any())
    assert n_multi_chosen > 50 and n_multi_kept > 50
    # The rate is the fraction of words (about 5000 of them: sd 0.0065, tolerance ~5 sd).
    assert abs(n_chosen / n_words - 0.3) < 0.03


def test_word_unit_without_word_ids_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="word_ids"):
        mlm(unit="word")(make_examples(4))


def test_word_unit_never_masks_special_tokens_inside_words() -> None:
    # A special id carrying a word id (a sloppy word_ids builder) is still never masked.
    examples = [{"input_ids": [CLS, 10, UNK, 11, SEP], "word_ids": [0, 1, 1, 2, 3]}]
    batch = mlm(unit="word", rate=1.0)(examples)
    assert (batch["labels"] != IGNORE).tolist() == [[False, True, False, True, False]]


def test_span_unit_fixed_length_runs_and_no_padding() -> None:
    c = mlm(unit="span", rate=0.15, span_distribution="fixed", mean_span_length=3, seed=6)
    interior = 0
    for b in range(5):
        examples = make_examples(32, min_len=30, max_len=120, seed=300 + b)
        batch = c(examples)
        masked = batch["labels"] != IGNORE
        for i, ex in enumerate(examples):
            n = len(ex)
            assert not masked[i, n - 1 :].any()  # [SEP] and padding
            assert not masked[i, 0]  # [CLS]
            for start, end in runs(masked[i]):
                # Runs touching the first / last body token may be cut by the row's ends.
                if start > 1 and end < n - 1:
                    assert end - start == 3, (i, start, end)
                    interior += 1
                else:
                    assert end - start <= 3
    assert interior > 200


def test_span_unit_rate_and_contiguity() -> None:
    c = mlm(unit="span", rate=0.15, seed=8)  # geometric lengths, mean 3, clipped at 10
    n_masked = n_valid = n_runs = 0
    for b in range(20):
        examples = make_examples(32, min_len=100, max_len=200, seed=400 + b)
        batch = c(examples)
        masked = batch["labels"] != IGNORE
        real = batch["attention_mask"].bool()
        assert not (masked & ~real).any()
        n_masked += int(masked.sum())
        n_valid += int(real.sum()) - 2 * len(examples)
        n_runs += sum(len(runs(row)) for row in masked)
    # ~9.6e4 valid tokens; spans make draws correlated (sd ~ 0.003), tolerance 0.015.
    assert abs(n_masked / n_valid - 0.15) < 0.015
    # Token masking would give runs of mean length ~1.2; spans of mean ~2.7 (geometric 1/3, <= 10).
    assert n_masked / n_runs > 2.0


def test_rate_setter_changes_the_realised_rate() -> None:
    examples = make_examples(64, min_len=80, max_len=120, seed=9)
    c = mlm(rate=0.1)
    before = realised_rate([c(examples)])
    c.rate = 0.5
    assert c.rate == 0.5
    after = realised_rate([c(examples)])
    # ~6400 valid tokens: sd 0.004 and 0.006.
    assert abs(before - 0.1) < 0.03
    assert abs(after - 0.5) < 0.03


# --------------------------------------------------------------------------------------------
# MLMCollator: bad input


def test_empty_batch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        mlm()([])


def test_mask_id_none_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="mask_id"):
        MLMCollator(mask_id=None, pad_id=PAD, vocab_size=VOCAB)  # type: ignore[arg-type]


def test_bad_unit_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'sentence'"):
        mlm(unit="sentence")


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_outside_unit_interval_is_a_value_error(rate: float) -> None:
    with pytest.raises(ValueError, match=str(rate)):
        mlm(rate=rate)
    c = mlm(rate=0.2)
    with pytest.raises(ValueError, match=str(rate)):
        c.rate = rate
    assert c.rate == 0.2


def test_split_over_one_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="replace_prob"):
        mlm(replace_prob=0.8, random_prob=0.3)


def test_string_field_is_a_type_error_naming_it() -> None:
    examples = [
        {"input_ids": [CLS, 10, SEP], "text": "a b"},
        {"input_ids": [CLS, SEP], "text": "c"},
    ]
    with pytest.raises(TypeError, match="'text'"):
        mlm()(examples)


def test_field_of_wrong_length_is_a_value_error() -> None:
    examples = [{"input_ids": [CLS, 10, SEP], "token_type_ids": [0, 0]}]
    with pytest.raises(ValueError, match="token_type_ids"):
        mlm()(examples)


# --------------------------------------------------------------------------------------------
# MLMCollator.from_tokenizer


def test_from_tokenizer_reads_the_tokenizer() -> None:
    tok = FakeTokenizer(all_special_ids=(PAD, CLS, SEP, MASK, UNK, 7), padding_side="left")
    c = MLMCollator.from_tokenizer(tok, seed=0, rate=1.0)
    assert c.mask_id == MASK and c.pad_id == PAD and c.vocab_size == VOCAB
    assert c.padding_side == "left"
    assert set(c.special_ids) == {PAD, CLS, SEP, MASK, UNK, 7}
    batch = c([[CLS, 7, 10, 11, SEP], [CLS, 12, SEP]])
    # Left padding, and the tokenizer's special id 7 is never masked.
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert (batch["labels"] != IGNORE).tolist() == [
        [False, False, True, True, False],
        [False, False, False, True, False],
    ]


def test_from_tokenizer_kwargs_override() -> None:
    tok = FakeTokenizer(padding_side="left")
    c = MLMCollator.from_tokenizer(tok, padding_side="right", rate=0.25, unit="span", seed=3)
    assert c.padding_side == "right" and c.rate == 0.25 and c.unit == "span" and c.seed == 3


def test_from_tokenizer_random_replacements_stay_in_vocab() -> None:
    tok = FakeTokenizer(vocab_size=50)
    c = MLMCollator.from_tokenizer(tok, seed=0, rate=1.0, replace_prob=0.0, random_prob=1.0)
    batch = c([[CLS, *range(5, 45), SEP]] * 8)
    out = batch["input_ids"][batch["labels"] != IGNORE]
    assert ((out >= 5) & (out < 50)).all()


def test_from_tokenizer_without_mask_token() -> None:
    with pytest.raises(ValueError, match="mask"):
        MLMCollator.from_tokenizer(FakeTokenizer(mask_token_id=None))


def test_from_tokenizer_without_pad_token() -> None:
    with pytest.raises(ValueError, match="pad"):
        MLMCollator.from_tokenizer(FakeTokenizer(pad_token_id=None))


# --------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("unit", ["token", "word", "span"])
def test_same_seed_same_batches_different_seed_different(unit: str) -> None:
    examples = [make_examples(16, seed=s, words=True) for s in range(3)]
    a, b, other = mlm(unit=unit, seed=1), mlm(unit=unit, seed=1), mlm(unit=unit, seed=2)
    for ex in examples:
        x, y, z = a(ex), b(ex), other(ex)
        assert batches_equal(x, y)
        assert not torch.equal(x["labels"], z["labels"])


def test_successive_batches_differ() -> None:
    examples = make_examples(16, seed=0)
    c = mlm()
    assert not torch.equal(c(examples)["labels"], c(examples)["labels"])


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("unit", ["token", "word", "span"])
def test_global_rng_untouched(unit: str, keyed: bool) -> None:
    examples = make_examples(16, seed=1, words=True)
    if keyed:
        examples = [dict(e, idx=i) for i, e in enumerate(examples)]
    c = mlm(unit=unit, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for _ in range(3):
        c(examples)
    assert torch.equal(torch.get_rng_state(), before)


def test_seed_none_comes_from_the_global_generator() -> None:
    torch.manual_seed(42)
    a = MLMCollator(mask_id=MASK, pad_id=PAD, vocab_size=VOCAB)
    torch.manual_seed(42)
    b = MLMCollator(mask_id=MASK, pad_id=PAD, vocab_size=VOCAB)
    c = MLMCollator(mask_id=MASK, pad_id=PAD, vocab_size=VOCAB)
    assert a.seed == b.seed != c.seed


# --------------------------------------------------------------------------------------------
# Keyed masks (IndexedDataset)


def test_indexed_dataset() -> None:
    ds = IndexedDataset([[5, 6], {"input_ids": [7], "label": 1}], key="i")
    assert len(ds) == 2
    assert ds[0] == {"input_ids": [5, 6], "i": 0}
    assert ds[1] == {"input_ids": [7], "label": 1, "i": 1}


def _real_part(batch: dict, row: int, n: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    sl = slice(batch["input_ids"].shape[1] - n, None) if side == "left" else slice(0, n)
    return batch["input_ids"][row, sl], batch["labels"][row, sl]


@pytest.mark.parametrize("redraw", ["always", "epoch"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("unit", ["token", "word", "span"])
def test_keyed_masks_do_not_depend_on_the_batch(unit: str, side: str, redraw: str) -> None:
    short = make_examples(6, min_len=10, max_len=20, seed=1, words=True)
    long = make_examples(6, min_len=60, max_len=80, seed=2, words=True)
    ds = IndexedDataset(short + long)

    def c(batch: list[dict], multiple: int | None = None) -> dict[str, torch.Tensor]:
        # A fresh collator per batch: every example is at its first draw (redraw="always").
        return mlm(
            unit=unit,
            rate=0.4,
            padding_side=side,
            pad_to_multiple_of=multiple,
            seed=3,
            return_index=True,
            redraw=redraw,
        )(batch)

    for i in range(6):
        n = len(short[i]["input_ids"])
        alone = c([ds[i]])
        assert "idx" in alone and alone["idx"].tolist() == [i]
        assert (alone["labels"] != IGNORE).any()
        # Last in a batch of longer examples (more padding), and with pad_to_multiple_of.
        mixed = c([ds[6], ds[(i + 1) % 6], ds[7 + i % 5], ds[i]])
        padded = c([ds[i], ds[6 + i]], multiple=8)
        for batch, row in ((mixed, 3), (padded, 0)):
            ids, labels = _real_part(batch, row, n, side)
            assert torch.equal(labels, alone["labels"][0]), f"masks of example {i} moved"
            assert torch.equal(ids, alone["input_ids"][0]), f"corruption of example {i} moved"


def test_keyed_masks_epoch_and_seed() -> None:
    """redraw="epoch": masks keyed by (seed, epoch, idx) only."""
    ds = IndexedDataset(make_examples(8, seed=4))
    batch = [ds[i] for i in range(8)]
    c = mlm(rate=0.3, seed=1, redraw="epoch")
    epoch0 = c(batch)
    assert batches_equal(c(batch), epoch0)  # the same batch again gives the same masks
    c.set_epoch(1)
    assert c.epoch == 1
    epoch1 = c(batch)
    assert not torch.equal(epoch1["labels"], epoch0["labels"])
    # Same (seed, epoch, idx): same masks, in a fresh collator too.
    fresh = mlm(rate=0.3, seed=1, redraw="epoch")
    fresh.set_epoch(1)
    assert batches_equal(fresh(batch), epoch1)
    c.set_epoch(0)
    assert batches_equal(c(batch), epoch0)
    # Different seed, same epoch and idx: different masks.
    other = mlm(rate=0.3, seed=2, redraw="epoch")
    assert not torch.equal(other(batch)["labels"], epoch0["labels"])


def test_keyed_masks_index_key_none_uses_streams() -> None:
    ds = IndexedDataset(make_examples(8, seed=4))
    batch = [ds[i] for i in range(8)]
    c = mlm(rate=0.3, index_key=None)
    assert not torch.equal(c(batch)["labels"], c(batch)["labels"])


# --------------------------------------------------------------------------------------------
# DataLoader workers


SAME = [CLS, *range(100, 160), SEP]  # every example of the "identical" dataset


def load(
    dataset: Any, collator: Any, *, num_workers: int, batch_size: int = 8, **kw: Any
) -> list[dict]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collator,
        num_workers=num_workers,
        **kw,
    )
    return list(loader)


def test_workers_have_distinct_streams_and_runs_repeat() -> None:
    data = [list(SAME) for _ in range(64)]
    run1 = load(data, mlm(seed=7), num_workers=2)
    run2 = load(data, mlm(seed=7), num_workers=2)
    assert len(run1) == 8
    # Identical data: equal masks in two batches would mean a shared stream. Batches 2k and
    # 2k + 1 come from workers 0 and 1.
    labels = [b["labels"] for b in run1]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            assert not torch.equal(labels[i], labels[j]), (i, j)
    # Rows inside one batch differ too.
    assert not torch.equal(labels[0][0], labels[0][1])
    assert_batches_equal(run1, run2)
    other = load(data, mlm(seed=8), num_workers=2)
    assert not torch.equal(other[0]["labels"], run1[0]["labels"])


def test_keyed_masks_same_with_any_number_of_workers() -> None:
    ds = IndexedDataset(make_examples(48, seed=12))
    main = load(ds, mlm(seed=3, rate=0.3), num_workers=0)
    workers = load(ds, mlm(seed=3, rate=0.3), num_workers=2)
    assert len(main) == 6
    assert_batches_equal(workers, main)


def realised_rate(batches: list[dict]) -> float:
    masked = sum(int((b["labels"] != IGNORE).sum()) for b in batches)
    valid = sum(int(b["attention_mask"].sum()) - 2 * b["attention_mask"].shape[0] for b in batches)
    return masked / valid


def test_persistent_workers_see_a_new_rate() -> None:
    data = make_examples(64, min_len=50, max_len=70, seed=13)
    c = mlm(rate=0.1, seed=0)
    loader = DataLoader(data, batch_size=8, collate_fn=c, num_workers=2, persistent_workers=True)
    first = list(loader)
    c.rate = 0.5
    second = list(loader)
    # ~3800 valid tokens per epoch: sd 0.005 at 0.1, 0.008 at 0.5.
    assert abs(realised_rate(first) - 0.1) < 0.04
    assert abs(realised_rate(second) - 0.5) < 0.04


def test_persistent_workers_see_set_epoch() -> None:
    ds = IndexedDataset(make_examples(32, seed=14))
    c = mlm(rate=0.3, seed=0, redraw="epoch")
    loader = DataLoader(ds, batch_size=8, collate_fn=c, num_workers=2, persistent_workers=True)
    epoch0 = list(loader)
    c.set_epoch(1)
    epoch1 = list(loader)
    for a, b in zip(epoch0, epoch1):
        assert not torch.equal(a["labels"], b["labels"])
    # The workers' epoch-1 masks are exactly those of epoch 1 computed in this process.
    ref = mlm(rate=0.3, seed=0, redraw="epoch")
    ref.set_epoch(1)
    assert_batches_equal(epoch1, load(ds, ref, num_workers=0))


def test_new_workers_do_not_repeat_the_previous_epoch() -> None:
    data = [list(SAME) for _ in range(32)]
    c = mlm(seed=0)
    loader = DataLoader(data, batch_size=8, collate_fn=c, num_workers=2)
    first = [b["labels"] for b in loader]
    second = [b["labels"] for b in loader]  # new worker processes, same epoch, no idx
    for a in first:
        for b in second:
            assert not torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# state_dict


def test_state_dict_round_trip() -> None:
    c = mlm(seed=5, rate=0.3)
    c.set_epoch(4)
    examples = make_examples(8, seed=15)
    c(examples)
    c(examples)
    state = c.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    d = mlm(seed=99, rate=0.15)
    d.load_state_dict(state)
    assert (d.seed, d.rate, d.epoch) == (5, 0.3, 4)
    # The state is a snapshot, not a view of the live collator.
    c.rate = 0.9
    c.set_epoch(7)
    assert c.state_dict()["rate"] == 0.9 and state["rate"] == 0.3
    # Keyed masks follow (seed, epoch, idx): restored == original settings.
    keyed = [dict(input_ids=e, idx=i) for i, e in enumerate(examples)]
    ref = mlm(seed=5, rate=0.3)
    ref.set_epoch(4)
    assert batches_equal(d(keyed), ref(keyed))
    # Streams: two collators restored from one state draw the same next batches.
    e, f = mlm(seed=0), mlm(seed=1)
    e.load_state_dict(state)
    f.load_state_dict(state)
    assert batches_equal(e(examples), f(examples))
    assert batches_equal(e(examples), f(examples))


# --------------------------------------------------------------------------------------------
# T5Collator


EOS = 1
SENTINELS = list(range(999, 899, -1))  # <extra_id_0> = 999, <extra_id_1> = 998, ...


def t5(**kwargs: Any) -> T5Collator:
    kwargs.setdefault("seed", 0)
    return T5Collator(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, **kwargs)


def t5_examples(n: int, *, seed: int, min_len: int = 10, max_len: int = 60) -> list[list[int]]:
    """Word tokens only; every other example ends with EOS."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(min_len, max_len + 1, (), generator=g))
        body = torch.randint(FIRST_WORD, END_WORD, (length,), generator=g).tolist()
        out.append(body + [EOS] if i % 2 else body)
    return out


def reconstruct(inputs: list[int], labels: list[int], sentinels: Sequence[int]) -> list[int]:
    """Undo T5 span corruption: put each sentinel's span from ``labels`` back into ``inputs``."""
    sentinel_set = set(sentinels)
    spans: dict[int, list[int]] = {}
    current: int | None = None
    for t in labels:
        if t == IGNORE:
            break
        if t in sentinel_set:
            current = t
            spans[current] = []
        elif current is not None:
            spans[current].append(t)
    out: list[int] = []
    for t in inputs:
        out.extend(spans.pop(t) if t in sentinel_set else [t])
    assert not spans, f"spans never used in the inputs: {sorted(spans)}"
    return out


def t5_rows(batch: dict) -> list[tuple[list[int], list[int]]]:
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][i].sum())
        labels = batch["labels"][i]
        rows.append((batch["input_ids"][i, :n].tolist(), labels[labels != IGNORE].tolist()))
    return rows


def noise_counts(batch: dict) -> list[int]:
    """Noise tokens per row: the targets that are neither sentinels nor EOS."""
    return [len([t for t in tgt if t not in SENTINELS and t != EOS]) for _, tgt in t5_rows(batch)]


def test_t5_outputs() -> None:
    examples = t5_examples(16, seed=0)
    batch = t5(rate=0.3)(examples)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    assert all(v.dtype == torch.long and v.shape[0] == 16 for v in batch.values())
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    am = batch["attention_mask"]
    # Attention mask: a prefix of ones per row, pad ids after it.
    assert torch.equal(am, (torch.arange(am.shape[1]) < am.sum(1, keepdim=True)).long())
    assert (batch["input_ids"][am == 0] == PAD).all()
    labels = batch["labels"]
    n_tgt = (labels != IGNORE).sum(1, keepdim=True)
    # Labels: real targets first, then only -100.
    assert torch.equal(labels != IGNORE, torch.arange(labels.shape[1]) < n_tgt)
    assert (n_tgt < labels.shape[1]).any()  # some rows are padded
    for inputs, targets in t5_rows(batch):
        assert targets[-1] == EOS and EOS not in targets[:-1]
        assert inputs[-1] == EOS and EOS not in inputs[:-1]
        # Sentinels appear in order, the same ones in inputs and targets.
        used = [t for t in inputs if t in SENTINELS]
        assert used == SENTINELS[: len(used)] and len(used) >= 1
        assert [t for t in targets if t in SENTINELS] == used
        assert targets[0] == SENTINELS[0]


@pytest.mark.parametrize("rate", [0.15, 0.5])
@pytest.mark.parametrize("exact", [True, False])
def test_t5_reconstructs_the_original(rate: float, exact: bool) -> None:
    examples = t5_examples(64, seed=1)
    batch = t5(rate=rate, exact=exact)(examples)
    for ex, (inputs, targets) in zip(examples, t5_rows(batch)):
        original = ex if ex[-1] == EOS else ex + [EOS]
        assert reconstruct(inputs, targets[:-1], SENTINELS) == original


def test_t5_noise_density() -> None:
    examples = t5_examples(256, seed=2, min_len=20, max_len=200)
    n_valid = [len([t for t in e if t != EOS]) for e in examples]
    for exact, tol in ((True, 0.005), (False, 0.015)):
        batch = t5(rate=0.15, exact=exact, seed=3)(examples)
        noise = noise_counts(batch)
        if exact:
            # T5's arithmetic: exactly round(rate * n) noise tokens in every row.
            assert noise == [round(0.15 * n) for n in n_valid]
        assert abs(sum(noise) / sum(n_valid) - 0.15) < tol
    # Mean span length about 3 with exact spans: round(n_noise / 3) spans per row.
    rows = t5_rows(t5(rate=0.15)(examples))
    spans = [len([t for t in tgt if t in SENTINELS]) for _, tgt in rows]
    assert spans == [max(1, round(round(0.15 * n) / 3)) for n in n_valid]


def test_t5_special_ids_never_noise() -> None:
    examples = [[5, 6, UNK, 7, 8, UNK, 9, 10, 11, 12] * 3 for _ in range(8)]
    batch = t5(rate=0.5, special_ids=[UNK])(examples)
    for inputs, targets in t5_rows(batch):
        assert UNK not in targets
        assert inputs.count(UNK) == 6


def test_t5_pad_to_multiple_of() -> None:
    batch = t5(rate=0.3, pad_to_multiple_of=8)(t5_examples(8, seed=4))
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape[1] % 8 == 0
    for inputs, targets in t5_rows(batch):
        assert targets[-1] == EOS and inputs[-1] == EOS
    assert (batch["input_ids"][batch["attention_mask"] == 0] == PAD).all()


def test_t5_keyed_masks_do_not_depend_on_the_batch() -> None:
    examples = t5_examples(8, seed=5, min_len=10, max_len=20)
    examples += t5_examples(4, seed=6, min_len=80, max_len=100)
    ds = IndexedDataset(examples)
    for i in range(8):
        # Fresh collators: example i at its first draw in both batches.
        alone = t5(rate=0.3, return_index=True)([ds[i]])
        mixed = t5(rate=0.3, return_index=True)([ds[8], ds[9], ds[i], ds[10]])
        assert alone["idx"].tolist() == [i]
        assert t5_rows(alone)[0] == t5_rows(mixed)[2]


def test_t5_deterministic_and_global_rng_untouched() -> None:
    examples = t5_examples(16, seed=7)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b = t5(seed=1)(examples), t5(seed=1)(examples)
    assert torch.equal(torch.get_rng_state(), before)
    assert batches_equal(a, b)
    assert not batches_equal(a, t5(seed=2)(examples))


def test_t5_rate_setter_and_errors() -> None:
    examples = t5_examples(64, seed=8, min_len=100, max_len=100)
    c = t5(rate=0.1)
    c.rate = 0.5
    assert noise_counts(c(examples)) == [50] * 64
    with pytest.raises(ValueError):
        c.rate = 2.0
    with pytest.raises(ValueError, match="sentinel"):
        T5Collator(sentinel_ids=[], eos_id=EOS, pad_id=PAD)
    with pytest.raises(ValueError, match="empty"):
        c([])


class FakeT5Tokenizer:
    def __init__(self, n_sentinels: int = 5, *, unknown: int | None = UNK, eos: int | None = EOS):
        self.vocab = {f"<extra_id_{i}>": 999 - i for i in range(n_sentinels)}
        self.unk_token_id = unknown
        self.eos_token_id = eos
        self.pad_token_id = PAD
        self.padding_side = "right"
        self.all_special_ids = [PAD, EOS, UNK, *self.vocab.values()]

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.vocab.get(token, self.unk_token_id)


@pytest.mark.parametrize("unknown", [UNK, None])
def test_t5_from_tokenizer(unknown: int | None) -> None:
    c = T5Collator.from_tokenizer(FakeT5Tokenizer(5, unknown=unknown), seed=0, rate=0.5)
    assert c.sentinel_ids == [999, 998, 997, 996, 995]
    assert c.eos_id == EOS and c.pad_id == PAD
    examples = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]] * 4
    for inputs, targets in t5_rows(c(examples)):
        assert reconstruct(inputs, targets[:-1], c.sentinel_ids) == examples[0] + [EOS]


def test_t5_from_tokenizer_errors() -> None:
    with pytest.raises(ValueError, match="sentinel"):
        T5Collator.from_tokenizer(FakeT5Tokenizer(0))
    with pytest.raises(ValueError, match="eos"):
        T5Collator.from_tokenizer(FakeT5Tokenizer(3, eos=None))
    # Explicit sentinel ids skip the lookup.
    c = T5Collator.from_tokenizer(FakeT5Tokenizer(0), sentinel_ids=[50, 51])
    assert c.sentinel_ids == [50, 51]


def test_t5_left_padding_applies_to_inputs_only() -> None:
    examples = [list(range(10, 30)), list(range(40, 46))]
    right = T5Collator(sentinel_ids=list(range(99, 89, -1)), eos_id=1, pad_id=0, seed=0)(examples)
    left = T5Collator(
        sentinel_ids=list(range(99, 89, -1)), eos_id=1, pad_id=0, seed=0, padding_side="left"
    )(examples)
    assert torch.equal(left["labels"], right["labels"])
    for b in range(2):
        n = int(right["attention_mask"][b].sum())
        assert torch.equal(left["input_ids"][b, -n:], right["input_ids"][b, :n])
        assert left["attention_mask"][b, -n:].all() and not left["attention_mask"][b, :-n].any()


@pytest.mark.parametrize("make", [mlm, t5])
def test_index_is_dropped_by_default(make) -> None:
    batch = make()(IndexedDataset([list(range(10, 30)), list(range(40, 50))]))
    assert "idx" not in batch
    batch = make(return_index=True)([IndexedDataset([list(range(10, 30))])[0]])
    assert batch["idx"].tolist() == [0]


def test_streams_differ_by_rank(monkeypatch) -> None:
    import maskwise.collators.base as collators

    examples = [list(range(10, 60))] * 4
    masks = []
    for rank in (0, 1):
        monkeypatch.setattr(collators, "distributed_rank", lambda rank=rank: rank)
        masks.append(mlm(rate=0.3, seed=0)(examples)["labels"])
    assert not torch.equal(masks[0], masks[1])
