"""Converters from a spec to other masking conventions.

* ``hf_bool_mask``: (B, 1, Q, KV), True = may attend (the spec's dense mask);
* ``hf_additive_mask``: (B, 1, Q, KV), 0 where allowed, ``finfo(dtype).min`` where blocked;
* ``mha_attn_mask_blocked``: ``nn.MultiheadAttention``'s ``attn_mask``, True = may NOT attend,
  (Q, KV) without per-sample data, else (B * num_heads, Q, KV) head-major per sample;
* ``mha_key_padding_mask_blocked``: (B, KV), True = padding key, from lengths or an HF mask;
* ``varlen_offsets``: (cu_seqlens int32, max_seqlen, token_index int64) of the packed real tokens,
  one sequence per document (or per row for padding), rows in order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskwise import attention as A
from maskwise.attention import (
    attend,
    hf_additive_mask,
    hf_bool_mask,
    mha_attn_mask_blocked,
    mha_key_padding_mask_blocked,
    varlen_offsets,
)
from tests.attention.cases import CASES
from tests.reference import attention as R


# ------------------------------------------------------------------------------------------------
# Hugging Face masks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["causal", "causal&padding_hf", "documents_ids&causal", "cross", "sliding_window3|prefix_lm"],
)
def test_hf_bool_mask_is_the_reference(name: str) -> None:
    spec, want = CASES[name](7, 19)
    got = hf_bool_mask(spec, 7, 19)
    assert got.dtype == torch.bool and got.shape == (spec.batch or 1, 1, 7, 19)
    assert torch.equal(got, want.expand_as(got))


def test_hf_additive_mask_literal() -> None:
    spec = A.causal() & A.padding(torch.tensor([2]))
    m = hf_additive_mask(spec, 3)
    lo = torch.finfo(torch.float32).min
    assert m.dtype == torch.float32 and m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[0.0, lo, lo], [0.0, 0.0, lo], [lo, lo, lo]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_hf_additive_mask_values(dtype: torch.dtype) -> None:
    spec, allowed = CASES["causal&documents_lengths"](13, 13)
    m = hf_additive_mask(spec, 13, dtype=dtype)
    assert m.dtype == dtype and m.shape == (3, 1, 13, 13)
    assert m[allowed].eq(0).all()
    assert m[~allowed].eq(torch.finfo(dtype).min).all()


def test_hf_additive_mask_in_sdpa_equals_attend() -> None:
    """Added to the scores (as HF models do), the additive mask gives attend's output on every
    row that has a key (HF rows with no key are a uniform average; attend gives zeros)."""
    spec, allowed = CASES["sliding_window4&padding_hf"](11, 11)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 11, 8, generator=g) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=hf_additive_mask(spec, 11))
    live = allowed.any(-1).expand(3, 2, 11)  # (B, H, Q)
    assert (~live).any()
    torch.testing.assert_close(out[live], attend(q, k, v, spec)[live], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# nn.MultiheadAttention masks
# ------------------------------------------------------------------------------------------------
def test_mha_attn_mask_literal_and_shapes() -> None:
    assert mha_attn_mask_blocked(A.causal(), 3).tolist() == [
        [False, True, True],
        [False, False, True],
        [False, False, False],
    ]
    spec = A.causal() & A.padding(torch.tensor([3, 1]))
    m = mha_attn_mask_blocked(spec, 3, num_heads=2)
    assert m.shape == (4, 3, 3) and m.dtype == torch.bool
    dense = spec.dense(3)
    for b in range(2):
        for h in range(2):  # head-major inside a sample: row b * H + h
            assert torch.equal(m[b * 2 + h], ~dense[b, 0])
    assert torch.equal(mha_attn_mask_blocked(spec, 2, 3, num_heads=1), ~spec.dense(2, 3)[:, 0])


def _mha_and_attend(spec, Q: int, KV: int, *, key_padding: torch.Tensor | None = None):
    """(torch MHA output, attend output with the same weights) for x (B, Q, E), memory
    (B, KV, E).
    """
    torch.manual_seed(0)
    B, E, H = 3, 16, 4
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True).eval()
    g = torch.Generator().manual_seed(1)
    x, mem = torch.randn(B, Q, E, generator=g), torch.randn(B, KV, E, generator=g)
    if key_padding is None:
        attn_mask = mha_attn_mask_blocked(spec, Q, KV, num_heads=H)
        want, _ = mha(x, mem, mem, attn_mask=attn_mask, need_weights=False)
    else:
        want, _ = mha(x, mem, mem, key_padding_mask=key_padding, need_weights=False)
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, E) -> (B, H, L, E / H)
        return t.view(B, t.shape[1], H, E // H).transpose(1, 2)

    out = attend(heads(x @ wq.T + bq), heads(mem @ wk.T + bk), heads(mem @ wv.T + bv), spec)
    got = mha.out_proj(out.transpose(1, 2).reshape(B, Q, E))
    return want, got


@pytest.mark.parametrize(
    ("name", "Q", "KV"),
    [
        ("causal", 9, 9),
        ("causal&padding_lengths", 9, 9),
        ("causal&padding_hf", 9, 9),
        ("documents_ids&causal", 9, 9),
        ("cross", 7, 12),
        ("causal", 5, 12),
    ],
)
def test_mha_attn_mask_in_torch_mha_equals_attend(name: str, Q: int, KV: int) -> None:
    spec, allowed = CASES[name](Q, KV)
    with torch.no_grad():
        want, got = _mha_and_attend(spec, Q, KV)
    live = allowed.any(-1)[:, 0].expand(3, Q)  # (B, Q): rows torch's MHA does not make NaN
    torch.testing.assert_close(got[live], want[live], atol=1e-5, rtol=0)


def test_mha_key_padding_mask_literals() -> None:
    assert mha_key_padding_mask_blocked(torch.tensor([3, 0, 5]), 5).tolist() == [
        [False, False, False, True, True],
        [True] * 5,
        [False] * 5,
    ]
    hf = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert mha_key_padding_mask_blocked(hf).tolist() == [[False, False, True], [True, False, False]]
    assert mha_key_padding_mask_blocked(hf.bool()).tolist() == [
        [False, False, True],
        [True, False, False],
    ]
    assert mha_key_padding_mask_blocked([2, 1], 3).tolist() == [
        [False, False, True],
        [False, True, True],
    ]


def test_mha_key_padding_mask_needs_kv_len_with_lengths() -> None:
    with pytest.raises(ValueError, match="kv_len"):
        mha_key_padding_mask_blocked(torch.tensor([3, 2]))


@pytest.mark.parametrize("source", ["lengths", "attention_mask"])
def test_mha_key_padding_mask_in_torch_mha_equals_attend(source: str) -> None:
    """Key padding alone = cross(q_lengths=Q, kv_lengths): every query real, padded keys never
    attended."""
    Q, KV = 6, 10
    lengths = torch.tensor([10, 4, 7])
    x = lengths if source == "lengths" else (torch.arange(KV) < lengths[:, None]).long()
    kpm = mha_key_padding_mask_blocked(x, KV if source == "lengths" else None)
    assert kpm.shape == (3, KV) and kpm.dtype == torch.bool
    spec = A.cross(torch.full((3,), Q), lengths)
    with torch.no_grad():
        want, got = _mha_and_attend(spec, Q, KV, key_padding=kpm)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# varlen_offsets
# ------------------------------------------------------------------------------------------------
VARLEN_LITERALS = {
    "documents lengths": (
        A.documents([[2, 3], [4]]),
        5,
        [0, 2, 5, 9],
        4,
        [0, 1, 2, 3, 4, 5, 6, 7, 8],
    ),
    "documents ids with padding": (
        A.documents(torch.tensor([[0, 0, 1, -1], [5, 5, 5, 5]])),
        4,
        [0, 2, 3, 7],
        4,
        [0, 1, 2, 4, 5, 6, 7],
    ),
    # an empty document and an all-padding row produce no sequence
    "documents empty doc and row": (
        A.documents([[2, 0, 1], [], [3]]),
        3,
        [0, 2, 3, 6],
        3,
        [0, 1, 2, 6, 7, 8],
    ),
    # the same document id at the end of a row and the start of the next: two sequences
    "documents across rows": (
        A.documents(torch.tensor([[0, 0], [0, 0]])),
        2,
        [0, 2, 4],
        2,
        [0, 1, 2, 3],
    ),
    "padding lengths": (A.padding(torch.tensor([3, 0, 2])), 4, [0, 3, 5], 3, [0, 1, 2, 8, 9]),
    "padding right-padded hf mask": (
        A.padding(torch.tensor([[1, 1, 0], [1, 1, 1]])),
        3,
        [0, 2, 5],
        3,
        [0, 1, 3, 4, 5],
    ),
}


@pytest.mark.parametrize("name", sorted(VARLEN_LITERALS))
def test_varlen_offsets_literal(name: str) -> None:
    spec, L, cu, max_len, idx = VARLEN_LITERALS[name]
    got_cu, got_max, got_idx = varlen_offsets(spec, L)
    assert got_cu.dtype == torch.int32 and got_idx.dtype == torch.int64
    assert (got_cu.tolist(), got_max, got_idx.tolist()) == (cu, max_len, idx)


@pytest.mark.parametrize("name", ["documents_lengths", "documents_ids", "padding_lengths"])
def test_varlen_pack_unpack_and_segments(name: str) -> None:
    """Packing x (B, L, ...) with token_index and unpacking with index_copy restores every real
    token (padding comes back as zeros); each cu_seqlens segment is one document of one row, and
    attention within each segment equals attend under the spec (causal)."""
    L = 23
    spec, allowed = CASES[name](L, L)
    B = spec.batch
    cu, max_len, idx = varlen_offsets(spec, L)
    real = allowed.any(-1)[:, 0]  # (B, L): a token is real iff it attends something here
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, 2, 4, generator=g)
    packed = x.flatten(0, 1)[idx]  # (total, 2, 4)
    assert packed.shape[0] == int(real.sum()) == int(cu[-1])
    back = torch.zeros_like(x.flatten(0, 1)).index_copy(0, idx, packed).view_as(x)
    assert torch.equal(back, x * real[:, :, None, None])

    rows = idx // L
    seg_lens = cu.diff().tolist()
    assert max_len == max(seg_lens) and all(n > 0 for n in seg_lens)
    # within a segment: one row, consecutive positions, mutually attending (same document)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        r = rows[s:e]
        pos = idx[s:e] % L
        assert r.eq(r[0]).all() and torch.equal(pos, torch.arange(int(pos[0]), int(pos[0]) + e - s))
        assert allowed[int(r[0]), 0][pos[:, None], pos[None, :]].all()
    # adjacent segments in the same row are different documents
    for s in cu[1:-1].tolist():
        if int(rows[s]) == int(rows[s - 1]):
            a, b = int(idx[s - 1] % L), int(idx[s] % L)
            assert not bool(allowed[int(rows[s]), 0, a, b])

    q, k, v = (torch.randn(B, 2, L, 4, generator=g) for _ in range(3))
    want = attend(q, k, v, A.causal() & spec)
    pq, pk, pv = (t.transpose(1, 2).flatten(0, 1)[idx] for t in (q, k, v))  # (total, H, D)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        seg = [t[s:e].transpose(0, 1)[None] for t in (pq, pk, pv)]  # (1, H, n, D)
        out = R.attention(*seg, R.causal(e - s, e - s))[0].transpose(0, 1)  # (n, H, D)
        torch.testing.assert_close(
            out.float(), want.transpose(1, 2).flatten(0, 1)[idx[s:e]], atol=1e-5, rtol=0
        )


def test_varlen_offsets_rejects_left_padding_and_holes() -> None:
    with pytest.raises(ValueError, match="right padding"):
        varlen_offsets(A.padding(torch.tensor([[0, 1, 1], [1, 1, 1]])), 3)
    with pytest.raises(ValueError, match="right padding"):
        varlen_offsets(A.padding(torch.tensor([[1, 0, 1]])), 3)


@pytest.mark.parametrize(
    "spec",
    [
        A.causal(),
        A.full(),
        A.sliding_window(3),
        A.sliding_window(2) & A.padding(torch.tensor([3])),
        A.padding(torch.tensor([3])) & A.documents([[2, 1]]),
        A.cross(torch.tensor([2]), torch.tensor([3])),
        A.mask_mod(lambda b, h, q, kv: q >= kv),
    ],
    ids=repr,
)
def test_varlen_offsets_rejects_other_specs(spec: A.AttentionSpec) -> None:
    with pytest.raises(TypeError, match="padding\\(\\) or documents\\(\\)"):
        varlen_offsets(spec, 3)


@pytest.mark.parametrize(
    "segments",
    [A.padding(torch.tensor([3, 1])), A.documents([[2, 1], [1]])],
    ids=repr,
)
def test_varlen_offsets_of_causal_segments_are_the_segments(segments: A.AttentionSpec) -> None:
    # varlen kernels take causality as a flag: the offsets are those of the segments alone.
    want = varlen_offsets(segments, 4)
    for spec in (A.causal() & segments, segments & A.causal() & A.full()):
        got = varlen_offsets(spec, 4)
        assert got[0].tolist() == want[0].tolist() and got[1] == want[1]
        assert got[2].tolist() == want[2].tolist()


def test_varlen_offsets_checks_lengths() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        varlen_offsets(A.padding(torch.tensor([2])), 0)
    with pytest.raises(ValueError, match="sum to 5 > 4"):
        varlen_offsets(A.documents([[2, 3]]), 4)
    with pytest.raises(ValueError, match="length 3"):
        varlen_offsets(A.documents(torch.tensor([[0, 0, 1]])), 4)


def test_varlen_offsets_rejects_lengths_longer_than_seq_len() -> None:
    """padding(lengths=[5]) over 3 positions is an error (as ``dense`` says), not 3 silent
    tokens."""
    with pytest.raises(ValueError, match="5"):
        varlen_offsets(A.padding(torch.tensor([5, 2])), 3)


def test_varlen_offsets_rejects_hf_mask_of_another_length() -> None:
    with pytest.raises(ValueError, match="4"):
        varlen_offsets(A.padding(torch.tensor([[1, 1, 1, 0]])), 3)


def test_mha_key_padding_mask_rejects_lengths_longer_than_kv_len() -> None:
    """Lengths above kv_len are an error (as everywhere else), not silently clipped."""
    with pytest.raises(ValueError, match="5"):
        mha_key_padding_mask_blocked(torch.tensor([5, 2]), 3)
