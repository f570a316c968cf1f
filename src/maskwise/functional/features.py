"""Masking of any feature tensor: the seed documents' ``x * (1 - mask)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maskwise._checks import check_probability
from maskwise.functional.select import Rate, per_sample_rates
from maskwise.random import KeyedGenerator, uniform

__all__ = ["mask_features", "mask_shape"]


def mask_features(
    x: torch.Tensor,
    rate: Rate,
    *,
    dims: int | Sequence[int] | None = None,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero a random ``rate`` of the entries of ``x``: ``x_masked = x * (1 - mask)``.

    No rescaling (unlike dropout): the masked input is what the seed documents describe. The
    product is computed as ``x.masked_fill(mask, 0)``, equal for finite values and also zero
    (not NaN) where a masked entry is inf or NaN. Use
    ``dims`` to make whole slices share one decision, e.g. ``dims=-1`` on (B, L, D) masks whole
    feature vectors (a token is kept or zeroed entirely), ``dims=(2, 3)`` on (B, C, H, W) whole
    channels.

    Args:
        x: tensor of any shape, float.
        rate: probability that an entry (or shared slice) is masked: float in [0, 1], a (B,)
            tensor of per-row rates (dim 0 is the batch), or a range ``(low, high)``.
        dims: dimensions that share a mask (size 1 in the returned mask); None = every entry
            independent.
        generator: random source.

    Returns:
        ``(x_masked, mask)``: ``mask`` is bool with the shape of ``x`` except size 1 along
        ``dims`` (broadcastable), True = masked.

    >>> x = torch.ones(2, 3, 4)
    >>> xm, m = mask_features(x, 0.5, dims=-1, generator=torch.Generator().manual_seed(0))
    >>> m.shape, bool(((xm == 0) == m).all())
    (torch.Size([2, 3, 1]), True)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor ({type(x).__name__} given).")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (a 0-d tensor given).")
    shape = mask_shape(x.shape, dims)
    rate = per_sample_rates(rate, x.shape[0], device=x.device, generator=generator)
    p: float | torch.Tensor
    if isinstance(rate, torch.Tensor):
        if shape[0] == 1 and x.shape[0] != 1:
            raise ValueError("A per-row (B,) rate needs dim 0 (the batch) outside dims.")
        if rate.dim() != 1 or rate.shape[0] != x.shape[0]:
            raise ValueError(
                f"A tensor rate must have shape (B,) = ({x.shape[0]},) ({tuple(rate.shape)} given)."
            )
        if (
            rate.device.type == "cpu"
            and rate.numel()
            and not bool(((rate >= 0) & (rate <= 1)).all())
        ):
            raise ValueError(f"Every rate must be between 0.0 and 1.0 ({rate.tolist()} given).")
        p = rate.to(device=x.device, dtype=torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    else:
        p = check_probability("rate", rate)
    mask = uniform(shape, generator=generator, device=x.device) < p
    return x.masked_fill(mask, 0), mask


def mask_shape(shape: Sequence[int], dims: int | Sequence[int] | None) -> list[int]:
    """Shape of the mask for ``mask_features``: ``shape`` with size 1 along ``dims``.

    >>> mask_shape((2, 3, 4), -1)
    [2, 3, 1]
    """
    out = list(shape)
    if dims is not None:
        for d in (dims,) if isinstance(dims, int) else tuple(dims):
            if not -len(out) <= d < len(out):
                raise ValueError(f"dims entry {d} is out of range for a {len(out)}-d input.")
            out[d] = 1
    return out
