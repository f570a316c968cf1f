"""Span masking (SpanBERT, BART, T5) and T5's sentinel corruption."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from maskwise._checks import (
    as_rate,
    check_bool_2d,
    check_long,
    check_mean_length,
    valid_from_attention_mask,
)
from maskwise.functional.select import (
    Rate,
    distinct_draws,
    distinct_ints,
    draws_on_host,
    per_sample_rates,
    top_k_per_row,
)
from maskwise.functional.spectrogram import interval_mask
from maskwise.random import KeyedGenerator, uniform

__all__ = ["mask_spans", "span_length_pmf", "t5_corrupt", "t5_corrupt_with_lengths"]

_DISTRIBUTIONS = ("geometric", "poisson", "fixed")


def span_length_pmf(
    distribution: str | Sequence[float], mean_length: float, max_length: int
) -> torch.Tensor:
    """Probabilities of span lengths 1 .. max_length (float64, sums to 1).

    * ``"geometric"``: ``P(k) ∝ p (1 - p)^(k - 1)`` with ``p = 1 / mean_length``, truncated to
      ``max_length`` and renormalised, as SpanBERT (``mean_length=5, max_length=10`` is its
      p = 0.2 clipped at 10, whose mean is 3.8).
    * ``"poisson"``: ``P(k) ∝ λ^k e^-λ / k!`` with ``λ = mean_length`` for k >= 1 (BART draws
      Poisson(3) lengths; length 0 has no meaning for a mask and is dropped).
    * ``"fixed"``: every span has length ``round(mean_length)``.
    * a sequence of finite, non-negative weights ``w[0..K-1]`` for lengths 1..K.

    >>> span_length_pmf("fixed", 3, 10)[:4].tolist()
    [0.0, 0.0, 1.0, 0.0]
    >>> round(float((span_length_pmf("geometric", 5, 10) * torch.arange(1, 11)).sum()), 2)
    3.8
    """
    if not isinstance(distribution, str):
        w = torch.as_tensor(distribution, dtype=torch.float64).flatten()
        usable = (w >= 0) & w.isfinite()  # False for NaN too
        if w.numel() == 0 or not bool(usable.all()) or float(w.sum()) <= 0:
            raise ValueError(
                f"A custom span length distribution needs finite, non-negative weights with a "
                f"positive sum ({w.tolist()} given)."
            )
        return w / w.sum()
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be one of {_DISTRIBUTIONS} or a sequence ({distribution!r} given)."
        )
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1 ({max_length!r} given).")
    check_mean_length(mean_length)
    k = torch.arange(1, max_length + 1, dtype=torch.float64)
    if distribution == "geometric":
        p = 1.0 / mean_length
        w = p * (1.0 - p) ** (k - 1)
    elif distribution == "poisson":
        lam = float(mean_length)
        w = torch.exp(k * math.log(lam) - lam - torch.lgamma(k + 1))
    else:
        length = round(mean_length)
        if length > max_length:
            raise ValueError(f"fixed span length {length} exceeds max_length={max_length}.")
        w = (k == length).to(torch.float64)
    return w / w.sum()


def _inverse_cdf(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw lengths 1..K by inverse CDF; ``cdf`` (K,) float32, ``u`` float32 uniforms."""
    idx = torch.searchsorted(cdf, u.contiguous(), right=False)
    return idx.clamp_max(cdf.numel() - 1) + 1


def _geometric0(u: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Geometric on {0, 1, ...} with success probability ``q``: P(k) = q (1 - q)^k."""
    log_fail = torch.log1p(-q).clamp_max(-1e-30)  # q = 0 -> never ending, q = 1 -> always 0
    return torch.floor(u.log() / log_fail)


def mask_spans(
    valid: torch.Tensor,
    rate: Rate,
    *,
    mean_length: float = 3.0,
    distribution: str | Sequence[float] = "geometric",
    max_length: int = 10,
    exact: bool = False,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> torch.Tensor:
    """Mask contiguous spans covering ``rate`` of each row's valid positions.

    Spans are laid over the valid positions of each row in order; invalid positions (padding,
    special tokens) are never masked, and no span reaches into padding.

    * ``exact=False`` (SpanBERT / BART style): span lengths are drawn from ``distribution``
      (:func:`span_length_pmf`, mean ``mu`` after truncation) and separated by geometric gaps
      of mean ``mu * (1 - rate) / rate`` (at least 1 when that mean allows, so spans stay
      apart).
      The row starts in the stationary state of that alternating process, so every valid
      position is masked with probability ``rate``: the expected masked fraction is ``rate`` for
      any row length.
    * ``exact=True`` (T5's noise density and mean span length arithmetic): exactly
      ``N = round(rate * n)`` positions in ``S = max(1, round(N / mean_length))`` spans (fewer
      only when the row has too few unmasked tokens to separate them). The ``N`` masked
      positions are split into ``S`` non-empty runs uniformly at random, and the runs are
      placed at ``S`` distinct random gaps between the unmasked positions. T5's
      ``random_spans_noise_mask`` instead always starts a row unmasked and ends it masked;
      on T5's packed 568-token windows that hardly matters, but on short rows it makes the mask
      nearly deterministic (a row of 20 tokens at rate 0.15 would always lose its last 3), so
      maskwise keeps T5's counts and randomises the placement. Unlike T5, a row whose
      ``round(rate * n)`` is 0 gets no mask (T5 forces at least one token).
      ``distribution`` and ``max_length`` are not used.

    Args:
        valid: bool (B, L), True where masking is allowed.
        rate: float in [0, 1], (B,) tensor, or a range ``(low, high)`` (a rate per row).
        mean_length: mean span length (of the untruncated distribution when ``exact=False``).
        distribution: ``"geometric"``, ``"poisson"``, ``"fixed"`` or weights for lengths 1..K.
        max_length: longest span when ``exact=False``.
        exact: T5's exact arithmetic.
        generator: random source.

    Returns:
        bool (B, L), True = masked.

    >>> valid = torch.tensor([[True] * 10 + [False] * 2])
    >>> g = torch.Generator().manual_seed(0)
    >>> m = mask_spans(valid, 0.3, mean_length=3, exact=True, generator=g)
    >>> int(m.sum()), bool(m[0, 10:].any())   # round(0.3 * 10) = 3 tokens in 1 span
    (3, False)
    """
    check_bool_2d("valid", valid)
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool ({exact!r} given).")
    check_mean_length(mean_length)
    B, L = valid.shape
    device = valid.device
    rate = per_sample_rates(rate, B, device=device, generator=generator)
    r = as_rate(rate, B, device)  # (B, 1) float64
    n = valid.sum(1)  # (B,) valid positions per row
    pos_c = valid.cumsum(1).sub_(1).clamp_min_(0)  # (B, L) index among the valid positions
    if exact:
        cover = _t5_cover(n, r.squeeze(1), float(mean_length), L, generator)
    else:
        key = (
            distribution if isinstance(distribution, str) else tuple(float(w) for w in distribution)
        )
        tables = _span_tables(key, float(mean_length), max_length, str(device))
        cover = _renewal_cover(r, tables, L, generator)
    return cover.gather(1, pos_c).logical_and_(valid)


@functools.lru_cache(maxsize=64)
def _span_tables(
    distribution: str | tuple[float, ...], mean_length: float, max_length: int, device: str
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(mean span length, CDF of span lengths, CDF of the residual length at a row start).

    Built once per setting on the CPU and moved once, so no host sync is left on the hot path.
    """
    pmf = span_length_pmf(distribution, mean_length, max_length)
    lengths = torch.arange(1, pmf.numel() + 1, dtype=torch.float64)
    mu = float((pmf * lengths).sum())
    # Residual length of the span covering position 0: P(R = k) = P(X >= k) / mu.
    tail = pmf.flip(0).cumsum(0).flip(0)
    return mu, pmf.cumsum(0).float().to(device), (tail / mu).cumsum(0).float().to(device)


def _renewal_cover(
    r: torch.Tensor,
    tables: tuple[float, torch.Tensor, torch.Tensor],
    L: int,
    generator: torch.Generator | KeyedGenerator | None,
) -> torch.Tensor:
    """(B, L) cover of a stationary alternating span/gap process with span fraction ``r``."""
    B = r.shape[0]
    device = r.device
    mu, cdf, cdf_res = tables  # mean span length, CDFs of span and residual span lengths
    # Gaps: mean nu = mu (1 - r) / r, at least 1 where nu >= 1 so spans do not touch.
    nu = mu * (1.0 - r) / r.clamp_min(1e-12)  # (B, 1)
    g_min = (nu >= 1.0).to(torch.float64)
    q = 1.0 / (1.0 + nu - g_min)

    u_start = uniform((B, 1), generator=generator, device=device)
    u_span = uniform((B, L), generator=generator, device=device)
    u_gap = uniform((B, L), generator=generator, device=device)
    in_span = u_start.double() < r  # (B, 1): position 0 is inside a span
    spans = _inverse_cdf(cdf, u_span)  # (B, L) lengths of span 0, 1, ...
    first_span = _inverse_cdf(cdf_res, u_span[:, :1])
    spans[:, :1] = torch.where(in_span, first_span, spans[:, :1])
    z = _geometric0(u_gap.double(), q)  # (B, L)
    gaps = g_min + z
    # Gap before span 0: none if position 0 is inside a span, else the residual gap 1 + Geo0(q).
    gaps[:, :1] = torch.where(in_span, 0.0, 1.0 + z[:, :1])
    gaps = gaps.clamp_max(L + 1).long()
    ends = (gaps + spans).cumsum(1)  # (B, L) exclusive end of span s
    begins = ends - spans
    diff = torch.zeros(B, L + 1, dtype=torch.long, device=device)
    diff.scatter_add_(1, begins.clamp_max(L), torch.ones_like(begins))
    diff.scatter_add_(1, ends.clamp_max(L), torch.full_like(ends, -1))
    return diff[:, :L].cumsum(1) > 0


def _t5_cover(
    n: torch.Tensor,
    r: torch.Tensor,
    mean_length: float,
    L: int,
    generator: torch.Generator | KeyedGenerator | None,
) -> torch.Tensor:
    """(B, L) cover in valid-position coordinates: T5's counts, spans at random places."""
    B = n.shape[0]
    device = n.device
    n_noise = torch.round(r * n).long()  # (B,)
    n_keep = n - n_noise
    n_spans = torch.round(n_noise.double() / mean_length).long().clamp_min(1)
    n_spans = torch.minimum(n_spans, n_noise)
    # Non-noise tokens separate the spans: at most n_keep + 1 spans (one if all is noise).
    n_spans = torch.minimum(n_spans, n_keep + 1)  # (B,)
    if draws_on_host(generator, device):
        return _t5_cover_drawn(n_noise, n_keep, n_spans, L, generator)
    j = torch.arange(L + 1, device=device).expand(B, L + 1)

    # Noise tokens 0 .. n_noise - 1 split into n_spans non-empty runs: n_spans - 1 of the cut
    # points 1 .. n_noise - 1, uniformly. (B, L + 1) bool, True where a new run starts.
    allowed = (j >= 1) & (j < n_noise.unsqueeze(1))
    keys = uniform((B, L + 1), generator=generator, device=device).masked_fill(~allowed, -1.0)
    noise_cut = top_k_per_row(keys, (n_spans - 1).clamp_min(0)) & allowed
    # Span s goes in front of non-noise token at[s] (at[s] = n_keep: at the end): n_spans
    # distinct insertion points of 0 .. n_keep, uniformly, so spans never touch.
    allowed = j <= n_keep.unsqueeze(1)
    keys = uniform((B, L + 1), generator=generator, device=device).masked_fill(~allowed, -1.0)
    point = top_k_per_row(keys, n_spans) & allowed
    at = torch.zeros(B, L + 2, dtype=torch.long, device=device)
    at.scatter_(1, torch.where(point, point.long().cumsum(1) - 1, L + 1), j)  # sorted points
    span_of = noise_cut.long().cumsum(1)  # (B, L + 1) span of noise token j
    seq_pos = j + at.gather(1, span_of)  # position of noise token j among the valid ones
    is_noise = j < n_noise.unsqueeze(1)
    cover = torch.zeros(B, L + 2, dtype=torch.bool, device=device)
    cover.scatter_(1, torch.where(is_noise, seq_pos, L + 1), True)
    return cover[:, :L]


def _t5_cover_drawn(
    n_noise: torch.Tensor,
    n_keep: torch.Tensor,
    n_spans: torch.Tensor,
    L: int,
    generator: torch.Generator | KeyedGenerator | None,
) -> torch.Tensor:
    """:func:`_t5_cover` on the CPU: the cut points and the insertion points are drawn as
    distinct ints (:func:`~maskwise.functional.select.distinct_ints`, about n_spans numbers per
    row) instead of ranking a key per position twice (two sorts of (B, L + 1)), and the spans
    are written as intervals."""
    B = n_noise.shape[0]
    k_max = int(n_spans.max()) if B else 0
    if k_max == 0:
        return torch.zeros(B, L, dtype=torch.bool)
    # Noise tokens 0 .. n_noise - 1 split into n_spans runs: n_spans - 1 cut points among 1 ..
    # n_noise - 1; then n_spans distinct insertion points among 0 .. n_keep, sorted.
    u = uniform((B, distinct_draws(k_max - 1)), generator=generator)
    cuts = distinct_ints(u, (n_noise - 1).clamp_min(0), (n_spans - 1).clamp_min(0), generator)
    u = uniform((B, distinct_draws(k_max)), generator=generator)
    points = distinct_ints(u, n_keep + 1, n_spans, generator)  # (B, k_max), -1 unused
    # Span s holds noise tokens [c_s, c_{s+1}) (c_0 = 0, c_s = cut s - 1 plus 1, c_n = n_noise)
    # and sits before non-noise token points[s]: valid positions [points[s] + c_s, + length).
    live = torch.arange(k_max) < n_spans.unsqueeze(1)  # (B, k_max)
    first = torch.cat((torch.zeros(B, 1, dtype=torch.long), cuts + 1), 1)  # (B, k_max)
    last = torch.where(
        torch.arange(k_max) < (n_spans - 1).unsqueeze(1),
        torch.cat((cuts + 1, torch.zeros(B, 1, dtype=torch.long)), 1),
        n_noise.unsqueeze(1),
    )
    width = torch.where(live, last - first, 0)
    return interval_mask(points.clamp_min(0) + first, width, L)


def t5_corrupt(
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    *,
    sentinel_ids: Sequence[int] | torch.Tensor,
    eos_id: int,
    pad_id: int,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 span corruption: each masked span becomes one sentinel in the inputs.

    Row by row: ``inputs`` keeps the unmasked tokens and replaces the ``k``-th masked span by
    ``sentinel_ids[k]``; ``targets`` lists, for every span, its sentinel followed by the span's
    tokens, then ``eos_id``. ``eos_id`` is appended to ``inputs`` too unless the row's last real
    token already is ``eos_id``. Both are right-padded with ``pad_id`` to their longest row.

    The output width depends on the data, so this function reads three maxima on the host.

    Args:
        input_ids: integer (B, L).
        masked: bool (B, L), True = masked (e.g. from :func:`mask_spans`); masks on padding are
            ignored.
        sentinel_ids: ids for span 0, 1, ... (e.g. T5's ``<extra_id_0>``, ``<extra_id_1>``, ...):
            distinct, and neither ``eos_id`` nor ``pad_id``.
        eos_id: end-of-sequence id.
        pad_id: padding id for both outputs.
        attention_mask: optional (B, L), 1 = real; without it, tokens equal to ``pad_id`` are
            padding.

    Returns:
        ``(inputs, targets)``, int64.

    >>> ids = torch.tensor([[10, 11, 12, 13, 14, 0]])
    >>> masked = torch.tensor([[False, True, True, False, True, False]])
    >>> x, y = t5_corrupt(ids, masked, sentinel_ids=[99, 98], eos_id=1, pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[10, 99, 13, 98, 1]], [[99, 11, 12, 98, 14, 1]])
    """
    inputs, targets, _, _ = t5_corrupt_with_lengths(
        input_ids,
        masked,
        sentinel_ids=sentinel_ids,
        eos_id=eos_id,
        pad_id=pad_id,
        attention_mask=attention_mask,
    )
    return inputs, targets


def t5_corrupt_with_lengths(
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    *,
    sentinel_ids: Sequence[int] | torch.Tensor,
    eos_id: int,
    pad_id: int,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`t5_corrupt` that also returns the (B,) lengths of ``inputs`` and ``targets``.

    The lengths give exact attention masks and label padding even when ``pad_id`` is a real id.
    """
    check_long("input_ids", input_ids)
    check_bool_2d("masked", masked)
    if masked.shape != input_ids.shape:
        raise ValueError(
            f"masked must have the shape of input_ids {tuple(input_ids.shape)} "
            f"({tuple(masked.shape)} given)."
        )
    B, L = input_ids.shape
    device = input_ids.device
    if attention_mask is None:
        real = input_ids != pad_id
    else:
        real = valid_from_attention_mask(attention_mask, input_ids.shape, device)
    sentinels = torch.as_tensor(sentinel_ids, dtype=torch.long, device=device).flatten()
    _check_sentinels(sentinels, eos_id, pad_id)
    ids = input_ids.long()
    masked = masked & real
    prev = torch.nn.functional.pad(masked, (1, 0), value=False)[:, :-1]
    starts = masked & ~prev  # (B, L) first token of each span
    span_id = (starts.long().cumsum(1) - 1).clamp_min(0)  # (B, L)
    n_spans = starts.sum(1)
    max_spans = int(n_spans.max()) if B else 0
    if max_spans > sentinels.numel():
        raise ValueError(
            f"A row has {max_spans} masked spans but only {sentinels.numel()} "
            f"sentinel ids were given."
        )
    if L == 0:
        ends_eos = torch.zeros(B, dtype=torch.bool, device=device)
    else:
        pos = torch.arange(L, device=device)
        last_real = torch.where(real, pos, -1).max(1).values.clamp_min(0).unsqueeze(1)  # (B, 1)
        ends_eos = (ids.gather(1, last_real) == eos_id) & real.gather(1, last_real)
        ends_eos = (ends_eos & ~masked.gather(1, last_real)).squeeze(1)
    sentinel_at = (
        sentinels[span_id.clamp_max(max(sentinels.numel() - 1, 0))] if sentinels.numel() else ids
    )

    # Inputs: unmasked tokens, plus one sentinel at the start of every span.
    keep = real & (~masked | starts)
    in_vals = torch.where(starts, sentinel_at, ids)
    in_pos = keep.long().cumsum(1) - 1
    n_in = keep.sum(1)
    add_eos = ~ends_eos
    in_len = n_in + add_eos.long()
    width = int(in_len.max()) if B else 0
    inputs = torch.full((B, width + 1), pad_id, dtype=torch.long, device=device)
    inputs.scatter_(1, torch.where(keep, in_pos, width), in_vals)
    inputs.scatter_(
        1, torch.where(add_eos, n_in, width).unsqueeze(1), torch.full((B, 1), eos_id, device=device)
    )
    inputs = inputs[:, :width]

    # Targets: for span k, sentinel k then its tokens; EOS last.
    n_before = masked.long().cumsum(1) - 1  # masked tokens before and including this one, minus 1
    tok_pos = n_before + span_id + 1
    sent_pos = n_before + span_id  # where span k's sentinel goes (only read at starts)
    n_tgt = masked.sum(1) + n_spans
    t_width = int(n_tgt.max()) + 1 if B else 0
    targets = torch.full((B, t_width + 1), pad_id, dtype=torch.long, device=device)
    targets.scatter_(1, torch.where(masked, tok_pos, t_width), ids)
    targets.scatter_(1, torch.where(starts, sent_pos, t_width), sentinel_at)
    targets.scatter_(1, n_tgt.unsqueeze(1), torch.full((B, 1), eos_id, device=device))
    return inputs, targets[:, :t_width], in_len, n_tgt + 1


def _check_sentinels(sentinels: torch.Tensor, eos_id: int, pad_id: int) -> None:
    """Sentinels must be told apart from each other, from EOS and from padding: a repeated one
    merges two spans in the targets, and one equal to ``pad_id`` / ``eos_id`` reads as the end
    of the row. (This function reads the sentinels on the host, as ``t5_corrupt`` reads its
    output widths.)"""
    values = sentinels.tolist()
    for name, special in (("pad_id", pad_id), ("eos_id", eos_id)):
        if special in values:
            raise ValueError(
                f"sentinel_ids must differ from {name}={special} (sentinel {values.index(special)} "
                f"is {special})."
            )
    if len(set(values)) < len(values):
        repeated = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"sentinel_ids must be distinct ({repeated[:5]} given more than once).")
