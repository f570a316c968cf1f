"""Lowerings: a spec to every mask format, each in one place.

Every function here reads a spec only through :class:`~maskwise.attention.base.MaskRule`:

* :func:`dense_mask`: the bool (B or 1, 1, Q, KV) mask, True = may attend (SDPA);
* :func:`mask_mod_of`: the FlexAttention ``mask_mod``;
* :func:`build_block_mask`: the FlexAttention ``BlockMask``, built from the block flags or, for
  specs whose queries each attend one interval of keys, from those intervals;
* :func:`varlen_offsets`: ``cu_seqlens`` for variable-length kernels;
* the converters to Hugging Face and ``nn.MultiheadAttention`` conventions. Names say what they
  return: ``*_allowed`` / ``hf_bool_mask`` = True may attend; ``*_blocked`` = True may not
  (``nn.MultiheadAttention``'s ``attn_mask`` and ``key_padding_mask``); ``hf_mask`` returns the
  form the model's attention implementation reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from maskwise.attention.base import Blocks, MaskRule, Pairs, check_size

__all__ = [
    "build_block_mask",
    "dense_mask",
    "HF_MASK_FORMS",
    "hf_additive_mask",
    "hf_bool_mask",
    "hf_mask",
    "mask_mod_of",
    "mha_attn_mask_blocked",
    "mha_key_padding_mask_blocked",
    "varlen_offsets",
]

Tensor = torch.Tensor
MaskModFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
_REFINE_CHUNK = 512  # tiles whose rule is evaluated at once when refining
# From this many tiles on, building from intervals (O(L), no sort, ~80 small ops) beats the
# flags (O(tiles) work and a sort, ~45 small ops): measured crossover ~64 x 64 on CPU.
_INTERVALS_MIN_BLOCKS = 64 * 64


def _prepare(
    spec: MaskRule, q_len: int, kv_len: int | None, device: torch.device | str | None
) -> tuple[MaskRule, int, int, torch.device]:
    """Checked lengths and the spec on its device: the common start of every lowering."""
    Q = check_size("q_len", q_len)
    KV = Q if kv_len is None else check_size("kv_len", kv_len)
    if device is not None:
        spec = spec.to(device)
    spec.check(Q, KV)
    return spec, Q, KV, torch.device(device) if device is not None else spec.device


# ------------------------------------------------------------------------------------------------
# Dense and mask_mod
# ------------------------------------------------------------------------------------------------
def dense_mask(
    spec: MaskRule, q_len: int, kv_len: int | None = None, *, device: Any = None
) -> Tensor:
    """Bool (B or 1, 1, Q, KV), True = may attend (see ``AttentionSpec.dense``)."""
    spec, Q, KV, dev = _prepare(spec, q_len, kv_len, device)
    B = 1 if spec.batch is None else spec.batch  # 0 for an empty batch: a (0, 1, Q, KV) mask
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    q = torch.arange(Q, device=dev).view(1, 1, Q, 1)
    kv = torch.arange(KV, device=dev).view(1, 1, 1, KV)
    return spec.allowed(Pairs(b, q, kv, Q, KV)).expand(B, 1, Q, KV)


def mask_mod_of(spec: MaskRule, q_len: int | None = None, kv_len: int | None = None) -> MaskModFn:
    """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` of ``spec`` for ``q_len`` queries over
    ``kv_len`` keys (both None: equal lengths, as FlexAttention's own masks assume)."""
    Q = KV = 0 if q_len is None else q_len
    if kv_len is not None:
        KV = kv_len

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return spec.allowed(Pairs(b, q_idx, kv_idx, Q, KV))

    mask_mod.__name__ = f"maskwise_{type(spec).__name__.lower().lstrip('_')}"
    return mask_mod


# ------------------------------------------------------------------------------------------------
# FlexAttention BlockMask
# ------------------------------------------------------------------------------------------------
def _block_bounds(n: int, bs: int, device: torch.device) -> tuple[Tensor, Tensor]:
    starts = torch.arange(0, n, bs, device=device)
    return starts, (starts + bs).clamp_max(n)


def _refine(spec: MaskRule, cand: Tensor, grid: Blocks, bs: int) -> Tensor:
    """Evaluate the rule on the candidate tiles (C, 3) = (b, qb, kb): does any pair attend?"""
    qs, qe, ks, ke, Q, KV = grid
    out = torch.zeros(cand.shape[0], dtype=torch.bool, device=cand.device)
    r = torch.arange(bs, device=cand.device)
    for i in range(0, cand.shape[0], _REFINE_CHUNK):  # bounded memory: chunk x bs x bs
        c = cand[i : i + _REFINE_CHUNK]
        b, qb, kb = c[:, 0].view(-1, 1, 1), c[:, 1], c[:, 2]
        q = (qs[qb].view(-1, 1) + r).view(-1, bs, 1)  # (c, bs, 1)
        kv = (ks[kb].view(-1, 1) + r).view(-1, 1, bs)  # (c, 1, bs)
        inside = (q < qe[qb].view(-1, 1, 1)) & (kv < ke[kb].view(-1, 1, 1))
        ok = spec.allowed(Pairs(b, q.clamp_max(Q - 1), kv.clamp_max(KV - 1), Q, KV)) & inside
        out[i : i + _REFINE_CHUNK] = ok.flatten(1).any(1)
    return out


def _ranges(
    first: Tensor,
    last: Tensor,
    lo_all: Tensor,
    hi_all: Tensor,
    live: Tensor,
    full: Tensor,
    starts: Tensor,
    ends: Tensor,
) -> Tensor:
    """(4, B, m) = (a, b, f, g): per block of rows, the column blocks ``[a, b)`` where some pair
    is allowed and ``[f, g)`` (inside it) where every pair is. Inputs per block (B, m): ``first``
    the interval start of its first live row, ``last`` the interval end of its last live row,
    ``lo_all`` / ``hi_all`` the start of its last row and the end of its first row (the bounds
    every row's interval covers), ``live`` whether some row is live, ``full`` whether all are;
    column blocks ``[starts, ends)`` (sorted, 1-D)."""
    a = torch.searchsorted(ends, first, right=True)  # first block ending after the first key
    b = torch.where(live, torch.maximum(torch.searchsorted(starts, last), a), a)
    f = torch.searchsorted(starts, lo_all).clamp_(a, b)  # first block inside every interval
    g = torch.searchsorted(ends, hi_all, right=True)  # first block reaching past one of them
    g = torch.where(full, torch.minimum(torch.maximum(g, f), b), f)
    return torch.stack([a, b, f, g])


def _tables(r: Tensor, n: int) -> tuple[Tensor, ...]:
    """From ranges (4, B, m) = (a, b, f, g): the partial blocks ``[a, f) + [g, b)`` and the full
    blocks ``[f, g)`` as (num (B, 1, m), indices (B, 1, m, n)) int32 pairs, listed blocks
    first (the entries after ``num`` are in range but meaningless, as FlexAttention allows)."""
    a, b, f, g = r.to(torch.int32).unsqueeze(2).unbind(0)  # (B, 1, m) each
    j = torch.arange(n, dtype=torch.int32, device=r.device)
    left = f - a  # partial blocks before the full ones
    # Entry j is a + j, plus g - f once j reaches the right piece. Each table is one fresh
    # allocation (the cost at large n), filled in place: [j >= left] = clamp(j + 1 - left, 0, 1).
    part = torch.sub(j + 1, left[..., None]).clamp_(0, 1).mul_((g - f)[..., None])
    part.add_(a[..., None]).add_(j).clamp_(0, n - 1)
    full = torch.add(f[..., None], j).clamp_(max=n - 1)
    return left + (b - g), part, g - f, full


def _from_intervals(
    lo: Tensor, hi: Tensor, B: int, Q: int, KV: int, bs: int, dev: torch.device
) -> tuple[Tensor, ...]:
    """The eight BlockMask tables from per-query key intervals (see ``AttentionSpec.intervals``):
    O(L) work plus a few binary searches per block and filling the tables; no sort, no flags.

    Both bounds are non-decreasing and the intervals leave no gap, so the live queries (those
    with a key) are one run ``[q0, q1)``, the keys they attend one run ``[k0, k1)``, a block's
    keys are the range from its first live query's start to its last live query's end, and key
    ``kv`` is attended by the queries ``[c_lo, c_hi)`` with ``hi > kv >= lo`` (binary search).
    """
    lo, hi = (x.contiguous() for x in torch.broadcast_tensors(lo, hi))  # (B', Q)
    qs, qe = _block_bounds(Q, bs, dev)
    ks, ke = (qs, qe) if KV == Q else _block_bounds(KV, bs, dev)
    alive = hi > lo
    n_live = alive.sum(1, keepdim=True)  # (B', 1)
    q0 = alive.to(torch.uint8).argmax(1, keepdim=True)  # first live query (0 when none)
    q1 = q0 + n_live
    k0 = lo.gather(1, q0.clamp(max=Q - 1))
    k1 = torch.where(n_live > 0, hi.gather(1, (q1 - 1).clamp(min=0)), k0)

    def side(s: Tensor, e: Tensor, r0: Tensor, r1: Tensor) -> tuple[Tensor, ...]:
        """Per block [s, e) of rows whose live run is [r0, r1): its first and last live row,
        whether it has one, and whether every row is live."""
        fr, lr = torch.maximum(s, r0), torch.minimum(e, r1) - 1  # (B', m)
        return fr, lr, fr <= lr, (s >= r0) & (e <= r1)

    fq, lq, live_q, full_q = side(qs, qe, q0, q1)

    def at(x: Tensor, i: Tensor) -> Tensor:  # x (B', Q) at rows i (B' or 1, nQ)
        return x.gather(1, i.expand(x.shape[0], -1).clamp(0, Q - 1))

    rows = _ranges(at(lo, fq), at(hi, lq), at(lo, qe - 1), at(hi, qs), live_q, full_q, ks, ke)
    fk, lk, live_k, full_k = side(ks, ke, k0, k1)
    last_k, first_k = (ke - 1).expand_as(fk).contiguous(), ks.expand_as(fk).contiguous()
    cols = _ranges(
        torch.searchsorted(hi, fk, right=True),  # the first query whose interval ends after kv
        torch.searchsorted(lo, lk, right=True),  # the first query whose interval starts after kv
        torch.searchsorted(hi, last_k, right=True),
        torch.searchsorted(lo, first_k, right=True),
        live_k,
        full_k,
        qs,
        qe,
    )
    nq, nk = qs.shape[0], ks.shape[0]
    rows, cols = rows.expand(4, B, nq), cols.expand(4, B, nk)
    if Q == KV:  # both sides in one pass
        t = _tables(torch.cat([rows, cols], 1), nk)
        return tuple(x[:B] for x in t) + tuple(x[B:] for x in t)
    return _tables(rows, nk) + _tables(cols, nq)


def _indices(*flags: Tensor) -> tuple[Tensor, ...]:
    """Per flags (B, n, m): num_blocks (B, 1, n) int32 and indices (B, 1, n, m) int32, flagged
    blocks first; flags of one shape share one sort (fewer, larger ops)."""
    f = torch.stack(flags)  # (F, B, n, m)
    num = f.sum(-1, dtype=torch.int32).unsqueeze(2).unbind(0)
    order = (~f).to(torch.uint8).argsort(dim=-1, stable=True).to(torch.int32).unsqueeze(2)
    return tuple(x for pair in zip(num, order.unbind(0)) for x in pair)


def build_block_mask(
    spec: MaskRule,
    q_len: int,
    kv_len: int | None = None,
    *,
    device: torch.device | str | None = None,
    block_size: int = 128,
) -> Any:
    """FlexAttention ``BlockMask`` of ``spec`` (see ``AttentionSpec.block_mask``)."""
    from torch.nn.attention.flex_attention import BlockMask

    spec, Q, KV, dev = _prepare(spec, q_len, kv_len, device)
    bs = check_size("block_size", block_size)
    if spec.batch == 0:  # an empty batch: (0, 1, nQ, nK) block tables, no block listed
        nq, nk = -(-Q // bs), -(-KV // bs)
        num = torch.zeros(0, 1, nq, dtype=torch.int32, device=dev)
        idx = torch.zeros(0, 1, nq, nk, dtype=torch.int32, device=dev)
        return BlockMask.from_kv_blocks(
            num,
            idx,
            num,
            idx,
            BLOCK_SIZE=bs,
            mask_mod=mask_mod_of(spec, Q, KV),
            seq_lengths=(Q, KV),
        )
    mod = mask_mod_of(spec, Q, KV)

    def from_intervals() -> Any:  # None when the spec has no interval form
        iv = spec.intervals(Q, KV, dev)
        if iv is None:
            return None
        B = max(iv[0].shape[0], iv[1].shape[0], spec.batch or 1)
        return _block_mask(_from_intervals(iv[0], iv[1], B, Q, KV, bs, dev), Q, KV, bs, mod)

    large = -(-Q // bs) * -(-KV // bs) >= _INTERVALS_MIN_BLOCKS
    if large and (built := from_intervals()) is not None:  # no flags, no sort
        return built
    qs, qe = _block_bounds(Q, bs, dev)
    ks, ke = (qs, qe) if KV == Q else _block_bounds(KV, bs, dev)
    grid = Blocks(qs, qe, ks, ke, Q, KV)
    flags = spec.blocks(grid)
    # Tiles the flags cannot settle (intersections of partial tiles) need the rule evaluated
    # on them and a host sync: intervals, where the spec has them, settle every tile exactly.
    if flags.maybe is not None and not large and (built := from_intervals()) is not None:
        return built
    B = max(flags.any.shape[0], flags.all.shape[0], spec.batch or 1)
    shape = (B, qs.shape[0], ks.shape[0])
    any_, all_ = flags.any.expand(shape), flags.all.expand(shape)
    if flags.maybe is not None:
        any_ = any_.clone()  # refined in place below
        cand = (any_ & flags.maybe.expand(shape)).nonzero()  # (C, 3); a host sync, once per mask
        if cand.numel():
            any_[cand[:, 0], cand[:, 1], cand[:, 2]] = _refine(spec, cand, grid, bs)
    full = all_ & any_
    partial = any_ & ~full
    # The query-side indices (for the backward pass) straight from the same flags:
    # from_kv_blocks would rebuild the block grid from the indices and sort it again.
    q_side = partial.transpose(-1, -2), full.transpose(-1, -2)
    if partial.shape[-1] == partial.shape[-2]:  # square: one sort for all four
        tables = _indices(partial, full, *q_side)
    else:
        tables = _indices(partial, full) + _indices(*q_side)
    return _block_mask(tables, Q, KV, bs, mod)


def _block_mask(tables: tuple[Tensor, ...], Q: int, KV: int, bs: int, mod: MaskModFn) -> Any:
    """A ``BlockMask`` from its eight tables (kv-side partial and full, then query-side)."""
    from torch.nn.attention.flex_attention import BlockMask

    kv_num, kv_idx, full_num, full_idx, q_num, q_idx, full_q_num, full_q_idx = tables
    try:
        return BlockMask(
            (Q, KV),
            kv_num,
            kv_idx,
            full_num,
            full_idx,
            q_num,
            q_idx,
            full_q_num,
            full_q_idx,
            BLOCK_SIZE=(bs, bs),
            mask_mod=mod,
        )
    except TypeError:  # a torch whose BlockMask constructor differs: the public route
        return BlockMask.from_kv_blocks(
            kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=bs, mask_mod=mod, seq_lengths=(Q, KV)
        )


# ------------------------------------------------------------------------------------------------
# Variable-length kernels
# ------------------------------------------------------------------------------------------------
def varlen_offsets(spec: MaskRule, seq_len: int) -> tuple[Tensor, int, Tensor]:
    """Offsets for variable-length kernels (FlashAttention's ``*_varlen_func``,
    ``torch.nn.attention.varlen.varlen_attn``) from a spec whose structure is segments
    (:func:`~maskwise.attention.padding`, :func:`~maskwise.attention.documents`, alone or with
    :func:`~maskwise.attention.causal`).

    The real tokens of the (B, L) batch, row by row, form one packed stream of ``total`` tokens;
    every sequence (a row's real tokens, or a document) is a contiguous piece.

    Returns:
        ``(cu_seqlens, max_seqlen, token_index)``: int32 (N + 1,) cumulative sequence lengths,
        the longest sequence, and int64 (total,) flat indices into ``B * L`` of the packed
        tokens (pack with ``x.flatten(0, 1)[token_index]``, unpack by ``index_copy``).
        Reads a few numbers on the host (sizes are data-dependent).

    >>> from maskwise.attention import documents
    >>> cu, mx, idx = varlen_offsets(documents([[2, 3], [4]]), 5)
    >>> cu.tolist(), mx, idx.tolist()
    ([0, 2, 5, 9], 4, [0, 1, 2, 3, 4, 5, 6, 7, 8])
    """
    L = check_size("seq_len", seq_len)
    structure = spec.structure
    if structure is None or structure.segments is None:
        raise TypeError(
            f"varlen_offsets takes a padding() or documents() spec, alone or & causal() "
            f"({spec!r} given)."
        )
    spec.check(L, L)
    ids = structure.segments(L)  # (B, L), -1: no segment
    real = ids >= 0
    if bool((real.long().diff(dim=1) > 0).any()):
        raise ValueError("varlen_offsets needs right padding (real tokens first in each row).")
    # A sequence starts at every real token whose segment differs from its left neighbour's.
    prev = torch.nn.functional.pad(ids, (1, 0), value=-2)[:, :-1]
    starts = real & (ids != prev)
    token_index = real.flatten().nonzero().squeeze(1)
    start_flags = starts.flatten()[token_index]
    total = torch.tensor([token_index.numel()], device=ids.device)
    bounds = torch.cat([start_flags.nonzero().squeeze(1), total])
    seqlens = bounds.diff()
    cu = torch.nn.functional.pad(seqlens.cumsum(0), (1, 0)).to(torch.int32)
    max_len = int(seqlens.max()) if seqlens.numel() else 0
    return cu, max_len, token_index


# ------------------------------------------------------------------------------------------------
# Other conventions
# ------------------------------------------------------------------------------------------------
def hf_bool_mask(
    spec: MaskRule, q_len: int, kv_len: int | None = None, *, device: Any = None
) -> Tensor:
    """Hugging Face 4-D boolean mask (B, 1, Q, KV), True = may attend: the mask a model with
    ``attn_implementation="sdpa"`` reads.

    Only for SDPA: ``"eager"`` (and a dense mask under ``"flex_attention"``) adds the 4-D mask to
    the attention scores, where a bool mask adds 0 or 1 and masks nothing. :func:`hf_mask` picks
    the right form for the model's implementation.
    """
    return dense_mask(spec, q_len, kv_len, device=device)


def hf_additive_mask(
    spec: MaskRule,
    q_len: int,
    kv_len: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
) -> Tensor:
    """Hugging Face 4-D additive mask (B, 1, Q, KV): 0 where allowed, ``finfo(dtype).min`` where
    blocked (what ``_prepare_4d_causal_attention_mask`` returns). Read correctly by ``"eager"``
    and ``"sdpa"`` alike; ``dtype`` must be the model's (SDPA needs the query's dtype)."""
    allowed = dense_mask(spec, q_len, kv_len, device=device)
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)


#: What each Hugging Face attention implementation reads from a 4-D ``attention_mask``.
HF_MASK_FORMS = {"sdpa": "bool", "eager": "additive", "flex_attention": "BlockMask"}


def hf_mask(
    spec: MaskRule,
    q_len: int,
    kv_len: int | None = None,
    *,
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
    device: Any = None,
    block_size: int = 128,
) -> Any:
    """``spec`` as the ``attention_mask`` a Hugging Face model with ``attn_implementation``
    uses as given.

    transformers passes a 4-D ``attention_mask`` (or a ``BlockMask``) to the attention layers
    unchanged (``masking_utils``, transformers >= 4.53), and each implementation reads it in its
    own way, so one format cannot serve all of them:

    ========================  ===============================  ==============================
    ``attn_implementation``   reads the 4-D mask as            ``hf_mask`` returns
    ========================  ===============================  ==============================
    ``"sdpa"``                SDPA's ``attn_mask``             bool (B, 1, Q, KV), True = may
                                                               attend (:func:`hf_bool_mask`)
    ``"eager"``               a bias added to the scores       additive, 0 / ``finfo(dtype).min``
                                                               (:func:`hf_additive_mask`)
    ``"flex_attention"``      a ``BlockMask`` (a tensor would  ``spec.block_mask(...)``
                              be added to the scores)
    ``"flash_attention_*"``   nothing: 2-D padding masks only  ``ValueError``
    ========================  ===============================  ==============================

    Pass ``attn_implementation=model.config._attn_implementation`` and ``dtype=model.dtype``.
    Before transformers 4.53 custom 4-D masks are model-specific (some encoders reject them,
    decoders read the additive form under every implementation): use :func:`hf_additive_mask`
    there. For flash attention, pack sequences and pass ``position_ids`` instead.

    Args:
        spec: the attention mask.
        q_len, kv_len: query and key lengths (``kv_len`` defaults to ``q_len``).
        attn_implementation: ``"sdpa"``, ``"eager"`` or ``"flex_attention"``.
        dtype: dtype of the additive mask (``"eager"``); the model's dtype.
        device: device of the mask (default: the spec's).
        block_size: block size of the ``BlockMask`` (``"flex_attention"``).

    >>> from maskwise.attention import causal, padding
    >>> spec = causal() & padding(torch.tensor([3, 2]))
    >>> sdpa = hf_mask(spec, 3, attn_implementation="sdpa")   # bool, True = may attend
    >>> sdpa[1, 0].int().tolist()                             # query 2 is padding
    [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    >>> eager = hf_mask(spec, 3, attn_implementation="eager", dtype=torch.bfloat16)
    >>> eager.dtype, torch.equal(eager == 0, sdpa)            # 0 where allowed, else min
    (torch.bfloat16, True)
    """
    form = HF_MASK_FORMS.get(attn_implementation) if isinstance(attn_implementation, str) else None
    if form is None:
        raise ValueError(
            f"attn_implementation must be one of {tuple(HF_MASK_FORMS)} "
            f"({attn_implementation!r} given): other implementations (flash attention, paged "
            "attention) take no 4-D mask, only a 2-D padding mask or packed position_ids."
        )
    if form == "bool":
        return hf_bool_mask(spec, q_len, kv_len, device=device)
    if form == "additive":
        return hf_additive_mask(spec, q_len, kv_len, dtype=dtype, device=device)
    return build_block_mask(spec, q_len, kv_len, device=device, block_size=block_size)


def mha_attn_mask_blocked(
    spec: MaskRule,
    q_len: int,
    kv_len: int | None = None,
    *,
    num_heads: int = 1,
    device: Any = None,
) -> Tensor:
    """``nn.MultiheadAttention``'s ``attn_mask``, True = may NOT attend: (Q, KV) for a spec
    without per-sample data, else (B * num_heads, Q, KV) (head-major within a sample, as
    ``nn.MultiheadAttention`` expects)."""
    blocked = ~dense_mask(spec, q_len, kv_len, device=device)  # (B, 1, Q, KV)
    if spec.batch is None:
        return blocked[0, 0]
    B, _, Q, KV = blocked.shape
    return blocked.expand(B, num_heads, Q, KV).reshape(B * num_heads, Q, KV)


def mha_key_padding_mask_blocked(
    lengths_or_attention_mask: Any, kv_len: int | None = None
) -> Tensor:
    """``nn.MultiheadAttention``'s ``key_padding_mask`` (B, KV), True = padding (ignored), from
    lengths (B,) (then ``kv_len`` is required) or an HF attention mask (B, KV), 1 = real."""
    x = torch.as_tensor(lengths_or_attention_mask)
    if x.dim() == 2:
        return ~x.bool()
    if kv_len is None:
        raise ValueError("kv_len is required with lengths.")
    if x.numel() and x.device.type == "cpu" and (int(x.max()) > kv_len or int(x.min()) < 0):
        raise ValueError(f"lengths must lie in [0, {kv_len}] ({x.tolist()} given).")
    return torch.arange(kv_len, device=x.device) >= x.long().view(-1, 1)
