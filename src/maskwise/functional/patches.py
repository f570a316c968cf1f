"""Image masking: patches (MAE, guided), blocks (BEiT), coarse units (SimMIM); random erasing is
in :mod:`maskwise.functional.erasing`.

Conventions: a patch mask is bool (B, N) with N = H * W patches in row-major order, or (B, H, W)
on the patch grid; True = masked. Images are (B, C, H, W).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import torch

from maskwise._checks import as_rate, check_bool_2d, check_probability
from maskwise.functional.select import Rate, on_host, per_sample_rates, top_k_per_row
from maskwise.random import KeyedGenerator, uniform

__all__ = [
    "keep_indices",
    "mask_blocks",
    "mask_coarse",
    "mask_patches",
    "patchify",
    "patches_to_pixels",
    "unpatchify",
]

Generator = torch.Generator | KeyedGenerator | None


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int ({value!r} given).")
    return int(value)


def _check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral):
        raise TypeError(f"batch must be an int ({batch!r} given).")
    if batch < 0:
        raise ValueError(f"batch must be >= 0 ({batch} given).")
    return int(batch)


def _check_grid(grid: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(grid, numbers.Integral) and not isinstance(grid, bool):
        hw: tuple = (grid, grid)
    elif isinstance(grid, Sequence):
        hw = tuple(grid)
        if len(hw) != 2:
            raise ValueError(f"grid must be an int or (H, W) ({grid!r} given).")
    else:
        raise TypeError(f"grid must be an int or (H, W) ({grid!r} given).")
    return _check_positive_int("grid height", hw[0]), _check_positive_int("grid width", hw[1])


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a (low, high) pair ({value!r} given).")
    return float(value[0]), float(value[1])


def mask_patches(
    batch: int,
    num_patches: int,
    rate: Rate,
    *,
    scores: torch.Tensor | None = None,
    hard_fraction: float = 1.0,
    device: torch.device | str | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    """MAE-style patch masking: exactly ``k = round(rate * num_patches)`` patches per row.

    Without ``scores`` the ``k`` patches are uniformly random (MAE's random masking). With
    ``scores`` (B, N), the first ``round(hard_fraction * k)`` of each row's budget goes to its
    highest-scoring patches and the rest is drawn uniformly from the others: the common core of
    HPM (scores = predicted reconstruction loss), AttMask (scores = attention) and SemMAE-style
    guided masking. To mask the *easiest* patches instead, pass ``-scores``.

    Args:
        batch: number of rows B.
        num_patches: patches per row N.
        rate: float in [0, 1], (B,) tensor of per-row rates, or a range ``(low, high)``
            from which each row draws its rate.
        scores: optional float (B, N); higher = chosen first.
        hard_fraction: share of the budget given to the top scores, in [0, 1].
        device: device of the mask (default: that of ``scores``, else CPU).
        generator: random source.

    Returns:
        bool (B, N), True = masked.

    >>> m = mask_patches(2, 8, 0.75, generator=torch.Generator().manual_seed(0))
    >>> m.sum(1).tolist()
    [6, 6]
    >>> s = torch.arange(8.0).expand(2, 8)
    >>> mask_patches(2, 8, 0.25, scores=s)[0].int().tolist()   # the 2 highest scores
    [0, 0, 0, 0, 0, 0, 1, 1]
    """
    B = _check_batch(batch)
    N = _check_positive_int("num_patches", num_patches)
    hard_fraction = check_probability("hard_fraction", hard_fraction)
    if scores is not None:
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            raise TypeError(
                f"scores must be a float tensor ({getattr(scores, 'dtype', type(scores))} given)."
            )
        if scores.shape != (B, N):
            raise ValueError(
                f"scores must have shape (B, N) = ({B}, {N}) ({tuple(scores.shape)} given)."
            )
        device = scores.device if device is None else device
    device = torch.device("cpu") if device is None else torch.device(device)
    rate = per_sample_rates(rate, B, device=device, generator=generator)
    u = uniform((B, N), generator=generator, device=device)
    if isinstance(rate, torch.Tensor):
        k = torch.round(as_rate(rate, B, device).squeeze(1) * N).long()  # (B,)
        keys = u
        if scores is not None and hard_fraction > 0:
            hard = top_k_per_row(scores.float(), torch.round(k * hard_fraction).long())
            keys = u + hard  # hard patches get keys in (1, 2): chosen first
        return top_k_per_row(keys, k)
    k_int = round(check_probability("rate", rate) * N)
    masked = torch.zeros(B, N, dtype=torch.bool, device=device)
    if k_int == 0:
        return masked
    k_hard = round(hard_fraction * k_int) if scores is not None else 0
    if k_hard == k_int:  # all of the budget to the top scores: one selection, no random part
        return masked.scatter_(1, scores.topk(k_int, dim=1, sorted=False).indices, True)  # type: ignore[union-attr]
    others: torch.Tensor | None = None  # the patches the random part chooses from (all: None)
    n_free, k_rand = N, k_int
    if k_hard > 0:
        # Selecting the N - k_hard lowest scores (not the k_hard highest) gives the indices of
        # the patches left to the random part, which then ranks only their uniforms.
        others = scores.topk(N - k_hard, dim=1, largest=False, sorted=False).indices  # type: ignore[union-attr]
        u, n_free, k_rand = u.gather(1, others), N - k_hard, k_int - k_hard
    # A constant k per row: an unsorted torch.topk is cheaper than a full sort, and cheaper
    # the smaller its k: select the kept patches when they are fewer than the masked ones.
    if 2 * k_rand > n_free:
        kept = u.topk(n_free - k_rand, dim=1, largest=False, sorted=False).indices
        kept = kept if others is None else others.gather(1, kept)
        return masked.fill_(True).scatter_(1, kept, False)
    chosen = u.topk(k_rand, dim=1, sorted=False).indices
    if others is None:
        return masked.scatter_(1, chosen, True)
    return masked.fill_(True).scatter_(1, others, False).scatter_(1, others.gather(1, chosen), True)


def keep_indices(
    masked: torch.Tensor, *, num_keep: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices for an MAE-style encoder/decoder pair from a patch mask with equal counts per row.

    ``ids_keep`` (B, N_keep) lists each row's visible patches in increasing order, so the
    encoder input is ``x.gather(1, ids_keep[..., None].expand(-1, -1, D))``. ``ids_restore``
    (B, N) undoes the shuffle "visible first, then masked": a decoder that appends the mask
    tokens after the encoded visible patches restores patch order with
    ``y.gather(1, ids_restore[..., None].expand(-1, -1, D))``.

    Reads one count on the host to size ``ids_keep`` and checks that every row keeps as many;
    pass ``num_keep`` (known from the rate: ``N - round(rate * N)``) to skip the read and the
    check, e.g. under ``torch.compile(fullgraph=True)`` or to avoid a sync on a GPU.

    >>> m = torch.tensor([[True, False, False, True], [False, True, False, True]])
    >>> ids_keep, ids_restore = keep_indices(m)
    >>> ids_keep.tolist(), ids_restore.tolist()
    ([[1, 2], [0, 2]], [[2, 0, 1, 3], [0, 2, 1, 3]])
    """
    check_bool_2d("masked", masked)
    B, N = masked.shape
    if num_keep is not None and (
        isinstance(num_keep, bool) or not isinstance(num_keep, int) or not 0 <= num_keep <= N
    ):
        raise ValueError(f"num_keep must be an int in [0, {N}] ({num_keep!r} given).")
    if B == 0:
        empty = torch.zeros(0, N, dtype=torch.long, device=masked.device)
        return empty, empty
    n_keep = (~masked).sum(1)
    if num_keep is None and bool((n_keep != n_keep[0]).any()):
        raise ValueError(
            "keep_indices needs the same number of visible patches in every row "
            f"({sorted(set(n_keep.tolist()))} given); use mask_patches, which masks an exact count."
        )
    ids_shuffle = masked.to(torch.uint8).argsort(dim=1, stable=True)  # visible first, in order
    ids_restore = torch.empty_like(ids_shuffle)  # the inverse permutation, by one scatter
    ids_restore.scatter_(1, ids_shuffle, torch.arange(N, device=masked.device).expand(B, N))
    k = int(n_keep[0]) if num_keep is None else num_keep
    return ids_shuffle[:, :k], ids_restore


def mask_blocks(
    batch: int,
    grid: int | Sequence[int],
    num_masked: int,
    *,
    min_block: int = 16,
    max_block: int | None = None,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    rounds: int = 10,
    device: torch.device | str | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    """BEiT-style blockwise masking with exactly ``num_masked`` cells per sample.

    As in BEiT, rectangles are drawn one after another: area uniform in
    ``[min_block, min(remaining, max_block)]`` (smaller only when fewer than ``min_block`` cells
    remain), aspect ratio log-uniform in ``aspect``, position uniform on the grid; a rectangle is
    kept only if it adds at least one new cell and no more than the remaining budget. All samples
    draw their ``rounds`` rectangles together (no loop over samples). BEiT gives up after ten
    rectangles that do not fit and then misses the count (about 31 % of samples at 14x14 with 75
    cells); here whatever is still missing after ``rounds`` is added next to the masked blocks
    (free cells with the most masked neighbours, ties at random), so the count is always exact.

    Args:
        batch: number of samples B.
        grid: patch grid ``H`` or ``(H, W)``.
        num_masked: masked cells per sample, ``0 <= num_masked <= H * W``.
        min_block: smallest rectangle area.
        max_block: largest rectangle area (default: ``num_masked``).
        aspect: range of height / width ratios.
        rounds: rectangles drawn per sample before the exact fill.
        device: device of the mask.
        generator: random source.

    Returns:
        bool (B, H, W), True = masked.

    >>> m = mask_blocks(4, 14, 75, generator=torch.Generator().manual_seed(0))
    >>> m.shape, m.sum((1, 2)).tolist()
    (torch.Size([4, 14, 14]), [75, 75, 75, 75])
    """
    H, W = _check_grid(grid)
    B = _check_batch(batch)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0 ({rounds!r} given).")
    if (
        isinstance(num_masked, bool)
        or not isinstance(num_masked, numbers.Integral)
        or not 0 <= num_masked <= H * W
    ):
        raise ValueError(f"num_masked must be an int in [0, {H * W}] ({num_masked!r} given).")
    min_block = _check_positive_int("min_block", min_block)
    max_block = num_masked if max_block is None else _check_positive_int("max_block", max_block)
    lo_aspect, hi_aspect = _check_range("aspect", aspect)
    if not 0 < lo_aspect <= hi_aspect:
        raise ValueError(f"aspect must be (low, high) with 0 < low <= high ({aspect!r} given).")
    device = torch.device("cpu") if device is None else torch.device(device)
    masked = torch.zeros(B, H, W, dtype=torch.bool, device=device)
    if num_masked == 0 or B == 0:
        return masked
    log_lo, log_hi = math.log(lo_aspect), math.log(hi_aspect)
    # One draw for everything: 4 numbers per round (area, aspect, top, left), then one per cell
    # for the exact fill's ties.
    u = uniform((B, 4 * rounds + H * W), generator=generator, device=device).double()
    draws = u[:, : 4 * rounds].view(B, rounds, 4).permute(1, 2, 0)  # (rounds, 4, B)
    ratio = torch.exp(log_lo + draws[:, 1] * (log_hi - log_lo))  # (rounds, B)
    # Heights and widths together: sqrt(area * ratio) and sqrt(area * (1 / ratio)).
    scale = torch.stack((ratio, 1 / ratio), 1)  # (rounds, 2, B)
    corner = draws[:, 2:].contiguous()  # (rounds, 2, B): where the top and left edges fall
    area_u = draws[:, 0].contiguous()  # (rounds, B)
    size = torch.tensor([[H], [W]], device=device, dtype=torch.float64)
    room = size + 1
    # one table holds the cells of every row range, then of every column range (see below)
    table, offset = _rectangle_table(H, W, device)
    free = torch.ones(B, H * W, dtype=torch.uint8, device=device)
    remaining = torch.full((B,), float(num_masked), device=device, dtype=torch.float64)
    # Every step stays in float64 (small integers are exact) until the lookup, and the cells in
    # uint8 (several times faster than bool on the CPU): about 30 small ops per round.
    for r in range(rounds):  # a constant number of rounds for the whole batch
        hi_area = remaining.clamp(1, max_block)
        lo_area = hi_area.clamp(max=float(min_block))
        area = (hi_area - lo_area).mul_(area_u[r]).add_(lo_area)
        hw = area.unsqueeze(0).mul(scale[r]).sqrt_().round_().clamp_(min=1)
        hw = torch.minimum(hw, size, out=hw)  # (2, B): heights, widths
        start = (room - hw).mul_(corner[r]).floor_()  # (2, B): tops, lefts
        # row (top * H + h - 1) and row (H * H + left * W + w - 1) of the table (all exact)
        at = torch.addcmul(hw.add_(offset), start, size).long()
        new = table.index_select(0, at[0])
        new &= table.index_select(0, at[1])
        new &= free
        delta = new.sum(1, dtype=torch.int32)
        accept = delta <= remaining  # a rectangle adding no cell changes nothing either way
        new *= accept.unsqueeze(1)
        free ^= new  # the new cells were free ones
        remaining -= delta.mul_(accept)
    # Exact fill: grow the blocks by the missing number of cells. Most samples already have the
    # count (92 % at 14x14, 75 cells, 10 rounds): on the CPU only the others are filled.
    free = free.bool()
    deficit = remaining.long()
    ties = u[:, 4 * rounds :].float()
    if on_host(device):
        short = deficit.nonzero().squeeze(1)
        if short.numel():
            free[short] = _grow(free[short], deficit[short], ties[short], H, W, int(deficit.max()))
    else:
        free = _grow(free, deficit, ties, H, W, num_masked)
    return free.logical_not_().view(B, H, W)


def _grow(
    free: torch.Tensor, deficit: torch.Tensor, ties: torch.Tensor, H: int, W: int, k_max: int
) -> torch.Tensor:
    """``free`` (B, H * W) less ``deficit`` more cells per row: those with the most masked cells
    among their 8 neighbours, ties broken by ``ties``; ``k_max`` bounds ``deficit``."""
    B = free.shape[0]
    masked = free.logical_not().view(B, 1, H, W).float()
    neighbours = torch.nn.functional.avg_pool2d(  # masked cells in each 3x3 window, exactly
        masked, 3, stride=1, padding=1, divisor_override=1
    ).view(B, -1)
    keys = (neighbours + ties).masked_fill_(free.logical_not(), -1.0)
    return free.logical_and_(top_k_per_row(keys, deficit, k_max=k_max).logical_not_())


@functools.lru_cache(maxsize=32)
def _rectangle_table(H: int, W: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The cells of every row range and every column range of an H x W grid, and the offsets.

    Row ``top * H + h - 1`` of the (H * H + W * W, H * W) 0 / 1 uint8 table marks the cells in rows
    ``top .. top + h - 1``; row ``H * H + left * W + w - 1`` those in columns
    ``left .. left + w - 1``; a rectangle's cells are the AND of the two. ``offset`` is
    ``(-1, H * H - 1)`` as a column, so ``start * (H, W) + (h, w) + offset`` indexes both.
    """

    def ranges(n: int, of: torch.Tensor) -> torch.Tensor:
        start = torch.arange(n, device=device).view(n, 1, 1)
        size = torch.arange(1, n + 1, device=device).view(1, n, 1)
        return ((of >= start) & (of < start + size)).view(n * n, H * W)

    rows = torch.arange(H, device=device).repeat_interleave(W)  # each cell's row
    cols = torch.arange(W, device=device).repeat(H)  # each cell's column
    table = torch.cat((ranges(H, rows), ranges(W, cols))).to(torch.uint8)
    offset = torch.tensor([[-1.0], [H * H - 1.0]], device=device, dtype=torch.float64)
    return table, offset


def mask_coarse(
    batch: int,
    grid: int | Sequence[int],
    rate: Rate,
    *,
    unit: int = 2,
    device: torch.device | str | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    """SimMIM-style coarse masking: mask ``unit x unit`` groups of patches.

    Exactly ``round(rate * U)`` of the ``U = ceil(H / unit) * ceil(W / unit)`` units are masked
    per sample (random masking on the coarse grid) and each unit covers ``unit x unit`` patches
    of the ``(H, W)`` grid (units at the right and bottom edges are cropped when ``unit`` does
    not divide the grid). For hierarchical models (Swin) whose patch size is smaller than the
    masking unit: SimMIM uses 32-pixel units over 4-pixel patches, ``unit=8``.

    Returns:
        bool (B, H, W), True = masked.

    >>> m = mask_coarse(1, 4, 0.5, unit=2, generator=torch.Generator().manual_seed(0))
    >>> int(m.sum()), m[0, ::2, ::2].tolist() == m[0, 1::2, 1::2].tolist()
    (8, True)
    """
    H, W = _check_grid(grid)
    unit = _check_positive_int("unit", unit)
    hu, wu = -(-H // unit), -(-W // unit)
    coarse = mask_patches(batch, hu * wu, rate, device=device, generator=generator).view(-1, hu, wu)
    fine = coarse.repeat_interleave(unit, dim=1).repeat_interleave(unit, dim=2)
    return fine[:, :H, :W]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) images -> (B, N, p * p * C) patches, row-major, MAE's (p, q, c) order.

    >>> patchify(torch.zeros(2, 3, 32, 32), 16).shape
    torch.Size([2, 4, 768])
    """
    p = _check_positive_int("patch_size", patch_size)
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W) ({tuple(images.shape)} given).")
    B, C, H, W = images.shape
    if H % p or W % p:
        raise ValueError(f"Image size {H}x{W} is not divisible by patch_size={p}.")
    h, w = H // p, W // p
    x = images.reshape(B, C, h, p, w, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, h * w, p * p * C)  # (B, h*w, p*p*C)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: int | Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, p * p * C) -> (B, C, H * p, W * p) for grid (H, W)."""
    p = _check_positive_int("patch_size", patch_size)
    h, w = _check_grid(grid)
    if not isinstance(patches, torch.Tensor) or patches.dim() != 3:
        raise ValueError(
            f"patches must be (B, N, D) ({tuple(getattr(patches, 'shape', ()))} given)."
        )
    B, N, D = patches.shape
    if N != h * w or D % (p * p):
        raise ValueError(
            f"patches {tuple(patches.shape)} do not match grid {h}x{w} and patch_size={p}."
        )
    C = D // (p * p)
    x = patches.reshape(B, h, w, p, p, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, h * p, w * p)


def patches_to_pixels(
    masked: torch.Tensor, grid: int | Sequence[int], patch_size: int
) -> torch.Tensor:
    """Expand a patch mask (B, N) or (B, H, W) to pixels (B, H * p, W * p), e.g. to mask the
    input image of a CNN: ``images.masked_fill(patches_to_pixels(m, grid, p)[:, None], 0)``."""
    h, w = _check_grid(grid)
    p = _check_positive_int("patch_size", patch_size)
    if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool:
        raise TypeError(
            f"masked must be a bool tensor ({getattr(masked, 'dtype', type(masked))} given)."
        )
    if tuple(masked.shape[1:]) not in ((h * w,), (h, w)):
        raise ValueError(
            f"masked must be (B, {h * w}) or (B, {h}, {w}) for grid {h}x{w} "
            f"({tuple(masked.shape)} given)."
        )
    m = masked.reshape(masked.shape[0], h, w)
    return m.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)
