"""Attention specs: ``spec.dense`` and ``spec.mask_mod`` against naive loop references.

Semantics under test (True = query may attend key):

* ``full()``: everything; ``causal()``: query i attends keys 0 .. p, where p = i + KV - Q is the
  query's position (bottom-right alignment when Q != KV);
* ``sliding_window(w)``: keys p - w + 1 .. p (w keys, itself included);
* ``chunked(s)``: bidirectional inside consecutive chunks of s positions;
* ``padding(lengths or HF attention_mask)``: query and key both real; padded queries attend
  nothing;
* ``documents(ids (B, L) non-decreasing with -1 padding, or per-row lists of lengths)``: same
  document only, padding attends nothing;
* ``prefix_lm(prefix_lengths)``: the prefix keys are visible to every query, causal after;
* ``cross(q_lengths, kv_lengths)``: real query x real key, no offset;
* ``mask_mod(fn)``: any FlexAttention mask_mod (raw indices, head 0).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise import attention as A
from tests.attention.cases import CASES, POSITIONAL, doc_lengths, hf_mask, pad_lengths
from tests.reference import attention as R

# odd sizes (not multiples of any block size), Q == KV and Q < KV (decoding with a cache)
SHAPES = [(37, 37), (50, 50), (129, 129), (7, 19), (1, 19)]


def _assert_equal(got: torch.Tensor, want: torch.Tensor) -> None:
    B = max(got.shape[0], want.shape[0])
    assert got.dtype == torch.bool
    assert got.dim() == 4 and got.shape[1] == 1 and got.shape[2:] == want.shape[2:]
    got, want = got.expand(B, -1, -1, -1), want.expand(B, -1, -1, -1)
    if not torch.equal(got, want):
        b, _, i, j = (got != want).nonzero()[0].tolist()
        raise AssertionError(
            f"first difference at b={b}, q={i}, kv={j}: got {bool(got[b, 0, i, j])}, "
            f"want {bool(want[b, 0, i, j])}; {int((got != want).sum())} differences"
        )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"Q{s[0]}xKV{s[1]}")
@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_matches_reference(name: str, shape: tuple[int, int]) -> None:
    Q, KV = shape
    spec, want = CASES[name](Q, KV)
    got = spec.dense(Q, KV)
    _assert_equal(got, want)
    # the batch dimension is the spec's batch (1 without per-sample data)
    assert got.shape[0] == (spec.batch or 1)


@pytest.mark.parametrize("name", sorted(set(CASES) - POSITIONAL))
def test_dense_q_longer_than_kv(name: str) -> None:
    """Q > KV: queries 0 .. Q - KV - 1 sit before the first key (bottom-right alignment), so
    causal rules give them no key; the reference states each rule for negative positions."""
    spec, want = CASES[name](19, 7)
    _assert_equal(spec.dense(19, 7), want)


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_positional_data_q_longer_than_kv(name: str) -> None:
    """Padding and documents read per-position data at the query's position; with Q > KV the
    first Q - KV queries lie before the sequence. Either the spec refuses (ValueError) or those
    queries are no token of the row and attend nothing. They must never read the data of some
    other position (negative indices wrap around in torch)."""
    Q, KV = 19, 7
    spec, want = CASES[name](Q, KV)
    try:
        got = spec.dense(Q, KV)
    except ValueError:
        return
    _assert_equal(got, want)


def test_padding_lengths_and_hf_mask_agree() -> None:
    """The same padding given as lengths or as an HF mask is the same spec, for any Q, KV."""
    lengths = torch.tensor([5, 2, 0])
    hf = (torch.arange(6) < lengths[:, None]).long()
    for Q, KV in [(6, 6), (3, 6), (1, 6)]:
        assert torch.equal(A.padding(lengths).dense(Q, KV), A.padding(hf).dense(Q, KV))


def test_kv_len_defaults_to_q_len() -> None:
    spec = A.causal() & A.padding(torch.tensor([4, 9]))
    assert torch.equal(spec.dense(9), spec.dense(9, 9))


# ------------------------------------------------------------------------------------------------
# Literal small matrices, one per spec
# ------------------------------------------------------------------------------------------------
LITERALS = {
    "full 2x3": (A.full(), (2, 3), [[[1, 1, 1], [1, 1, 1]]]),
    "causal 4x4": (A.causal(), (4, 4), [[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]]),
    # two new queries over four cached keys: positions 2 and 3
    "causal 2x4": (A.causal(), (2, 4), [[[1, 1, 1, 0], [1, 1, 1, 1]]]),
    # three queries over two keys: query 0 (position -1) sees nothing
    "causal 3x2": (A.causal(), (3, 2), [[[0, 0], [1, 0], [1, 1]]]),
    # window 2: query i attends i - 1 and i (two keys, never three)
    "sliding_window(2) 4x4": (
        A.sliding_window(2),
        (4, 4),
        [[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]],
    ),
    "sliding_window(2) 2x5": (A.sliding_window(2), (2, 5), [[[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]]),
    "chunked(2) 5x5": (
        A.chunked(2),
        (5, 5),
        [[[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]],
    ),
    # chunk of the query position: queries at positions 2, 3, 4
    "chunked(2) 3x5": (A.chunked(2), (3, 5), [[[0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]]),
    "padding(lengths) 3x3": (
        A.padding(torch.tensor([2, 0])),
        (3, 3),
        [[[1, 1, 0], [1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]],
    ),
    "padding(left-padded hf) 3x3": (
        A.padding(torch.tensor([[0, 1, 1]])),
        (3, 3),
        [[[0, 0, 0], [0, 1, 1], [0, 1, 1]]],
    ),
    "prefix_lm 4x4": (
        A.prefix_lm(torch.tensor([2])),
        (4, 4),
        [[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]],
    ),
    "documents(lengths) 5x5": (
        A.documents([[2, 2]]),
        (5, 5),
        [[[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]]],
    ),
    "documents(ids) 4x4": (
        A.documents(torch.tensor([[3, 3, 8, -1]])),
        (4, 4),
        [[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]],
    ),
    "causal&documents 5x5": (
        A.causal() & A.documents([[3, 2]]),
        (5, 5),
        [[[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]],
    ),
    "cross 2x3": (
        A.cross(torch.tensor([1, 2]), torch.tensor([2, 0])),
        (2, 3),
        [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]],
    ),
    "causal|chunked(2) 4x4": (
        A.causal() | A.chunked(2),
        (4, 4),
        [[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]],
    ),
    "mask_mod 3x3": (
        A.mask_mod(lambda b, h, q, kv: kv == 0),
        (3, 3),
        [[[1, 0, 0], [1, 0, 0], [1, 0, 0]]],
    ),
}


@pytest.mark.parametrize("name", sorted(LITERALS))
def test_literal_matrix(name: str) -> None:
    spec, (Q, KV), rows = LITERALS[name]
    assert spec.dense(Q, KV).int()[:, 0].tolist() == rows


# ------------------------------------------------------------------------------------------------
# mask_mod: elementwise, as FlexAttention calls it
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 19), (13, 13), (19, 7)], ids=lambda s: f"Q{s[0]}xKV{s[1]}")
@pytest.mark.parametrize("name", sorted(CASES))
def test_mask_mod_for_elementwise_equals_dense(name: str, shape: tuple[int, int]) -> None:
    Q, KV = shape
    if Q > KV and name in POSITIONAL:
        pytest.skip("Q > KV with per-position data: see test_positional_data_q_longer_than_kv")
    spec, _ = CASES[name](Q, KV)
    got = R.from_mask_mod(spec.mask_mod_for(Q, KV), spec.batch or 1, Q, KV)
    _assert_equal(got, spec.dense(Q, KV))


@pytest.mark.parametrize("name", sorted(CASES))
def test_mask_mod_property_is_for_equal_lengths(name: str) -> None:
    """``spec.mask_mod`` is the mask_mod for Q == KV (whatever that length is)."""
    L = 13
    spec, _ = CASES[name](L, L)
    got = R.from_mask_mod(spec.mask_mod, spec.batch or 1, L, L)
    _assert_equal(got, spec.dense(L))


def test_mask_mod_name_and_broadcasting() -> None:
    spec = A.causal() & A.padding(torch.tensor([3, 5]))
    fn = spec.mask_mod_for(5, 5)
    assert fn.__name__.startswith("maskwise_")
    b = torch.arange(2).view(2, 1, 1)
    q = torch.arange(5).view(1, 5, 1)
    kv = torch.arange(5).view(1, 1, 5)
    assert torch.equal(fn(b, torch.tensor(0), q, kv), spec.dense(5)[:, 0])


# ------------------------------------------------------------------------------------------------
# Composition, repr, devices
# ------------------------------------------------------------------------------------------------
def test_composition_is_and_or_of_dense() -> None:
    """``&`` / ``|`` are elementwise and / or of the parts (and distribute like them)."""
    a = A.causal()
    b = A.documents(doc_lengths(37))
    c = A.padding(pad_lengths(37))
    assert torch.equal((a & b).dense(37), a.dense(37) & b.dense(37))
    assert torch.equal((a | b).dense(37), a.dense(37) | b.dense(37))
    assert torch.equal(((a | b) & c).dense(37), (a.dense(37) | b.dense(37)) & c.dense(37))
    assert torch.equal((a & (b | c)).dense(37), ((a & b) | (a & c)).dense(37))


def test_batch_of_compositions() -> None:
    assert A.causal().batch is None
    assert (A.causal() & A.sliding_window(3)).batch is None
    assert (A.causal() & A.padding(torch.tensor([1, 2]))).batch == 2
    assert (A.padding(torch.tensor([1, 2])) | A.causal()).batch == 2
    assert A.documents([[1], [2], []]).batch == 3
    assert A.padding(hf_mask(9)).batch == 3


def test_repr_names_the_parts() -> None:
    spec = (A.causal() | A.chunked(4)) & A.sliding_window(3)
    assert repr(spec) == "((causal() | chunked(4)) & sliding_window(3))"


def test_dense_device_argument_keeps_values() -> None:
    spec = A.causal() & A.documents(doc_lengths(20)) & A.padding(hf_mask(20))
    assert torch.equal(spec.dense(20, device="cpu"), spec.dense(20))
    assert spec.dense(20, device="cpu").device.type == "cpu"


def test_hf_mask_with_bool_and_float_values() -> None:
    """An HF attention mask may be long, bool or float (1.0 = real)."""
    m = hf_mask(11)
    want = A.padding(m).dense(11)
    assert torch.equal(A.padding(m.bool()).dense(11), want)
    assert torch.equal(A.padding(m.float()).dense(11), want)


@pytest.mark.gpu
def test_dense_on_cuda_equals_cpu() -> None:
    for name in sorted(CASES):
        spec, want = CASES[name](37, 50)
        got = spec.to("cuda").dense(37, 50)
        assert got.device.type == "cuda", name
        _assert_equal(got.cpu(), want)


# ------------------------------------------------------------------------------------------------
# Property: random packed documents, causal or not, any Q <= KV
# ------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 6), max_size=5), min_size=1, max_size=3),
    extra=st.integers(0, 4),
    q_cut=st.integers(0, 30),
    window=st.integers(1, 8),
)
def test_random_documents_with_window(
    rows: list[list[int]], extra: int, q_cut: int, window: int
) -> None:
    KV = max(1, max(sum(r) for r in rows) + extra)
    Q = max(1, KV - q_cut)
    spec = A.documents(rows) & A.sliding_window(window)
    want = R.documents(rows, Q, KV) & R.sliding_window(window, Q, KV)
    _assert_equal(spec.dense(Q, KV), want)
