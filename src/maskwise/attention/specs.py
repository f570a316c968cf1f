"""The attention-mask factories of SPEC.md: one function per mask, returning a spec.

Each spec is one rule (:mod:`maskwise.attention.spec`) lowered to every backend
(:mod:`maskwise.attention.lowering`); combine them with ``&`` and ``|``.
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401  (the examples below use it)

from maskwise.attention.base import Structure
from maskwise.attention.batched import Cross, Documents, Padding, PrefixLM
from maskwise.attention.dropkey import DropKeys
from maskwise.attention.positional import Causal, Chunked, Full, SlidingWindow
from maskwise.attention.spec import AttentionSpec, MaskMod, MaskModFn

__all__ = [
    "AttentionSpec",
    "Causal",
    "Chunked",
    "Cross",
    "Documents",
    "DropKeys",
    "Full",
    "MaskMod",
    "Padding",
    "PrefixLM",
    "SlidingWindow",
    "Structure",
    "causal",
    "chunked",
    "cross",
    "documents",
    "drop_keys",
    "full",
    "mask_mod",
    "padding",
    "prefix_lm",
    "sliding_window",
]


# ------------------------------------------------------------------------------------------------
# Factories (the public names of SPEC.md)
# ------------------------------------------------------------------------------------------------
def causal() -> Causal:
    """Causal mask, bottom-right aligned when Q != KV.

    >>> causal().dense(2, 4).int()[0, 0].tolist()   # 2 new queries over 4 cached keys
    [[1, 1, 1, 0], [1, 1, 1, 1]]
    """
    return Causal()


def full() -> Full:
    """No mask."""
    return Full()


def padding(lengths_or_attention_mask: Any) -> Padding:
    """Self-attention over padded rows (query and key both real).

    >>> padding(torch.tensor([2, 3])).dense(3).int()[0, 0].tolist()
    [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    """
    return Padding(lengths_or_attention_mask)


def sliding_window(size: int) -> SlidingWindow:
    """Query i attends keys i - size + 1 .. i (``size`` keys, itself included).

    >>> sliding_window(2).dense(4).int()[0, 0].tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    return SlidingWindow(size)


def prefix_lm(prefix_lengths: Any) -> PrefixLM:
    """Bidirectional over the first ``prefix_lengths[b]`` keys, causal after.

    >>> prefix_lm(torch.tensor([2])).dense(4).int()[0, 0].tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    """
    return PrefixLM(prefix_lengths)


def documents(doc_ids_or_lengths: Any) -> Documents:
    """Packed documents: no attention across documents.

    >>> documents([[2, 1]]).dense(4).int()[0, 0].tolist()   # docs of length 2 and 1, 1 pad
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    """
    return Documents(doc_ids_or_lengths)


def chunked(size: int) -> Chunked:
    """Bidirectional within consecutive chunks of ``size`` positions.

    >>> chunked(2).dense(4).int()[0, 0].tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    """
    return Chunked(size)


def cross(q_lengths: Any, kv_lengths: Any) -> Cross:
    """Padded queries x padded keys (encoder-decoder cross-attention).

    >>> cross(torch.tensor([1]), torch.tensor([2])).dense(2, 3).int()[0, 0].tolist()
    [[1, 1, 0], [0, 0, 0]]
    """
    return Cross(q_lengths, kv_lengths)


def drop_keys(rate: Any, *, seed: int = 0) -> DropKeys:
    """Random key dropping with a float, scheduled or controlled rate (see :class:`DropKeys`).

    >>> m = drop_keys(0.5, seed=1).dense(64)
    >>> 0.4 < float(m.float().mean()) < 0.6
    True
    """
    return DropKeys(rate, seed=seed)


def mask_mod(fn: MaskModFn, *, batch: int | None = None) -> MaskMod:
    """Wrap any FlexAttention ``mask_mod`` as a spec (composable with ``&`` and ``|``)."""
    return MaskMod(fn, batch)
