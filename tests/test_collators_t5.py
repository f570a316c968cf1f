"""T5Collator fails fast: sentinel ids that clash with padding, EOS or each other, and a sentinel
budget too small for the worst case of the configured rate and row length, are errors when the
collator is built (or, without a known longest row, at the first batch that could overflow),
not deep inside training."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise.collators import MLMCollator, T5Collator, pad_examples
from maskwise.dynamic import ReliabilityController
from maskwise.functional import mask_spans

PAD, EOS = 0, 1


def t5(n_sentinels: int = 10, **kwargs: Any) -> T5Collator:
    kwargs.setdefault("seed", 0)
    return T5Collator(
        sentinel_ids=list(range(999, 999 - n_sentinels, -1)), eos_id=EOS, pad_id=PAD, **kwargs
    )


def row(n: int) -> list[int]:
    return list(range(10, 10 + n))


# --------------------------------------------------------------------------------------------
# 12.17: sentinel ids


@pytest.mark.parametrize(
    "sentinels, match",
    [
        ([999, PAD], r"sentinel_ids.*pad_id"),
        ([EOS, 998], r"sentinel_ids.*eos_id"),
        ([999, 998, 999], r"sentinel_ids.*repeat.*999"),
        ([999, -5], r"sentinel_ids.*-5"),
    ],
)
def test_sentinels_must_be_distinct_from_pad_eos_and_each_other(
    sentinels: list[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        T5Collator(sentinel_ids=sentinels, eos_id=EOS, pad_id=PAD)


@pytest.mark.parametrize("bad", [0, -2])
def test_pad_to_multiple_of_below_one_names_the_argument(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"pad_to_multiple_of.*{bad}"):
        pad_examples([[5, 6]], pad_id=0, pad_to_multiple_of=bad)
    with pytest.raises(ValueError, match=rf"pad_to_multiple_of.*{bad}"):
        t5(pad_to_multiple_of=bad)
    with pytest.raises(ValueError, match=rf"pad_to_multiple_of.*{bad}"):
        MLMCollator(mask_id=3, pad_id=0, vocab_size=50, pad_to_multiple_of=bad)
    with pytest.raises(TypeError, match="pad_to_multiple_of"):
        pad_examples([[5, 6]], pad_id=0, pad_to_multiple_of=2.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# 12.11: the sentinel budget


def test_budget_is_checked_against_the_longest_row_when_built() -> None:
    # 100 tokens at rate 0.5: 50 noise tokens in round(50 / 3) = 17 spans.
    with pytest.raises(ValueError, match=r"max_length=100.*17 spans.*10 sentinel_ids"):
        t5(10, rate=0.5, max_length=100)
    c = t5(17, rate=0.5, max_length=100)
    c([row(100), row(37)])  # the worst case fits


def test_budget_with_a_controller_uses_its_largest_rate() -> None:
    ctrl = ReliabilityController(0.1, min_rate=0.0, max_rate=0.5)
    with pytest.raises(ValueError, match="max_rate"):
        t5(10, rate=ctrl, max_length=100)
    t5(17, rate=ctrl, max_length=100)


def test_a_rate_set_later_is_checked_too() -> None:
    c = t5(10, rate=0.15, max_length=100)
    with pytest.raises(ValueError, match=r"sentinel_ids"):
        c.rate = 0.5
    assert c.rate == 0.15


def test_without_max_length_the_first_batch_that_could_overflow_raises_clearly() -> None:
    c = t5(10, rate=0.5)
    c([row(20)])  # 10 noise tokens, 3 spans: fine
    with pytest.raises(ValueError, match=r"17 spans.*10 sentinel_ids.*max_length"):
        c([row(20), row(100)])


def test_from_tokenizer_takes_max_length_from_the_tokenizer() -> None:
    class Tok:
        unk_token_id, eos_token_id, pad_token_id = 2, EOS, PAD
        padding_side, all_special_ids = "right", [PAD, EOS, 2]
        model_max_length = 100

        def convert_tokens_to_ids(self, token: str) -> int:
            n = int(token[len("<extra_id_") : -1])
            return 999 - n if n < 10 else self.unk_token_id

    with pytest.raises(ValueError, match="max_length=100"):
        T5Collator.from_tokenizer(Tok(), rate=0.5)
    Tok.model_max_length = int(1e30)  # transformers' "no limit"
    assert T5Collator.from_tokenizer(Tok(), rate=0.5).max_length is None


# --------------------------------------------------------------------------------------------
# property: the build-time check is exact for T5's arithmetic


@settings(max_examples=60, deadline=None)
@given(
    n_sentinels=st.integers(1, 30),
    rate=st.floats(0.01, 0.99),
    mean=st.floats(1.0, 6.0),
    max_length=st.integers(1, 120),
)
def test_build_check_accepts_exactly_the_settings_whose_rows_fit(
    n_sentinels: int, rate: float, mean: float, max_length: int
) -> None:
    """Accepted settings collate every row length up to max_length; rejected ones have a row
    that overflows."""
    lengths = torch.arange(1, max_length + 1)
    valid = torch.arange(max_length) < lengths.unsqueeze(1)  # (max_length, max_length)
    masked = mask_spans(valid, rate, mean_length=mean, exact=True)
    prev = torch.nn.functional.pad(masked, (1, 0))[:, :-1]
    worst = int((masked & ~prev).sum(1).max())
    try:
        c = t5(n_sentinels, rate=rate, mean_span_length=mean, max_length=max_length)
    except ValueError:
        assert worst > n_sentinels
    else:
        assert worst <= n_sentinels
        c([row(n) for n in (1, max_length // 2 + 1, max_length)])
