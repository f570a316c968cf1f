"""Speech masking modules: :class:`SpecAugment`, :class:`TimeSpanMask`."""

from __future__ import annotations

import torch

from maskwise import functional as F
from maskwise.nn.base import MaskModule, check_tokens, fill_masked, mask_token_parameter

__all__ = ["SpecAugment", "TimeSpanMask"]


class SpecAugment(MaskModule):
    """SpecAugment on spectrograms (B, F, T) or (B, C, F, T)
    (:func:`~maskwise.functional.spec_augment`), e.g. ``SpecAugment(policy="LD")``.

    ``rate`` (default 1.0) scales the number of time masks: ``round(rate * time_masks)`` (or the
    adaptive rate ``rate * time_masks``), the knob a schedule or controller moves.

    ``forward(spec, lengths=None) -> SpecAugmentResult(spec, freq_masked, time_masked)``.

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
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        if policy is not None:  # the policy's settings replace the mask arguments
            settings = F.spec_augment_policy(policy)
            freq_masks, freq_width = settings["freq_masks"], settings["freq_width"]
            time_masks, time_width = settings["time_masks"], settings["time_width"]
            max_time_fraction = settings["max_time_fraction"]
        self.policy = policy
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.max_time_fraction, self.max_time_masks, self.value = (
            max_time_fraction,
            max_time_masks,
            value,
        )

    def forward(
        self, spec: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> F.SpecAugmentResult:
        B, Fq, T = spec.shape[0], spec.shape[-2], spec.shape[-1]
        if not self.training:  # rate scales the time masks only: rate 0 keeps frequency masks
            return F.SpecAugmentResult(
                spec,
                torch.zeros(B, Fq, dtype=torch.bool, device=spec.device),
                torch.zeros(B, T, dtype=torch.bool, device=spec.device),
            )
        time_width = self.time_width
        if self.policy is not None:  # capped at the clip, exactly as the functional does
            time_width = F.spec_augment_policy(self.policy, T)["time_width"]
        time_masks: int | float = (
            round(self.rate * self.time_masks)
            if isinstance(self.time_masks, int)
            else self.rate * self.time_masks
        )
        return F.spec_augment(
            spec,
            freq_masks=self.freq_masks,
            freq_width=self.freq_width,
            time_masks=time_masks,
            time_width=time_width,
            max_time_fraction=self.max_time_fraction,
            max_time_masks=self.max_time_masks,
            lengths=lengths,
            value=self.value,
            generator=self.generator(spec.device),
        )

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, policy={self.policy}, freq_masks={self.freq_masks}, "
            f"freq_width={self.freq_width}, time_masks={self.time_masks}, "
            f"time_width={self.time_width}, max_time_fraction={self.max_time_fraction}"
        )


class TimeSpanMask(MaskModule):
    """wav2vec2 / HuBERT time masking of frame features (B, T, D)
    (:func:`~maskwise.functional.mask_time_spans`): masked frames get ``value`` or a learned
    mask embedding (``mask_token_dim=D``, as wav2vec2's ``masked_spec_embed``).

    ``forward(x, lengths=None) -> (x_out, mask (B, T))``.

    >>> tm = TimeSpanMask(0.65, span=10, mask_token_dim=16, seed=0)
    >>> out, mask = tm(torch.randn(2, 100, 16), lengths=torch.tensor([100, 60]))
    >>> bool(mask[1, 60:].any())
    False
    """

    def __init__(
        self,
        rate: float,
        *,
        span: int = 10,
        min_spans: int = 0,
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.span, self.min_spans = span, min_spans
        self.value = float(value)
        self.mask_token = mask_token_parameter(mask_token_dim)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x)
        B, T, _ = x.shape
        if not self.training or self.rate == 0.0:
            return x, torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        mask = F.mask_time_spans(
            lengths.to(x.device),
            T,
            self.rate,
            span=self.span,
            min_spans=self.min_spans,
            generator=self.generator(x.device),
        )
        return fill_masked(x, mask, self.value, self.mask_token), mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, span={self.span}, min_spans={self.min_spans}, "
            f"mask_token={self.mask_token is not None}, seed={self.generators.seed}"
        )
