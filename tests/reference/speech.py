"""Naive per-row references for the vectorized speech maskers.

Each reference reproduces the vectorized function's random draws by calling
``maskwise.random.uniform`` in the same order with a generator seeded the same way, then decides
everything with plain Python loops over rows, masks and frames. Equality with the vectorized code
on random inputs checks the vectorization (broadcasting, difference arrays, the batched top-k),
not the randomness.

Draw order of :func:`maskwise.functional.spec_augment`:

1. frequency masks, ``uniform((B, 2 * freq_masks))``: columns ``[0, freq_masks)`` give the widths,
   ``[freq_masks, 2 * freq_masks)`` the starts (no draw when ``freq_masks == 0`` or ``F == 0``);
2. time masks, ``uniform((B, 2 * M))`` laid out the same way, ``M = time_masks`` (an int) or
   ``max_time_masks`` (a float ``time_masks``); no draw when ``M == 0`` or ``T == 0``.

A width is ``floor(u * (W + 1))`` (uniform on ``0 .. W``), a start ``floor(u * (n - w + 1))``
(uniform on ``0 .. n - w``), both in float64 from the float32 draw.

Draw order of :func:`maskwise.functional.mask_time_spans`: one ``uniform((B, T + 1))``; column
0 is the row's rounding offset, columns ``1 .. T`` are the keys of start frames ``0 .. T - 1``.
"""

from __future__ import annotations

import math

import torch

from maskwise.random import uniform


def interval_mask(starts, widths, size):
    """Union of ``[s, s + w)`` intersected with ``[0, size)``, frame by frame."""
    B, M = starts.shape
    out = torch.zeros(B, size, dtype=torch.bool)
    for b in range(B):
        for m in range(M):
            s, w = int(starts[b, m]), int(widths[b, m])
            for t in range(s, s + w):
                if 0 <= t < size:
                    out[b, t] = True
    return out


def _axis(u_row, n_masks, max_masks, max_width, length, size):
    """One row of one axis: (mask list over ``size``, [(start, width), ...] of the live masks)."""
    row = [False] * size
    drawn = []
    for m in range(max_masks):
        w = math.floor(float(u_row[m]) * (max_width + 1))
        w = min(w, length)
        s = math.floor(float(u_row[max_masks + m]) * (length - w + 1))
        if m < n_masks:
            drawn.append((s, w))
            for t in range(s, s + w):
                row[t] = True
    return row, drawn


def spec_augment_params(
    lengths, T, *, time_masks, time_width, max_time_fraction=1.0, max_time_masks=20
):
    """Per-row (number of time masks, largest time-mask width) and the drawn mask count M."""
    if isinstance(time_masks, int):
        M = time_masks
        counts = [time_masks] * len(lengths)
    else:
        M = max_time_masks
        counts = [min(max_time_masks, math.floor(float(time_masks) * n)) for n in lengths]
    widths = []
    for n in lengths:
        w = time_width if isinstance(time_width, int) else math.floor(float(time_width) * n)
        widths.append(min(w, math.floor(max_time_fraction * n)))
    return counts, widths, M


def spec_augment(
    spec,
    *,
    freq_masks=2,
    freq_width=27,
    time_masks=2,
    time_width=100,
    max_time_fraction=1.0,
    max_time_masks=20,
    lengths=None,
    value=0.0,
    generator=None,
    return_draws=False,
    masks_only=False,
):
    """SpecAugment row by row. Returns ``(spec, freq_masked, time_masked)`` (plus, with
    ``return_draws``, per row the list of live ``(start, width)`` frequency and time masks).
    ``masks_only`` skips the (slow) masked spectrogram and returns ``None`` in its place."""
    B, F, T = spec.shape[0], spec.shape[-2], spec.shape[-1]
    n = [T] * B if lengths is None else [int(v) for v in lengths]
    counts, t_widths, M = spec_augment_params(
        n,
        T,
        time_masks=time_masks,
        time_width=time_width,
        max_time_fraction=max_time_fraction,
        max_time_masks=max_time_masks,
    )
    freq = torch.zeros(B, F, dtype=torch.bool)
    time = torch.zeros(B, T, dtype=torch.bool)
    f_draws = [[] for _ in range(B)]
    t_draws = [[] for _ in range(B)]
    if freq_masks > 0 and F > 0:
        u = uniform((B, 2 * freq_masks), generator=generator)
        for b in range(B):
            row, f_draws[b] = _axis(u[b], freq_masks, freq_masks, freq_width, F, F)
            freq[b] = torch.tensor(row, dtype=torch.bool)
    if M > 0 and T > 0:
        u = uniform((B, 2 * M), generator=generator)
        for b in range(B):
            row, t_draws[b] = _axis(u[b], counts[b], M, t_widths[b], n[b], T)
            time[b] = torch.tensor(row, dtype=torch.bool)

    # Plain nested lists: float32 values round-trip exactly through Python floats.
    out = None if masks_only else spec.clone()
    for b in range(B if not masks_only else 0):
        rows = spec[b].tolist()  # (F, T) or (C, F, T) nested lists
        if value == "mean":
            real = [
                v
                for plane in (rows if spec.dim() == 4 else [rows])
                for fr in plane
                for v in fr[: n[b]]
            ]
            fill = math.fsum(real) / len(real) if real else 0.0
        else:
            fill = float(value)
        f_row, t_row = freq[b].tolist(), time[b].tolist()
        for plane in rows if spec.dim() == 4 else [rows]:
            for f in range(F):
                for t in range(T):
                    if f_row[f] or t_row[t]:
                        plane[f][t] = fill
        out[b] = torch.tensor(rows, dtype=spec.dtype)
    if return_draws:
        return out, freq, time, f_draws, t_draws
    return out, freq, time


def time_span_count(n, rate, span, min_spans, eps):
    """Number of spans of a row with ``n`` real frames and rounding offset ``eps``."""
    n_starts = max(n - span + 1, 0)
    k = math.floor(rate * n / span + eps)
    return min(max(k, min_spans), n_starts)


def mask_time_spans(
    lengths, max_len, rate, *, span=10, min_spans=0, generator=None, return_starts=False
):
    """wav2vec2 span masks row by row: the ``k`` allowed start frames with the largest keys, then
    the union of ``[start, start + span)``."""
    B, T = len(lengths), int(max_len)
    u = uniform((B, T + 1), generator=generator)
    out = torch.zeros(B, T, dtype=torch.bool)
    all_starts = []
    for b in range(B):
        n = int(lengths[b])
        k = time_span_count(n, rate, span, min_spans, float(u[b, 0]))
        candidates = [(float(u[b, j + 1]), j) for j in range(max(n - span + 1, 0))]
        starts = sorted(j for _, j in sorted(candidates, reverse=True)[:k])
        all_starts.append(starts)
        for s in starts:
            for t in range(s, s + span):
                out[b, t] = True
    return (out, all_starts) if return_starts else out


def distinct_ints(draws, highs, ks, generator):
    """Row by row, the first ``ks[b]`` distinct values ``floor(u * highs[b])`` in draw order;
    while a row is short, ``m`` more uniforms are drawn for every row (one call) and appended."""
    B, m = draws.shape
    rows = [[math.floor(float(x) * highs[b]) for x in draws[b]] for b in range(B)]
    while True:
        picked = []
        for b in range(B):
            seen = []
            for v in rows[b]:
                if v not in seen and len(seen) < ks[b]:
                    seen.append(v)
            picked.append(seen)
        if all(len(p) == k for p, k in zip(picked, ks)):
            return [sorted(p) for p in picked]
        more = uniform((B, m), generator=generator).double()
        for b in range(B):
            rows[b] += [math.floor(float(x) * highs[b]) for x in more[b]]


def mask_time_spans_direct(
    lengths, max_len, rate, *, span=10, min_spans=0, generator=None, return_starts=False
):
    """:func:`mask_time_spans`' CPU sampler for a ``torch.Generator``: one draw for the rounding
    offset and ``k_max + k_max // 2 + 8`` start draws per row; each row keeps its first ``k``
    distinct starts (:func:`distinct_ints`)."""
    B, T = len(lengths), int(max_len)
    k_max = min(T, max(int(min_spans), int(rate * T / span) + 1))
    u = uniform((B, 1 + k_max + k_max // 2 + 8), generator=generator)
    ks, highs = [], []
    for b in range(B):
        n = int(lengths[b])
        ks.append(time_span_count(n, rate, span, min_spans, float(u[b, 0])))
        highs.append(max(n - span + 1, 0))
    rows = distinct_ints(u[:, 1:].double(), highs, ks, generator)
    out = torch.zeros(B, T, dtype=torch.bool)
    for b, starts in enumerate(rows):
        for s in starts:
            out[b, s : s + span] = True
    return (out, rows) if return_starts else out


def expected_time_span_fraction(n, rate, span):
    """Exact expected masked fraction of a row of ``n`` frames when ``rate * n / span`` is an
    integer ``k`` (so the rounding offset never changes the count): ``k`` distinct starts uniform
    among the ``N = n - span + 1`` start frames; frame ``t`` stays unmasked iff none of the ``c_t``
    starts that cover it is chosen, probability ``C(N - c_t, k) / C(N, k)``."""
    N = n - span + 1
    k = round(rate * n / span)
    total = math.comb(N, k)
    unmasked = 0.0
    for t in range(n):
        c = min(t, N - 1) - max(0, t - span + 1) + 1  # starts s with s <= t < s + span
        unmasked += math.comb(N - c, k) / total
    return 1.0 - unmasked / n
