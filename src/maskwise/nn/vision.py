"""Image masking modules: :class:`PatchMask`, :class:`BlockPatchMask`, :class:`Erase`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maskwise import functional as F
from maskwise._checks import check_probability
from maskwise.nn.base import (
    MaskModule,
    check_flag,
    check_tokens,
    fill_masked,
    mask_token_parameter,
)

__all__ = ["BlockPatchMask", "Erase", "PatchMask", "TokenDrop"]


class PatchMask(MaskModule):
    """MAE / guided patch masking of tokens (B, P + N, D): the first ``P = num_prefix_tokens``
    (CLS, register tokens) are never masked, and exactly ``round(rate * N)`` of the N patches
    per row are (:func:`~maskwise.functional.mask_patches`).

    ``drop=False`` replaces masked patches by ``value`` or a learned mask token (SimMIM,
    BEiT-style inputs); ``drop=True`` removes them (MAE's encoder input, or timm's
    ``PatchDropout``) and returns the prefix tokens then the visible patches in order,
    (B, P + N_keep, D); restore the order in a decoder with
    :func:`~maskwise.functional.keep_indices` of the mask.

    Args:
        rate: fraction of the patches to mask.
        drop: remove the masked patches instead of filling them.
        num_prefix_tokens: leading tokens never masked and kept first (as timm's
            ``PatchDropout``).
        hard_fraction: with ``scores``, the share of the budget given to the top-scored patches.
        value: fill value (``drop=False``, without a mask token).
        mask_token_dim: D, to fill with a learned mask token instead of ``value``.
        seed, keyed, return_mask: the random source and the output, as in :class:`MaskModule`.

    ``forward(x, scores=None) -> (x_out, mask)`` with ``mask`` (B, P + N), False on the prefix,
    and ``scores`` (B, N), one per patch; ``x_out`` alone with ``return_mask=False``; in eval,
    ``x`` and no mask.

    >>> pm = PatchMask(0.75, drop=True, num_prefix_tokens=1, seed=0)
    >>> x_vis, mask = pm(torch.randn(2, 1 + 16, 8))  # [CLS] + 16 patches
    >>> x_vis.shape, mask.sum(1).tolist(), mask[:, 0].tolist()
    (torch.Size([2, 5, 8]), [12, 12], [False, False])
    """

    takes_ranges = True  # a rate per sample (without drop): mask_patches takes (low, high)

    def __init__(
        self,
        rate: float,
        *,
        drop: bool = False,
        num_prefix_tokens: int = 0,
        hard_fraction: float = 1.0,
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        self.drop = check_flag("drop", drop)
        if self.drop and isinstance(self.rate, tuple):
            raise ValueError(
                f"PatchMask(drop=True) keeps one count per row, so it takes one rate, not a range "
                f"({self.rate!r} given); use drop=False for a rate per sample."
            )
        if (
            isinstance(num_prefix_tokens, bool)
            or not isinstance(num_prefix_tokens, int)
            or num_prefix_tokens < 0
        ):
            raise ValueError(
                f"num_prefix_tokens must be an int >= 0 ({num_prefix_tokens!r} given)."
            )
        self.num_prefix_tokens = num_prefix_tokens
        self.hard_fraction = check_probability("hard_fraction", hard_fraction)
        self.value = float(value)
        self.mask_token = mask_token_parameter(mask_token_dim)

    def _check(self, x: torch.Tensor) -> tuple[int, int, int]:
        """(B, L, D) of ``x``, L = P + N tokens with N >= 1 patches."""
        check_tokens(x)
        B, L, D = x.shape
        if L <= self.num_prefix_tokens:
            raise ValueError(
                f"x has {L} tokens: num_prefix_tokens={self.num_prefix_tokens} leaves no patch "
                "to mask."
            )
        return B, L, D

    def forward(
        self, x: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        B, L, D = self._check(x)
        P = self.num_prefix_tokens
        N = L - P  # patches
        if not self.training or self._rate_is_zero():
            return self._output((x, torch.zeros(B, L, dtype=torch.bool, device=x.device)))
        if scores is not None and tuple(getattr(scores, "shape", ())) != (B, N):
            raise ValueError(
                f"scores must be (B, number of patches) = ({B}, {N}), one per patch "
                f"({tuple(getattr(scores, 'shape', ()))} given)."
            )
        patches = F.mask_patches(
            B,
            N,
            self.rate,
            scores=scores,
            hard_fraction=self.hard_fraction,
            device=x.device,
            generator=self.generator(x.device, B),
        )  # (B, N)
        mask = torch.cat([patches.new_zeros(B, P), patches], 1) if P else patches  # (B, L)
        if not self.drop:
            return self._output((fill_masked(x, mask, self.value, self.mask_token), mask))
        # keep_indices(mask)[0], with the count known here: its host read of the count (a graph
        # break under torch.compile) is not needed. Visible tokens first, in order; the prefix
        # is never masked, so it comes first.
        n_keep = L - round(self.rate * N)  # mask_patches masks exactly round(rate * N)
        ids_keep = mask.to(torch.uint8).argsort(dim=1, stable=True)[:, :n_keep]  # (B, n_keep)
        return self._output((x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D)), mask))

    def maskable(self, x: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor | None:
        """(1, P + N): every patch, not the prefix tokens; None without prefix tokens."""
        if not self.num_prefix_tokens:
            return None
        _, L, _ = self._check(x)
        return (torch.arange(L, device=x.device) >= self.num_prefix_tokens).unsqueeze(0)

    def extra_repr(self) -> str:
        prefix = f", num_prefix_tokens={self.num_prefix_tokens}" if self.num_prefix_tokens else ""
        return (
            f"rate={self.rate}, drop={self.drop}{prefix}, hard_fraction={self.hard_fraction}, "
            f"mask_token={self.mask_token is not None}{self._settings()}"
        )


class BlockPatchMask(MaskModule):
    """BEiT blockwise masking of patch embeddings (B, N, D) on an ``(H, W)`` grid: exactly
    ``round(rate * H * W)`` patches per sample in rectangles
    (:func:`~maskwise.functional.mask_blocks`), replaced by ``value`` or a learned mask token.
    (Named so as not to clash with FlexAttention's ``BlockMask``.)

    ``forward(x) -> (x_out, mask)`` with ``mask`` (B, N), row-major over the grid; ``x_out``
    alone with ``return_mask=False`` (``seed``, ``keyed``, ``return_mask``: as in
    :class:`MaskModule`).

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
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        self.grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.min_block, self.max_block, self.aspect = min_block, max_block, aspect
        self.value = float(value)
        self.mask_token = mask_token_parameter(mask_token_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        check_tokens(x)
        B, N, _ = x.shape
        H, W = self.grid
        if N != H * W:
            raise ValueError(f"x has {N} patches but the grid is {H}x{W}.")
        if not self.training or self.rate == 0.0:
            return self._output((x, torch.zeros(B, N, dtype=torch.bool, device=x.device)))
        mask = F.mask_blocks(
            B,
            (H, W),
            round(self.rate * N),
            min_block=self.min_block,
            max_block=self.max_block,
            aspect=self.aspect,
            device=x.device,
            generator=self.generator(x.device, B),
        ).view(B, N)
        return self._output((fill_masked(x, mask, self.value, self.mask_token), mask))

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, grid={self.grid}, min_block={self.min_block}, "
            f"max_block={self.max_block}, aspect={self.aspect}, value={self.value}, "
            f"mask_token={self.mask_token is not None}{self._settings()}"
        )


class Erase(MaskModule):
    """Random erasing / cutout (:func:`~maskwise.functional.erase`); ``rate`` is the
    probability of erasing an image.

    By default a batch, (B, C, H, W) or (B, H, W), with an independent rectangle per image.
    ``batched=False`` takes one image, (C, H, W) or (H, W), as torchvision's ``RandomErasing``
    does in a Dataset: one rectangle across its channels. In DataLoader workers every worker
    draws its own rectangles (see :class:`MaskModule`).

    Args:
        rate: probability that an image is erased.
        scale: range of the erased area as a fraction of H * W.
        ratio: range of the rectangle's height / width.
        value: a number, per-channel values (C,), or ``"random"`` (standard normal noise).
        batched: the input is a batch (default) or one image.
        seed, keyed, return_mask: the random source and the output, as in :class:`MaskModule`.

    ``forward(images) -> (images_out, masked)``, ``masked`` bool (B, H, W) (``batched=False``:
    (H, W)); ``images_out`` alone with ``return_mask=False``:
    ``T.Compose([T.ToTensor(), Erase(0.5, batched=False, return_mask=False)])``.

    >>> er = Erase(1.0, value="random", seed=0)
    >>> out, m = er(torch.zeros(4, 3, 32, 32))
    >>> bool(m.flatten(1).any(1).all())
    True
    >>> one = Erase(0.5, batched=False, return_mask=False, seed=0)
    >>> one(torch.zeros(3, 32, 32)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        rate: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0.0,
        batched: bool = True,
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        self.scale, self.ratio, self.value = scale, ratio, value
        self.batched = check_flag("batched", batched)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        # Checked in eval too: a silent identity on a wrong shape would hide the mistake.
        if not isinstance(images, torch.Tensor) or images.dim() not in self._dims():
            shape = tuple(getattr(images, "shape", ()))
            if self.batched:
                raise ValueError(f"images must be (B, C, H, W) or (B, H, W) ({shape} given).")
            raise ValueError(
                f"With batched=False, images must be one (C, H, W) or (H, W) image ({shape} given)."
            )
        if not self.training or self.rate == 0.0:
            H, W = images.shape[-2], images.shape[-1]
            lead = (images.shape[0],) if self.batched else ()
            nothing = torch.zeros(*lead, H, W, dtype=torch.bool, device=images.device)
            return self._output((images, nothing))
        rows = images.shape[0] if self.batched else 1
        erased = F.erase(
            images,
            p=self.rate,
            scale=self.scale,
            ratio=self.ratio,
            value=self.value,
            batched=self.batched,
            return_mask=self.return_mask,  # without it, the CPU path never builds the mask
            generator=self.generator(images.device, rows),
        )
        return erased if isinstance(erased, torch.Tensor) else self._output(erased)

    def _dims(self) -> tuple[int, int]:
        return (3, 4) if self.batched else (2, 3)

    def extra_repr(self) -> str:
        batched = "" if self.batched else ", batched=False"
        return (
            f"rate={self.rate}, scale={self.scale}, ratio={self.ratio}, value={self.value!r}"
            f"{batched}{self._settings()}"
        )


class TokenDrop(MaskModule):
    """Drop a share of the tokens of a sequence (B, N, D) in training: timm's ``PatchDropout``,
    MAE's visible-patch encoder input (:func:`~maskwise.functional.drop_tokens`).

    Returns (B, P + K, D): the ``P = num_prefix_tokens`` first tokens (CLS, registers) always,
    then ``K = N - P - round(rate * (N - P))`` other tokens in their original order. Fewer
    tokens make the step cheaper (attention and MLP run on P + K tokens). Identity in eval mode.
    For padded text, drop tokens from attention instead (Cutoff's token cutoff):
    ``padding(attention_mask & ~mask_tokens(...))``.

    Args:
        rate: share of the non-prefix tokens dropped, in [0, 1] (one count for every row).
        num_prefix_tokens: leading tokens never dropped.
        seed, keyed: the random source, as in :class:`MaskModule`.

    ``forward(x, return_indices=False) -> kept`` or, with ``return_indices=True``,
    ``(kept, index)``: index (B, P + K) of each kept token in ``x`` (to gather position
    embeddings or scatter outputs back; ``arange(N)`` in eval mode).

    >>> td = TokenDrop(0.5, num_prefix_tokens=1, seed=0)
    >>> kept, index = td(torch.randn(2, 1 + 8, 16), return_indices=True)
    >>> kept.shape, index[:, 0].tolist()
    (torch.Size([2, 5, 16]), [0, 0])
    >>> _ = td.eval(); td(torch.randn(2, 9, 16)).shape
    torch.Size([2, 9, 16])
    """

    def __init__(
        self,
        rate: float,
        *,
        num_prefix_tokens: int = 0,
        seed: int | None = None,
        keyed: bool = False,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=False)
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int):
            raise TypeError(f"num_prefix_tokens must be an int ({num_prefix_tokens!r} given).")
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0 ({num_prefix_tokens} given).")
        self.num_prefix_tokens = num_prefix_tokens

    def forward(
        self, x: torch.Tensor, return_indices: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x)
        if not self.training or self.rate == 0.0:
            index = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
            return (x, index) if return_indices else x
        kept, index = F.drop_tokens(
            x,
            float(self.rate),
            num_prefix_tokens=self.num_prefix_tokens,
            generator=self.generator(x.device, x.shape[0]),
        )
        return (kept, index) if return_indices else kept

    def extra_repr(self) -> str:
        return f"rate={self.rate}, num_prefix_tokens={self.num_prefix_tokens}{self._settings()}"
