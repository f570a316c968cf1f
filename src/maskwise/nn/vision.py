"""Image masking modules: :class:`PatchMask`, :class:`BlockPatchMask`, :class:`Erase`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maskwise import functional as F
from maskwise._checks import check_probability
from maskwise.nn.base import MaskModule, check_tokens, fill_masked, mask_token_parameter

__all__ = ["BlockPatchMask", "Erase", "PatchMask"]


class PatchMask(MaskModule):
    """MAE / guided patch masking of patch embeddings (B, N, D): exactly ``round(rate * N)``
    patches per row (:func:`~maskwise.functional.mask_patches`).

    ``drop=False`` replaces masked patches by ``value`` or a learned mask token (SimMIM,
    BEiT-style inputs); ``drop=True`` removes them (MAE's encoder input, or timm's
    ``PatchDropout``) and returns the visible patches (B, N_keep, D) in order; restore the order
    in a decoder with :func:`~maskwise.functional.keep_indices`.

    ``forward(x, scores=None) -> (x_out, mask)`` with ``mask`` (B, N); in eval, ``(x, no mask)``.

    >>> pm = PatchMask(0.75, drop=True, seed=0)
    >>> x_vis, mask = pm(torch.randn(2, 16, 8))
    >>> x_vis.shape, mask.sum(1).tolist()
    (torch.Size([2, 4, 8]), [12, 12])
    """

    def __init__(
        self,
        rate: float,
        *,
        drop: bool = False,
        hard_fraction: float = 1.0,
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.drop = drop
        self.hard_fraction = check_probability("hard_fraction", hard_fraction)
        self.value = float(value)
        self.mask_token = mask_token_parameter(mask_token_dim)

    def forward(
        self, x: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x)
        B, N, D = x.shape
        if not self.training or self.rate == 0.0:
            return x, torch.zeros(B, N, dtype=torch.bool, device=x.device)
        mask = F.mask_patches(
            B,
            N,
            self.rate,
            scores=scores,
            hard_fraction=self.hard_fraction,
            device=x.device,
            generator=self.generator(x.device),
        )
        if not self.drop:
            return fill_masked(x, mask, self.value, self.mask_token), mask
        ids_keep, _ = F.keep_indices(mask)
        return x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D)), mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, drop={self.drop}, hard_fraction={self.hard_fraction}, "
            f"mask_token={self.mask_token is not None}, seed={self.generators.seed}"
        )


class BlockPatchMask(MaskModule):
    """BEiT blockwise masking of patch embeddings (B, N, D) on an ``(H, W)`` grid: exactly
    ``round(rate * H * W)`` patches per sample in rectangles
    (:func:`~maskwise.functional.mask_blocks`), replaced by ``value`` or a learned mask token.
    (Named so as not to clash with FlexAttention's ``BlockMask``.)

    ``forward(x) -> (x_out, mask)`` with ``mask`` (B, N), row-major over the grid.

    >>> bm = BlockPatchMask(0.4, grid=14, mask_token_dim=8, seed=0)
    >>> _, mask = bm(torch.randn(2, 196, 8))
    >>> mask.sum(1).tolist()
    [78, 78]
    """

    def __init__(
        self,
        rate: float,
        grid: int | Sequence[int],
        *,
        min_block: int = 16,
        max_block: int | None = None,
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.min_block, self.max_block, self.aspect = min_block, max_block, aspect
        self.value = float(value)
        self.mask_token = mask_token_parameter(mask_token_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x)
        B, N, _ = x.shape
        H, W = self.grid
        if N != H * W:
            raise ValueError(f"x has {N} patches but the grid is {H}x{W}.")
        if not self.training or self.rate == 0.0:
            return x, torch.zeros(B, N, dtype=torch.bool, device=x.device)
        mask = F.mask_blocks(
            B,
            (H, W),
            round(self.rate * N),
            min_block=self.min_block,
            max_block=self.max_block,
            aspect=self.aspect,
            device=x.device,
            generator=self.generator(x.device),
        ).view(B, N)
        return fill_masked(x, mask, self.value, self.mask_token), mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, grid={self.grid}, min_block={self.min_block}, "
            f"max_block={self.max_block}, aspect={self.aspect}, value={self.value}, "
            f"mask_token={self.mask_token is not None}, seed={self.generators.seed}"
        )


class Erase(MaskModule):
    """Random erasing / cutout on images (B, C, H, W), an independent rectangle per sample
    (:func:`~maskwise.functional.erase`); ``rate`` is the probability of erasing a sample.

    ``forward(images) -> (images_out, masked (B, H, W))``.

    >>> er = Erase(1.0, value="random", seed=0)
    >>> out, m = er(torch.zeros(4, 3, 32, 32))
    >>> bool(m.flatten(1).any(1).all())
    True
    """

    def __init__(
        self,
        rate: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.scale, self.ratio, self.value = scale, ratio, value

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
            raise ValueError(
                f"images must be (B, C, H, W) or (B, H, W) "
                f"({tuple(getattr(images, 'shape', ()))} given)."
            )
        if not self.training or self.rate == 0.0:
            B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
            return images, torch.zeros(B, H, W, dtype=torch.bool, device=images.device)
        return F.erase(
            images,
            p=self.rate,
            scale=self.scale,
            ratio=self.ratio,
            value=self.value,
            generator=self.generator(images.device),
        )

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, scale={self.scale}, ratio={self.ratio}, value={self.value!r}, "
            f"seed={self.generators.seed}"
        )
