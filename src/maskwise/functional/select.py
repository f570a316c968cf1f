"""The selection primitive every masker builds on: which of the allowed positions to mask."""

from __future__ import annotations

import torch

from maskwise._checks import as_rate, check_bool_2d, check_probability
from maskwise.random import KeyedGenerator, uniform

__all__ = [
    "Rate",
    "distinct_draws",
    "distinct_ints",
    "draws_on_host",
    "on_host",
    "per_sample_rates",
    "sample_mask",
    "top_k_per_row",
]

Generator = torch.Generator | KeyedGenerator | None

#: A masking rate: one float for the batch, a (B,) tensor of per-sample rates, or a range
#: ``(low, high)`` from which every sample draws its own rate.
Rate = float | torch.Tensor | tuple[float, float]


def per_sample_rates(
    rate: Rate,
    batch: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> float | torch.Tensor:
    """Resolve a range ``(low, high)`` into (B,) float64 rates drawn uniformly in
    ``[low, high]`` from ``generator`` (DINOv2 draws 0.1-0.5 per image, LLaDA one rate per
    sequence); a float or a tensor is returned as it is (checked where it is used).

    Every masker that takes a ``rate`` calls this first, so a range costs one draw of B numbers
    before the masks, and a float or tensor rate draws exactly what it drew before.

    >>> r = per_sample_rates((0.1, 0.5), 4, generator=torch.Generator().manual_seed(0))
    >>> r.shape, bool(((r >= 0.1) & (r <= 0.5)).all())
    (torch.Size([4]), True)
    >>> per_sample_rates(0.15, 4)
    0.15
    """
    if not isinstance(rate, (tuple, list)):
        return rate
    if len(rate) != 2 or any(isinstance(x, bool) for x in rate):
        raise ValueError(f"a rate range must be a pair (low, high) ({rate!r} given).")
    low = check_probability("low", float(rate[0]))
    high = check_probability("high", float(rate[1]))
    if low > high:
        raise ValueError(f"a rate range needs low <= high ({rate!r} given).")
    u = uniform((batch,), generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def top_k_per_row(
    scores: torch.Tensor, k: torch.Tensor, *, k_max: int | None = None
) -> torch.Tensor:
    """Bool mask of the ``k[b]`` highest ``scores[b]`` in every row, ``k`` varying per row.

    With ``k_max`` (a bound on ``k`` known without reading it, e.g. from the rate and the
    length), one ``torch.topk(k_max)``; otherwise one batched sort. No host sync either way.

    Args:
        scores: float (B, N); ``-inf`` marks positions that must come last.
        k: int64 (B,), ``0 <= k[b] <= N`` (and ``<= k_max`` when given).
        k_max: optional bound on ``k``.

    >>> top_k_per_row(torch.tensor([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]]), torch.tensor([2, 1]))
    tensor([[False,  True,  True],
            [ True, False, False]])
    """
    B, N = scores.shape
    if k_max is not None and k_max < N:
        out = torch.zeros(B, N, dtype=torch.bool, device=scores.device)
        if k_max <= 0:
            return out
        best = scores.topk(k_max, dim=1).indices  # (B, k_max), best first
        keep = torch.arange(k_max, device=scores.device) < k.unsqueeze(1)
        return out.scatter_(1, best, keep)
    order = scores.argsort(dim=1, descending=True)  # (B, N) positions, best first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=scores.device).expand(B, N))
    return rank < k.unsqueeze(1)


def on_host(device: torch.device) -> bool:
    """Whether a masker may read values on the host and loop over a few of them: on the CPU
    (where that costs no device sync), outside ``torch.compile`` (a host read breaks the graph).

    The CPU paths that use it (rectangle writes in ``erase``, slice fills in ``spec_augment``,
    the exact fill of ``mask_blocks`` for the short samples only) each have a test that they
    equal the batched path GPUs and compiled code take.
    """
    return device.type == "cpu" and not torch.compiler.is_compiling()


def draws_on_host(generator: Generator, device: torch.device) -> bool:
    """Whether a masker may draw only what it uses and read counts on the host: on the CPU
    (where a host read costs no device sync) with a ``torch.Generator`` or none, outside
    ``torch.compile``.

    Such samplers (:func:`distinct_ints`, the compact draws of ``corrupt``) are 2-3x faster
    there (docs/benchmarks.md). A :class:`~maskwise.random.KeyedGenerator` keeps the per
    position draws, so that a row never depends on how many draws other rows needed, and GPUs
    keep them to stay free of host syncs.
    """
    return on_host(device) and not isinstance(generator, KeyedGenerator)


def distinct_draws(k_max: int) -> int:
    """Uniform draws per row that :func:`distinct_ints` is given for up to ``k_max`` values: a
    margin for the draws that repeat a value (more are drawn only when a row runs short)."""
    return k_max + k_max // 2 + 8


def distinct_ints(
    u: torch.Tensor, high: torch.Tensor, k: torch.Tensor, generator: Generator
) -> torch.Tensor:
    """``k[b]`` distinct ints uniform in ``[0, high[b])`` per row, sorted, from the uniform draws
    ``u`` (B, m), ``k <= high``; (B, k.max()) with ``-1`` after each row's values. CPU only
    (see :func:`draws_on_host`).

    Sampling without replacement: each draw gives ``floor(u * high)``, and a row keeps the first
    ``k`` distinct values in draw order (sequential sampling without replacement, so the set is
    a uniform ``k``-subset). When ``m`` draws hold fewer than ``k`` distinct values, ``m`` more
    are drawn for every row and appended, until every row has its ``k``; with
    :func:`distinct_draws` columns that is rare unless ``k`` is close to ``high``. No loop over
    rows and a handful of ops, instead of a key per value and a top-k.
    """
    B = u.shape[0]
    k_max = int(k.max()) if B else 0
    n = high.unsqueeze(1).double()
    values = (u.double() * n).long()  # (B, m), draw order
    while True:
        m = values.shape[1]
        ordered, order = values.sort(dim=1, stable=True)  # equal values keep their draw order
        repeat = torch.zeros_like(ordered, dtype=torch.bool)
        repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        new = torch.empty_like(repeat).scatter_(1, order, repeat.logical_not_())  # draw order
        kept = new.logical_and_(new.cumsum(1) <= k.unsqueeze(1))  # the first k new values
        if B == 0 or bool((kept.sum(1) >= k).all()):
            break
        more = uniform((B, m), generator=generator).double()
        values = torch.cat((values, (more * n).long()), 1)
    out = torch.where(kept, values, torch.iinfo(torch.long).max).sort(1).values[:, :k_max]
    return out.masked_fill_(out == torch.iinfo(torch.long).max, -1)


def sample_mask(
    valid: torch.Tensor,
    rate: Rate,
    *,
    exact: bool = False,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> torch.Tensor:
    """Choose positions to mask among the allowed ones.

    * ``exact=False``: independent Bernoulli draws. Position ``j`` of row ``b`` is masked with
      probability ``p[b, j] = rate[b]`` or, with ``weights``,
      ``p[b, j] = clip(rate[b] * n_valid[b] * w[b, j] / sum_valid(w[b]), 0, 1)``, so the expected
      masked fraction of the valid positions is ``rate`` (less only where clipping bites).
    * ``exact=True``: exactly ``k[b] = round(rate[b] * n_valid[b])`` positions per row (round half
      to even, as Python's ``round``), drawn without replacement with probability proportional to
      ``weights`` (Efraimidis-Spirakis keys ``log(u) / w``, equivalent to Gumbel top-k). Positions
      of weight 0 are never chosen, so a row with fewer than ``k`` positive weights gets fewer.

    Args:
        valid: bool (B, N), True where masking is allowed (not padding, not special).
        rate: float in [0, 1], float tensor (B,) of per-row rates, or a range
            ``(low, high)`` from which each row draws its rate (:func:`per_sample_rates`).
        exact: exact count per row instead of Bernoulli draws.
        weights: optional non-negative float (B, N) sampling weights (only their ratios matter).
            NaN, infinite or negative weights raise a ``ValueError`` on CPU; on other devices,
            where checking them would cost a host sync, such positions get weight 0 (never
            chosen).
        generator: ``torch.Generator``, :class:`maskwise.random.KeyedGenerator` or None (global).

    Returns:
        bool (B, N), True = masked. Never True where ``valid`` is False.

    >>> valid = torch.tensor([[True, True, True, True, False]])
    >>> g = torch.Generator().manual_seed(0)
    >>> m = sample_mask(valid, 0.5, exact=True, generator=g)
    >>> int(m.sum()), bool(m[0, 4])
    (2, False)
    """
    check_bool_2d("valid", valid)
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool ({exact!r} given).")
    B, N = valid.shape
    device = valid.device
    rate = per_sample_rates(rate, B, device=device, generator=generator)
    if not exact and weights is None and not isinstance(rate, torch.Tensor):
        # Hot path of token masking: one draw, one comparison with a Python scalar.
        p = check_probability("rate", rate)
        return (uniform((B, N), generator=generator, device=device) < p) & valid
    r = as_rate(rate, B, device)  # (B, 1) float64
    w = None
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
            raise TypeError(
                f"weights must be a floating point tensor "
                f"({getattr(weights, 'dtype', type(weights))} given)."
            )
        if weights.shape != valid.shape:
            raise ValueError(
                f"weights must have the shape of valid {tuple(valid.shape)} "
                f"({tuple(weights.shape)} given)."
            )
        usable = (weights >= 0) & (weights < float("inf"))  # False for NaN too
        if weights.device.type == "cpu":
            if weights.numel() and not bool(usable.all()):
                bad = weights[~usable].unique()
                raise ValueError(
                    f"weights must be finite and non-negative "
                    f"({bad.tolist()[:5]} given at {int((~usable).sum())} positions)."
                )
            usable = valid
        else:  # reading the values would sync: unusable weights are weight 0, never chosen
            usable = usable.to(device) & valid
        w = torch.where(usable, weights.to(device=device, dtype=torch.float32), 0.0)

    if not exact:
        u = uniform((B, N), generator=generator, device=device)
        if w is None:
            probs = r.to(torch.float32)  # (B, 1)
        else:
            n_valid = valid.sum(1, keepdim=True)
            w_sum = w.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            probs = (r * n_valid * w / w_sum).clamp(0, 1).to(torch.float32)  # (B, N)
        return (u < probs) & valid

    k = torch.round(r.squeeze(1) * valid.sum(1)).long()  # (B,)
    # With a float rate, k <= round(rate * N): a bound from the arguments, no host read.
    k_max = None if isinstance(rate, torch.Tensor) else round(float(rate) * N)
    u = uniform((B, N), generator=generator, device=device)
    if w is None:
        keys = u.masked_fill(~valid, -float("inf"))
        return top_k_per_row(keys, k, k_max=k_max) & valid
    positive = valid & (w > 0)
    keys = torch.where(positive, u.log() / w, -float("inf"))  # log(u) < 0: heavier -> larger key
    return top_k_per_row(keys, k, k_max=k_max) & positive
