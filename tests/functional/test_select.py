import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskwise as mw
from maskwise.functional import top_k_per_row
from tests.reference import text as ref


def random_valid(B, N, seed, p=0.8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, N, generator=g) < p


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sample_mask_matches_reference(exact, weighted):
    valid = random_valid(7, 33, seed=0)
    weights = torch.rand(7, 33, generator=torch.Generator().manual_seed(1)) if weighted else None
    rate = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0], dtype=torch.float64)
    got = mw.sample_mask(
        valid, rate, exact=exact, weights=weights, generator=torch.Generator().manual_seed(5)
    )
    want = ref.sample_mask(
        valid, rate, exact=exact, weights=weights, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(got, want)


def test_literal_small_case():
    valid = torch.tensor([[True, True, False, True], [False, False, False, False]])
    assert mw.sample_mask(valid, 1.0).tolist() == [[True, True, False, True], [False] * 4]
    assert not mw.sample_mask(valid, 0.0).any()
    m = mw.sample_mask(valid, 2 / 3, exact=True, generator=torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [2, 0]


def test_exact_counts_round_half_even():
    valid = torch.ones(4, 10, dtype=torch.bool)
    valid[1, 5:] = False  # 5 valid: 0.5 * 5 = 2.5 -> 2 (Python round)
    valid[2, 7:] = False  # 7 valid: 0.5 * 7 = 3.5 -> 4
    m = mw.sample_mask(valid, 0.5, exact=True, generator=torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [5, round(2.5), round(3.5), 5]


def test_bernoulli_rate_statistics():
    # 200k valid positions: std of the masked fraction is sqrt(.15 * .85 / 2e5) ~ 8e-4;
    # 5 sigma = 0.004.
    valid = random_valid(400, 625, seed=3)
    m = mw.sample_mask(valid, 0.15, generator=torch.Generator().manual_seed(0))
    assert not (m & ~valid).any()
    assert abs(m.sum().item() / valid.sum().item() - 0.15) < 0.004


def test_weighted_bernoulli_mean_and_proportionality():
    # Weights 1 and 3: p = rate * n * w / sum(w); with half of each, p1 = 0.1, p3 = 0.3, mean 0.2.
    B, N = 2000, 100
    valid = torch.ones(B, N, dtype=torch.bool)
    w = torch.ones(B, N)
    w[:, ::2] = 3.0
    m = mw.sample_mask(valid, 0.2, weights=w, generator=torch.Generator().manual_seed(0))
    heavy, light = m[:, ::2].float().mean().item(), m[:, 1::2].float().mean().item()
    assert abs(heavy - 0.3) < 0.005 and abs(light - 0.1) < 0.005  # std ~ 1.5e-3
    assert abs(m.float().mean().item() - 0.2) < 0.004


def test_weighted_exact_prefers_heavy_and_skips_zero_weight():
    B, N = 3000, 10
    valid = torch.ones(B, N, dtype=torch.bool)
    w = torch.ones(B, N)
    w[:, 0] = 0.0  # never chosen
    w[:, 1] = 9.0
    m = mw.sample_mask(
        valid, 0.2, exact=True, weights=w, generator=torch.Generator().manual_seed(0)
    )
    assert (m.sum(1) == 2).all()
    assert not m[:, 0].any()
    # Sequential draws without replacement: P(heavy chosen) = 9/17 + 8/17 * 9/16 = 0.794;
    # std over 3000 rows is 0.0074, the tolerance is 3.4 sigma.
    assert abs(m[:, 1].float().mean().item() - (9 / 17 + 8 / 17 * 9 / 16)) < 0.025
    # A row whose positive weights are fewer than k gets fewer.
    w2 = torch.zeros(1, N)
    w2[0, 3] = 1.0
    m2 = mw.sample_mask(torch.ones(1, N, dtype=torch.bool), 0.5, exact=True, weights=w2)
    assert m2.tolist()[0] == [j == 3 for j in range(N)]


def test_exact_is_uniform_over_positions():
    B, N = 20000, 8
    valid = torch.ones(B, N, dtype=torch.bool)
    m = mw.sample_mask(valid, 0.25, exact=True, generator=torch.Generator().manual_seed(0))
    freq = m.float().mean(0)
    assert torch.allclose(freq, torch.full((N,), 0.25), atol=0.012)  # std ~3e-3 per position


def test_determinism_and_global_rng_untouched():
    valid = random_valid(4, 50, seed=1)
    state = torch.get_rng_state()
    a = mw.sample_mask(valid, 0.3, generator=torch.Generator().manual_seed(9))
    b = mw.sample_mask(valid, 0.3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    c = mw.sample_mask(valid, 0.3, generator=torch.Generator().manual_seed(10))
    assert not torch.equal(a, c)


def test_keyed_generator_row_independence():
    valid = torch.ones(3, 40, dtype=torch.bool)
    keys = mw.random.hash_keys(0, 0, torch.tensor([11, 12, 13]))
    full = mw.sample_mask(valid, 0.3, exact=True, generator=mw.random.KeyedGenerator(keys))
    # Row 12 alone, with less padding, gives the same mask on its valid part.
    alone = mw.sample_mask(
        valid[:1, :40], 0.3, exact=True, generator=mw.random.KeyedGenerator(keys[1:2])
    )
    assert torch.equal(full[1], alone[0])


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(rate=1.5), ValueError),
        (dict(rate=-0.1), ValueError),
        (dict(rate="0.1"), TypeError),
        (dict(rate=torch.tensor([0.1, 1.2])), ValueError),
        (dict(rate=torch.tensor([0.1, 0.2, 0.3])), ValueError),
        (dict(rate=0.1, weights=torch.ones(2, 3)), ValueError),
        (dict(rate=0.1, weights=-torch.ones(2, 5)), ValueError),
        (dict(rate=0.1, weights=torch.ones(2, 5, dtype=torch.long)), TypeError),
        (dict(rate=0.1, exact=1), TypeError),
    ],
)
def test_bad_input(kwargs, err):
    valid = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(err):
        mw.sample_mask(valid, **kwargs)


def test_bad_valid():
    with pytest.raises(TypeError, match="bool"):
        mw.sample_mask(torch.ones(2, 5), 0.1)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        mw.sample_mask(torch.ones(5, dtype=torch.bool), 0.1)


def test_error_message_echoes_value():
    with pytest.raises(ValueError, match=r"1\.5"):
        mw.sample_mask(torch.ones(1, 3, dtype=torch.bool), 1.5)


def test_empty_batch_and_all_invalid_rows():
    assert mw.sample_mask(torch.ones(0, 5, dtype=torch.bool), 0.5).shape == (0, 5)
    none_valid = torch.zeros(3, 5, dtype=torch.bool)
    for exact in (False, True):
        assert not mw.sample_mask(none_valid, 1.0, exact=exact).any()


def test_top_k_per_row_literal():
    s = torch.tensor([[5.0, 1.0, 3.0, -float("inf")], [0.0, 0.0, 2.0, 1.0]])
    assert top_k_per_row(s, torch.tensor([2, 0])).tolist() == [
        [True, False, True, False],
        [False, False, False, False],
    ]


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 5),
    N=st.integers(1, 40),
    rate=st.floats(0, 1),
    exact=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_property_never_outside_valid_and_exact_counts(B, N, rate, exact, seed):
    valid = random_valid(B, N, seed=seed, p=0.6)
    m = mw.sample_mask(valid, rate, exact=exact, generator=torch.Generator().manual_seed(seed))
    assert not (m & ~valid).any()
    if exact:
        assert m.sum(1).tolist() == [round(rate * int(n)) for n in valid.sum(1)]
