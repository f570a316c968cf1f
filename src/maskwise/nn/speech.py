"""Speech masking modules: :class:`SpecAugment`, :class:`TimeSpanMask`."""

from __future__ import annotations

import math

import torch

from maskwise import functional as F
from maskwise.nn.base import MaskModule, check_tokens, fill_masked, mask_token_parameter

__all__ = ["SpecAugment", "TimeSpanMask"]

_RATE_SCALES = ("masks", "time_masks")


def _real_frames(lengths: torch.Tensor | None, T: int, device: torch.device) -> torch.Tensor | None:
    """Bool (B, T), True on the first ``lengths[b]`` frames of row ``b``; None without
    lengths."""
    if lengths is None:
        return None
    return torch.arange(T, device=device) < lengths.to(device).unsqueeze(1)


class SpecAugment(MaskModule):
    """SpecAugment on spectrograms (B, F, T) or (B, C, F, T)
    (:func:`~maskwise.functional.spec_augment`), e.g. ``SpecAugment(policy="LD")``.

    ``rate`` (default 1.0), the knob a schedule or controller moves, is the share of the
    configured masks applied: ``rate * freq_masks`` frequency masks and ``rate * time_masks``
    time masks per call, rounded down or up at random with the odds that make the mean exact
    (one draw from the module's CPU generator, only when a count is not whole). So rate 0
    masks nothing, rate 1 applies the configured masks (the paper's policy), and the expected
    masked share rises continuously with the rate. An adaptive (float) ``time_masks`` is scaled
    to ``rate * time_masks``.

    ``rate_scales="time_masks"`` keeps the earlier rule, ``round(rate * time_masks)`` time masks
    and always ``freq_masks`` frequency masks (rate 0 keeps them), for runs that must reproduce
    numbers measured with it.

    Args:
        rate: share of the configured masks applied, in [0, 1].
        freq_masks, freq_width: number and largest width of frequency masks.
        time_masks, time_width: number (or rate per frame) and largest width (frames, or
            fraction of the row's length) of time masks.
        max_time_fraction, max_time_masks, value: as :func:`~maskwise.functional.spec_augment`.
        policy: ``"LB"``, ``"LD"``, ``"SM"`` or ``"SS"``: the paper's settings replace the mask
            arguments.
        rate_scales: ``"masks"`` (both counts) or ``"time_masks"`` (the earlier rule).
        seed, keyed, return_mask: the random source and the output, as in :class:`MaskModule`.

    ``forward(spec, lengths=None) -> SpecAugmentResult(spec, freq_masked, time_masked)``, or the
    masked spectrogram alone with ``return_mask=False``.

    >>> sa = SpecAugment(policy="LD", seed=0)
    >>> out = sa(torch.randn(2, 80, 200), lengths=torch.tensor([200, 150]))
    >>> out.spec.shape, bool(out.time_masked[1, 150:].any())
    (torch.Size([2, 80, 200]), False)
    """

    def __init__(
        self,
        rate: float = 1.0,
        *,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int | float = 2,
        time_width: int | float = 100,
        max_time_fraction: float = 1.0,
        max_time_masks: int = 20,
        value: float | str = 0.0,
        policy: str | None = None,
        rate_scales: str = "masks",
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        if policy is not None:  # the policy's settings replace the mask arguments
            settings = F.spec_augment_policy(policy)
            freq_masks, freq_width = settings["freq_masks"], settings["freq_width"]
            time_masks, time_width = settings["time_masks"], settings["time_width"]
            max_time_fraction = settings["max_time_fraction"]
        if rate_scales not in _RATE_SCALES:
            raise ValueError(f"rate_scales must be one of {_RATE_SCALES} ({rate_scales!r} given).")
        self.policy, self.rate_scales = policy, rate_scales
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.max_time_fraction, self.max_time_masks = max_time_fraction, max_time_masks
        self.value = value

    def draw_mask_counts(self) -> tuple[int, int | float]:
        """Draw the ``(freq_masks, time_masks)`` of a call, as the functional takes them: the
        rate's share of the configured counts, rounded at random when not whole (the
        forward draws them itself; this is for inspection and tests)."""
        if self.rate_scales == "time_masks":
            if isinstance(self.time_masks, int):
                return self.freq_masks, round(self.rate * self.time_masks)
            return self.freq_masks, self.rate * self.time_masks
        freq = self.rate * self.freq_masks
        if not isinstance(self.time_masks, int):  # adaptive: a float count per frame
            return self._round_at_random([freq])[0], self.rate * self.time_masks
        n_freq, n_time = self._round_at_random([freq, self.rate * self.time_masks])
        return n_freq, n_time

    def _round_at_random(self, values: list[float]) -> list[int]:
        """Each value rounded up with probability its fractional part, else down (the mean is
        the value): one uniform per value from the module's CPU generator (no device sync),
        drawn only when a value is not whole (within float error: 0.5 of 4 masks draws
        nothing)."""
        whole = [round(v) if abs(v - round(v)) < 1e-9 else None for v in values]
        if all(w is not None for w in whole):
            return [int(w) for w in whole]  # type: ignore[arg-type]
        u = torch.rand(len(values), dtype=torch.float64, generator=self._streams().get("cpu"))
        return [
            w if w is not None else math.floor(v + x) for w, v, x in zip(whole, values, u.tolist())
        ]

    def forward(
        self, spec: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> F.SpecAugmentResult | torch.Tensor:
        B, Fq, T = spec.shape[0], spec.shape[-2], spec.shape[-1]
        masks_nothing = self.rate == 0.0 and self.rate_scales == "masks"
        if not self.training or masks_nothing:
            return self._output(
                F.SpecAugmentResult(
                    spec,
                    torch.zeros(B, Fq, dtype=torch.bool, device=spec.device),
                    torch.zeros(B, T, dtype=torch.bool, device=spec.device),
                )
            )
        time_width = self.time_width
        if self.policy is not None:  # capped at the clip, exactly as the functional does
            time_width = F.spec_augment_policy(self.policy, T)["time_width"]
        freq_masks, time_masks = self.draw_mask_counts()
        result = F.spec_augment(
            spec,
            freq_masks=freq_masks,
            freq_width=self.freq_width,
            time_masks=time_masks,
            time_width=time_width,
            max_time_fraction=self.max_time_fraction,
            max_time_masks=self.max_time_masks,
            lengths=lengths,
            value=self.value,
            generator=self.generator(spec.device, B),
        )
        return self._output(result)

    def maskable(
        self, spec: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(B, 1, T): the real frames of every row, all bands; None without ``lengths``."""
        real = _real_frames(lengths, spec.shape[-1], spec.device)
        return None if real is None else real.unsqueeze(1)

    def extra_repr(self) -> str:
        legacy = ", rate_scales='time_masks'" if self.rate_scales == "time_masks" else ""
        return (
            f"rate={self.rate}, policy={self.policy}, freq_masks={self.freq_masks}, "
            f"freq_width={self.freq_width}, time_masks={self.time_masks}, "
            f"time_width={self.time_width}, max_time_fraction={self.max_time_fraction}"
            f"{legacy}{self._settings()}"
        )


class TimeSpanMask(MaskModule):
    """wav2vec2 / HuBERT time masking of frame features (B, T, D)
    (:func:`~maskwise.functional.mask_time_spans`): masked frames get ``value`` or a learned
    mask embedding (``mask_token_dim=D``, as wav2vec2's ``masked_spec_embed``).

    ``forward(x, lengths=None) -> (x_out, mask (B, T))``, or ``x_out`` alone with
    ``return_mask=False`` (``seed``, ``keyed``, ``return_mask``: as in :class:`MaskModule`).

    >>> tm = TimeSpanMask(0.65, span=10, mask_token_dim=16, seed=0)
    >>> out, mask = tm(torch.randn(2, 100, 16), lengths=torch.tensor([100, 60]))
    >>> bool(mask[1, 60:].any())
    False
    """

    takes_ranges = True  # a rate per sample: the functional takes (low, high)

    def __init__(
        self,
        rate: float,
        *,
        span: int = 10,
        min_spans: int = 0,
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        self.span, self.min_spans = span, min_spans
        self.value = float(value)
        self.mask_token = mask_token_parameter(mask_token_dim)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        check_tokens(x)
        B, T, _ = x.shape
        if not self.training or self._rate_is_zero():
            return self._output((x, torch.zeros(B, T, dtype=torch.bool, device=x.device)))
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        mask = F.mask_time_spans(
            lengths.to(x.device),
            T,
            self.rate,
            span=self.span,
            min_spans=self.min_spans,
            generator=self.generator(x.device, B),
        )
        return self._output((fill_masked(x, mask, self.value, self.mask_token), mask))

    def maskable(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, T): the real frames; None without ``lengths``."""
        return _real_frames(lengths, x.shape[1], x.device)

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, span={self.span}, min_spans={self.min_spans}, "
            f"mask_token={self.mask_token is not None}{self._settings()}"
        )
