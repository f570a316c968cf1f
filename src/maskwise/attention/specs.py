"""Attention-mask specs: one source of truth per mask, lowered to every backend.

A spec says which query may attend which key (True = may attend, as SDPA's boolean
``attn_mask`` and FlexAttention's ``mask_mod``). Every spec defines two things:

* ``allowed(b, q, kv, Q, KV)``: the rule, on broadcastable integer tensors; it is the
  FlexAttention ``mask_mod``, the dense mask, and the reference for everything else;
* ``blocks(...)``: for each (query block, key block), whether *any* and whether *all* of its
  pairs are allowed, computed from the structure alone (interval arithmetic on lengths,
  offsets and document ranges), so ``block_mask`` never builds a dense Q x KV tensor.

Alignment when ``Q != KV`` (decoding with a KV cache): queries are the *last* Q positions of the
KV sequence, so query ``i`` sits at position ``i + KV - Q`` (bottom-right alignment, as
FlashAttention and ``torch.nn.attention.bias.causal_lower_right``; SDPA's ``is_causal`` is
top-left). Causal, sliding-window, prefix-LM, chunked and document masks use that position.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "AttentionSpec",
    "Causal",
    "Chunked",
    "Cross",
    "Documents",
    "Full",
    "MaskMod",
    "Padding",
    "PrefixLM",
    "SlidingWindow",
    "causal",
    "chunked",
    "cross",
    "DropKeys",
    "documents",
    "drop_keys",
    "full",
    "mask_mod",
    "padding",
    "prefix_lm",
    "sliding_window",
]

Tensor = torch.Tensor
_BIG = 2**62  # document id given to padding for block ranges (sorts after every real document)


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int ({value!r} given).")
    return int(value)


def _lengths_tensor(name: str, lengths: Any) -> Tensor:
    t = lengths if isinstance(lengths, torch.Tensor) else torch.as_tensor(lengths)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
        raise TypeError(
            f"{name} must be integers of shape (B,) ({t.dtype} {tuple(t.shape)} given)."
        )
    if t.device.type == "cpu" and t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0 ({t.tolist()} given).")
    return t.long()


class AttentionSpec:
    """Base class: combine with ``&`` / ``|``, lower with :meth:`dense`, :meth:`block_mask`,
    :attr:`mask_mod`."""

    #: rows of per-sample data (None: the same mask for every sample)
    batch: int | None = None

    # -- the rule ------------------------------------------------------------------------------
    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        raise NotImplementedError

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(any, all, maybe) for blocks ``[qs, qe) x [ks, ke)``: (B' or 1, nQ, nK) bools.

        ``any``: some pair of the block may attend; ``all``: every pair may. ``maybe`` (None when
        ``any`` is exact) marks blocks whose ``any`` is only an upper bound; :meth:`block_mask`
        evaluates the rule on those blocks alone. The default knows nothing: every block is a
        "maybe".
        """
        nq, nk = qs.shape[0], ks.shape[0]
        t = torch.ones(1, nq, nk, dtype=torch.bool, device=qs.device)
        return t, ~t, t

    def _check(self, Q: int, KV: int) -> None:
        """Raise if the spec's data do not fit these lengths."""

    def to(self, device: torch.device | str) -> AttentionSpec:
        """The same spec with its tensors on ``device``."""
        return self

    # -- composition ---------------------------------------------------------------------------
    def __and__(self, other: AttentionSpec) -> AttentionSpec:
        return _And(self, _as_spec(other))

    def __or__(self, other: AttentionSpec) -> AttentionSpec:
        return _Or(self, _as_spec(other))

    # -- lowering ------------------------------------------------------------------------------
    @property
    def mask_mod(self) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` for ``Q == KV``
        (use :meth:`mask_mod_for` when the lengths differ)."""
        return self.mask_mod_for(None, None)

    def mask_mod_for(
        self, q_len: int | None, kv_len: int | None
    ) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        Q = KV = 0 if q_len is None else q_len
        if kv_len is not None:
            KV = kv_len
        spec = self

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return spec.allowed(b, q_idx, kv_idx, Q, KV)

        mask_mod.__name__ = f"maskwise_{type(self).__name__.lower().lstrip('_')}"
        return mask_mod

    def dense(
        self, q_len: int, kv_len: int | None = None, *, device: torch.device | str | None = None
    ) -> Tensor:
        """Bool (B or 1, 1, Q, KV), True = may attend.

        >>> causal().dense(3).int()[0, 0].tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
        """
        Q = _check_size("q_len", q_len)
        KV = Q if kv_len is None else _check_size("kv_len", kv_len)
        spec = self.to(device) if device is not None else self
        spec._check(Q, KV)
        device = _device_of(spec, device)
        B = spec.batch or 1
        b = torch.arange(B, device=device).view(B, 1, 1, 1)
        q = torch.arange(Q, device=device).view(1, 1, Q, 1)
        kv = torch.arange(KV, device=device).view(1, 1, 1, KV)
        return spec.allowed(b, q, kv, Q, KV).expand(B, 1, Q, KV)

    def block_mask(
        self,
        q_len: int,
        kv_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        block_size: int = 128,
    ) -> Any:
        """FlexAttention ``BlockMask`` built from the structure: O((Q/bs) x (KV/bs)) memory.

        Each (query block, key block) is classified empty / full / partial analytically
        (compositions combine their parts' classifications); only blocks that a composition
        cannot classify exactly have the rule evaluated on them. No dense Q x KV tensor and no
        ``torch.compile``.
        """
        from maskwise.attention.lowering import build_block_mask

        return build_block_mask(self, q_len, kv_len, device=device, block_size=block_size)


def _as_spec(x: Any) -> AttentionSpec:
    if isinstance(x, AttentionSpec):
        return x
    if callable(x):
        return MaskMod(x)
    raise TypeError(f"Cannot combine an attention spec with {type(x).__name__}.")


def _device_of(spec: AttentionSpec, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for t in _tensors(spec):
        return t.device
    return torch.device("cpu")


def _tensors(spec: AttentionSpec) -> list[Tensor]:
    if isinstance(spec, (_And, _Or)):
        return _tensors(spec.a) + _tensors(spec.b)
    return [v for v in vars(spec).values() if isinstance(v, torch.Tensor)]


def _merge_batch(a: int | None, b: int | None) -> int | None:
    if a is not None and b is not None and a != b:
        raise ValueError(f"Cannot combine specs for batch sizes {a} and {b}.")
    return a if a is not None else b


# ------------------------------------------------------------------------------------------------
# Leaf specs
# ------------------------------------------------------------------------------------------------
class Full(AttentionSpec):
    """Every query attends every key."""

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return (q >= 0) & (kv >= 0)

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        t = torch.ones(1, qs.shape[0], ks.shape[0], dtype=torch.bool, device=qs.device)
        return t, t, None

    def __repr__(self) -> str:
        return "full()"


class Causal(AttentionSpec):
    """Query ``i`` (at position ``p = i + KV - Q``) attends keys ``0 .. p``."""

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return kv <= q + (KV - Q)

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        o = KV - Q
        any_ = ks[None, :] <= (qe[:, None] - 1 + o)
        all_ = (ke[None, :] - 1) <= (qs[:, None] + o)
        return any_.unsqueeze(0), all_.unsqueeze(0), None

    def __repr__(self) -> str:
        return "causal()"


class SlidingWindow(AttentionSpec):
    """Query at position ``p`` attends keys ``p - size + 1 .. p``: ``size`` keys, itself included
    (Hugging Face and xFormers' convention; FlashAttention's ``window_size=(w, 0)`` and
    attention-gym's ``q - kv <= w`` admit ``w + 1``). Causal by construction."""

    def __init__(self, size: int) -> None:
        self.size = _check_size("size", size)

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        p = q + (KV - Q)
        return (kv <= p) & (kv > p - self.size)

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        o, w = KV - Q, self.size
        p_lo, p_hi = qs[:, None] + o, qe[:, None] - 1 + o  # (nQ, 1) first and last query position
        k_lo, k_hi = ks[None, :], ke[None, :] - 1
        any_ = (k_lo <= p_hi) & (k_hi >= p_lo - w + 1)
        all_ = (k_hi <= p_lo) & (k_lo >= p_hi - w + 1)
        return any_.unsqueeze(0), all_.unsqueeze(0), None

    def __repr__(self) -> str:
        return f"sliding_window({self.size})"


class Chunked(AttentionSpec):
    """Bidirectional attention inside consecutive chunks of ``size`` positions (block-diagonal);
    ``causal() & chunked(n)`` is chunked causal attention (as Llama 4's chunked layers)."""

    def __init__(self, size: int) -> None:
        self.size = _check_size("size", size)

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return torch.div(q + (KV - Q), self.size, rounding_mode="floor") == torch.div(
            kv, self.size, rounding_mode="floor"
        )

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        o, s = KV - Q, self.size
        cq_lo, cq_hi = (qs + o) // s, (qe - 1 + o) // s
        ck_lo, ck_hi = ks // s, (ke - 1) // s
        any_ = (cq_lo[:, None] <= ck_hi[None, :]) & (ck_lo[None, :] <= cq_hi[:, None])
        all_ = (
            (cq_lo == cq_hi)[:, None]
            & (ck_lo == ck_hi)[None, :]
            & (cq_lo[:, None] == ck_lo[None, :])
        )
        return any_.unsqueeze(0), all_.unsqueeze(0), None

    def __repr__(self) -> str:
        return f"chunked({self.size})"


class _RealPositions(AttentionSpec):
    """Shared by padding and cross: query q and key kv must both be real."""

    def _q_ok(self, b: Tensor, q: Tensor, Q: int, KV: int) -> Tensor:
        raise NotImplementedError

    def _kv_ok(self, b: Tensor, kv: Tensor) -> Tensor:
        raise NotImplementedError

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return self._q_ok(b, q, Q, KV) & self._kv_ok(b, kv)

    @staticmethod
    def _block_counts(real: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
        """(B, n) number of real positions in each block ``[starts, ends)`` (positions outside
        ``[0, L)`` are not real)."""
        c = torch.nn.functional.pad(real.long().cumsum(1), (1, 0))  # (B, L + 1)
        L = real.shape[1]
        return c[:, ends.clamp(0, L)] - c[:, starts.clamp(0, L)]


class Padding(_RealPositions):
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
            self.lengths = _lengths_tensor("lengths", t)
            self.batch = self.lengths.shape[0]

    def to(self, device: torch.device | str) -> Padding:
        out = Padding.__new__(Padding)
        out.batch = self.batch
        out.real = None if self.real is None else self.real.to(device)
        out.lengths = None if self.lengths is None else self.lengths.to(device)
        return out

    def _check(self, Q: int, KV: int) -> None:
        if self.real is not None and self.real.shape[1] != KV:
            raise ValueError(f"padding mask has length {self.real.shape[1]}, keys have {KV}.")
        if self.lengths is not None and self.lengths.device.type == "cpu" and self.lengths.numel():
            if int(self.lengths.max()) > KV:
                raise ValueError(
                    f"padding lengths must be <= {KV} (max {int(self.lengths.max())} given)."
                )

    def _real_row(self, b: Tensor, pos: Tensor) -> Tensor:
        # Positions before the key sequence (queries when Q > KV) are not real.
        if self.real is not None:
            L = self.real.shape[1]
            return (pos >= 0) & (pos < L) & self.real[b, pos.clamp(0, L - 1)]
        return (pos >= 0) & (pos < self.lengths[b])  # type: ignore[index]

    def _q_ok(self, b: Tensor, q: Tensor, Q: int, KV: int) -> Tensor:
        return self._real_row(b, q + (KV - Q))

    def _kv_ok(self, b: Tensor, kv: Tensor) -> Tensor:
        return self._real_row(b, kv)

    def real_positions(self, L: int) -> Tensor:
        if self.real is not None:
            return self.real
        assert self.lengths is not None
        return torch.arange(L, device=self.lengths.device) < self.lengths[:, None]

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        real = self.real_positions(KV)
        o = KV - Q
        cq = self._block_counts(real, qs + o, qe + o)  # (B, nQ)
        ck = self._block_counts(real, ks, ke)  # (B, nK)
        any_ = (cq > 0)[:, :, None] & (ck > 0)[:, None, :]
        all_ = (cq == (qe - qs))[:, :, None] & (ck == (ke - ks))[:, None, :]
        return any_, all_, None

    def __repr__(self) -> str:
        return f"padding(batch={self.batch})"


class Cross(_RealPositions):
    """Cross-attention between padded query rows and padded key rows: query ``q`` of sample
    ``b`` may attend key ``kv`` iff ``q < q_lengths[b]`` and ``kv < kv_lengths[b]``."""

    def __init__(self, q_lengths: Any, kv_lengths: Any) -> None:
        self.q_lengths = _lengths_tensor("q_lengths", q_lengths)
        self.kv_lengths = _lengths_tensor("kv_lengths", kv_lengths)
        if self.q_lengths.shape != self.kv_lengths.shape:
            raise ValueError(
                f"q_lengths and kv_lengths must have the same batch size "
                f"({self.q_lengths.shape[0]} and {self.kv_lengths.shape[0]} given)."
            )
        self.batch = self.q_lengths.shape[0]

    def to(self, device: torch.device | str) -> Cross:
        return Cross(self.q_lengths.to(device), self.kv_lengths.to(device))

    def _check(self, Q: int, KV: int) -> None:
        for name, t, n in (("q_lengths", self.q_lengths, Q), ("kv_lengths", self.kv_lengths, KV)):
            if t.device.type == "cpu" and t.numel() and int(t.max()) > n:
                raise ValueError(f"{name} must be <= {n} (max {int(t.max())} given).")

    def _q_ok(self, b: Tensor, q: Tensor, Q: int, KV: int) -> Tensor:
        return q < self.q_lengths[b]

    def _kv_ok(self, b: Tensor, kv: Tensor) -> Tensor:
        return kv < self.kv_lengths[b]

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        ql = self.q_lengths.view(-1, 1, 1)
        kl = self.kv_lengths.view(-1, 1, 1)
        any_ = (qs.view(1, -1, 1) < ql) & (ks.view(1, 1, -1) < kl)
        all_ = (qe.view(1, -1, 1) <= ql) & (ke.view(1, 1, -1) <= kl)
        return any_, all_, None

    def __repr__(self) -> str:
        return f"cross(batch={self.batch})"


class PrefixLM(AttentionSpec):
    """Prefix-LM: keys ``0 .. prefix_lengths[b] - 1`` are visible to every query
    (bidirectional prefix); after the prefix, attention is causal."""

    def __init__(self, prefix_lengths: Any) -> None:
        self.prefix = _lengths_tensor("prefix_lengths", prefix_lengths)
        self.batch = self.prefix.shape[0]

    def to(self, device: torch.device | str) -> PrefixLM:
        return PrefixLM(self.prefix.to(device))

    def _check(self, Q: int, KV: int) -> None:
        if self.prefix.device.type == "cpu" and self.prefix.numel() and int(self.prefix.max()) > KV:
            raise ValueError(
                f"prefix_lengths must be <= {KV} (max {int(self.prefix.max())} given)."
            )

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return (kv <= q + (KV - Q)) | (kv < self.prefix[b])

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        o = KV - Q
        p = self.prefix.view(-1, 1, 1)
        any_ = (ks[None, None, :] <= (qe[None, :, None] - 1 + o)) | (ks[None, None, :] < p)
        all_ = ((ke[None, None, :] - 1) <= (qs[None, :, None] + o)) | (ke[None, None, :] <= p)
        return any_, all_, None

    def __repr__(self) -> str:
        return f"prefix_lm(batch={self.batch})"


class Documents(AttentionSpec):
    """Packed sequences: a token attends only tokens of its own document (the
    cross-contamination fix for packing).

    Built from per-token document ids (B, L) (non-decreasing along each row, -1 for padding,
    which attends nothing) or, per row, a list of document lengths (the rest of the row is
    padding). Combine with :func:`causal` for packed causal LM: ``causal() & documents(...)``.
    """

    def __init__(self, doc_ids_or_lengths: Any) -> None:
        x = doc_ids_or_lengths
        self._lengths: list[list[int]] | None = None
        self.ids: Tensor | None = None
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            if x.dtype.is_floating_point or x.dtype == torch.bool:
                raise TypeError(f"document ids must be integers ({x.dtype} given).")
            self.ids = x.long()
            self.batch = x.shape[0]
            if x.device.type == "cpu":
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

    def to(self, device: torch.device | str) -> Documents:
        out = Documents.__new__(Documents)
        out.batch, out._lengths = self.batch, self._lengths
        out.ids = None if self.ids is None else self.ids.to(device)
        out._device = torch.device(device)  # type: ignore[attr-defined]
        return out

    def doc_ids(self, L: int) -> Tensor:
        """(B, L) int64 document ids, -1 on padding."""
        if self.ids is not None:
            if self.ids.shape[1] != L:
                raise ValueError(f"document ids have length {self.ids.shape[1]}, keys have {L}.")
            return self.ids
        assert self._lengths is not None
        device = getattr(self, "_device", torch.device("cpu"))
        out = torch.full((len(self._lengths), L), -1, dtype=torch.long)
        for i, row in enumerate(self._lengths):  # host-side construction from Python lists
            if sum(row) > L:
                raise ValueError(f"row {i}: document lengths {row} sum to {sum(row)} > {L}.")
            out[i, : sum(row)] = torch.repeat_interleave(
                torch.arange(len(row)), torch.tensor(row, dtype=torch.long)
            )
        return out.to(device)

    def _check(self, Q: int, KV: int) -> None:
        self.doc_ids(KV)  # raises when the documents do not fit

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        ids = self._cached(KV)
        L = ids.shape[1]
        if Q == KV == L:
            # Every index is in range: the plain rule, cheapest inside FlexAttention's kernels.
            dk = ids[b, kv]
            return (ids[b, q] == dk) & (dk >= 0)
        p = q + (KV - Q)  # query position; < 0 when Q > KV: no document
        inside = (p >= 0) & (p < L) & (kv < L)
        dq = ids[b, p.clamp(0, L - 1)]
        dk = ids[b, kv.clamp(0, L - 1)]
        return inside & (dq == dk) & (dk >= 0)

    def _cached(self, L: int) -> Tensor:
        """Ids for ``L`` keys; from lengths, at least as long as the documents (``L = 0``: the
        length is unknown, as for :attr:`mask_mod`; positions beyond are padding)."""
        if self.ids is not None:
            return self.ids
        assert self._lengths is not None
        L = max([L] + [sum(r) for r in self._lengths])
        cache = getattr(self, "_cache", None)
        if cache is None or cache.shape[1] != L:
            cache = self.doc_ids(L)
            self._cache = cache
        return cache

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        ids = self._cached(KV)
        ranked = torch.where(ids >= 0, ids, _BIG)  # padding sorts last
        L = ranked.shape[1]
        o = KV - Q
        # Ids are non-decreasing, so a block's documents are the range [first, last]. Query
        # positions before 0 (Q > KV) have no document: a block made only of them is empty.
        first, last = (qs + o).clamp(0, L - 1), (qe - 1 + o).clamp(0, L - 1)
        none = (qe - 1 + o) < 0
        q_lo = torch.where(none, _BIG, ranked[:, first])  # (B, nQ)
        q_hi = torch.where(none | ((qs + o) < 0) & (qe - 1 + o < 0), _BIG, ranked[:, last])
        k_lo, k_hi = ranked[:, ks], ranked[:, ke - 1]  # (B, nK)
        lo = torch.maximum(q_lo[:, :, None], k_lo[:, None, :])
        hi = torch.minimum(q_hi[:, :, None], k_hi[:, None, :])
        any_ = (lo <= hi) & (lo < _BIG)
        all_ = (
            (q_lo == q_hi)[:, :, None]
            & (k_lo == k_hi)[:, None, :]
            & (q_lo[:, :, None] == k_lo[:, None, :])
        )
        all_ &= (q_lo[:, :, None] < _BIG) & ((qs + o) >= 0)[None, :, None]
        return any_, all_, None

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


class MaskMod(AttentionSpec):
    """Any FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` as a spec.

    Its block structure is unknown, so :meth:`block_mask` evaluates it on every block (as
    ``create_block_mask`` does, in chunks). The head index passed is 0 (specs are shared by all
    heads).
    """

    def __init__(
        self, fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], batch: int | None = None
    ) -> None:
        if not callable(fn):
            raise TypeError(f"mask_mod must be callable ({type(fn).__name__} given).")
        self.fn = fn
        self.batch = batch

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        h = torch.zeros((), dtype=torch.long, device=q.device)
        return self.fn(b, h, q, kv)

    def __repr__(self) -> str:
        return f"mask_mod({getattr(self.fn, '__name__', 'fn')})"


class DropKeys(AttentionSpec):
    """Random key dropping before the softmax (DropKey, Li et al. 2023), as a spec.

    Query ``q`` of sample ``b`` drops key ``kv`` when a counter-based hash of
    ``(seed, step, b, q, kv)`` falls below the rate: every (query, key) pair is dropped
    independently with probability ``rate``, the same for all heads. The pattern is a pure
    function of those integers, so the FlexAttention ``mask_mod`` computes it inside the kernel
    and no B x H x Q x K tensor is made (the dense fallback makes a B x 1 x Q x K one). Combine
    with a structural mask: ``causal() & drop_keys(0.1)``.

    ``rate`` is a float, a schedule (``rate(step)``) or a controller (``rate()``), read when the
    mask is lowered; call :meth:`advance` once per training step for a new pattern. Use it in
    training only (pass the structural mask alone in eval).

    For ``rate <= 0.5`` a block counts as non-empty without evaluating it: a block with every
    one of its ``block_size**2`` pairs dropped has probability ``rate ** (block_size**2)``.
    """

    def __init__(self, rate: Any, *, seed: int = 0) -> None:
        if not (isinstance(rate, (int, float)) or callable(rate)):
            raise TypeError(f"rate must be a float, a schedule or a controller ({rate!r} given).")
        if isinstance(rate, (int, float)) and not 0.0 <= rate <= 1.0:
            raise ValueError(f"The value of rate must be between 0.0 and 1.0 ({rate} given).")
        self.rate_source, self.seed, self.step = rate, int(seed), 0

    @property
    def rate(self) -> float:
        r = self.rate_source
        return float(r) if isinstance(r, (int, float)) else float(r(self.step))

    def advance(self) -> None:
        """Move to the next step's pattern (and the schedule's next rate)."""
        self.step += 1

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        from maskwise.random import hash_keys, mix64

        key = hash_keys(self.seed, self.step).to(q.device)
        z = mix64(mix64(mix64(key + b) + q * 0x9E3779B9) + kv)
        u = ((z >> 40) & ((1 << 24) - 1)).float() * 2.0**-24  # 24 uniform bits
        return u >= self.rate

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        nq, nk = qs.shape[0], ks.shape[0]
        rate = self.rate
        t = torch.ones(1, nq, nk, dtype=torch.bool, device=qs.device)
        if rate == 0.0:
            return t, t, None
        if rate >= 1.0:
            return ~t, ~t, None
        return t, ~t, (None if rate <= 0.5 else t)

    def __repr__(self) -> str:
        return f"drop_keys({self.rate_source!r}, seed={self.seed}, step={self.step})"


# ------------------------------------------------------------------------------------------------
# Compositions
# ------------------------------------------------------------------------------------------------
class _And(AttentionSpec):
    def __init__(self, a: AttentionSpec, b: AttentionSpec) -> None:
        self.a, self.b = a, b
        self.batch = _merge_batch(a.batch, b.batch)

    def to(self, device: torch.device | str) -> _And:
        return _And(self.a.to(device), self.b.to(device))

    def _check(self, Q: int, KV: int) -> None:
        self.a._check(Q, KV)
        self.b._check(Q, KV)

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return self.a.allowed(b, q, kv, Q, KV) & self.b.allowed(b, q, kv, Q, KV)

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        any_a, all_a, maybe_a = self.a.blocks(qs, qe, ks, ke, Q, KV)
        any_b, all_b, maybe_b = self.b.blocks(qs, qe, ks, ke, Q, KV)
        # "all" of an intersection is exact; "any" is exact only where one side is full
        # (two partial blocks may not overlap), or both sides are certainly empty.
        any_, all_ = any_a & any_b, all_a & all_b
        maybe = any_ & ~all_a & ~all_b
        for m in (maybe_a, maybe_b):
            if m is not None:
                maybe = maybe | (any_ & m)
        return any_, all_, maybe

    def __repr__(self) -> str:
        return f"({self.a!r} & {self.b!r})"


class _Or(AttentionSpec):
    def __init__(self, a: AttentionSpec, b: AttentionSpec) -> None:
        self.a, self.b = a, b
        self.batch = _merge_batch(a.batch, b.batch)

    def to(self, device: torch.device | str) -> _Or:
        return _Or(self.a.to(device), self.b.to(device))

    def _check(self, Q: int, KV: int) -> None:
        self.a._check(Q, KV)
        self.b._check(Q, KV)

    def allowed(self, b: Tensor, q: Tensor, kv: Tensor, Q: int, KV: int) -> Tensor:
        return self.a.allowed(b, q, kv, Q, KV) | self.b.allowed(b, q, kv, Q, KV)

    def blocks(
        self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, Q: int, KV: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        any_a, all_a, maybe_a = self.a.blocks(qs, qe, ks, ke, Q, KV)
        any_b, all_b, maybe_b = self.b.blocks(qs, qe, ks, ke, Q, KV)
        # "any" of a union is exact where each side's is (a side that is certainly non-empty
        # settles it); "all" may miss blocks that the two parts cover only together, which
        # costs evaluating the rule on a block that needed none, never a wrong result.
        sure_a = any_a if maybe_a is None else any_a & ~maybe_a
        sure_b = any_b if maybe_b is None else any_b & ~maybe_b
        maybe = None
        if maybe_a is not None or maybe_b is not None:
            maybe = (any_a | any_b) & ~sure_a & ~sure_b
        return any_a | any_b, all_a | all_b, maybe

    def __repr__(self) -> str:
        return f"({self.a!r} | {self.b!r})"


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


def mask_mod(
    fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], *, batch: int | None = None
) -> MaskMod:
    """Wrap any FlexAttention ``mask_mod`` as a spec (composable with ``&`` and ``|``)."""
    return MaskMod(fn, batch)
