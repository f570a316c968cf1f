"""``spec.intervals``: per query, the keys it attends as one interval ``[lo, hi)``.

Checked against the naive dense reference of every case that has intervals: the interval is
exactly the query's allowed keys, both bounds never decrease, and the non-empty intervals leave
no gap (what the block-mask lowering relies on). Cases without intervals (holes in an HF mask,
unions, mask_mod wrappers, drop_keys) must say so (None) rather than give a wrong one.
"""

from __future__ import annotations

import pytest
import torch

from maskwise import attention as A
from tests.attention.cases import CASES

SHAPES = [(37, 37), (64, 64), (20, 57), (57, 20)]
#: cases that have no interval form (their keys are no interval, or unknown)
NO_INTERVALS = {
    "padding_hf",
    "mask_mod",
    "mask_mod_batched",
    "sliding_window4&padding_hf",
    "causal&padding_hf",
    "causal|chunked8",
    "mask_mod&causal",
    "causal&bare_function",
    "mask_mod_batched|sliding_window2",
    "(causal|chunked8)&padding_hf",
    "sliding_window3|prefix_lm",
}
CPU = torch.device("cpu")


@pytest.mark.parametrize("shape", SHAPES, ids=[f"Q{q}xKV{k}" for q, k in SHAPES])
@pytest.mark.parametrize("name", sorted(CASES))
def test_intervals_are_the_allowed_keys(name: str, shape: tuple[int, int]) -> None:
    Q, KV = shape
    spec, ref = CASES[name](Q, KV)
    iv = spec.intervals(Q, KV, CPU)
    if name in NO_INTERVALS:
        assert iv is None
        return
    assert iv is not None
    lo, hi = torch.broadcast_tensors(*iv)  # (B or 1, Q)
    kv = torch.arange(KV)
    got = (kv >= lo[..., None]) & (kv < hi[..., None])  # (B, Q, KV)
    want = ref[:, 0].expand(got.shape)
    assert torch.equal(got, want)
    assert bool((lo.diff(dim=1) >= 0).all()) and bool((hi.diff(dim=1) >= 0).all())
    # No gap: each live interval starts at or before the end of the live one before it.
    for b in range(lo.shape[0]):
        live = (hi[b] > lo[b]).nonzero().squeeze(1)
        assert bool((lo[b, live[1:]] <= hi[b, live[:-1]]).all())


def test_intervals_of_drop_keys_are_unknown() -> None:
    assert A.drop_keys(0.5).intervals(8, 8, CPU) is None


def test_block_mask_from_intervals_lists_each_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval path's tables: listed blocks distinct and in range, on both sides."""
    from maskwise.attention import lowering

    monkeypatch.setattr(lowering, "_INTERVALS_MIN_BLOCKS", 0)
    ids = torch.tensor([[0] * 300 + [1] * 200 + [2] * 20 + [-1] * 4])
    bm = (A.causal() & A.documents(ids)).block_mask(524, block_size=64)
    for num, idx in (
        (bm.kv_num_blocks, bm.kv_indices),
        (bm.full_kv_num_blocks, bm.full_kv_indices),
        (bm.q_num_blocks, bm.q_indices),
        (bm.full_q_num_blocks, bm.full_q_indices),
    ):
        assert num.dtype == idx.dtype == torch.int32
        for row, n in zip(idx[0, 0], num[0, 0].tolist()):
            listed = row[:n].tolist()
            assert len(set(listed)) == n and all(0 <= c < idx.shape[-1] for c in listed)


def _listed(num: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, H, n, m) bool: the blocks a (num_blocks, indices) pair lists."""
    m = idx.shape[-1]
    keep = torch.arange(m) < num[..., None]
    out = torch.zeros(idx.shape, dtype=torch.int32)
    return out.scatter_add_(-1, idx.long(), keep.int()) > 0


GRID = [(37, 37, 16), (64, 64, 16), (129, 129, 32), (50, 150, 16), (150, 50, 32), (300, 300, 128)]


@pytest.mark.parametrize(("Q", "KV", "bs"), GRID, ids=[f"Q{q}xKV{k}-bs{b}" for q, k, b in GRID])
@pytest.mark.parametrize("name", sorted(set(CASES) - NO_INTERVALS))
def test_interval_path_equals_flags_path(
    monkeypatch: pytest.MonkeyPatch, name: str, Q: int, KV: int, bs: int
) -> None:
    """Small grids take the flags path; forced onto the interval path, every table lists the same
    blocks (both sides, partial and full)."""
    from maskwise.attention import lowering

    spec, _ = CASES[name](Q, KV)
    flags = spec.block_mask(Q, KV, block_size=bs)
    monkeypatch.setattr(lowering, "_INTERVALS_MIN_BLOCKS", 0)
    intervals = spec.block_mask(Q, KV, block_size=bs)
    for attr in ("kv", "full_kv", "q", "full_q"):
        num, idx = f"{attr}_num_blocks", f"{attr}_indices"
        got = _listed(getattr(intervals, num), getattr(intervals, idx))
        want = _listed(getattr(flags, num), getattr(flags, idx))
        assert torch.equal(got, want), attr
