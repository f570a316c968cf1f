"""Ids that must be distinct or in range are checked: a ValueError naming the argument and the
value, instead of silently wrong inputs or targets.

* ``corrupt``: ``mask_id`` must be a non-negative id below ``vocab_size`` (when given) that
  fits the dtype of ``input_ids``. It may be one of ``special_ids``: Hugging Face tokenizers list
  the mask token among their special ids, and ``special_ids`` only names the ids a random
  replacement may not be.
* ``t5_corrupt``: sentinels must be distinct, and differ from ``pad_id`` and ``eos_id``.
* ``lm_labels``: ``prompt_lengths`` must be >= 0.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise.functional import corrupt, lm_labels, t5_corrupt, t5_corrupt_with_lengths

IDS = torch.tensor([[5, 6, 7, 8, 9]])
MASKED = torch.tensor([[False, True, True, False, True]])


@pytest.mark.parametrize(
    ("mask_id", "vocab_size", "shown"),
    [
        (10, 10, r"mask_id.*\[0, vocab_size\) = \[0, 10\) \(10 given"),
        (-1, 10, "mask_id.*-1"),
        (-3, None, "mask_id.*-3"),
    ],
)
@pytest.mark.parametrize("replace_prob", [1.0, 0.8])
def test_corrupt_mask_id_outside_the_vocabulary(
    mask_id: int, vocab_size: int | None, shown: str, replace_prob: float
) -> None:
    random_prob = 0.0 if vocab_size is None else 1.0 - replace_prob
    with pytest.raises(ValueError, match=shown):
        corrupt(
            IDS,
            MASKED,
            mask_id=mask_id,
            vocab_size=vocab_size,
            replace_prob=replace_prob,
            random_prob=random_prob,
        )


def test_corrupt_mask_id_that_does_not_fit_the_dtype() -> None:
    with pytest.raises(ValueError, match="mask_id.*300.*uint8"):
        corrupt(IDS.to(torch.uint8), MASKED, mask_id=300, vocab_size=None, random_prob=0.0)


def test_corrupt_mask_id_may_be_a_special_id() -> None:
    """As MLMCollator.from_tokenizer passes it (tokenizer.all_special_ids holds [MASK])."""
    x, y = corrupt(IDS, MASKED, mask_id=3, vocab_size=10, special_ids=[0, 1, 2, 3])
    assert y.tolist() == [[-100, 6, 7, -100, 9]]
    assert not torch.isin(x[MASKED], torch.tensor([0, 1, 2])).any()


@pytest.mark.parametrize(
    ("sentinels", "shown"),
    [
        ([99, 0, 97], r"sentinel_ids.*pad_id=0"),
        ([99, 98, 1], r"sentinel_ids.*eos_id=1"),
        ([99, 98, 99], r"sentinel_ids.*99.*more than once"),
        (torch.tensor([99, 99]), r"sentinel_ids.*99.*more than once"),
        (torch.tensor([[99, 0]]), r"sentinel_ids.*pad_id=0"),
    ],
)
def test_t5_sentinels_must_be_distinct(sentinels, shown: str) -> None:
    masked = torch.tensor([[False, True, False, True, False]])
    for fn in (t5_corrupt, t5_corrupt_with_lengths):
        with pytest.raises(ValueError, match=shown):
            fn(IDS, masked, sentinel_ids=sentinels, eos_id=1, pad_id=0)


def test_t5_pad_may_equal_eos() -> None:
    masked = torch.tensor([[False, True, False, False, False]])
    x, y = t5_corrupt(IDS, masked, sentinel_ids=[99], eos_id=1, pad_id=1)
    assert x.tolist() == [[5, 99, 7, 8, 9, 1]] and y.tolist() == [[99, 6, 1]]


def test_lm_labels_negative_prompt_lengths() -> None:
    with pytest.raises(ValueError, match=r"prompt_lengths.*-1"):
        lm_labels(torch.arange(8).view(2, 4), prompt_lengths=torch.tensor([1, -1]))
    # Longer than the row: the whole row is prompt (allowed).
    labels = lm_labels(torch.arange(8).view(2, 4), prompt_lengths=torch.tensor([9, 0]))
    assert labels.tolist() == [[-100] * 4, [4, 5, 6, 7]]


@settings(max_examples=50, deadline=None)
@given(
    sentinels=st.lists(st.integers(0, 12), min_size=1, max_size=6),
    eos_id=st.integers(0, 12),
    pad_id=st.integers(0, 12),
)
def test_t5_sentinel_checks_property(sentinels: list[int], eos_id: int, pad_id: int) -> None:
    ids = torch.tensor([[20, 21, 22, 23]])
    masked = torch.tensor([[False, True, False, False]])
    bad = len(set(sentinels)) < len(sentinels) or eos_id in sentinels or pad_id in sentinels
    if bad:
        with pytest.raises(ValueError, match="sentinel_ids"):
            t5_corrupt(ids, masked, sentinel_ids=sentinels, eos_id=eos_id, pad_id=pad_id)
    else:
        x, y = t5_corrupt(ids, masked, sentinel_ids=sentinels, eos_id=eos_id, pad_id=pad_id)
        assert x[0, 1] == sentinels[0] and y[0, 0] == sentinels[0]


@settings(max_examples=50, deadline=None)
@given(mask_id=st.integers(-5, 40), vocab_size=st.integers(1, 32))
def test_corrupt_mask_id_property(mask_id: int, vocab_size: int) -> None:
    ids = torch.randint(0, vocab_size, (2, 6))
    masked = torch.ones(2, 6, dtype=torch.bool)
    if 0 <= mask_id < vocab_size:
        x, _ = corrupt(
            ids, masked, mask_id=mask_id, vocab_size=vocab_size, replace_prob=1.0, random_prob=0.0
        )
        assert (x == mask_id).all()
    else:
        with pytest.raises(ValueError, match=f"mask_id.*{mask_id}"):
            corrupt(ids, masked, mask_id=mask_id, vocab_size=vocab_size, random_prob=0.0)
