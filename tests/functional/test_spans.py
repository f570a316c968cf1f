import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskwise as mw
from tests.reference import text as ref


def prefix_valid(B, L, seed, min_len=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, L + 1, (B,), generator=g)
    return torch.arange(L) < lengths[:, None]


def all_runs(m):
    return [ref.runs(row.tolist()) for row in m]


# ---------------------------------------------------------------- length distributions
def test_span_length_pmf():
    geo = mw.span_length_pmf("geometric", 5, 10)
    assert geo.shape == (10,) and math.isclose(float(geo.sum()), 1.0)
    # SpanBERT's p = 0.2 clipped at 10: mean 3.8.
    assert math.isclose(float((geo * torch.arange(1, 11)).sum()), 3.78, abs_tol=0.02)
    poi = mw.span_length_pmf("poisson", 3, 10)
    assert int(poi.argmax()) + 1 in (2, 3)
    assert mw.span_length_pmf([0, 1, 1], 3, 10).tolist() == [0.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="distribution"):
        mw.span_length_pmf("zipf", 3, 10)
    with pytest.raises(ValueError, match="mean_length"):
        mw.span_length_pmf("geometric", 0.5, 10)
    with pytest.raises(ValueError, match="max_length"):
        mw.span_length_pmf("geometric", 3, 0)
    with pytest.raises(ValueError, match="exceeds"):
        mw.span_length_pmf("fixed", 12, 10)
    with pytest.raises(ValueError, match="non-negative"):
        mw.span_length_pmf([-1, 2], 3, 10)


# ---------------------------------------------------------------- random-length spans
@pytest.mark.parametrize("rate", [0.05, 0.15, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("distribution", ["geometric", "poisson", "fixed"])
def test_span_rate_is_unbiased(rate, distribution):
    # Every valid position is masked with probability `rate`, short rows included.
    # ~100k valid positions; spans correlate neighbours, so allow 0.012.
    valid = prefix_valid(2000, 100, seed=1)
    m = mw.mask_spans(
        valid,
        rate,
        mean_length=3,
        distribution=distribution,
        generator=torch.Generator().manual_seed(2),
    )
    assert not (m & ~valid).any()
    assert abs(m.sum().item() / valid.sum().item() - rate) < 0.012
    # The first position too (stationary start).
    assert abs(m[:, 0].float().mean().item() - rate) < 0.04


def test_span_lengths_follow_the_distribution():
    # Runs that touch neither row end have exactly the drawn length (gaps >= 1 keep them apart).
    valid = torch.ones(3000, 200, dtype=torch.bool)
    pmf = mw.span_length_pmf("geometric", 5, 10)
    m = mw.mask_spans(
        valid, 0.15, mean_length=5, max_length=10, generator=torch.Generator().manual_seed(0)
    )
    lengths = [e - s for row in all_runs(m) for s, e in row if s > 0 and e < 200]
    assert max(lengths) <= 10
    counts = torch.bincount(torch.tensor(lengths), minlength=11)[1:].double()
    freq = counts / counts.sum()
    assert torch.allclose(freq, pmf, atol=0.01)  # ~40k spans
    mean = sum(lengths) / len(lengths)
    assert abs(mean - float((pmf * torch.arange(1, 11)).sum())) < 0.05


def test_fixed_spans_have_fixed_length():
    valid = torch.ones(200, 100, dtype=torch.bool)
    m = mw.mask_spans(
        valid, 0.2, mean_length=4, distribution="fixed", generator=torch.Generator().manual_seed(0)
    )
    assert {e - s for row in all_runs(m) for s, e in row if s > 0 and e < 100} == {4}


def test_spans_never_cross_padding_or_specials():
    valid = prefix_valid(500, 50, seed=3)
    valid[:, 0] = False  # [CLS]
    valid[:, 20] = False  # an inner [SEP]
    m = mw.mask_spans(valid, 0.5, mean_length=6, generator=torch.Generator().manual_seed(0))
    assert not (m & ~valid).any()


def test_rate_zero_and_one():
    valid = prefix_valid(20, 30, seed=0)
    for exact in (False, True):
        assert not mw.mask_spans(valid, 0.0, exact=exact).any()
        assert torch.equal(mw.mask_spans(valid, 1.0, exact=exact), valid)


# ---------------------------------------------------------------- exact (T5) spans
@pytest.fixture(params=["drawn", "ranked"])
def t5_sampler(request, monkeypatch):
    """Both exact samplers: on the CPU a torch.Generator draws the cut and insertion points
    themselves; keyed generators, GPUs and torch.compile rank a key per position."""
    if request.param == "ranked":
        from maskwise.functional import spans

        monkeypatch.setattr(spans, "draws_on_host", lambda generator, device: False)
    return request.param


@pytest.mark.usefixtures("t5_sampler")
def test_exact_matches_t5_arithmetic():
    valid = prefix_valid(400, 64, seed=4)
    for rate, mean in [(0.15, 3.0), (0.5, 2.0), (0.3, 8.0), (0.9, 3.0)]:
        m = mw.mask_spans(
            valid, rate, mean_length=mean, exact=True, generator=torch.Generator().manual_seed(1)
        )
        assert not (m & ~valid).any()
        for b in range(valid.shape[0]):
            n = int(valid[b].sum())
            n_noise, n_spans = ref.t5_counts(n, rate, mean)
            runs = ref.runs(m[b, :n].tolist())
            assert sum(e - s for s, e in runs) == n_noise
            assert len(runs) == n_spans


@pytest.mark.usefixtures("t5_sampler")
def test_exact_placement_is_uniform_on_short_rows():
    # 20 tokens at rate 0.15: 3 masked tokens in one span, anywhere. T5's own layout would always
    # mask the last 3; here every position is masked with probability 3/20 at the ends of the
    # row reduced by the span's contiguity: start s is uniform on 0..17.
    valid = torch.ones(20000, 20, dtype=torch.bool)
    m = mw.mask_spans(
        valid, 0.15, mean_length=3, exact=True, generator=torch.Generator().manual_seed(0)
    )
    starts = m.float().argmax(1)
    freq = torch.bincount(starts, minlength=18).double() / starts.numel()
    assert torch.allclose(
        freq, torch.full((18,), 1 / 18, dtype=torch.float64), atol=0.01
    )  # std 1.6e-3
    # Separate spans never touch: 40 tokens at 0.5 in round(20 / 2) = 10 spans.
    m2 = mw.mask_spans(
        torch.ones(500, 40, dtype=torch.bool),
        0.5,
        mean_length=2,
        exact=True,
        generator=torch.Generator().manual_seed(1),
    )
    assert all(len(ref.runs(row.tolist())) == 10 for row in m2)


@pytest.mark.usefixtures("t5_sampler")
def test_exact_segmentation_is_uniform():
    # 10 noise tokens in 2 spans: the first span's length is uniform on 1..9.
    valid = torch.ones(9000, 40, dtype=torch.bool)
    m = mw.mask_spans(
        valid, 0.25, mean_length=5, exact=True, generator=torch.Generator().manual_seed(0)
    )
    first = torch.tensor([ref.runs(row.tolist())[0] for row in m[:3000]])
    lengths = first[:, 1] - first[:, 0]
    freq = torch.bincount(lengths, minlength=10)[1:].double() / lengths.numel()
    assert torch.allclose(freq, torch.full((9,), 1 / 9, dtype=torch.float64), atol=0.025)


def test_keyed_spans_independent_of_padding():
    keys = mw.random.hash_keys(3, 0, torch.arange(4))
    valid = prefix_valid(4, 30, seed=5, min_len=10)
    for exact in (False, True):
        a = mw.mask_spans(valid, 0.3, exact=exact, generator=mw.random.KeyedGenerator(keys))
        wide = torch.nn.functional.pad(valid, (0, 25))
        b = mw.mask_spans(wide, 0.3, exact=exact, generator=mw.random.KeyedGenerator(keys))
        assert torch.equal(a, b[:, :30]) and not b[:, 30:].any()


def test_spans_bad_input():
    valid = torch.ones(2, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="mean_length"):
        mw.mask_spans(valid, 0.2, mean_length=0)
    with pytest.raises(ValueError, match="1.5"):
        mw.mask_spans(valid, 1.5)
    with pytest.raises(TypeError, match="bool"):
        mw.mask_spans(valid.long(), 0.2)
    with pytest.raises(ValueError, match="distribution"):
        mw.mask_spans(valid, 0.2, distribution="uniform")


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 5),
    L=st.integers(1, 50),
    rate=st.floats(0, 1),
    exact=st.booleans(),
    mean=st.floats(1, 8),
    seed=st.integers(0, 10**6),
)
def test_property_spans_inside_valid(B, L, rate, exact, mean, seed):
    valid = prefix_valid(B, L, seed, min_len=0)
    m = mw.mask_spans(
        valid, rate, mean_length=mean, exact=exact, generator=torch.Generator().manual_seed(seed)
    )
    assert not (m & ~valid).any()
    if exact:
        for b in range(B):
            n = int(valid[b].sum())
            n_noise, n_spans = ref.t5_counts(n, rate, mean)
            assert int(m[b].sum()) == n_noise and len(ref.runs(m[b].tolist())) == n_spans


# ---------------------------------------------------------------- t5_corrupt
def test_t5_corrupt_matches_reference():
    g = torch.Generator().manual_seed(0)
    B, L = 16, 24
    ids = torch.randint(5, 100, (B, L), generator=g)
    valid = prefix_valid(B, L, seed=1, min_len=2)
    am = valid.long()
    ids[~valid] = 0
    ends = valid.sum(1) - 1
    ids[torch.arange(0, B, 2), ends[::2]] = 1  # half the rows already end with EOS
    masked = mw.mask_spans(valid & (ids != 1), 0.3, generator=g)
    sentinels = list(range(199, 180, -1))
    for attention in (am, None):
        got = mw.t5_corrupt(
            ids, masked, sentinel_ids=sentinels, eos_id=1, pad_id=0, attention_mask=attention
        )
        want = ref.t5_corrupt(
            ids, masked, sentinel_ids=sentinels, eos_id=1, pad_id=0, attention_mask=attention
        )
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_t5_corrupt_round_trip():
    ids = torch.tensor([[10, 11, 12, 13, 14, 15, 16]])
    masked = torch.tensor([[True, False, True, True, False, False, True]])
    x, y = mw.t5_corrupt(ids, masked, sentinel_ids=[90, 91, 92], eos_id=1, pad_id=0)
    assert x.tolist() == [[90, 11, 91, 14, 15, 92, 1]]
    assert y.tolist() == [[90, 10, 91, 12, 13, 92, 16, 1]]


def test_t5_corrupt_errors():
    ids = torch.tensor([[10, 11, 12, 13]])
    masked = torch.tensor([[True, False, True, False]])
    with pytest.raises(ValueError, match="2 masked spans but only 1 sentinel"):
        mw.t5_corrupt(ids, masked, sentinel_ids=[90], eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match="shape"):
        mw.t5_corrupt(ids, masked[:, :3], sentinel_ids=[90, 91], eos_id=1, pad_id=0)


def test_t5_corrupt_empty_rows():
    x, y = mw.t5_corrupt(
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool),
        sentinel_ids=[99],
        eos_id=1,
        pad_id=0,
    )
    assert x.tolist() == [[1], [1]] and y.tolist() == [[1], [1]]
