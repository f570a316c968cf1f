"""Random erasing / cutout (Zhong et al., 2017): one rectangle per image, batched."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch

from maskwise._checks import check_flag, check_probability
from maskwise.functional.patches import _check_positive_int, _check_range
from maskwise.functional.select import on_host
from maskwise.random import KeyedGenerator, uniform

__all__ = ["erase"]

Generator = torch.Generator | KeyedGenerator | None


@overload
def erase(
    images: torch.Tensor,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | Sequence[float] | torch.Tensor | str = 0.0,
    attempts: int = 10,
    inplace: bool = False,
    batched: bool = True,
    return_mask: Literal[True] = True,
    generator: Generator = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def erase(
    images: torch.Tensor,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | Sequence[float] | torch.Tensor | str = 0.0,
    attempts: int = 10,
    inplace: bool = False,
    batched: bool = True,
    return_mask: Literal[False],
    generator: Generator = None,
) -> torch.Tensor: ...


@overload
def erase(
    images: torch.Tensor,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | Sequence[float] | torch.Tensor | str = 0.0,
    attempts: int = 10,
    inplace: bool = False,
    batched: bool = True,
    return_mask: bool,
    generator: Generator = None,
) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor: ...


def erase(
    images: torch.Tensor,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float | Sequence[float] | torch.Tensor | str = 0.0,
    attempts: int = 10,
    inplace: bool = False,
    batched: bool = True,
    return_mask: bool = True,
    generator: Generator = None,
) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
    """Random erasing / cutout: an independent rectangle per sample (Zhong et al., 2017).

    Each sample is erased with probability ``p``: the rectangle's area is a fraction of the image
    uniform in ``scale``, its height / width ratio log-uniform in ``ratio``, its position uniform
    among those where it fits. As torchvision, up to ``attempts`` shapes are tried and a sample
    whose shapes all fail to fit is left as it is; unlike torchvision's ``RandomErasing`` on a
    batch (one rectangle for the whole batch), every sample gets its own rectangle, and all
    ``attempts`` are drawn at once (no loop over samples).

    A 3-D tensor is a batch of grayscale images (B, H, W); to erase one image (C, H, W), as
    torchvision's ``RandomErasing`` does in a Dataset, pass ``batched=False``: the result is
    exactly that of the batch ``images[None]``, without the batch dimension.

    Args:
        images: (B, C, H, W) or (B, H, W); with ``batched=False``, one image (C, H, W) or
            (H, W).
        p: probability that a sample is erased.
        scale: range of the erased area as a fraction of H * W.
        ratio: range of the rectangle's height / width.
        value: fill value: a number, per-channel values (C,), or ``"random"`` (standard normal
            noise per pixel, as torchvision's ``value="random"``).
        attempts: shapes tried per sample.
        inplace: write into ``images`` (no new image tensor; as timm's ``RandomErasing``)
            instead of returning a new tensor.
        batched: ``images`` is a batch (default) or one image.
        return_mask: also return the mask (default). False returns the erased images alone, as
            timm's ``RandomErasing`` and torchvision's transform; on the CPU the mask is then
            never built.
        generator: random source (a :class:`~maskwise.random.KeyedGenerator` has one key per
            sample; one key with ``batched=False``).

    Returns:
        ``(erased, masked)``: the erased images (a new tensor unless ``inplace``) and bool
        (B, H, W), or (H, W) with ``batched=False``, True = erased; ``erased`` alone with
        ``return_mask=False``.

    >>> x, m = erase(torch.ones(8, 3, 32, 32), p=1.0, generator=torch.Generator().manual_seed(0))
    >>> bool((x[:, 0] == 0).eq(m).all()), int(m.flatten(1).any(1).sum())
    (True, 8)
    >>> one, m = erase(torch.ones(3, 32, 32), p=1.0, batched=False)  # one image
    >>> m.shape, bool((one == 0).eq(m).all())
    (torch.Size([32, 32]), True)
    """
    return_mask = check_flag("return_mask", return_mask)
    if not batched:
        erased, masked = _erase_one(
            images, p=p, scale=scale, ratio=ratio, value=value, attempts=attempts,
            inplace=inplace, need_mask=return_mask, generator=generator,
        )  # fmt: skip
    else:
        erased, masked = _erase(
            images, p=p, scale=scale, ratio=ratio, value=value, attempts=attempts,
            inplace=inplace, need_mask=return_mask, generator=generator,
        )  # fmt: skip
    return (erased, masked) if masked is not None and return_mask else erased


def _erase(
    images: torch.Tensor,
    *,
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    value: float | Sequence[float] | torch.Tensor | str,
    attempts: int,
    inplace: bool,
    need_mask: bool,
    generator: Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`erase` of a batch; the mask is None when not ``need_mask`` (CPU path only)."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        raise ValueError(
            f"images must be (B, C, H, W) or (B, H, W) "
            f"({tuple(getattr(images, 'shape', ()))} given)."
        )
    p = check_probability("p", p)
    s_lo, s_hi = _check_range("scale", scale)
    r_lo, r_hi = _check_range("ratio", ratio)
    if not 0 <= s_lo <= s_hi <= 1:
        raise ValueError(f"scale must be (low, high) with 0 <= low <= high <= 1 ({scale!r} given).")
    if not 0 < r_lo <= r_hi:
        raise ValueError(f"ratio must be (low, high) with 0 < low <= high ({ratio!r} given).")
    attempts = _check_positive_int("attempts", attempts)
    if isinstance(value, str) and value != "random":
        raise ValueError(
            f"value must be a number, per-channel values or 'random' ({value!r} given)."
        )
    B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
    device = images.device
    u = uniform((B, 4 * attempts + 1), generator=generator, device=device).double()
    ua, ur, ut, ul = (
        u[:, :attempts],
        u[:, attempts : 2 * attempts],
        u[:, 2 * attempts : 3 * attempts],
        u[:, 3 * attempts : 4 * attempts],
    )
    area = H * W * (s_lo + ua * (s_hi - s_lo))  # (B, attempts)
    aspect = torch.exp(math.log(r_lo) + ur * (math.log(r_hi) - math.log(r_lo)))
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h >= 1) & (w >= 1) & (h < H) & (w < W)  # torchvision's condition
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # first shape that fits
    ok = fits.gather(1, first).squeeze(1) & (u[:, -1] < p)  # (B,)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    top = torch.floor(ut.gather(1, first).squeeze(1) * (H - h + 1)).long()
    left = torch.floor(ul.gather(1, first).squeeze(1) * (W - w + 1)).long()
    if not isinstance(value, str) and _use_rectangles(images, value):
        return _erase_rectangles(
            images, value, ok, top, left, h, w, inplace=inplace, need_mask=need_mask
        )
    rows = torch.arange(H, device=device).view(1, H, 1)
    cols = torch.arange(W, device=device).view(1, 1, W)
    in_rows = (rows >= top.view(B, 1, 1)) & (rows < (top + h).view(B, 1, 1)) & ok.view(B, 1, 1)
    in_cols = (cols >= left.view(B, 1, 1)) & (cols < (left + w).view(B, 1, 1))
    masked = in_rows & in_cols  # (B, H, W)
    m = masked if images.dim() == 3 else masked.unsqueeze(1)  # broadcast over channels
    if isinstance(value, str):
        if isinstance(generator, KeyedGenerator):
            u1 = uniform(images.shape, generator=generator, device=device)
            u2 = uniform(images.shape, generator=generator, device=device)
            noise = torch.sqrt(-2 * u1.log()) * torch.cos(2 * math.pi * u2)  # Box-Muller
        else:
            noise = torch.randn(images.shape, generator=generator, device=device)
        if inplace:
            return images.copy_(torch.where(m, noise.to(images.dtype), images)), masked
        return torch.where(m, noise.to(images.dtype), images), masked
    fill = _fill_value(images, value)
    if inplace:
        if fill.dim() == 0:
            return images.masked_fill_(m, fill), masked
        return images.copy_(torch.where(m, fill, images)), masked
    return torch.where(m, fill, images), masked


def _fill_value(
    images: torch.Tensor, value: float | Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """The fill as a tensor that broadcasts against ``images``: a scalar or (1, C, 1, 1)."""
    fill = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if fill.dim() == 1:
        if images.dim() != 4 or fill.numel() != images.shape[1]:
            raise ValueError(
                f"Per-channel values need (B, C, H, W) images with C = {fill.numel()} "
                f"({tuple(images.shape)} given)."
            )
        return fill.view(1, -1, 1, 1)
    if fill.dim() != 0:
        raise ValueError(f"value must be a number or (C,) values ({tuple(fill.shape)} given).")
    return fill


def _use_rectangles(images: torch.Tensor, value: object) -> bool:
    """Write only the rectangles (a loop over the erased samples) instead of the whole batch.

    On the CPU, as timm's ``RandomErasing``, that touches 8-9 % of the pixels instead of reading
    and writing all of them, and building the (B, H, W) mask from rectangles avoids a broadcast
    over it (docs/benchmarks.md). Non-contiguous batches, GPUs, and ``torch.compile`` traces
    take the batched full-tensor path: it has no host sync and no Python loop. Noise fills
    (``value="random"``) keep the full path, so that a
    :class:`~maskwise.random.KeyedGenerator` draws the same noise everywhere.
    """
    return on_host(images.device) and images.is_contiguous() and not isinstance(value, str)


def _erase_rectangles(
    images: torch.Tensor,
    value: float | Sequence[float] | torch.Tensor,
    ok: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    *,
    inplace: bool,
    need_mask: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`erase`'s CPU path: one slice write per erased sample, into the output and mask."""
    fill = _fill_value(images, value)
    out = images if inplace else images.clone()
    B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
    C = images.shape[1] if images.dim() == 4 else 1
    # uint8: its fills are faster than bool's; without the mask, writes go to a 1-element scratch
    masked = torch.zeros(B * H * W if need_mask else 1, dtype=torch.uint8)
    erased = ok.nonzero().squeeze(1)
    corner = top[erased] * W + left[erased]  # offsets of the rectangles' top-left pixels
    rects = zip(
        (erased * (C * H * W) + corner).tolist(),
        (erased * (H * W) + corner).tolist(),
        h[erased].tolist(),
        w[erased].tolist(),
    )
    # as_strided views of the (contiguous) batch: one op per rectangle instead of an index chain
    channels = fill[0] if fill.dim() else None  # (C, 1, 1) per-channel values
    scalar = fill.item() if channels is None else 0.0
    for at, at_mask, hh, ww in rects:
        region = torch.as_strided(out, (C, hh, ww), (H * W, W, 1), at)
        if channels is None:
            region.fill_(scalar)
        else:
            region.copy_(channels)
        if need_mask:
            torch.as_strided(masked, (hh, ww), (W, 1), at_mask).fill_(1)
    return out, (masked.view(torch.bool).view(B, H, W) if need_mask else None)


def _erase_one(
    images: torch.Tensor,
    *,
    inplace: bool,
    value: float | Sequence[float] | torch.Tensor | str,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`erase` of one image (C, H, W) or (H, W): the batch of one ``images[None]``."""
    if not isinstance(images, torch.Tensor) or images.dim() not in (2, 3):
        raise ValueError(
            "With batched=False, images must be one (C, H, W) or (H, W) image "
            f"({tuple(getattr(images, 'shape', ()))} given)."
        )
    if images.dim() == 2 and not isinstance(value, str) and torch.as_tensor(value).dim() == 1:
        raise ValueError(
            f"Per-channel values need a (C, H, W) image ({tuple(images.shape)} given)."
        )
    erased, masked = _erase(images.unsqueeze(0), inplace=inplace, value=value, **kwargs)
    return (images if inplace else erased[0]), (None if masked is None else masked[0])
