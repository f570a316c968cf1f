"""``spec.block_mask``: the FlexAttention ``BlockMask`` built from the spec's structure.

Checked against FlexAttention's own ``create_block_mask(spec.mask_mod_for(Q, KV), ...)`` (which
evaluates the rule on every pair) over a grid of specs x lengths (including lengths that are no
multiple of the block size, and Q != KV) x block sizes; the split into partial and full blocks is
checked against the dense mask: a block is listed full only if every pair in it (the block cut at
Q and KV) may attend, partial only if some pair may attend and some may not, and nowhere else.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from maskwise import attention as A
from tests.attention.cases import CASES, COMPOSED, EXACT_FULL, LEAVES, doc_lengths, pad_lengths

SHAPES = [(37, 37), (64, 64), (129, 129), (50, 150)]
BLOCK_SIZES = [16, 32, 128]
# leaves: every shape x every block size; compositions: a spread of (shape, block size) pairs
# (create_block_mask costs ~0.1 s a call on CPU, so the full product would take a minute)
GRID = [(n, s, bs) for n in sorted(LEAVES) for s in SHAPES for bs in BLOCK_SIZES] + [
    (n, s, bs)
    for n in sorted(COMPOSED)
    for s, bs in [
        ((37, 37), 16),
        ((64, 64), 32),
        ((129, 129), 128),
        ((129, 129), 16),
        ((50, 150), 32),
    ]
]


def _listed(num: torch.Tensor, idx: torch.Tensor, nK: int) -> torch.Tensor:
    """(B, H, nQ, nK) bool: the blocks a (num_blocks, indices) pair lists, checking that the
    listed indices are in range and distinct."""
    B, H, nQ = num.shape
    out = torch.zeros(B, H, nQ, nK, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for i in range(nQ):
                cols = idx[b, h, i, : int(num[b, h, i])].tolist()
                assert all(0 <= c < nK for c in cols), cols
                assert len(set(cols)) == len(cols), cols
                for c in cols:
                    out[b, h, i, c] = True
    return out


def _block_any_all(dense: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, nQ, nK) any / all of the dense mask over each block cut at Q and KV."""
    B, _, Q, KV = dense.shape
    nQ, nK = -(-Q // bs), -(-KV // bs)
    any_ = torch.zeros(B, 1, nQ, nK, dtype=torch.bool)
    all_ = torch.zeros(B, 1, nQ, nK, dtype=torch.bool)
    for i in range(nQ):
        for j in range(nK):
            blk = dense[:, 0, i * bs : (i + 1) * bs, j * bs : (j + 1) * bs].flatten(1)
            any_[:, 0, i, j] = blk.any(1)
            all_[:, 0, i, j] = blk.all(1)
    return any_, all_


@pytest.mark.parametrize(
    ("name", "shape", "bs"), GRID, ids=[f"{n}-Q{s[0]}xKV{s[1]}-bs{bs}" for n, s, bs in GRID]
)
def test_block_mask_matches_create_block_mask(name: str, shape: tuple[int, int], bs: int) -> None:
    Q, KV = shape
    spec, _ = CASES[name](Q, KV)
    B = spec.batch or 1
    got = spec.block_mask(Q, KV, block_size=bs)
    want = create_block_mask(spec.mask_mod_for(Q, KV), B, None, Q, KV, device="cpu", BLOCK_SIZE=bs)
    assert isinstance(got, BlockMask)
    assert got.seq_lengths == (Q, KV)
    assert got.BLOCK_SIZE == (bs, bs)
    assert torch.equal(got.to_dense(), want.to_dense())

    # partial / full split against the dense mask
    nK = -(-KV // bs)
    partial = _listed(got.kv_num_blocks, got.kv_indices, nK)
    full = _listed(got.full_kv_num_blocks, got.full_kv_indices, nK)
    any_, all_ = _block_any_all(spec.dense(Q, KV), bs)
    any_, all_ = any_.expand_as(partial), all_.expand_as(partial)
    assert not (partial & full).any(), "a block is listed both partial and full"
    assert not (full & ~all_).any(), "a block listed full has a pair that may not attend"
    assert torch.equal(partial | full, any_)
    if name in EXACT_FULL:  # structural specs classify exactly: no full block left as partial
        assert torch.equal(full, all_ & any_)
    # the query-major view FlexAttention's backward uses is the transpose of the same blocks
    nQ = -(-Q // bs)
    q_partial = _listed(got.q_num_blocks, got.q_indices, nQ)  # (B, H, nK, nQ)
    q_full = _listed(got.full_q_num_blocks, got.full_q_indices, nQ)
    assert torch.equal(q_partial.transpose(-1, -2), partial)
    assert torch.equal(q_full.transpose(-1, -2), full)


@settings(max_examples=15, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 40), max_size=4), min_size=1, max_size=2),
    extra=st.integers(0, 20),
    q_cut=st.integers(0, 50),
    window=st.integers(1, 40),
    bs=st.sampled_from([8, 16, 32]),
)
def test_random_documents_window_block_mask(rows, extra, q_cut, window, bs) -> None:
    """Random packed documents & sliding window, random Q <= KV and block size: the blocks
    equal create_block_mask's, and blocks listed full are full."""
    KV = max(1, max(sum(r) for r in rows) + extra)
    Q = max(1, KV - q_cut)
    spec = A.documents(rows) & A.sliding_window(window)
    got = spec.block_mask(Q, KV, block_size=bs)
    want = create_block_mask(
        spec.mask_mod_for(Q, KV), len(rows), None, Q, KV, device="cpu", BLOCK_SIZE=bs
    )
    assert torch.equal(got.to_dense(), want.to_dense())
    full = _listed(got.full_kv_num_blocks, got.full_kv_indices, -(-KV // bs))
    any_, all_ = _block_any_all(spec.dense(Q, KV), bs)
    assert torch.equal(full, all_ & any_)


def test_union_covering_a_block_only_together() -> None:
    """``cross(kv=3) | sliding_window(5)``, L = 8, block 4: block (queries 4-7, keys 0-3) is
    fully allowed only by the two parts together (keys 0-2 by cross, key 3 by the window). A
    union may list such a block as partial (the rule is then applied in it: correct, only
    slower), never as empty, and never lists a block full that is not."""
    spec = A.cross(torch.tensor([8]), torch.tensor([3])) | A.sliding_window(5)
    bm = spec.block_mask(8, block_size=4)
    partial = _listed(bm.kv_num_blocks, bm.kv_indices, 2)
    full = _listed(bm.full_kv_num_blocks, bm.full_kv_indices, 2)
    any_, all_ = _block_any_all(spec.dense(8), 4)
    assert bool(all_[0, 0, 1, 0])
    assert bool((partial | full)[0, 0, 1, 0]) and not bool((partial & full)[0, 0, 1, 0])
    assert torch.equal(partial | full, any_) and not (full & ~all_).any()


def test_literal_causal_blocks() -> None:
    """Causal, L = 5, block 2: blocks [0,2), [2,4), [4,5). Diagonal blocks are partial (query 0
    does not see key 1), blocks below them full, and the last diagonal block (the single pair
    (4, 4), allowed) is full."""
    bm = A.causal().block_mask(5, block_size=2)
    assert bm.kv_num_blocks[0, 0].tolist() == [1, 1, 0]
    assert bm.full_kv_num_blocks[0, 0].tolist() == [0, 1, 3]
    assert bm.kv_indices[0, 0, :2, 0].tolist() == [0, 1]
    assert bm.full_kv_indices[0, 0, 1, 0].tolist() == 0
    assert sorted(bm.full_kv_indices[0, 0, 2].tolist()) == [0, 1, 2]


def test_literal_documents_blocks() -> None:
    """Two documents of 4 and a block size of 4: two full diagonal blocks, nothing else."""
    bm = A.documents([[4, 4]]).block_mask(8, block_size=4)
    assert bm.kv_num_blocks[0, 0].tolist() == [0, 0]
    assert bm.full_kv_num_blocks[0, 0].tolist() == [1, 1]
    assert bm.full_kv_indices[0, 0, :, 0].tolist() == [0, 1]


def test_block_mask_mask_mod_is_the_spec_rule() -> None:
    """The BlockMask carries the spec's mask_mod for these lengths (bottom-right aligned)."""
    spec = A.causal() & A.padding(pad_lengths(19))
    bm = spec.block_mask(7, 19, block_size=16)
    b = torch.arange(3).view(3, 1, 1)
    q = torch.arange(7).view(1, 7, 1)
    kv = torch.arange(19).view(1, 1, 19)
    assert torch.equal(bm.mask_mod(b, torch.tensor(0), q, kv), spec.dense(7, 19)[:, 0])


def test_block_mask_default_block_size_is_128() -> None:
    bm = A.causal().block_mask(300)
    assert bm.BLOCK_SIZE == (128, 128)
    assert bm.kv_num_blocks.shape == (1, 1, 3)


def test_block_mask_tensors_scale_with_blocks_not_pairs() -> None:
    """L = 16384, block 128: every tensor of the BlockMask has O((L / bs)^2) elements."""
    L, bs = 16384, 128
    n = L // bs
    spec = A.causal() & A.documents([[5000, 7000, 4000]])
    bm = spec.block_mask(L, block_size=bs)
    tensors = [
        bm.kv_num_blocks,
        bm.kv_indices,
        bm.full_kv_num_blocks,
        bm.full_kv_indices,
        bm.q_num_blocks,
        bm.q_indices,
        bm.full_q_num_blocks,
        bm.full_q_indices,
    ]
    for t in tensors:
        assert t.numel() <= n * n, t.shape
    # sanity on the structure: 128 query blocks, the diagonal ones partial
    assert bm.kv_num_blocks.shape == (1, 1, n)
    assert int(bm.kv_num_blocks.sum() + bm.full_kv_num_blocks.sum()) < n * n


def _peak_single_allocation(fn) -> int:
    """Largest single CPU allocation (bytes) torch makes while running ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


@pytest.mark.parametrize(
    "spec",
    [
        A.causal(),
        A.sliding_window(1000) & A.padding(torch.tensor([16000])),
        A.documents([[5000, 7000]]),
    ],
    ids=["causal", "sliding_window&padding", "documents"],
)
def test_block_mask_never_allocates_a_dense_mask(spec: A.AttentionSpec) -> None:
    """Measured with torch.profiler's memory events (tracemalloc does not see torch's
    allocations). The profiler must see a dense mask where there is one (the control), and
    ``block_mask`` at L = 16384 must stay far below L * L bytes (268 MB)."""
    L = 16384
    control = _peak_single_allocation(lambda: A.causal().dense(2048))
    if control < 2048 * 2048:
        pytest.skip(f"the profiler does not report CPU allocations here (control {control} B)")
    peak = _peak_single_allocation(lambda: spec.block_mask(L, block_size=128))
    assert peak < 16 * 2**20, f"{peak} bytes in one allocation (L * L = {L * L})"


def test_block_mask_batch_rows_differ() -> None:
    """Per-sample specs give one row of blocks per sample."""
    spec = A.causal() & A.documents(doc_lengths(64)) & A.padding(pad_lengths(64))
    bm = spec.block_mask(64, block_size=16)
    assert bm.kv_num_blocks.shape == (3, 1, 4)
    # row 2 is all padding: no block at all
    assert int(bm.kv_num_blocks[2].sum() + bm.full_kv_num_blocks[2].sum()) == 0


@pytest.mark.gpu
def test_block_mask_on_cuda_equals_cpu() -> None:
    for name in sorted(CASES):
        spec, _ = CASES[name](129, 129)
        got = spec.to("cuda").block_mask(129, device="cuda", block_size=32)
        want = spec.block_mask(129, block_size=32)
        assert got.kv_num_blocks.device.type == "cuda", name
        assert torch.equal(got.to_dense().cpu(), want.to_dense()), name
