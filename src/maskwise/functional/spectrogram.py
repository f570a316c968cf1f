"""Speech masking: SpecAugment frequency / time masks and wav2vec2-style time spans.

Spectrograms are (B, F, T) or (B, C, F, T); ``lengths`` (B,) gives each row's number of real
frames (the rest is padding). Masks are returned per axis, (B, F) and (B, T), True = masked.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import torch

from maskwise._checks import as_rate, check_probability
from maskwise.functional.select import (
    Rate,
    distinct_draws,
    distinct_ints,
    draws_on_host,
    on_host,
    per_sample_rates,
    top_k_per_row,
)
from maskwise.random import KeyedGenerator, uniform

__all__ = [
    "SPEC_AUGMENT_POLICIES",
    "SpecAugmentResult",
    "interval_mask",
    "mask_time_spans",
    "spec_augment",
    "spec_augment_policy",
]

Generator = torch.Generator | KeyedGenerator | None

# The policies of Park et al. (2019), Table 1: F = freq_width, m_F = freq_masks, T = time_width,
# p = max_time_fraction (a time mask is at most p * length frames), m_T = time_masks.
SPEC_AUGMENT_POLICIES: dict[str, dict[str, Any]] = {
    "LB": dict(freq_masks=1, freq_width=27, time_masks=1, time_width=100, max_time_fraction=1.0),
    "LD": dict(freq_masks=2, freq_width=27, time_masks=2, time_width=100, max_time_fraction=1.0),
    "SM": dict(freq_masks=2, freq_width=15, time_masks=2, time_width=70, max_time_fraction=0.2),
    "SS": dict(freq_masks=2, freq_width=27, time_masks=2, time_width=70, max_time_fraction=0.2),
}


class SpecAugmentResult(NamedTuple):
    """What :func:`spec_augment` returns."""

    spec: torch.Tensor  # the masked spectrogram, same shape as the input
    freq_masked: torch.Tensor  # bool (B, F)
    time_masked: torch.Tensor  # bool (B, T)

    @property
    def mask(self) -> torch.Tensor:
        """bool (B, F, T): the cells hidden by a frequency or a time mask."""
        return self.freq_masked.unsqueeze(-1) | self.time_masked.unsqueeze(-2)


def _lengths(lengths: torch.Tensor | None, B: int, T: int, device: torch.device) -> torch.Tensor:
    if lengths is None:
        return torch.full((B,), T, dtype=torch.long, device=device)
    if (
        not isinstance(lengths, torch.Tensor)
        or lengths.dtype.is_floating_point
        or lengths.dim() != 1
    ):
        raise TypeError(
            f"lengths must be an integer tensor of shape (B,) "
            f"({getattr(lengths, 'dtype', type(lengths))} "
            f"{tuple(getattr(lengths, 'shape', ()))} given)."
        )
    if lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},) ({tuple(lengths.shape)} given).")
    # Checked where it costs no device sync (CPU), and not while compiling (a host read).
    if lengths.device.type == "cpu" and lengths.numel() and not torch.compiler.is_compiling():
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > T:
            raise ValueError(f"lengths must lie in [0, {T}] (values in [{lo}, {hi}] given).")
    return lengths.to(device=device, dtype=torch.long)


def interval_mask(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """Union of intervals ``[starts[b, m], starts[b, m] + widths[b, m])`` as bool (B, size).

    A difference array and a cumulative sum: O(B * (M + size)), no (B, M, size) tensor.

    >>> interval_mask(
    ...     torch.tensor([[1, 2], [0, 0]]), torch.tensor([[2, 3], [0, 1]]), 6
    ... ).int().tolist()
    [[0, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]]
    """
    B = starts.shape[0]
    diff = torch.zeros(B, size + 1, dtype=torch.int32, device=starts.device)
    ends = (starts + widths).clamp(0, size)
    starts = starts.clamp(0, size)
    live = widths > 0
    diff.scatter_add_(1, torch.where(live, starts, size), live.int())
    diff.scatter_add_(1, torch.where(live, ends, size), -live.int())
    return diff[:, :size].cumsum(1) > 0


def _axis_masks(
    n_masks: torch.Tensor,
    max_masks: int,
    max_width: torch.Tensor,
    length: torch.Tensor,
    size: int,
    generator: Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, size) union of ``n_masks[b]`` intervals of width uniform in [0, max_width[b]], each
    starting uniformly where it fits in [0, length[b]); and the intervals' starts and widths
    (B, max_masks), width 0 for the masks a row does not have."""
    B = length.shape[0]
    if max_masks == 0 or size == 0:
        none = torch.zeros(B, 0, dtype=torch.long, device=device)
        return torch.zeros(B, size, dtype=torch.bool, device=device), none, none
    u = uniform((B, 2 * max_masks), generator=generator, device=device).double()
    width = torch.floor(u[:, :max_masks] * (max_width.unsqueeze(1) + 1)).long()  # 0 .. max_width
    width = torch.minimum(width, length.unsqueeze(1))
    start = torch.floor(u[:, max_masks:] * (length.unsqueeze(1) - width + 1)).long()
    live = torch.arange(max_masks, device=device) < n_masks.unsqueeze(1)
    width = torch.where(live, width, 0)
    return interval_mask(start, width, size), start, width


def spec_augment_policy(policy: str, frames: int | None = None) -> dict[str, Any]:
    """The mask settings of one of the paper's policies (:data:`SPEC_AUGMENT_POLICIES`), with
    the time width capped at ``frames``: the paper's T is for utterances of seconds, so on
    shorter clips a mask may cover the clip but not more (an explicit int ``time_width`` larger
    than the time axis is an error instead).

    >>> spec_augment_policy("LD", frames=60)["time_width"]
    60
    """
    if policy not in SPEC_AUGMENT_POLICIES:
        raise ValueError(
            f"policy must be one of {sorted(SPEC_AUGMENT_POLICIES)} ({policy!r} given)."
        )
    settings = dict(SPEC_AUGMENT_POLICIES[policy])
    if frames is not None:
        settings["time_width"] = min(settings["time_width"], frames)
    return settings


def spec_augment(
    spec: torch.Tensor,
    *,
    freq_masks: int = 2,
    freq_width: int = 27,
    time_masks: int | float = 2,
    time_width: int | float = 100,
    max_time_fraction: float = 1.0,
    max_time_masks: int = 20,
    lengths: torch.Tensor | None = None,
    value: float | str = 0.0,
    policy: str | None = None,
    generator: Generator = None,
) -> SpecAugmentResult:
    """SpecAugment (Park et al., 2019): frequency and time masks, independent per row.

    Each of ``freq_masks`` frequency masks covers channels ``[f0, f0 + f)`` with ``f`` uniform in
    ``{0, ..., freq_width}`` and ``f0`` uniform in ``{0, ..., F - f}``; each time mask covers
    frames ``[t0, t0 + t)`` with ``t`` uniform in ``{0, ..., W_b}`` and ``t0`` uniform in
    ``{0, ..., length_b - t}``, so no mask reaches into padding. ``W_b`` is ``time_width`` (an
    int, frames) or ``floor(time_width * length_b)`` (a float, adaptive SpecAugment), capped at
    ``max_time_fraction * length_b``. ``time_masks`` is a count, or a float: masks per frame of
    length (adaptive multiplicity, ``min(max_time_masks, floor(time_masks * length_b))``).
    Every row draws its own masks.

    Args:
        spec: (B, F, T) or (B, C, F, T) float; not modified.
        freq_masks, freq_width: number and largest width of frequency masks.
        time_masks, time_width: number (or rate per frame) and largest width (frames, or fraction
            of the row's length) of time masks.
        max_time_fraction: cap on a time mask's width as a fraction of the row's length (the
            paper's ``p``).
        max_time_masks: cap on adaptive ``time_masks``.
        lengths: optional (B,) real frames per row; default all ``T``.
        value: fill value, or ``"mean"`` for each row's mean over its real frames.
        policy: ``"LB"``, ``"LD"``, ``"SM"`` or ``"SS"``, the paper's policies
            (:data:`SPEC_AUGMENT_POLICIES`); replaces the mask arguments (its time width is
            capped at the time axis, so the policies also work on short clips).
        generator: random source.

    Returns:
        :class:`SpecAugmentResult` ``(spec, freq_masked (B, F), time_masked (B, T))``. The masked
        spectrogram is written in one ``masked_fill`` pass through a temporary (B, F, T) bool
        union of the two broadcast masks; only the (B, F) and (B, T) masks are returned.

    >>> x = torch.randn(4, 80, 300)
    >>> out = spec_augment(x, policy="LD", lengths=torch.tensor([300, 250, 200, 120]),
    ...                    generator=torch.Generator().manual_seed(0))
    >>> out.spec.shape, out.freq_masked.shape, bool(out.time_masked[3, 120:].any())
    (torch.Size([4, 80, 300]), torch.Size([4, 80]), False)
    """
    if policy is not None:
        frames = spec.shape[-1] if isinstance(spec, torch.Tensor) and spec.dim() >= 3 else None
        p = spec_augment_policy(policy, frames)
        freq_masks, freq_width = p["freq_masks"], p["freq_width"]
        time_masks, time_width = p["time_masks"], p["time_width"]
        max_time_fraction = p["max_time_fraction"]
    if not isinstance(spec, torch.Tensor) or spec.dim() not in (3, 4):
        raise ValueError(
            f"spec must be (B, F, T) or (B, C, F, T) ({tuple(getattr(spec, 'shape', ()))} given)."
        )
    if not spec.is_floating_point():
        raise TypeError(f"spec must be a float tensor ({spec.dtype} given).")
    B, F, T = spec.shape[0], spec.shape[-2], spec.shape[-1]
    device = spec.device
    for name, v in (
        ("freq_masks", freq_masks),
        ("freq_width", freq_width),
        ("max_time_masks", max_time_masks),
    ):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name} must be an int >= 0 ({v!r} given).")
    if freq_width > F:
        raise ValueError(f"freq_width={freq_width} is larger than the frequency axis ({F}).")
    max_time_fraction = check_probability("max_time_fraction", max_time_fraction)
    n = _lengths(lengths, B, T, device)

    if isinstance(time_width, bool) or not isinstance(time_width, numbers.Real) or time_width < 0:
        raise ValueError(
            f"time_width must be an int (frames) or a float fraction >= 0 ({time_width!r} given)."
        )
    if isinstance(time_width, numbers.Integral):
        if time_width > T:
            raise ValueError(f"time_width={time_width} is larger than the time axis ({T}).")
        w_time = torch.full_like(n, int(time_width))
    else:
        w_time = torch.floor(check_probability("time_width", float(time_width)) * n.double()).long()
    w_time = torch.minimum(w_time, torch.floor(max_time_fraction * n.double()).long())

    if isinstance(time_masks, bool) or not isinstance(time_masks, numbers.Real) or time_masks < 0:
        raise ValueError(f"time_masks must be an int or a float rate >= 0 ({time_masks!r} given).")
    if isinstance(time_masks, numbers.Integral):
        m_time = int(time_masks)
        n_time = torch.full_like(n, m_time)
    else:
        m_time = int(max_time_masks)
        n_time = torch.floor(float(time_masks) * n.double()).long().clamp_max(m_time)

    f_masked, f_start, f_width = _axis_masks(
        torch.full_like(n, int(freq_masks)),
        int(freq_masks),
        torch.full_like(n, int(freq_width)),
        torch.full_like(n, F),
        F,
        generator,
        device,
    )  # (B, F)
    t_masked, t_start, t_width = _axis_masks(n_time, m_time, w_time, n, T, generator, device)

    lead = (B,) + (1,) * (spec.dim() - 3)  # broadcast over a channel axis
    f_b = f_masked.view(*lead, F, 1)
    t_b = t_masked.view(*lead, 1, T)
    fill: torch.Tensor | float
    if isinstance(value, str):
        if value != "mean":
            raise ValueError(f"value must be a number or 'mean' ({value!r} given).")
        real = (torch.arange(T, device=device) < n.unsqueeze(1)).view(*lead, 1, T)
        # where, not a product: padding of a log spectrogram may hold -inf (0 * -inf = NaN)
        total = torch.where(real, spec, 0.0).sum(dim=tuple(range(1, spec.dim())), keepdim=True)
        channels = math.prod(spec.shape[1:-2])  # 1 for (B, F, T); B may be 0, T may be 0
        count = (n.view(*lead, 1, 1) * F * channels).clamp_min(1)
        fill = (total / count).to(spec.dtype)  # (B, 1, ..., 1) per-row mean over real frames
    else:
        fill = float(value)
    if on_host(device):
        # A copy, then only the masked bands are written, one slice per interval, as the per-row
        # loops do but without their per-row passes: 2-3x faster than one pass over the union
        # (docs/benchmarks.md). The intervals are read on the host, which is free on the CPU.
        out = spec.clone()
        fills = [fill] * B if isinstance(fill, float) else fill.view(B).tolist()
        for dim, start, width in ((-2, f_start, f_width), (-1, t_start, t_width)):
            row, m = width.nonzero().unbind(1)
            for b, s, w in zip(row.tolist(), start[row, m].tolist(), width[row, m].tolist()):
                out[b].narrow(dim, s, w).fill_(fills[b])
    else:
        # One pass over the spectrogram; no host sync (GPUs, torch.compile).
        out = torch.where(f_b | t_b, fill, spec)
    return SpecAugmentResult(out, f_masked, t_masked)


def _rate_bound(rate: Rate) -> float:
    """An upper bound of every row's rate, known without reading a device tensor: the float,
    the range's high end, or the maximum of a CPU tensor (1.0 for a tensor on another device)."""
    if isinstance(rate, (tuple, list)):
        return check_probability("high", float(rate[-1])) if rate else 1.0
    if isinstance(rate, torch.Tensor):
        if rate.device.type == "cpu" and rate.numel() and not torch.compiler.is_compiling():
            return min(1.0, max(0.0, float(rate.max())))
        return 1.0
    return check_probability("rate", rate)


def mask_time_spans(
    lengths: torch.Tensor,
    max_len: int,
    rate: Rate,
    *,
    span: int = 10,
    min_spans: int = 0,
    generator: Generator = None,
) -> torch.Tensor:
    """wav2vec2 / HuBERT time masking: spans of ``span`` frames starting at random frames.

    Row ``b`` with ``n_b`` real frames gets ``k_b = max(min_spans, floor(rate * n_b / span + e_b))``
    spans, ``e_b`` uniform in [0, 1) (probabilistic rounding, drawn per row), at most as many as
    there are start frames ``0 .. n_b - span``; the ``k_b`` starts are distinct and uniform
    among them, and spans may overlap, so about ``1 - exp(-rate)`` of the frames are masked
    (0.49 at ``rate=0.65``). No span reaches into padding, and a row's count never depends on
    other rows (fairseq's default cuts every row to the batch's smallest count, which masks long
    rows at ~15 % instead of ~49 %). Batched, no host round trip.

    Args:
        lengths: integer (B,) real frames per row (``<= max_len``).
        max_len: T, the padded length.
        rate: ``mask_prob`` of wav2vec2: spans started per frame times ``span``; a float,
            a (B,) tensor, or a range ``(low, high)`` (a rate per row).
        span: span length in frames (``mask_length``).
        min_spans: least number of spans per row (if the row has room).
        generator: random source.

    Returns:
        bool (B, T), True = masked.

    >>> m = mask_time_spans(torch.tensor([100, 40]), 120, 0.65, span=10,
    ...                     generator=torch.Generator().manual_seed(0))
    >>> m.shape, bool(m[1, 40:].any())
    (torch.Size([2, 120]), False)
    """
    if isinstance(max_len, bool) or not isinstance(max_len, numbers.Integral) or max_len < 0:
        raise ValueError(f"max_len must be an int >= 0 ({max_len!r} given).")
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(
            f"lengths must be an integer tensor of shape (B,) ({type(lengths).__name__} given)."
        )
    device = lengths.device
    n = _lengths(lengths, lengths.shape[0] if lengths.dim() == 1 else -1, int(max_len), device)
    rate_bound = _rate_bound(rate)  # checks rate; bounds every row's rate, no host read on GPU
    rate = per_sample_rates(rate, n.shape[0], device=device, generator=generator)
    r = (
        check_probability("rate", rate)
        if not isinstance(rate, torch.Tensor)
        else as_rate(rate, n.shape[0], device).squeeze(1)
    )
    if isinstance(span, bool) or not isinstance(span, numbers.Integral) or span < 1:
        raise ValueError(f"span must be an int >= 1 ({span!r} given).")
    if isinstance(min_spans, bool) or not isinstance(min_spans, numbers.Integral) or min_spans < 0:
        raise ValueError(f"min_spans must be an int >= 0 ({min_spans!r} given).")
    B, T = n.shape[0], int(max_len)
    n_starts = (n - span + 1).clamp_min(0)  # start frames 0 .. n - span
    # k <= max(min_spans, rate * T / span + 1): a bound from the arguments, no host read.
    k_max = min(T, max(int(min_spans), int(rate_bound * T / span) + 1))
    if draws_on_host(generator, device):
        u = uniform((B, 1 + distinct_draws(k_max)), generator=generator, device=device)
        k = _span_count(r, n, span, u[:, 0].double(), min_spans, n_starts)
        return _spans_from_starts(distinct_ints(u[:, 1:], n_starts, k, generator), span, T)
    # Column 0 is the row's rounding offset, columns 1.. the start keys: a row's draws then do
    # not depend on the padded length T (keyed generators give the same mask in any batch).
    u = uniform((B, T + 1), generator=generator, device=device)
    k = _span_count(r, n, span, u[:, 0].double(), min_spans, n_starts)
    allowed = torch.arange(T, device=device) < n_starts.unsqueeze(1)
    starts = top_k_per_row(u[:, 1:].masked_fill(~allowed, -1.0), k, k_max=k_max) & allowed  # (B, T)
    # Frame t is masked if a span starts in (t - span, t]: a windowed count of the starts.
    c = torch.nn.functional.pad(starts.int().cumsum(1), (span, 0))  # c[:, t + span] = starts <= t
    return (c[:, span:] - c[:, :-span]) > 0


def _span_count(
    rate: float | torch.Tensor,
    n: torch.Tensor,
    span: int,
    eps: torch.Tensor,
    min_spans: int,
    n_starts: torch.Tensor,
) -> torch.Tensor:
    """Spans per row: ``rate * n / span`` rounded with the row's offset ``eps``, at least
    ``min_spans``, at most the number of start frames (wav2vec2's count)."""
    k = torch.floor(rate * n.double() / span + eps).long().clamp_min(int(min_spans))
    return torch.minimum(k, n_starts)  # (B,)


def _spans_from_starts(starts: torch.Tensor, span: int, T: int) -> torch.Tensor:
    """Bool (B, T): the union of ``[start, start + span)`` over the starts >= 0 of each row."""
    B = starts.shape[0]
    first = torch.where(starts >= 0, starts, T)  # unused slots write past the end
    frames = (first.unsqueeze(2) + torch.arange(span)).view(B, starts.shape[1] * span)
    return torch.zeros(B, T + span, dtype=torch.bool).scatter_(1, frames, True)[:, :T]
