"""Naive per-sample, per-position references for the vectorized image maskers.

Each reference reproduces the vectorized function's random draws by calling
``maskwise.random.uniform`` (and, for ``value="random"``, ``torch.randn``) in the same order with a
generator seeded the same way, then decides everything with plain Python loops over samples,
patches and cells. Equality with the vectorized code on random inputs checks the vectorization,
not the randomness.

Arithmetic that decides a rounding boundary is done in Python floats (IEEE doubles), as the
vectorized code does it in float64, so both round the same numbers.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from maskwise.random import uniform


def _rates(rate, batch):
    if isinstance(rate, torch.Tensor):
        return [float(r) for r in rate.double()]
    return [float(rate)] * batch


def mask_patches(batch, num_patches, rate, *, scores=None, hard_fraction=1.0, generator=None):
    """Exactly ``round(rate * N)`` patches per row: the ``round(hard_fraction * k)`` highest scores
    first, the rest the highest uniforms among the other patches (uniform random choice)."""
    B, N = batch, num_patches
    u = uniform((B, N), generator=generator)  # the one draw, made first
    out = torch.zeros(B, N, dtype=torch.bool)
    for b, r in enumerate(_rates(rate, B)):
        k = round(r * N)
        k_hard = round(hard_fraction * k) if scores is not None else 0
        hard = []
        if k_hard:
            by_score = sorted(range(N), key=lambda j: float(scores[b, j]), reverse=True)
            hard = by_score[:k_hard]
        rest = sorted(
            (j for j in range(N) if j not in hard), key=lambda j: float(u[b, j]), reverse=True
        )
        for j in hard + rest[: k - k_hard]:
            out[b, j] = True
    return out


def keep_indices(masked):
    B, N = masked.shape
    keep, restore = [], []
    for b in range(B):
        visible = [j for j in range(N) if not masked[b, j]]
        hidden = [j for j in range(N) if masked[b, j]]
        shuffle = visible + hidden  # visible first, then masked, each in patch order
        inverse = [0] * N
        for pos, j in enumerate(shuffle):
            inverse[j] = pos
        keep.append(visible)
        restore.append(inverse)
    n_keep = len(keep[0]) if keep else 0
    return (
        torch.tensor(keep, dtype=torch.long).reshape(B, n_keep),
        torch.tensor(restore, dtype=torch.long).reshape(B, N),
    )


def mask_blocks(
    batch,
    grid,
    num_masked,
    *,
    min_block=16,
    max_block=None,
    aspect=(0.3, 1 / 0.3),
    rounds=10,
    generator=None,
    return_filled=False,
):
    """BEiT blocks: ``rounds`` rectangles per sample, then the exact fill next to the blocks.

    With ``return_filled=True`` also returns, per sample, how many cells the exact fill added.
    """
    H, W = (grid, grid) if isinstance(grid, int) else tuple(grid)
    B = batch
    max_block = num_masked if max_block is None else max_block
    masked = [[[False] * W for _ in range(H)] for _ in range(B)]
    count = [0] * B
    if num_masked == 0 or B == 0:
        out = torch.zeros(B, H, W, dtype=torch.bool)
        return (out, [0] * B) if return_filled else out
    # one draw: 4 numbers per round (area, aspect, top, left), then one per cell for the fill
    draws = uniform((B, 4 * rounds + H * W), generator=generator)
    for r in range(rounds):
        u = draws[:, 4 * r : 4 * r + 4].double()
        for b in range(B):
            remaining = num_masked - count[b]
            hi_area = float(max(1, min(remaining, max_block)))
            lo_area = min(float(min_block), hi_area)
            area = lo_area + float(u[b, 0]) * (hi_area - lo_area)
            log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
            ratio = math.exp(log_lo + float(u[b, 1]) * (log_hi - log_lo))
            h = min(max(round(math.sqrt(area * ratio)), 1), H)
            w = min(max(round(math.sqrt(area * (1 / ratio))), 1), W)
            top = math.floor(float(u[b, 2]) * (H - h + 1))
            left = math.floor(float(u[b, 3]) * (W - w + 1))
            new = [
                (i, j)
                for i in range(top, top + h)
                for j in range(left, left + w)
                if not masked[b][i][j]
            ]
            if 0 < len(new) <= remaining:
                for i, j in new:
                    masked[b][i][j] = True
                count[b] += len(new)
    # Exact fill: free cells with the most masked cells among their 8 neighbours, ties at random.
    u = draws[:, 4 * rounds :]
    filled = []
    for b in range(B):
        deficit = num_masked - count[b]
        keyed = []
        for i in range(H):
            for j in range(W):
                if masked[b][i][j]:
                    continue
                n = sum(
                    masked[b][i + di][j + dj]
                    for di in (-1, 0, 1)
                    for dj in (-1, 0, 1)
                    if 0 <= i + di < H and 0 <= j + dj < W
                )
                key = torch.tensor(float(n), dtype=torch.float32) + u[b, i * W + j]  # float32 sum
                keyed.append((float(key), i, j))
        keyed.sort(key=lambda t: t[0], reverse=True)
        for _, i, j in keyed[:deficit]:
            masked[b][i][j] = True
        filled.append(deficit)
    out = torch.tensor(masked, dtype=torch.bool).reshape(B, H, W)
    return (out, filled) if return_filled else out


def mask_coarse(batch, grid, rate, *, unit=2, generator=None):
    H, W = (grid, grid) if isinstance(grid, int) else tuple(grid)
    hu, wu = -(-H // unit), -(-W // unit)
    coarse = mask_patches(batch, hu * wu, rate, generator=generator).view(batch, hu, wu)
    out = torch.zeros(batch, H, W, dtype=torch.bool)
    for b in range(batch):
        for i in range(H):
            for j in range(W):
                out[b, i, j] = coarse[b, i // unit, j // unit]
    return out


def patchify(images, patch_size):
    B, C, H, W = images.shape
    p = patch_size
    h, w = H // p, W // p
    out = torch.empty(B, h * w, p * p * C, dtype=images.dtype)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                for r in range(p):
                    for c in range(p):
                        for ch in range(C):
                            out[b, i * w + j, (r * p + c) * C + ch] = images[
                                b, ch, i * p + r, j * p + c
                            ]
    return out


def unpatchify(patches, patch_size, grid):
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    B, N, D = patches.shape
    p = patch_size
    C = D // (p * p)
    out = torch.empty(B, C, h * p, w * p, dtype=patches.dtype)
    for b in range(B):
        for n in range(N):
            i, j = divmod(n, w)
            for r in range(p):
                for c in range(p):
                    for ch in range(C):
                        out[b, ch, i * p + r, j * p + c] = patches[b, n, (r * p + c) * C + ch]
    return out


def erase(
    images, *, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, attempts=10, generator=None
):
    """Per-sample random erasing: the first of ``attempts`` shapes that fits, torchvision-style.

    Also returns, per sample, ``(top, left, h, w)`` of the erased rectangle or None.
    """
    B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
    u = uniform((B, 4 * attempts + 1), generator=generator).double()
    noise = torch.randn(images.shape, generator=generator) if isinstance(value, str) else None
    out = images.clone()
    masked = torch.zeros(B, H, W, dtype=torch.bool)
    boxes = []
    s_lo, s_hi = scale
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for b in range(B):
        box = None
        for a in range(attempts):
            ua, ur = float(u[b, a]), float(u[b, attempts + a])
            area = H * W * (s_lo + ua * (s_hi - s_lo))
            aspect = math.exp(log_lo + ur * (log_hi - log_lo))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if 1 <= h < H and 1 <= w < W:
                top = math.floor(float(u[b, 2 * attempts + a]) * (H - h + 1))
                left = math.floor(float(u[b, 3 * attempts + a]) * (W - w + 1))
                box = (top, left, h, w)
                break
        if box is None or not float(u[b, -1]) < p:
            boxes.append(None)
            continue
        boxes.append(box)
        top, left, h, w = box
        for i in range(top, top + h):
            for j in range(left, left + w):
                masked[b, i, j] = True
                if noise is not None:
                    out[b, ..., i, j] = noise[b, ..., i, j].to(images.dtype)
                elif isinstance(value, (int, float)):
                    out[b, ..., i, j] = value
                else:  # per-channel values
                    out[b, :, i, j] = torch.as_tensor(value, dtype=images.dtype)
    return out, masked, boxes


def components(mask2d):
    """4-connected components of a 2-D bool mask: list of lists of (i, j) cells."""
    grid = mask2d.tolist()
    H, W = len(grid), len(grid[0]) if grid else 0
    seen = [[False] * W for _ in range(H)]
    comps = []
    for i in range(H):
        for j in range(W):
            if not grid[i][j] or seen[i][j]:
                continue
            seen[i][j] = True
            comp, queue = [], deque([(i, j)])
            while queue:
                a, c = queue.popleft()
                comp.append((a, c))
                for da, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    x, y = a + da, c + dc
                    if 0 <= x < H and 0 <= y < W and grid[x][y] and not seen[x][y]:
                        seen[x][y] = True
                        queue.append((x, y))
            comps.append(comp)
    return comps


def bounding_box(mask2d):
    """(top, left, h, w) of the True cells of a 2-D mask, or None when it has none."""
    rows = [i for i, r in enumerate(mask2d.tolist()) if any(r)]
    cols = [j for j, c in enumerate(mask2d.t().tolist()) if any(c)]
    if not rows:
        return None
    return rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
