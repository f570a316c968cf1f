"""Naive references for :mod:`maskwise.attention`: plain Python loops, no library code.

Every mask reference returns a bool tensor (B, 1, Q, KV), True = query ``i`` may attend key
``j``, built by looping over ``b``, ``i``, ``j`` and applying the rule exactly as SPEC.md states
it. ``B`` is 1 for masks without per-sample data. Masks combine with ``&`` and ``|`` on these
tensors (broadcasting ``B``).

Alignment when ``Q != KV``: query ``i`` sits at position ``p = i + KV - Q`` (bottom-right). A
query whose position is negative (``Q > KV``) is before the first key: it is no token of the row,
so it is not a real token (padding) and belongs to no document; causal rules then give it no key.

:func:`attention` is float64 attention with an explicit softmax over the allowed keys of each
row (zeros for a row with no allowed key), differentiable through autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Tensor = torch.Tensor


def _empty(B: int, Q: int, KV: int) -> list:
    """Nested lists [b][0][i][j] of False (filled by the loops, then made a tensor)."""
    return [[[[False] * KV for _ in range(Q)]] for _ in range(B)]


def _done(out: list, Q: int, KV: int) -> Tensor:
    return torch.tensor(out, dtype=torch.bool).view(len(out), 1, Q, KV)  # B may be 0


def _rows(x: Sequence[int] | Tensor) -> list[int]:
    return [int(n) for n in (x.tolist() if isinstance(x, Tensor) else x)]


def full(Q: int, KV: int) -> Tensor:
    """Every query attends every key."""
    out = _empty(1, Q, KV)
    for i in range(Q):
        for j in range(KV):
            out[0][0][i][j] = True
    return _done(out, Q, KV)


def causal(Q: int, KV: int) -> Tensor:
    """Query i (position p = i + KV - Q) attends keys 0 .. p."""
    out = _empty(1, Q, KV)
    for i in range(Q):
        p = i + KV - Q
        for j in range(KV):
            out[0][0][i][j] = j <= p
    return _done(out, Q, KV)


def sliding_window(size: int, Q: int, KV: int) -> Tensor:
    """Query i (position p) attends keys p - size + 1 .. p: ``size`` keys, itself included."""
    out = _empty(1, Q, KV)
    for i in range(Q):
        p = i + KV - Q
        for j in range(KV):
            out[0][0][i][j] = p - size + 1 <= j <= p
    return _done(out, Q, KV)


def chunked(size: int, Q: int, KV: int) -> Tensor:
    """Bidirectional inside chunks [c * size, (c + 1) * size); query i at position p."""
    out = _empty(1, Q, KV)
    for i in range(Q):
        p = i + KV - Q
        for j in range(KV):
            # Python's // floors, so a negative position is in chunk -1, which has no key.
            out[0][0][i][j] = p // size == j // size
    return _done(out, Q, KV)


def real_tokens(lengths_or_attention_mask: Sequence | Tensor, L: int) -> list[list[bool]]:
    """Per row, whether each of the L positions is a real token: from lengths (right padding)
    or from an HF attention mask (B, L), 1 = real."""
    x = lengths_or_attention_mask
    t = x if isinstance(x, Tensor) else torch.tensor(x)
    if t.dim() == 2:
        rows = t.tolist()
        return [[bool(rows[b][j]) for j in range(L)] for b in range(len(rows))]
    return [[j < n for j in range(L)] for n in _rows(t)]


def padding(lengths_or_attention_mask: Sequence | Tensor, Q: int, KV: int) -> Tensor:
    """Query i (position p) and key j must both be real tokens (positions < 0 are not)."""
    real = real_tokens(lengths_or_attention_mask, KV)
    out = _empty(len(real), Q, KV)
    for b, row in enumerate(real):
        for i in range(Q):
            p = i + KV - Q
            for j in range(KV):
                out[b][0][i][j] = p >= 0 and row[p] and row[j]
    return _done(out, Q, KV)


def cross(
    q_lengths: Sequence[int] | Tensor, kv_lengths: Sequence[int] | Tensor, Q: int, KV: int
) -> Tensor:
    """Query i attends key j iff i < q_lengths[b] and j < kv_lengths[b] (no offset)."""
    ql, kl = _rows(q_lengths), _rows(kv_lengths)
    out = _empty(len(ql), Q, KV)
    for b in range(len(ql)):
        for i in range(Q):
            for j in range(KV):
                out[b][0][i][j] = i < ql[b] and j < kl[b]
    return _done(out, Q, KV)


def prefix_lm(prefix_lengths: Sequence[int] | Tensor, Q: int, KV: int) -> Tensor:
    """Every query attends the prefix keys 0 .. prefix[b] - 1; otherwise causal (j <= p)."""
    pre = _rows(prefix_lengths)
    out = _empty(len(pre), Q, KV)
    for b, n in enumerate(pre):
        for i in range(Q):
            p = i + KV - Q
            for j in range(KV):
                out[b][0][i][j] = j < n or j <= p
    return _done(out, Q, KV)


def doc_ids(doc_ids_or_lengths: Sequence | Tensor, L: int) -> list[list[int]]:
    """Per row, the document id of each position (-1 = padding), from ids (B, L) or from
    per-row lists of document lengths (the rest of the row is padding)."""
    x = doc_ids_or_lengths
    if isinstance(x, Tensor):
        rows_ = x.tolist()
        return [[int(rows_[b][j]) for j in range(L)] for b in range(len(rows_))]
    rows = []
    for lengths in x:
        row: list[int] = []
        for d, n in enumerate(lengths):
            row += [d] * int(n)
        rows.append(row + [-1] * (L - len(row)))
    return rows


def documents(doc_ids_or_lengths: Sequence | Tensor, Q: int, KV: int) -> Tensor:
    """Query i (position p) attends key j iff both are in the same document (not padding)."""
    ids = doc_ids(doc_ids_or_lengths, KV)
    out = _empty(len(ids), Q, KV)
    for b, row in enumerate(ids):
        for i in range(Q):
            p = i + KV - Q
            for j in range(KV):
                out[b][0][i][j] = p >= 0 and row[p] >= 0 and row[p] == row[j]
    return _done(out, Q, KV)


def from_mask_mod(
    fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], B: int, Q: int, KV: int
) -> Tensor:
    """Evaluate a FlexAttention ``mask_mod`` one (b, i, j) at a time on 0-d tensors (head 0)."""
    out = _empty(B, Q, KV)
    h = torch.tensor(0)
    for b in range(B):
        for i in range(Q):
            for j in range(KV):
                out[b][0][i][j] = bool(fn(torch.tensor(b), h, torch.tensor(i), torch.tensor(j)))
    return _done(out, Q, KV)


def attention(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None, *, scale: float | None = None
) -> Tensor:
    """Float64 attention, one query row at a time.

    ``q`` (B, H, Q, D), ``k``/``v`` (B, H_kv, KV, D) with H a multiple of H_kv (query head h uses
    key/value head ``h // (H // H_kv)``), ``allowed`` (B or 1, 1, Q, KV) or None (all allowed).
    Row (b, h, i): softmax of ``scale * q . k_j`` over the allowed keys j only, weighting their
    values; a row with no allowed key is zeros. Differentiable (autograd through the loops).
    """
    B, H, Q, D = q.shape
    H_kv, KV = k.shape[1], k.shape[2]
    group = H // H_kv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q, k, v = q.double(), k.double(), v.double()
    if allowed is None:
        allowed = torch.ones(1, 1, Q, KV, dtype=torch.bool)
    rows = []
    for b in range(B):
        ab = allowed[b if allowed.shape[0] > 1 else 0, 0]
        for h in range(H):
            hk = h // group
            for i in range(Q):
                keys = [j for j in range(KV) if bool(ab[i, j])]
                if not keys:
                    rows.append(torch.zeros(v.shape[-1], dtype=torch.float64))
                    continue
                idx = torch.tensor(keys)
                scores = (k[b, hk, idx] @ q[b, h, i]) * scale  # (n,)
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                rows.append(weights @ v[b, hk, idx])  # (D_v,)
    if not rows:  # an empty batch (or no query, no head)
        return torch.zeros(B, H, Q, v.shape[-1], dtype=torch.float64)
    return torch.stack(rows).view(B, H, Q, v.shape[-1])


def by_rule(B: int, Q: int, KV: int, rule: Callable[[int, int, int], bool]) -> Tensor:
    """Any rule on plain ints ``rule(b, i, j)`` (raw query index i, no offset)."""
    out = _empty(B, Q, KV)
    for b in range(B):
        for i in range(Q):
            for j in range(KV):
                out[b][0][i][j] = bool(rule(b, i, j))
    return _done(out, Q, KV)
