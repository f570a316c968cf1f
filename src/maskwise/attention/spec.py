"""``AttentionSpec``: the base of every mask, its composition with ``&`` / ``|``, and ``mask_mod``.

A spec says which query may attend which key (True = may attend, as SDPA's boolean
``attn_mask`` and FlexAttention's ``mask_mod``). Every spec defines

* ``allowed(at: Pairs)``: the rule, on broadcastable integer tensors; it is the FlexAttention
  ``mask_mod``, the dense mask, and the reference for everything else;
* ``blocks(at: Blocks)``: for each (query block, key block) tile, whether *any* and whether
  *all* of its pairs are allowed, from the structure alone (interval arithmetic on lengths,
  offsets and document ranges), so a ``BlockMask`` never needs a dense Q x KV tensor;
* ``structure``: the form a fused kernel can express (causal, segments), or None.

The lowerings in :mod:`maskwise.attention.lowering` turn any spec into every format; the methods
below are their entry points.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch

from maskwise.attention.base import BlockFlags, Blocks, Pairs, Structure
from maskwise.attention.lowering import build_block_mask, dense_mask, mask_mod_of

__all__ = ["AttentionSpec", "MaskMod", "merge_batch", "with_batch"]

Tensor = torch.Tensor
Intervals = tuple[Tensor, Tensor]
MaskModFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def merge_batch(a: int | None, b: int | None) -> int | None:
    """The batch size of two combined specs (None: no per-sample data)."""
    if a is not None and b is not None and a != b:
        raise ValueError(f"Cannot combine specs for batch sizes {a} and {b}.")
    return a if a is not None else b


class AttentionSpec:
    """Base class: combine with ``&`` / ``|``; lower with :meth:`dense`, :meth:`block_mask`,
    :attr:`mask_mod`. Subclasses implement :meth:`allowed` and, where they know their block
    structure, :meth:`blocks` and :attr:`structure`."""

    #: rows of per-sample data (None: the same mask for every sample)
    batch: int | None = None
    #: True when the rule depends on the sample index although the spec holds no per-sample
    #: data (random key dropping): lowered for ``batch=B``, every sample gets its own pattern
    per_sample: bool = False

    # -- the rule ------------------------------------------------------------------------------
    def allowed(self, at: Pairs) -> Tensor:
        raise NotImplementedError

    def blocks(self, at: Blocks) -> BlockFlags:
        """Per-tile flags; the default knows nothing: every tile is a "maybe"."""
        t = at.ones()
        return BlockFlags(t, ~t, t)

    @property
    def structure(self) -> Structure | None:
        """The fused-kernel form of the spec (None: only the general kernels express it)."""
        return None

    def intervals(self, Q: int, KV: int, device: torch.device) -> Intervals | None:
        """Per query, the keys it attends as one interval, or None (the default: unknown).

        Returns ``(lo, hi)``, integer (B or 1, Q): query ``q`` attends exactly keys
        ``lo[q] <= kv < hi[q]`` (empty when ``hi <= lo``), with ``lo`` and ``hi``
        non-decreasing in ``q``. Every query's non-empty interval contains its own position or is
        the same as its neighbours', so the union over a block of queries has no gap. The
        block-mask lowering builds a ``BlockMask`` from these in O(L) work plus filling its
        tables, with no sort (FlashMask's column-range idea, per query row).
        """
        return None

    def check(self, Q: int, KV: int) -> None:
        """Raise a ``ValueError`` if the spec's data do not fit these lengths."""

    # -- tensors and devices ---------------------------------------------------------------------
    def tensors(self) -> Iterator[Tensor]:
        """Every tensor the spec (and the specs it combines) holds."""
        for value in vars(self).values():
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, AttentionSpec):
                yield from value.tensors()

    @property
    def device(self) -> torch.device:
        for t in self.tensors():
            return t.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> AttentionSpec:
        """The same spec with its tensors on ``device`` (``self`` when nothing moves)."""
        device = torch.device(device)
        moved = {}
        for name, value in vars(self).items():
            if isinstance(value, (torch.Tensor, AttentionSpec)):
                new = value.to(device)
                if new is not value:
                    moved[name] = new
        if not moved:
            return self
        out = copy.copy(self)
        vars(out).update(moved)
        vars(out).pop("_lowered", None)  # the copy starts its own lowering cache
        return out

    # -- composition ---------------------------------------------------------------------------
    def __and__(self, other: Any) -> AttentionSpec:
        return And(self, as_spec(other))

    def __or__(self, other: Any) -> AttentionSpec:
        return Or(self, as_spec(other))

    # -- lowering ------------------------------------------------------------------------------
    @property
    def mask_mod(self) -> MaskModFn:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` for ``Q == KV``
        (use :meth:`mask_mod_for` when the lengths differ)."""
        return mask_mod_of(self)

    def mask_mod_for(self, q_len: int | None, kv_len: int | None) -> MaskModFn:
        """FlexAttention ``mask_mod`` for ``q_len`` queries over ``kv_len`` keys."""
        return mask_mod_of(self, q_len, kv_len)

    def dense(
        self,
        q_len: int,
        kv_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        batch: int | None = None,
    ) -> Tensor:
        """Bool (B or 1, 1, Q, KV), True = may attend.

        ``batch`` lowers the spec for that many samples (B rows); it is needed only for specs
        whose pattern differs per sample without per-sample data (:attr:`per_sample`, e.g.
        ``drop_keys``), which otherwise give one row (sample 0's pattern). A spec for an empty
        batch gives a (0, 1, Q, KV) mask.

        >>> from maskwise.attention import causal
        >>> causal().dense(3).int()[0, 0].tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
        """
        return dense_mask(with_batch(self, batch), q_len, kv_len, device=device)

    def block_mask(
        self,
        q_len: int,
        kv_len: int | None = None,
        *,
        device: torch.device | str | None = None,
        block_size: int = 128,
        batch: int | None = None,
    ) -> Any:
        """FlexAttention ``BlockMask`` built from the structure: O((Q/bs) x (KV/bs)) memory.

        Each (query block, key block) is classified empty / full / partial analytically
        (compositions combine their parts' classifications); only blocks that a composition
        cannot classify exactly have the rule evaluated on them. No dense Q x KV tensor and no
        ``torch.compile``. ``batch``: as in :meth:`dense`.
        """
        spec = with_batch(self, batch)
        return build_block_mask(spec, q_len, kv_len, device=device, block_size=block_size)


_NOT_STATIC = object()
_ATOMS = (int, float, bool, str, type(None), torch.device, torch.dtype)


def _fingerprint(x: Any, keep: list[torch.Tensor]) -> Any:
    """What a spec's lowering depends on, comparable with ``==``, or ``_NOT_STATIC``.

    Tensors count by identity and version counter (every in-place change bumps it; the cache
    entry keeps them alive, so an identity is never reused while it is compared against);
    nested specs, plain values and lists of them by value. Anything else (a ``mask_mod``
    function, whose closure may hold data that changes; a rate controller; a tensor made in
    inference mode, which has no version counter) makes the spec not static: no cache.
    """
    if isinstance(x, torch.Tensor):
        try:
            version = x._version
        except RuntimeError:  # inference tensors track no version
            return _NOT_STATIC
        keep.append(x)
        return ("tensor", id(x), version)
    if isinstance(x, AttentionSpec):
        items: list[Any] = [type(x)]
        for name, value in sorted(vars(x).items()):
            if name in ("_lowered", "_cache"):  # the cache itself; ids derived from lengths
                continue
            f = _fingerprint(value, keep)
            if f is _NOT_STATIC:
                return f
            items.append((name, f))
        return tuple(items)
    if isinstance(x, (list, tuple)):
        parts = tuple(_fingerprint(v, keep) for v in x)
        return _NOT_STATIC if any(p is _NOT_STATIC for p in parts) else parts
    return x if isinstance(x, _ATOMS) else _NOT_STATIC


def cached_lowering(
    spec: AttentionSpec, what: str, Q: int, KV: int, device: torch.device, build: Callable[[], Any]
) -> Any:
    """``build()``, remembered on ``spec`` (one entry per ``what``) while the spec is static:
    the same lengths and device, its tensors the same objects with the same version counters,
    its other attributes equal (see ``_fingerprint``). Any change gives a fresh lowering,
    never a stale one. Not while ``torch.compile`` traces (the trace owns its constants)."""
    if torch.compiler.is_compiling():
        return build()
    keep: list[torch.Tensor] = []
    fp = _fingerprint(spec, keep)
    if fp is _NOT_STATIC:
        return build()
    key = (Q, KV, device, fp)
    entries = vars(spec).setdefault("_lowered", {})
    hit = entries.get(what)
    if hit is not None and hit[0] == key:
        return hit[2]
    value = build()
    entries[what] = (key, keep, value)
    return value


def with_batch(spec: AttentionSpec, batch: int | None) -> AttentionSpec:
    """``spec`` lowered for ``batch`` samples (``spec`` itself when ``batch`` is None or is
    already its batch size).

    >>> from maskwise.attention import causal, padding
    >>> with_batch(causal(), 3).dense(2).shape
    torch.Size([3, 1, 2, 2])
    >>> with_batch(padding([2, 1]), 3)
    Traceback (most recent call last):
    ...
    ValueError: The spec is for batch size 2 (batch=3 given).
    """
    if batch is None or batch == spec.batch:
        return spec
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be an int >= 0 ({batch!r} given).")
    if spec.batch is not None:
        raise ValueError(f"The spec is for batch size {spec.batch} (batch={batch} given).")
    return _WithBatch(spec, batch)


def as_spec(x: Any) -> AttentionSpec:
    """A spec from a spec or a FlexAttention ``mask_mod`` callable."""
    if isinstance(x, AttentionSpec):
        return x
    if callable(x):
        return MaskMod(x)
    raise TypeError(f"Cannot combine an attention spec with {type(x).__name__}.")


class MaskMod(AttentionSpec):
    """Any FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` as a spec.

    Its block structure is unknown, so :meth:`block_mask` evaluates it on every block (as
    ``create_block_mask`` does, in chunks). The head index passed is 0 (specs are shared by all
    heads).
    """

    def __init__(self, fn: MaskModFn, batch: int | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"mask_mod must be callable ({type(fn).__name__} given).")
        self.fn = fn
        self.batch = batch

    def allowed(self, at: Pairs) -> Tensor:
        h = torch.zeros((), dtype=torch.long, device=at.q.device)
        return self.fn(at.b, h, at.q, at.kv)

    def __repr__(self) -> str:
        return f"mask_mod({getattr(self.fn, '__name__', 'fn')})"


class _Pair(AttentionSpec):
    """Two specs combined: their batch, per-sample flag and checks are both sides'."""

    def __init__(self, a: AttentionSpec, b: AttentionSpec) -> None:
        self.a, self.b = a, b
        self.batch = merge_batch(a.batch, b.batch)

    @property
    def per_sample(self) -> bool:  # type: ignore[override]
        return self.a.per_sample or self.b.per_sample

    def check(self, Q: int, KV: int) -> None:
        self.a.check(Q, KV)
        self.b.check(Q, KV)


class And(_Pair):
    """Both specs allow the pair (``a & b``)."""

    def allowed(self, at: Pairs) -> Tensor:
        return self.a.allowed(at) & self.b.allowed(at)

    def blocks(self, at: Blocks) -> BlockFlags:
        fa, fb = self.a.blocks(at), self.b.blocks(at)
        # "all" of an intersection is exact; "any" is exact only where one side is full
        # (two partial blocks may not overlap), or both sides are certainly empty.
        any_, all_ = fa.any & fb.any, fa.all & fb.all
        maybe = any_ & ~fa.all & ~fb.all
        for m in (fa.maybe, fb.maybe):
            if m is not None:
                maybe = maybe | (any_ & m)
        return BlockFlags(any_, all_, maybe)

    def intervals(self, Q: int, KV: int, device: torch.device) -> Intervals | None:
        ia = self.a.intervals(Q, KV, device)
        ib = None if ia is None else self.b.intervals(Q, KV, device)
        if ia is None or ib is None:
            return None
        # The intersection of two intervals; max and min keep both bounds non-decreasing.
        return torch.maximum(ia[0], ib[0]), torch.minimum(ia[1], ib[1])

    @property
    def structure(self) -> Structure | None:
        sa, sb = self.a.structure, self.b.structure
        if sa is None or sb is None or (sa.segments is not None and sb.segments is not None):
            return None
        return Structure(sa.causal or sb.causal, sa.segments or sb.segments)

    def __repr__(self) -> str:
        return f"({self.a!r} & {self.b!r})"


class Or(_Pair):
    """Either spec allows the pair (``a | b``)."""

    def allowed(self, at: Pairs) -> Tensor:
        return self.a.allowed(at) | self.b.allowed(at)

    def blocks(self, at: Blocks) -> BlockFlags:
        fa, fb = self.a.blocks(at), self.b.blocks(at)
        # "any" of a union is exact where each side's is (a side that is certainly non-empty
        # settles it); "all" may miss blocks that the two parts cover only together, which
        # costs evaluating the rule on a block that needed none, never a wrong result.
        sure_a = fa.any if fa.maybe is None else fa.any & ~fa.maybe
        sure_b = fb.any if fb.maybe is None else fb.any & ~fb.maybe
        maybe = None
        if fa.maybe is not None or fb.maybe is not None:
            maybe = (fa.any | fb.any) & ~sure_a & ~sure_b
        return BlockFlags(fa.any | fb.any, fa.all | fb.all, maybe)

    @property
    def structure(self) -> Structure | None:
        for s in (self.a.structure, self.b.structure):
            if s is not None and s.is_full:  # a side that allows everything
                return s
        return None

    def __repr__(self) -> str:
        return f"({self.a!r} | {self.b!r})"


class _WithBatch(AttentionSpec):
    """A spec without per-sample data, lowered for ``batch`` samples (see :func:`with_batch`):
    the same rule, evaluated for sample indices ``0 .. batch - 1``."""

    def __init__(self, spec: AttentionSpec, batch: int) -> None:
        self.spec = spec
        self.batch = batch

    @property
    def per_sample(self) -> bool:  # type: ignore[override]
        return self.spec.per_sample

    def check(self, Q: int, KV: int) -> None:
        self.spec.check(Q, KV)

    def allowed(self, at: Pairs) -> Tensor:
        return self.spec.allowed(at)

    def blocks(self, at: Blocks) -> BlockFlags:
        return self.spec.blocks(at)

    def intervals(self, Q: int, KV: int, device: torch.device) -> Intervals | None:
        return self.spec.intervals(Q, KV, device)

    @property
    def structure(self) -> Structure | None:
        return self.spec.structure

    def __repr__(self) -> str:
        return f"with_batch({self.spec!r}, {self.batch})"
