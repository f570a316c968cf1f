"""Two views of one batch for a consistency step, from any masker, in one call.

A consistency step (R-Drop, Cutoff, UDA / AugMask; :func:`~maskwise.functional.consistency_loss`)
needs two views of the same examples: the clean batch and a masked one, or two independently
masked ones. :func:`two_views` makes them without a second data-loading pass, from any maskwise
masking module (``TokenMask``, ``PatchMask``, ``SpecAugment``, ``FeatureMask``, ...) or a
``DynamicMask`` (one draw per call, so a schedule or controller advances once).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["View", "two_views"]


class View(NamedTuple):
    """One view: the (masked) input and its mask (None for the clean view)."""

    x: torch.Tensor
    mask: torch.Tensor | None


def _split(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A masker's output as (tensor, mask): ``(x, mask)`` tuples and results with ``.spec`` /
    ``.mask`` (SpecAugment); a bare tensor has no mask."""
    if isinstance(out, torch.Tensor):
        return out, None
    spec = getattr(out, "spec", None)
    if isinstance(spec, torch.Tensor):
        return spec, getattr(out, "mask", None)
    if isinstance(out, tuple) and len(out) >= 2 and isinstance(out[0], torch.Tensor):
        return out[0], out[1]
    raise TypeError(f"the masker returned {type(out).__name__}, not (x, mask) or a tensor.")


def _twice(value: Any, batch: int) -> Any:
    """Tensors with a leading batch dimension, repeated along it (the second view's copy)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    return value


def two_views(
    masker: nn.Module, x: torch.Tensor, *args: Any, mode: str = "clean", **kwargs: Any
) -> tuple[View, View]:
    """Two views of the batch ``x`` for a consistency loss.

    * ``mode="clean"``: ``(clean, masked)``: the batch as it is (mask None) and
      ``masker(x, *args, **kwargs)``; train the masked view towards the clean one (UDA, AugMask,
      Cutoff with ``kind="kl"``, or both ways).
    * ``mode="masked"``: two independently masked views (R-Drop / Cutoff's two augmented views),
      drawn in one call on the batch repeated twice, so every row's two masks are independent
      and a ``DynamicMask`` advances its step once. Tensor arguments whose first dimension is
      the batch (``attention_mask``, ``lengths``, ``weights``) are repeated with it.

    The masker must be in training mode to mask (in eval mode both views are clean). To run the
    model once on both views when their shapes match, ``torch.cat([a.x, b.x])`` and split the
    output in halves.

    Args:
        masker: a maskwise masking module or ``DynamicMask``.
        x: the batch (B, ...).
        *args, **kwargs: passed to the masker (e.g. ``attention_mask=``, ``lengths=``).
        mode: ``"clean"`` or ``"masked"``.

    Returns:
        ``(first, second)`` :class:`View` s.

    >>> from maskwise.nn import FeatureMask
    >>> clean, masked = two_views(FeatureMask(0.5, seed=0), torch.ones(4, 8))
    >>> clean.mask is None, masked.x.shape, 0 < float(masked.mask.float().mean()) < 1
    (True, torch.Size([4, 8]), True)
    """
    if mode not in ("clean", "masked"):
        raise ValueError(f"mode must be 'clean' or 'masked' ({mode!r} given).")
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError(f"x must be a batched tensor ({type(x).__name__} given).")
    if mode == "clean":
        return View(x, None), View(*_split(masker(x, *args, **kwargs)))
    B = x.shape[0]
    args = tuple(_twice(a, B) for a in args)
    kwargs = {k: _twice(v, B) for k, v in kwargs.items()}
    both, mask = _split(masker(torch.cat([x, x]), *args, **kwargs))
    first, second = both[:B], both[B:]
    if mask is None:
        return View(first, None), View(second, None)
    return View(first, mask[:B]), View(second, mask[B:])
