"""What every attention-mask spec provides, and the index grids it is evaluated on.

This module is the bottom of :mod:`maskwise.attention`: the lowerings
(:mod:`~maskwise.attention.lowering`) consume a spec only through the :class:`MaskRule`
protocol defined here, the specs (:mod:`~maskwise.attention.specs`) implement it, and
:func:`~maskwise.attention.attend` chooses a kernel from a spec's :class:`Structure`.

Alignment when ``Q != KV`` (decoding with a KV cache): queries are the *last* Q positions of the
key sequence, so query ``i`` sits at position ``i + KV - Q`` (bottom-right alignment, as
FlashAttention and ``torch.nn.attention.bias.causal_lower_right``; SDPA's ``is_causal`` is
top-left). That offset is applied here, once: :attr:`Pairs.p` and :attr:`Blocks.ps` /
:attr:`Blocks.pe` are query *positions*; ``q`` / ``qs`` / ``qe`` stay query *indices* (what
cross-attention's query lengths count).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

__all__ = [
    "BlockFlags",
    "Blocks",
    "MaskRule",
    "Pairs",
    "Structure",
    "check_size",
    "host_check",
    "lengths_tensor",
]

Tensor = torch.Tensor


def check_size(name: str, value: Any) -> int:
    """``value`` as an int if it is a positive integer, else a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int ({value!r} given).")
    return int(value)


def host_check(t: Tensor) -> bool:
    """Whether to validate ``t``'s values on the host: only CPU tensors (no device sync) and not
    while ``torch.compile`` traces (a host read would break the graph)."""
    return t.device.type == "cpu" and t.numel() > 0 and not torch.compiler.is_compiling()


def lengths_tensor(name: str, lengths: Any) -> Tensor:
    """(B,) int64 lengths from a tensor or a list (B may be 0); non-negative (checked on
    CPU)."""
    t = lengths if isinstance(lengths, torch.Tensor) else torch.as_tensor(lengths)
    if not isinstance(lengths, torch.Tensor) and t.numel() == 0:
        t = t.long()  # an empty list (an empty batch): torch.as_tensor makes it float
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
        raise TypeError(
            f"{name} must be integers of shape (B,) ({t.dtype} {tuple(t.shape)} given)."
        )
    if host_check(t) and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0 ({t.tolist()} given).")
    return t.long()


class Pairs(NamedTuple):
    """(query, key) pairs to evaluate a rule on: broadcastable int64 index tensors.

    ``b``: sample, ``q``: query index in ``[0, Q)``, ``kv``: key index in ``[0, KV)``.
    """

    b: Tensor
    q: Tensor
    kv: Tensor
    Q: int
    KV: int

    @property
    def p(self) -> Tensor:
        """Query positions in the key sequence: ``q + KV - Q`` (bottom-right alignment)."""
        return self.q + (self.KV - self.Q)


class Blocks(NamedTuple):
    """A grid of (query block, key block) tiles: query indices ``[qs, qe)`` (nQ,) and key
    indices ``[ks, ke)`` (nK,) per tile row / column."""

    qs: Tensor
    qe: Tensor
    ks: Tensor
    ke: Tensor
    Q: int
    KV: int

    @property
    def ps(self) -> Tensor:
        """First query position of each query block (see :attr:`Pairs.p`)."""
        return self.qs if self.KV == self.Q else self.qs + (self.KV - self.Q)

    @property
    def pe(self) -> Tensor:
        """One past the last query position of each query block."""
        return self.qe if self.KV == self.Q else self.qe + (self.KV - self.Q)

    def ones(self) -> Tensor:
        """(1, nQ, nK) all-True flags on the grid's device."""
        return torch.ones(
            1, self.qs.shape[0], self.ks.shape[0], dtype=torch.bool, device=self.qs.device
        )


class BlockFlags(NamedTuple):
    """Per tile, (B' or 1, nQ, nK) bools: ``any`` (some pair may attend), ``all`` (every pair
    may), and ``maybe`` (None when ``any`` is exact; else the tiles whose ``any`` is only an upper
    bound, on which the block-mask lowering evaluates the rule)."""

    any: Tensor
    all: Tensor
    maybe: Tensor | None = None


class Structure(NamedTuple):
    """The form in which a fused kernel can express a spec exactly.

    The spec allows query position ``p`` to attend key ``kv`` iff both lie in the same segment
    (when ``segments`` is given; ``segments(L)`` returns (B, L) int64 ids, -1 = attends nothing)
    and, when ``causal``, ``kv <= p``. ``Structure()`` is no mask at all. Specs that no such
    form describes have no structure (``None``) and go to the general kernels.
    """

    causal: bool = False
    segments: Callable[[int], Tensor] | None = None

    @property
    def is_full(self) -> bool:
        return not self.causal and self.segments is None


@runtime_checkable
class MaskRule(Protocol):
    """What the lowerings read from a spec (every :class:`~maskwise.attention.AttentionSpec`)."""

    #: rows of per-sample data (None: the same mask for every sample)
    batch: int | None

    def allowed(self, at: Pairs) -> Tensor:
        """Bool, broadcast over ``at``'s tensors: True = the query may attend the key."""
        ...

    def blocks(self, at: Blocks) -> BlockFlags:
        """Per-tile flags from the structure alone (no Q x KV tensor)."""
        ...

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        """Per query, its keys as one interval ``[lo, hi)`` (both non-decreasing), or None."""
        ...

    def check(self, Q: int, KV: int) -> None:
        """Raise a ``ValueError`` if the spec's data do not fit these lengths."""
        ...

    def to(self, device: torch.device | str) -> MaskRule:
        """The same rule with its tensors on ``device``."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the spec's tensors live (CPU for specs without tensors)."""
        ...

    @property
    def structure(self) -> Structure | None:
        """The fused-kernel form of the spec, or None."""
        ...
