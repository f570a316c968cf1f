"""Property tests over the classes of input the adversarial review found fragile: every batched
attention spec and ``attend`` over small batches including B = 0, random lengths and integer
dtypes; every masker over batches including B = 0 and rates including 0 and 1; every schedule's
endpoints over random settings."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise import attention as A
from maskwise.attention import attend
from maskwise.dynamic import constant, cosine, cosine_decay, linear, linear_decay, step
from maskwise.functional import (
    corrupt,
    mask_coarse,
    mask_features,
    mask_patches,
    mask_spans,
    mask_time_spans,
    mask_tokens,
    mask_words,
    spec_augment,
)
from tests.reference import attention as ref

INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]
RATES = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1))


@st.composite
def batched_specs(draw: st.DrawFn) -> tuple[A.AttentionSpec, torch.Tensor, int]:
    """(spec, its brute-force dense reference, Q = KV = L) for a random batched spec."""
    B = draw(st.integers(0, 3))
    L = draw(st.integers(1, 7))
    dtype = draw(st.sampled_from(INT_DTYPES))
    lengths = draw(st.lists(st.integers(0, L), min_size=B, max_size=B))
    kind = draw(st.sampled_from(["padding", "attention_mask", "cross", "prefix_lm", "doc_lengths"]))
    if kind == "padding":
        spec, want = A.padding(torch.tensor(lengths, dtype=dtype)), ref.padding(lengths, L, L)
    elif kind == "attention_mask":
        am = torch.tensor([[j < n for j in range(L)] for n in lengths], dtype=torch.bool)
        am = am.view(B, L).to(draw(st.sampled_from([torch.bool, *INT_DTYPES])))
        spec, want = A.padding(am), ref.padding(am, L, L)
    elif kind == "cross":
        other = draw(st.lists(st.integers(0, L), min_size=B, max_size=B))
        spec = A.cross(torch.tensor(lengths, dtype=dtype), torch.tensor(other, dtype=dtype))
        want = ref.cross(lengths, other, L, L)
    elif kind == "prefix_lm":
        spec, want = A.prefix_lm(torch.tensor(lengths, dtype=dtype)), ref.prefix_lm(lengths, L, L)
    else:
        docs = [[n] if n else [] for n in lengths]
        spec, want = A.documents(docs), ref.documents(docs, L, L)
    if draw(st.booleans()):
        spec, want = A.causal() & spec, ref.causal(L, L) & want
    return spec, want, L


@settings(max_examples=60, deadline=None)
@given(case=batched_specs())
def test_batched_specs_over_any_batch(case: tuple[A.AttentionSpec, torch.Tensor, int]) -> None:
    spec, want, L = case
    B = want.shape[0]
    assert spec.batch == B
    assert torch.equal(spec.dense(L), want)
    assert spec.block_mask(L, block_size=2).to_dense().shape[0] == B


@settings(max_examples=40, deadline=None)
@given(case=batched_specs(), heads=st.sampled_from([(2, 1), (2, 2)]), seed=st.integers(0, 99))
def test_attend_over_any_batch(
    case: tuple[A.AttentionSpec, torch.Tensor, int], heads: tuple[int, int], seed: int
) -> None:
    spec, want, L = case
    B = want.shape[0]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, heads[0], L, 4, generator=g)
    k, v = (torch.randn(B, heads[1], L, 4, generator=g) for _ in range(2))
    out = attend(q, k, v, spec)
    assert out.shape == (B, heads[0], L, 4)
    assert torch.allclose(out.double(), ref.attention(q, k, v, want), atol=1e-5)


# --------------------------------------------------------------------------------------------
# maskers


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(0, 3),
    L=st.integers(0, 12),
    rate=RATES,
    exact=st.booleans(),
    dtype=st.sampled_from(INT_DTYPES),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_text_maskers_over_any_batch_and_rate(
    B: int, L: int, rate: float, exact: bool, dtype: torch.dtype, weighted: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (B, L), generator=g).to(dtype)
    am = torch.rand(B, L, generator=g) < 0.8
    valid = am & (ids != 0)
    w = torch.rand(B, L, generator=g) + 0.1 if weighted else None
    m = mask_tokens(
        ids, rate, special_ids=[0], attention_mask=am, exact=exact, weights=w, generator=g
    )
    assert m.shape == (B, L) and m.dtype == torch.bool and not (m & ~valid).any()
    if rate == 0.0:
        assert not m.any()
    if rate == 1.0 and (exact or w is None):  # weighted Bernoulli draws clip below 1
        assert torch.equal(m, valid)
    if exact:
        assert m.sum(1).tolist() == torch.round(rate * valid.sum(1).double()).long().tolist()
    x, y = corrupt(ids, m, mask_id=1, vocab_size=20, special_ids=[0, 1], generator=g)
    assert x.dtype == dtype and y.shape == (B, L) and (y[~m] == -100).all()
    word_dtype = torch.int64 if dtype == torch.uint8 else dtype  # -1 = no word
    word_ids = torch.where(valid, torch.arange(L).expand(B, L) // 2, -1).to(word_dtype)
    words = mask_words(word_ids, rate, exact=exact, weights=w, generator=g)
    assert words.shape == (B, L) and not (words & ~valid).any()
    if rate == 1.0 and (exact or w is None):
        assert torch.equal(words, valid)
    for ex in (False, True):
        spans = mask_spans(valid, rate, mean_length=2.0, exact=ex, generator=g)
        assert spans.shape == (B, L) and not (spans & ~valid).any()
        if rate == 0.0:
            assert not spans.any()
        if rate == 1.0:
            assert torch.equal(spans, valid)


@settings(max_examples=50, deadline=None)
@given(
    B=st.integers(0, 3),
    grid=st.integers(1, 5),
    rate=RATES,
    seed=st.integers(0, 2**16),
)
def test_vision_maskers_over_any_batch_and_rate(B: int, grid: int, rate: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    N = grid * grid
    m = mask_patches(B, N, rate, generator=g)
    assert m.shape == (B, N) and (m.sum(1) == round(rate * N)).all()
    c = mask_coarse(B, grid, rate, unit=2, generator=g)
    assert c.shape == (B, grid, grid)
    if rate in (0.0, 1.0):
        assert bool((c == bool(rate)).all())
    x = torch.randn(B, N, 3)
    xm, fm = mask_features(x, rate, dims=-1, generator=g)
    assert xm.shape == x.shape and fm.shape[:2] == (B, N)
    if rate == 0.0:
        assert torch.equal(xm, x)
    if rate == 1.0:
        assert not xm.any()


@settings(max_examples=50, deadline=None)
@given(
    B=st.integers(0, 3),
    T=st.integers(0, 30),
    rate=RATES,
    value=st.sampled_from([0.0, "mean"]),
    dtype=st.sampled_from(INT_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_speech_maskers_over_any_batch_and_rate(
    B: int, T: int, rate: float, value: float | str, dtype: torch.dtype, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, T + 1, (B,), generator=g).to(dtype)
    spans = mask_time_spans(lengths, T, rate, span=3, generator=g)
    real = torch.arange(T) < lengths.long().unsqueeze(1)
    assert spans.shape == (B, T) and not (spans & ~real).any()
    if rate == 0.0:
        assert not spans.any()
    spec = torch.randn(B, 6, T)
    out = spec_augment(spec, freq_width=3, time_width=min(T, 4), lengths=lengths, value=value)
    assert out.spec.shape == spec.shape and torch.isfinite(out.spec).all()
    assert not (out.time_masked & ~real).any()


# --------------------------------------------------------------------------------------------
# schedules


@settings(max_examples=100, deadline=None)
@given(
    start=st.floats(0, 1),
    end=st.floats(0, 1),
    steps=st.integers(1, 10**6),
    kind=st.sampled_from(["linear", "cosine", "cosine_decay", "linear_decay"]),
)
def test_every_schedule_hits_its_endpoints_exactly(
    start: float, end: float, steps: int, kind: str
) -> None:
    if kind == "linear":
        s = linear(start, end, steps)
    elif kind == "cosine":
        s = cosine(start, end, steps)
    else:
        start, end = max(start, end), min(start, end)  # a decay: from start down to its floor
        s = (cosine_decay if kind == "cosine_decay" else linear_decay)(start, steps, floor=end)
    assert s(0) == start and s(-1) == start
    assert s(steps) == end and s(steps + 1) == end and s(10 * steps) == end
    lo, hi = min(start, end), max(start, end)
    for t in (1, steps // 3, steps // 2, steps - 1):
        assert lo - 1e-12 <= s(t) <= hi + 1e-12


@settings(max_examples=50, deadline=None)
@given(
    rates=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    first=st.integers(0, 100),
    gaps=st.lists(st.integers(1, 100), min_size=4, max_size=4),
    rate=st.floats(0, 1),
)
def test_step_and_constant_endpoints(
    rates: list[float], first: int, gaps: list[int], rate: float
) -> None:
    milestones = [first + sum(gaps[:i]) for i in range(len(rates) - 1)]
    s = step(rates, milestones)
    assert s(-1) == rates[0]
    assert s(milestones[-1] if milestones else 0) == rates[-1]
    assert constant(rate)(0) == rate == constant(rate)(10**9)
    assert not math.isnan(s(10**9))
