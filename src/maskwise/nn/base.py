"""The base of the masking modules and the replacement of masked vectors."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from maskwise._checks import check_probability
from maskwise.random import DeviceGenerators

__all__ = ["MaskModule", "check_tokens", "fill_masked", "mask_token_parameter"]


class MaskModule(nn.Module):
    """Base of the masking modules: a rate, a seeded generator per device, train/eval logic.

    ``rate`` is the module's one knob that schedules and controllers move: the masked fraction
    for most modules, the probability of erasing for :class:`Erase`, a scale on the number of
    time masks for :class:`SpecAugment`.
    """

    def __init__(self, rate: float, *, seed: int | None = None) -> None:
        super().__init__()
        self.rate = check_probability("rate", rate)
        self.generators = DeviceGenerators(seed)

    def generator(self, device: torch.device) -> torch.Generator:
        return self.generators.get(device)

    def get_extra_state(self) -> dict[str, Any]:
        return {"rate": self.rate, "generators": self.generators.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.rate = float(state["rate"])
        self.generators.load_state_dict(state["generators"])


def mask_token_parameter(dim: int | None) -> nn.Parameter | None:
    """A learned mask embedding of width ``dim`` (BEiT, SimMIM, wav2vec2's
    ``masked_spec_embed``), truncated-normal initialised; None without ``dim``."""
    if dim is None:
        return None
    token = nn.Parameter(torch.zeros(int(dim)))
    nn.init.trunc_normal_(token, std=0.02)
    return token


def fill_masked(
    x: torch.Tensor, mask: torch.Tensor, value: float, mask_token: torch.Tensor | None
) -> torch.Tensor:
    """``x`` (B, N, D) with the vectors where ``mask`` (B, N) is True replaced by ``mask_token``
    (D,) if given, else by ``value``."""
    if mask_token is None:
        return x.masked_fill(mask.unsqueeze(-1), value)
    return torch.where(mask.unsqueeze(-1), mask_token.to(x.dtype), x)


def check_tokens(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"{name} must be (B, N, D) ({tuple(getattr(x, 'shape', ()))} given).")
