"""Specs with per-sample data: padding, cross, prefix-LM, packed documents."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from maskwise.attention.base import (
    BlockFlags,
    Blocks,
    Pairs,
    Structure,
    host_check,
    lengths_tensor,
)
from maskwise.attention.spec import AttentionSpec

__all__ = ["Cross", "Documents", "Padding", "PrefixLM"]

Tensor = torch.Tensor
_BIG = 2**62  # document id given to padding for block ranges (sorts after every real document)


def _check_at_most(name: str, t: Tensor, n: int) -> None:
    """Lengths must fit ``n`` positions (checked where it costs no device sync: on CPU)."""
    if host_check(t) and int(t.max()) > n:
        raise ValueError(f"{name} must be <= {n} (max {int(t.max())} given).")


def _block_counts(real: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
    """(B, n) number of real positions in each block ``[starts, ends)`` (positions outside
    ``[0, L)`` are not real)."""
    c = torch.nn.functional.pad(real.long().cumsum(1), (1, 0))  # (B, L + 1)
    L = real.shape[1]
    return c[:, ends.clamp(0, L)] - c[:, starts.clamp(0, L)]


class Padding(AttentionSpec):
    """Self-attention over padded rows: query and key must both be real tokens.

    Built from ``lengths`` (B,) (right padding) or an HF ``attention_mask`` (B, L), 1 = real
    (any padding side). Padded queries attend nothing, so their outputs are zeros.
    """

    def __init__(self, lengths_or_attention_mask: Any) -> None:
        x = lengths_or_attention_mask
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
        self.real: Tensor | None = None
        self.lengths: Tensor | None = None
        if t.dim() == 2:
            self.real = t.bool()
            self.batch = t.shape[0]
        else:
            self.lengths = lengths_tensor("lengths", x)
            self.batch = self.lengths.shape[0]

    def check(self, Q: int, KV: int) -> None:
        if self.real is not None and self.real.shape[1] != KV:
            raise ValueError(f"padding mask has length {self.real.shape[1]}, keys have {KV}.")
        if self.lengths is not None:
            _check_at_most("padding lengths", self.lengths, KV)

    def real_positions(self, L: int) -> Tensor:
        """(B, L) bool: True at real tokens."""
        if self.real is not None:
            return self.real
        assert self.lengths is not None
        return torch.arange(L, device=self.lengths.device) < self.lengths[:, None]

    def _real_at(self, b: Tensor, pos: Tensor) -> Tensor:
        # Positions before the key sequence (queries when Q > KV) are not real.
        if self.real is not None:
            L = self.real.shape[1]
            return (pos >= 0) & (pos < L) & self.real[b, pos.clamp(0, L - 1)]
        assert self.lengths is not None
        return (pos >= 0) & (pos < self.lengths[b])

    def allowed(self, at: Pairs) -> Tensor:
        return self._real_at(at.b, at.p) & self._real_at(at.b, at.kv)

    def blocks(self, at: Blocks) -> BlockFlags:
        real = self.real_positions(at.KV)
        cq = _block_counts(real, at.ps, at.pe)  # (B, nQ)
        ck = _block_counts(real, at.ks, at.ke)  # (B, nK)
        any_ = (cq > 0)[:, :, None] & (ck > 0)[:, None, :]
        all_ = (cq == (at.qe - at.qs))[:, :, None] & (ck == (at.ke - at.ks))[:, None, :]
        return BlockFlags(any_, all_)

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        if self.lengths is None:  # an HF mask may have holes: real keys are no interval
            return None
        n = self.lengths.to(device).view(-1, 1)  # (B, 1)
        p = torch.arange(KV - Q, KV, device=device).view(1, -1)  # (1, Q)
        # Real queries attend [0, n); padding after them attends [n, n), before 0: [0, 0).
        lo = torch.where(p < n, 0, n)
        return lo, torch.where(p < 0, 0, n)

    @property
    def structure(self) -> Structure:
        return Structure(segments=lambda L: torch.where(self.real_positions(L), 0, -1))

    def __repr__(self) -> str:
        return f"padding(batch={self.batch})"


class Cross(AttentionSpec):
    """Cross-attention between padded query rows and padded key rows: query ``q`` of sample
    ``b`` may attend key ``kv`` iff ``q < q_lengths[b]`` and ``kv < kv_lengths[b]`` (query
    indices, not positions: the queries are their own sequence)."""

    def __init__(self, q_lengths: Any, kv_lengths: Any) -> None:
        self.q_lengths = lengths_tensor("q_lengths", q_lengths)
        self.kv_lengths = lengths_tensor("kv_lengths", kv_lengths)
        if self.q_lengths.shape != self.kv_lengths.shape:
            raise ValueError(
                f"q_lengths and kv_lengths must have the same batch size "
                f"({self.q_lengths.shape[0]} and {self.kv_lengths.shape[0]} given)."
            )
        self.batch = self.q_lengths.shape[0]

    def check(self, Q: int, KV: int) -> None:
        _check_at_most("q_lengths", self.q_lengths, Q)
        _check_at_most("kv_lengths", self.kv_lengths, KV)

    def allowed(self, at: Pairs) -> Tensor:
        return (at.q < self.q_lengths[at.b]) & (at.kv < self.kv_lengths[at.b])

    def blocks(self, at: Blocks) -> BlockFlags:
        ql = self.q_lengths.view(-1, 1, 1)
        kl = self.kv_lengths.view(-1, 1, 1)
        any_ = (at.qs.view(1, -1, 1) < ql) & (at.ks.view(1, 1, -1) < kl)
        all_ = (at.qe.view(1, -1, 1) <= ql) & (at.ke.view(1, 1, -1) <= kl)
        return BlockFlags(any_, all_)

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        kl = self.kv_lengths.to(device).view(-1, 1).expand(-1, Q)  # (B, Q)
        q = torch.arange(Q, device=device).view(1, -1)
        return torch.where(q < self.q_lengths.to(device).view(-1, 1), 0, kl), kl

    def __repr__(self) -> str:
        return f"cross(batch={self.batch})"


class PrefixLM(AttentionSpec):
    """Prefix-LM: keys ``0 .. prefix_lengths[b] - 1`` are visible to every query
    (bidirectional prefix); after the prefix, attention is causal."""

    def __init__(self, prefix_lengths: Any) -> None:
        self.prefix = lengths_tensor("prefix_lengths", prefix_lengths)
        self.batch = self.prefix.shape[0]

    def check(self, Q: int, KV: int) -> None:
        _check_at_most("prefix_lengths", self.prefix, KV)

    def allowed(self, at: Pairs) -> Tensor:
        return (at.kv <= at.p) | (at.kv < self.prefix[at.b])

    def blocks(self, at: Blocks) -> BlockFlags:
        p = self.prefix.view(-1, 1, 1)
        ks, ke = at.ks[None, None, :], at.ke[None, None, :]
        any_ = (ks <= (at.pe[None, :, None] - 1)) | (ks < p)
        all_ = ((ke - 1) <= at.ps[None, :, None]) | (ke <= p)
        return BlockFlags(any_, all_)

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        p = torch.arange(KV - Q, KV, device=device).view(1, -1)  # (1, Q)
        hi = torch.maximum(p + 1, self.prefix.to(device).view(-1, 1))  # (B, Q)
        return torch.zeros_like(hi), hi

    def __repr__(self) -> str:
        return f"prefix_lm(batch={self.batch})"


class Documents(AttentionSpec):
    """Packed sequences: a token attends only tokens of its own document (the
    cross-contamination fix for packing).

    Built from per-token document ids (B, L) (non-decreasing along each row, -1 for padding,
    which attends nothing; :func:`maskwise.packing.pack` makes them) or, per row, a list of
    document lengths (the rest of the row is padding). Combine with :func:`causal` for packed
    causal LM: ``causal() & documents(...)``.
    """

    def __init__(self, doc_ids_or_lengths: Any) -> None:
        x = doc_ids_or_lengths
        self._lengths: list[list[int]] | None = None
        self.ids: Tensor | None = None
        self._cache: Tensor | None = None  # ids built from lengths, for the last length asked
        self._device = torch.device("cpu")  # where ids built from lengths go
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            if x.dtype.is_floating_point or x.dtype == torch.bool:
                raise TypeError(f"document ids must be integers ({x.dtype} given).")
            self.ids = x.long()
            self.batch = x.shape[0]
            if host_check(x):
                _check_sorted(self.ids)
        elif isinstance(x, Sequence) and all(isinstance(r, Sequence) for r in x):
            rows = [[int(n) for n in r] for r in x]
            if any(n < 0 for r in rows for n in r):
                raise ValueError(f"document lengths must be >= 0 ({rows} given).")
            self._lengths = rows
            self.batch = len(rows)
        else:
            raise TypeError(
                "documents takes per-token ids (B, L) or per-row lists of document lengths "
                f"({type(x).__name__} given)."
            )

    def to(self, device: torch.device | str) -> AttentionSpec:
        out = super().to(device)
        if self._lengths is not None and self._device != torch.device(device):
            out = copy.copy(out) if out is self else out  # ids from lengths: built on `device`
            vars(out).update(_device=torch.device(device), _cache=None)
            vars(out).pop("_lowered", None)
        return out

    @property
    def device(self) -> torch.device:
        return self.ids.device if self.ids is not None else self._device

    def doc_ids(self, L: int) -> Tensor:
        """(B, L) int64 document ids, -1 on padding."""
        if self.ids is not None:
            if self.ids.shape[1] != L:
                raise ValueError(f"document ids have length {self.ids.shape[1]}, keys have {L}.")
            return self.ids
        assert self._lengths is not None
        out = torch.full((len(self._lengths), L), -1, dtype=torch.long)
        for i, row in enumerate(self._lengths):  # host-side construction from Python lists
            if sum(row) > L:
                raise ValueError(f"row {i}: document lengths {row} sum to {sum(row)} > {L}.")
            lengths = torch.tensor(row, dtype=torch.long)
            out[i, : sum(row)] = torch.repeat_interleave(torch.arange(len(row)), lengths)
        return out.to(self._device)

    def check(self, Q: int, KV: int) -> None:
        self.doc_ids(KV)  # raises when the documents do not fit

    def _ids(self, L: int) -> Tensor:
        """Ids for ``L`` keys; from lengths, at least as long as the documents (``L = 0``: the
        length is unknown, as for :attr:`mask_mod`; positions beyond are padding)."""
        if self.ids is not None:
            return self.ids
        assert self._lengths is not None
        L = max([L] + [sum(r) for r in self._lengths])
        if self._cache is None or self._cache.shape[1] != L:
            self._cache = self.doc_ids(L)
        return self._cache

    def allowed(self, at: Pairs) -> Tensor:
        ids = self._ids(at.KV)
        L = ids.shape[1]
        if at.Q == at.KV == L:
            # Every index is in range: the plain rule, cheapest inside FlexAttention's kernels.
            dk = ids[at.b, at.kv]
            return (ids[at.b, at.q] == dk) & (dk >= 0)
        p = at.p  # < 0 when Q > KV: no document
        inside = (p >= 0) & (p < L) & (at.kv < L)
        dq = ids[at.b, p.clamp(0, L - 1)]
        dk = ids[at.b, at.kv.clamp(0, L - 1)]
        return inside & (dq == dk) & (dk >= 0)

    def blocks(self, at: Blocks) -> BlockFlags:
        ids = self._ids(at.KV)
        ranked = torch.where(ids >= 0, ids, _BIG)  # padding sorts last
        L = ranked.shape[1]
        ps, pl = at.ps, at.pe - 1  # first and last query position of each block
        k_lo, k_hi = ranked[:, at.ks], ranked[:, at.ke - 1]  # (B, nK)
        if at.Q == at.KV:  # the same blocks on both sides (the common case: fewer small ops)
            q_lo, q_hi = k_lo, k_hi
        else:
            # Ids are non-decreasing, so a block's documents are the range [first, last].
            # Query positions before 0 (Q > KV) have no document: a block of only those is
            # empty.
            none = pl < 0
            q_lo = torch.where(none, _BIG, ranked[:, ps.clamp(0, L - 1)])  # (B, nQ)
            q_hi = torch.where(none, _BIG, ranked[:, pl.clamp(0, L - 1)])
        lo = torch.maximum(q_lo[:, :, None], k_lo[:, None, :])
        any_ = (lo <= torch.minimum(q_hi[:, :, None], k_hi[:, None, :])) & (lo < _BIG)
        one_q = q_lo == q_hi  # (B, nQ): the block lies in one document
        one_k = one_q if at.Q == at.KV else k_lo == k_hi
        all_ = (one_q[:, :, None] & one_k[:, None, :]) & (q_lo[:, :, None] == k_lo[:, None, :])
        all_ &= lo < _BIG  # lo == q_lo == k_lo where all_
        if at.Q > at.KV:
            all_ &= (ps >= 0)[None, :, None]
        return BlockFlags(any_, all_)

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        ids = self._ids(KV).to(device)  # (B, KV) non-decreasing, padding (-1) last
        # Each position's document is the run [start, end) of its id (O(L): running max / min
        # of the run boundaries); padding attends nothing: [start, start).
        new = torch.ones_like(ids, dtype=torch.bool)  # True where a run starts
        torch.ne(ids[:, 1:], ids[:, :-1], out=new[:, 1:])
        pos = torch.arange(KV, device=device, dtype=torch.int32)  # int32: half the traffic
        start = (pos * new).cummax(1).values
        after = torch.full(ids.shape, KV, dtype=torch.int32, device=device)  # next run's start
        after[:, :-1].copy_(pos[1:]).masked_fill_(~new[:, 1:], KV)
        end = after.flip(1).cummin(1).values.flip(1)
        end = torch.where(ids >= 0, end, start)
        if Q == KV:
            return start, end
        p = torch.arange(KV - Q, KV, device=device)  # queries before position 0: [0, 0)
        pc = p.clamp(0, KV - 1)
        return start[:, pc].masked_fill(p < 0, 0), end[:, pc].masked_fill(p < 0, 0)

    @property
    def structure(self) -> Structure:
        return Structure(segments=self.doc_ids)

    def __repr__(self) -> str:
        return f"documents(batch={self.batch})"


def _check_sorted(ids: Tensor) -> None:
    ranked = torch.where(ids >= 0, ids, _BIG)
    bad = (ranked[:, 1:] < ranked[:, :-1]).any(1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            "document ids must be non-decreasing along each row, with padding (-1) only at the "
            f"end (row {row}: {ids[row].tolist()[:32]}...)."
        )
