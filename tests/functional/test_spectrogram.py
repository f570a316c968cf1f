"""SpecAugment (``spec_augment``), ``interval_mask`` and wav2vec2 time spans (``mask_time_spans``).

Vectorization is checked against the naive references in ``tests/reference/speech.py`` (same draws,
plain loops); the sampling itself against exact distributions, Hugging Face's
``_compute_mask_indices`` and the paper's policies; the contracts (lengths, rows independent,
determinism, errors) directly.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskwise as mw
from maskwise.functional import interval_mask
from maskwise.random import KeyedGenerator, hash_keys
from tests.reference import speech as ref
from tests.reference.text import runs


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def keyed(seed, rows):
    return KeyedGenerator(hash_keys(seed, torch.as_tensor(rows, dtype=torch.long)))


def random_spec(shape, seed=0):
    return torch.randn(shape, generator=seeded(seed))


def union_applied(x, freq, time, fill):
    """``x`` with ``fill`` wherever the frequency band or the frame is masked, broadcast by hand."""
    lead = (x.shape[0],) + (1,) * (x.dim() - 3)
    hit = freq.view(*lead, -1, 1) | time.view(*lead, 1, -1)  # (B, [1,] F, T)
    return torch.where(hit, fill, x)


def coverage_profile(size, max_width):
    """Exact P(position p is inside one mask) for width ~ U{0..W}, start ~ U{0..size - w}."""
    prof = [0.0] * size
    for w in range(max_width + 1):
        n_starts = size - w + 1
        for s in range(n_starts):
            for p in range(s, s + w):
                prof[p] += 1.0 / ((max_width + 1) * n_starts)
    return torch.tensor(prof)


# ---------------------------------------------------------------- interval_mask
def test_interval_mask_literal():
    starts = torch.tensor([[1, 2, 5], [0, 0, 0], [4, 0, 6]])
    widths = torch.tensor([[2, 3, 0], [0, 1, 0], [9, 2, 3]])  # zero widths add nothing; ends clip
    assert interval_mask(starts, widths, 6).int().tolist() == [
        [0, 1, 1, 1, 1, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 1],
    ]


def test_interval_mask_matches_reference():
    g = seeded(3)
    size = 25
    starts = torch.randint(0, size + 3, (40, 6), generator=g)  # some start past the end
    widths = torch.randint(-2, size + 1, (40, 6), generator=g)  # negative widths are empty
    assert torch.equal(interval_mask(starts, widths, size), ref.interval_mask(starts, widths, size))


def test_interval_mask_intervals_before_zero_are_clipped_not_an_error():
    """``[-5, -3)`` lies wholly before the axis: it must add nothing (and ``[-2, 1)`` covers
    frame 0), as the docstring's "union of intervals" says; it must not index out of bounds."""
    starts = torch.tensor([[-5, 3], [-2, 4]])
    widths = torch.tensor([[2, 1], [3, 1]])
    assert torch.equal(interval_mask(starts, widths, 6), ref.interval_mask(starts, widths, 6))


# ---------------------------------------------------------------- spec_augment: reference
@pytest.mark.parametrize("value", [0.0, -1.5, "mean"])
@pytest.mark.parametrize("time_masks", [3, 0.02])
@pytest.mark.parametrize("time_width", [30, 0.3])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("ndim", [3, 4])
def test_spec_augment_matches_reference(ndim, with_lengths, time_width, time_masks, value):
    B, C, F, T = 6, 2, 20, 120
    x = random_spec((B, C, F, T) if ndim == 4 else (B, F, T), seed=1)
    lengths = torch.tensor([120, 97, 64, 31, 10, 0]) if with_lengths else None
    kw = dict(
        freq_masks=2,
        freq_width=7,
        time_masks=time_masks,
        time_width=time_width,
        max_time_masks=4,
        lengths=lengths,
        value=value,
    )
    got = mw.spec_augment(x, **kw, generator=seeded(7))
    want_spec, want_f, want_t = ref.spec_augment(x, **kw, generator=seeded(7))
    assert torch.equal(got.freq_masked, want_f)
    assert torch.equal(got.time_masked, want_t)
    if value == "mean":
        torch.testing.assert_close(got.spec, want_spec, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got.spec, want_spec)
    assert got.time_masked.any() and got.freq_masked.any()  # the comparison is not vacuous


@pytest.mark.parametrize("value", [0.0, -1.5, "mean"])
@pytest.mark.parametrize("ndim", [3, 4])
def test_cpu_row_writes_equal_the_single_pass_path(monkeypatch, ndim, value):
    # On the CPU the frequency rows are written by index; GPUs and torch.compile take one pass
    # over the union. The same draws must give the same spectrogram either way.
    x = random_spec((6, 2, 20, 120) if ndim == 4 else (6, 20, 120), seed=2)
    kw = dict(freq_masks=2, freq_width=7, time_masks=3, time_width=30, value=value)
    lengths = torch.tensor([120, 97, 64, 31, 10, 0])
    rows = mw.spec_augment(x, **kw, lengths=lengths, generator=seeded(8))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    one_pass = mw.spec_augment(x, **kw, lengths=lengths, generator=seeded(8))
    assert rows.freq_masked.any() and rows.time_masked.any()
    assert torch.equal(rows.spec, one_pass.spec)


def test_spec_augment_matches_reference_with_keyed_generator():
    x = random_spec((5, 16, 50), seed=2)
    lengths = torch.tensor([50, 40, 30, 12, 1])
    kw = dict(freq_masks=3, freq_width=5, time_masks=0.1, time_width=0.2, lengths=lengths)
    got = mw.spec_augment(x, **kw, generator=keyed(0, range(5)))
    want = ref.spec_augment(x, **kw, generator=keyed(0, range(5)))
    assert torch.equal(got.spec, want[0])
    assert torch.equal(got.freq_masked, want[1]) and torch.equal(got.time_masked, want[2])


# The paper's Table 1 (Park et al., 2019), written out here rather than read from the library.
PAPER_POLICIES = {
    "LB": dict(freq_masks=1, freq_width=27, time_masks=1, time_width=100, max_time_fraction=1.0),
    "LD": dict(freq_masks=2, freq_width=27, time_masks=2, time_width=100, max_time_fraction=1.0),
    "SM": dict(freq_masks=2, freq_width=15, time_masks=2, time_width=70, max_time_fraction=0.2),
    "SS": dict(freq_masks=2, freq_width=27, time_masks=2, time_width=70, max_time_fraction=0.2),
}


@pytest.mark.parametrize("policy", sorted(PAPER_POLICIES))
def test_policies_apply_the_papers_parameters(policy):
    x = random_spec((8, 80, 300), seed=4)
    lengths = torch.tensor([300, 280, 250, 200, 150, 120, 90, 40])
    got = mw.spec_augment(x, policy=policy, lengths=lengths, generator=seeded(11))
    want = ref.spec_augment(x, **PAPER_POLICIES[policy], lengths=lengths, generator=seeded(11))
    assert torch.equal(got.spec, want[0])
    assert torch.equal(got.freq_masked, want[1]) and torch.equal(got.time_masked, want[2])
    # A policy replaces the mask arguments passed next to it.
    over = mw.spec_augment(
        x,
        policy=policy,
        freq_masks=9,
        freq_width=1,
        time_masks=7,
        time_width=2,
        max_time_fraction=0.5,
        lengths=lengths,
        generator=seeded(11),
    )
    assert torch.equal(over.spec, got.spec)


@pytest.mark.parametrize("policy", ["SM", "SS"])
def test_sm_ss_cap_time_mask_width_at_a_fifth_of_the_length(policy):
    B, T = 1500, 300
    lengths = torch.randint(50, T + 1, (B,), generator=seeded(0))
    lengths[::2] = T  # half the rows are full: their cap is 60 frames, below time_width=70
    x = torch.zeros(B, 27, T)  # F >= freq_width; the content is irrelevant here
    got = mw.spec_augment(x, policy=policy, lengths=lengths, generator=seeded(1))
    _, f, t, _, t_draws = ref.spec_augment(
        x,
        **PAPER_POLICIES[policy],
        lengths=lengths,
        generator=seeded(1),
        return_draws=True,
        masks_only=True,
    )
    assert torch.equal(got.time_masked, t) and torch.equal(got.freq_masked, f)
    cap = [math.floor(0.2 * int(n)) for n in lengths]
    widths = [[w for _, w in draws] for draws in t_draws]
    assert all(len(ws) == 2 for ws in widths)
    assert all(w <= c for ws, c in zip(widths, cap) for w in ws)
    # Without the cap a full row of 300 frames would reach widths up to 70; the cap is 60 and it
    # is reached (P(w = 60) = 1/61 per mask, 1500 masks on full rows: missed w.p. e^-24).
    assert max(max(ws) for ws, n in zip(widths, lengths.tolist()) if n == T) == 60
    assert any(w == c for ws, c in zip(widths, cap) for w in ws)
    # Directly on the masks: at most two masks, each at most the cap.
    assert (got.time_masked.sum(1) <= 2 * torch.tensor(cap)).all()
    assert all(
        e - s <= 2 * c for row, c in zip(got.time_masked.tolist(), cap) for s, e in runs(row)
    )


def test_lb_ld_time_width_is_not_capped_by_a_fifth():
    x = torch.zeros(2000, 27, 200)
    m = mw.spec_augment(x, policy="LB", generator=seeded(2)).time_masked
    # One mask of width U{0..100} in 200 frames: a fifth (40) is exceeded in ~60 % of rows.
    assert (m.sum(1) > 40).float().mean().item() > 0.5
    assert m.sum(1).max().item() <= 100


# ---------------------------------------------------------------- spec_augment: contracts
@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("value", [0.0, 3.25, "mean"])
def test_output_is_input_masked_by_the_union_and_input_untouched(ndim, value):
    B, C, F, T = 5, 3, 24, 90
    x = random_spec((B, C, F, T) if ndim == 4 else (B, F, T), seed=5)
    x[..., 0, 0] = 1e4  # an outlier on a real frame moves the mean: the fill must include it
    before = x.clone()
    lengths = torch.tensor([90, 70, 45, 12, 3])
    out = mw.spec_augment(
        x,
        freq_masks=2,
        freq_width=8,
        time_masks=3,
        time_width=20,
        lengths=lengths,
        value=value,
        generator=seeded(3),
    )
    assert isinstance(out, mw.SpecAugmentResult)
    assert torch.equal(x, before)  # not modified in place
    assert out.spec.shape == x.shape and out.spec.dtype == x.dtype
    assert out.freq_masked.shape == (B, F) and out.freq_masked.dtype == torch.bool
    assert out.time_masked.shape == (B, T) and out.time_masked.dtype == torch.bool
    if value == "mean":
        # Mean of each row over its real frames, all channels.
        fill = torch.stack([x[b, ..., : int(n)].double().mean() for b, n in enumerate(lengths)])
        fill = fill.float().view(B, *([1] * (x.dim() - 1)))
        torch.testing.assert_close(
            out.spec, union_applied(x, out.freq_masked, out.time_masked, fill)
        )
        assert abs(fill.flatten()[0].item()) > 1.0  # the outlier is in row 0's mean
    else:
        assert torch.equal(
            out.spec, union_applied(x, out.freq_masked, out.time_masked, torch.tensor(value))
        )
    assert out.freq_masked.any() and out.time_masked.any()
    assert not out.time_masked[torch.arange(T) >= lengths[:, None]].any()


def test_mean_fill_excludes_padding_even_when_padding_is_not_finite():
    """Padding of a log-mel spectrogram can be ``log(0) = -inf``; "mean over the real frames"
    must not see it. (``(spec * real).sum()`` turns ``0 * -inf`` into NaN.)"""
    x = random_spec((3, 8, 40), seed=6)
    lengths = torch.tensor([40, 25, 10])
    x[torch.arange(40).expand(3, 8, 40) >= lengths[:, None, None]] = -float("inf")
    out = mw.spec_augment(
        x,
        freq_masks=2,
        freq_width=4,
        time_masks=2,
        time_width=5,
        lengths=lengths,
        value="mean",
        generator=seeded(0),
    )
    masked = out.freq_masked[:, :, None] | out.time_masked[:, None, :]
    fill = torch.stack([x[b, :, : int(n)].mean() for b, n in enumerate(lengths)])
    assert torch.isfinite(fill).all()
    got = torch.where(masked, out.spec, torch.zeros(()))
    want = torch.where(masked, fill[:, None, None].expand_as(x), torch.zeros(()))
    torch.testing.assert_close(got, want)


def test_time_masks_never_extend_past_lengths():
    B, T = 500, 64
    lengths = torch.randint(0, T + 1, (B,), generator=seeded(1))
    for tw in (64, 1.0):
        out = mw.spec_augment(
            torch.randn(B, 10, T),
            freq_masks=1,
            freq_width=10,
            time_masks=5,
            time_width=tw,
            lengths=lengths,
            generator=seeded(2),
        )
        assert not out.time_masked[torch.arange(T) >= lengths[:, None]].any()
        assert out.time_masked[lengths == T].any()  # masks do reach the end of full rows
        assert not out.time_masked[lengths == 0].any()


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 5),
    C=st.sampled_from([0, 1, 2]),
    F=st.integers(1, 12),
    T=st.integers(1, 40),
    freq_masks=st.integers(0, 3),
    time_masks=st.one_of(st.integers(0, 4), st.floats(0, 0.5)),
    tw_frac=st.floats(0, 1),
    adaptive_width=st.booleans(),
    max_time_fraction=st.floats(0, 1),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_property_masks_inside_lengths_and_bounded(
    B, C, F, T, freq_masks, time_masks, tw_frac, adaptive_width, max_time_fraction, seed, data
):
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    freq_width = data.draw(st.integers(0, F))
    time_width = tw_frac if adaptive_width else int(tw_frac * T)
    x = torch.randn((B, C, F, T) if C else (B, F, T), generator=seeded(seed))
    out = mw.spec_augment(
        x,
        freq_masks=freq_masks,
        freq_width=freq_width,
        time_masks=time_masks,
        time_width=time_width,
        max_time_fraction=max_time_fraction,
        max_time_masks=3,
        lengths=lengths,
        value=-7.0,
        generator=seeded(seed),
    )
    assert not out.time_masked[torch.arange(T) >= lengths[:, None]].any()
    assert (out.freq_masked.sum(1) <= freq_masks * freq_width).all()
    n_masks = time_masks if isinstance(time_masks, int) else 3
    caps = [
        min(
            time_width if isinstance(time_width, int) else math.floor(time_width * int(n)),
            math.floor(max_time_fraction * int(n)),
        )
        for n in lengths
    ]
    for row, cap in zip(out.time_masked.tolist(), caps):
        assert sum(row) <= n_masks * cap
    assert torch.equal(
        out.spec, union_applied(x, out.freq_masked, out.time_masked, torch.tensor(-7.0))
    )


def test_rows_are_independent_with_a_keyed_generator():
    """A row's masks (and masked values) depend on its key and its length only: the same row
    alone, with no padding, gets what it got in a batch with other rows."""
    lengths = [120, 37, 80, 5]
    x = random_spec((4, 2, 16, 120), seed=8)
    kw = dict(freq_masks=2, freq_width=6, time_masks=0.05, time_width=0.25, value="mean")
    batch = mw.spec_augment(
        x, lengths=torch.tensor(lengths), generator=keyed(5, [10, 11, 12, 13]), **kw
    )
    for b, n in enumerate(lengths):
        alone = mw.spec_augment(
            x[b : b + 1, ..., :n].clone(),
            lengths=torch.tensor([n]),
            generator=keyed(5, [10 + b]),
            **kw,
        )
        assert torch.equal(alone.freq_masked[0], batch.freq_masked[b])
        assert torch.equal(alone.time_masked[0], batch.time_masked[b, :n])
        torch.testing.assert_close(alone.spec[0], batch.spec[b, ..., :n])
    # Int widths too, same padded length, other companions.
    kw_int = dict(freq_masks=2, freq_width=6, time_masks=3, time_width=15)
    a = mw.spec_augment(x, generator=keyed(1, [7, 8, 9, 10]), **kw_int)
    b = mw.spec_augment(torch.cat([x[:1], -x[1:]]), generator=keyed(1, [7, 1, 2, 3]), **kw_int)
    assert torch.equal(a.freq_masked[0], b.freq_masked[0]) and torch.equal(
        a.time_masked[0], b.time_masked[0]
    )


def test_rows_differ_with_a_torch_generator():
    x = random_spec((1, 40, 200)).expand(16, 40, 200)  # identical rows
    out = mw.spec_augment(x, generator=seeded(0))
    assert len({tuple(r) for r in out.freq_masked.tolist()}) > 8
    assert len({tuple(r) for r in out.time_masked.tolist()}) > 8


# ---------------------------------------------------------------- spec_augment: statistics
def test_frequency_mask_width_is_uniform_and_placement_exact():
    # One mask of width U{0..10} on 40 bands, 20000 rows: each P(w) = 1/11 = 0.0909 with
    # std sqrt(p (1 - p) / 20000) = 0.002; tolerance 0.01 (5 sigma). The band coverage profile
    # (width and start together) is compared with the exact one; per band std <= 0.0035,
    # tolerance 0.015 (over 4 sigma for each of the 40 bands).
    B, F, W = 20000, 40, 10
    out = mw.spec_augment(
        torch.zeros(B, F, 8),
        freq_masks=1,
        freq_width=W,
        time_masks=0,
        time_width=0,
        generator=seeded(0),
    )
    widths = out.freq_masked.sum(1)
    rows = out.freq_masked.tolist()
    assert all(len(runs(r)) <= 1 for r in rows[:2000])  # one mask is one contiguous band
    freq = torch.bincount(widths, minlength=W + 1).double() / B
    assert freq.shape == (W + 1,)
    torch.testing.assert_close(
        freq, torch.full((W + 1,), 1 / (W + 1), dtype=torch.float64), atol=0.01, rtol=0
    )
    torch.testing.assert_close(
        out.freq_masked.double().mean(0), coverage_profile(F, W).double(), atol=0.015, rtol=0
    )


def test_adaptive_time_width_is_uniform_up_to_the_fraction_of_each_length():
    # time_width=0.25: W_b = floor(0.25 * n_b); rows of 80 frames get W = 20, rows of 40 get 10.
    B = 20000
    lengths = torch.tensor([80, 40]).repeat(B // 2)
    out = mw.spec_augment(
        torch.zeros(B, 2, 80),
        freq_masks=0,
        freq_width=0,
        time_masks=1,
        time_width=0.25,
        lengths=lengths,
        generator=seeded(1),
    )
    for n, W in ((80, 20), (40, 10)):
        m = out.time_masked[lengths == n]
        freq = torch.bincount(m.sum(1), minlength=W + 1).double() / m.shape[0]
        assert freq.shape == (W + 1,)  # never wider than W
        # std of each P(w) ~ sqrt(p / 10000) <= 0.003; tolerance 0.012.
        torch.testing.assert_close(
            freq, torch.full((W + 1,), 1 / (W + 1), dtype=torch.float64), atol=0.012, rtol=0
        )
        torch.testing.assert_close(
            m[:, :n].double().mean(0), coverage_profile(n, W).double(), atol=0.015, rtol=0
        )


def test_adaptive_time_mask_count():
    # time_masks=0.05 per frame: rows of 100 frames get 5 masks and rows of 40 get 2, capped by
    # max_time_masks. With time_width=1 a mask is one frame w.p. 1/2 (else empty) at a uniform
    # frame, so E[masked frames] = n * (1 - (1 - 1 / (2 n))^k) exactly. Per-row std <= 1.2,
    # 2000 rows per length: std of the mean <= 0.03; tolerance 0.12.
    B = 4000
    lengths = torch.tensor([100, 40]).repeat(B // 2)
    for cap, want in ((20, {100: 5, 40: 2}), (3, {100: 3, 40: 2})):
        out = mw.spec_augment(
            torch.zeros(B, 1, 100),
            freq_masks=0,
            freq_width=0,
            time_masks=0.05,
            time_width=1,
            max_time_masks=cap,
            lengths=lengths,
            generator=seeded(2),
        )
        for n, k in want.items():
            masked = out.time_masked[lengths == n].sum(1)
            assert masked.max().item() <= k
            expected = n * (1 - (1 - 1 / (2 * n)) ** k)
            assert abs(masked.double().mean().item() - expected) < 0.12, (cap, n, k)


# ---------------------------------------------------------------- spec_augment: errors, determinism
@pytest.mark.parametrize(
    "make, kwargs, err, match",
    [
        (lambda: torch.zeros(2, 10, 30), dict(freq_width=11), ValueError, "11"),
        (lambda: torch.zeros(2, 10, 30), dict(freq_width=5, time_width=31), ValueError, "31"),
        (lambda: torch.zeros(2, 10, 30), dict(freq_width=5, time_width=1.5), ValueError, "1.5"),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, lengths=torch.tensor([30, 31])),
            ValueError,
            "31",
        ),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, lengths=torch.tensor([-1, 3])),
            ValueError,
            "-1",
        ),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, lengths=torch.tensor([3, 4, 5])),
            ValueError,
            r"\(3,\)",
        ),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, lengths=torch.tensor([3.0, 4.0])),
            TypeError,
            "float",
        ),
        (
            lambda: torch.zeros(2, 10, 30, dtype=torch.long),
            dict(freq_width=5, time_width=5),
            TypeError,
            "int64",
        ),
        (lambda: torch.zeros(10, 30), dict(freq_width=5, time_width=5), ValueError, r"\(10, 30\)"),
        (
            lambda: torch.zeros(1, 1, 1, 10, 30),
            dict(freq_width=5, time_width=5),
            ValueError,
            r"\(1, 1, 1, 10, 30\)",
        ),
        (lambda: torch.zeros(2, 10, 30), dict(policy="XL"), ValueError, "XL"),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, value="median"),
            ValueError,
            "median",
        ),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, freq_masks=-1),
            ValueError,
            "-1",
        ),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, time_masks=-2),
            ValueError,
            "-2",
        ),
        (
            lambda: torch.zeros(2, 10, 30),
            dict(freq_width=5, time_width=5, max_time_fraction=1.2),
            ValueError,
            "1.2",
        ),
    ],
)
def test_spec_augment_bad_input(make, kwargs, err, match):
    with pytest.raises(err, match=match):
        mw.spec_augment(make(), **kwargs)


def test_spec_augment_determinism_and_global_rng_untouched():
    x = random_spec((4, 30, 120))
    state = torch.get_rng_state()
    a = mw.spec_augment(x, freq_width=10, time_width=30, generator=seeded(9))
    b = mw.spec_augment(x, freq_width=10, time_width=30, generator=seeded(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.spec, b.spec) and torch.equal(a.time_masked, b.time_masked)
    c = mw.spec_augment(x, freq_width=10, time_width=30, generator=seeded(10))
    assert not (
        torch.equal(a.freq_masked, c.freq_masked) and torch.equal(a.time_masked, c.time_masked)
    )
    # Without a generator, torch's global generator decides (reproducible under manual_seed).
    torch.manual_seed(0)
    d = mw.spec_augment(x, freq_width=10, time_width=30)
    torch.manual_seed(0)
    e = mw.spec_augment(x, freq_width=10, time_width=30)
    torch.set_rng_state(state)
    assert torch.equal(d.spec, e.spec)


def test_spec_augment_nothing_to_mask():
    x = random_spec((3, 10, 20))
    out = mw.spec_augment(
        x, freq_masks=0, time_masks=0, freq_width=5, time_width=5, generator=seeded(0)
    )
    assert torch.equal(out.spec, x) and not out.freq_masked.any() and not out.time_masked.any()
    out = mw.spec_augment(x, freq_width=0, time_width=0, generator=seeded(0))
    assert torch.equal(out.spec, x) and not out.freq_masked.any() and not out.time_masked.any()
    empty = mw.spec_augment(torch.zeros(0, 10, 20), freq_width=5, time_width=5)
    assert empty.freq_masked.shape == (0, 10) and empty.time_masked.shape == (0, 20)


# ---------------------------------------------------------------- mask_time_spans: reference
@pytest.mark.parametrize("span, min_spans", [(1, 0), (5, 0), (10, 0), (10, 3)])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.65, 1.0])
@pytest.mark.parametrize("kind", ["torch", "keyed"])
def test_mask_time_spans_matches_reference(kind, rate, span, min_spans):
    lengths = torch.tensor([0, 3, 9, 10, 11, 27, 60, 99, 100, 100])
    B, T = len(lengths), 100
    make = (lambda: seeded(4)) if kind == "torch" else (lambda: keyed(4, range(B)))
    got = mw.mask_time_spans(lengths, T, rate, span=span, min_spans=min_spans, generator=make())
    # On the CPU a torch.Generator draws the starts themselves; a KeyedGenerator ranks keys.
    naive = ref.mask_time_spans_direct if kind == "torch" else ref.mask_time_spans
    want = naive(lengths, T, rate, span=span, min_spans=min_spans, generator=make())
    assert torch.equal(got, want)
    if rate > 0 or min_spans:
        assert got.any()


@pytest.mark.parametrize("rate", [0.3, 0.65])
def test_mask_time_spans_key_ranking_matches_reference_for_a_torch_generator(monkeypatch, rate):
    # GPUs and torch.compile rank a key per frame for every generator; same draws as the naive.
    from maskwise.functional import spectrogram

    monkeypatch.setattr(spectrogram, "draws_on_host", lambda generator, device: False)
    lengths = torch.tensor([0, 3, 9, 10, 11, 27, 60, 99, 100, 100])
    got = mw.mask_time_spans(lengths, 100, rate, span=10, generator=seeded(4))
    assert torch.equal(got, ref.mask_time_spans(lengths, 100, rate, span=10, generator=seeded(4)))


def test_distinct_ints_redraws_collisions_until_distinct():
    # Rate 1, span 1: every frame must be a start, so most first draws collide and redraw.
    from maskwise.functional.select import distinct_ints

    g = seeded(9)
    n_starts = torch.tensor([50, 7, 0, 1])
    k = torch.tensor([50, 4, 0, 1])
    starts = distinct_ints(torch.rand(4, 50, generator=g), n_starts, k, g)
    for b in range(4):
        live = [s for s in starts[b].tolist() if s >= 0]
        assert len(live) == len(set(live)) == k[b] and all(0 <= s < n_starts[b] for s in live)
    assert sorted(starts[0].tolist()) == list(range(50))


# ---------------------------------------------------------------- mask_time_spans: contracts
def test_mask_time_spans_literals():
    # span 1, rate 1: every real frame, no padding.
    m = mw.mask_time_spans(torch.tensor([4, 0, 6]), 6, 1.0, span=1, generator=seeded(0))
    assert m.int().tolist() == [[1, 1, 1, 1, 0, 0], [0] * 6, [1] * 6]
    # 12 frames, span 10: only starts 0, 1, 2 fit; min_spans=5 is cut to those 3, which cover 0..11.
    m = mw.mask_time_spans(torch.tensor([12]), 15, 0.0, span=10, min_spans=5, generator=seeded(0))
    assert m.int().tolist() == [[1] * 12 + [0] * 3]
    # Rows shorter than the span get nothing, whatever the rate and min_spans.
    m = mw.mask_time_spans(
        torch.tensor([9, 3, 0]), 20, 1.0, span=10, min_spans=4, generator=seeded(0)
    )
    assert not m.any()
    # Rate 0 and no min_spans: nothing.
    assert not mw.mask_time_spans(
        torch.full((50,), 300), 300, 0.0, span=10, generator=seeded(0)
    ).any()
    assert mw.mask_time_spans(torch.zeros(0, dtype=torch.long), 7, 0.5).shape == (0, 7)


def test_min_spans_gives_at_least_that_many_spans():
    # Span 1: spans are single frames and distinct, so the masked count is the span count.
    lengths = torch.tensor([50, 20, 3, 2])
    m = mw.mask_time_spans(lengths, 50, 0.0, span=1, min_spans=3, generator=seeded(0))
    assert m.sum(1).tolist() == [3, 3, 3, 2]
    # Span 10, rate 0: 1 to 2 spans' worth of frames (they may overlap), at least one full span.
    m = mw.mask_time_spans(
        torch.full((300,), 200), 200, 0.0, span=10, min_spans=2, generator=seeded(1)
    )
    c = m.sum(1)
    assert (c >= 11).all() and (c <= 20).all() and (c == 20).any()


def test_span_count_rounds_probabilistically_and_is_unbiased():
    # Span 1: count = floor(rate * n + e), e ~ U(0, 1): 18 or 19 for 0.37 * 50 = 18.5, mean 18.5
    # (std of the mean 0.5 / sqrt(4000) = 0.008; tolerance 0.04).
    m = mw.mask_time_spans(torch.full((4000,), 50), 60, 0.37, span=1, generator=seeded(2))
    c = m.sum(1)
    assert set(c.tolist()) == {18, 19}
    assert abs(c.double().mean().item() - 18.5) < 0.04


@settings(max_examples=50, deadline=None)
@given(
    B=st.integers(1, 6),
    T=st.integers(0, 60),
    rate=st.floats(0, 1),
    span=st.integers(1, 15),
    min_spans=st.integers(0, 4),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_property_spans_never_touch_padding(B, T, rate, span, min_spans, seed, data):
    lengths = torch.tensor(
        data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)), dtype=torch.long
    )
    m = mw.mask_time_spans(lengths, T, rate, span=span, min_spans=min_spans, generator=seeded(seed))
    assert m.shape == (B, T) and m.dtype == torch.bool
    assert not m[torch.arange(T) >= lengths[:, None]].any()
    for row, n in zip(m.tolist(), lengths.tolist()):
        if n < span:
            assert not any(row)
        for s, e in runs(row):
            assert e - s >= span  # masked runs are unions of whole spans
        k_max = min(math.floor(rate * n / span + 1), n - span + 1) if n >= span else 0
        assert sum(row) <= max(k_max, min(min_spans, max(n - span + 1, 0))) * span


def test_a_rows_mask_does_not_depend_on_other_rows():
    """With a keyed generator a long row gets the same mask alone and batched with short rows."""
    lengths = torch.tensor([1000, 120, 1000, 35])
    keys = [3, 4, 5, 6]
    batch = mw.mask_time_spans(lengths, 1000, 0.65, generator=keyed(0, keys))
    for b in (0, 2):
        alone = mw.mask_time_spans(
            lengths[b : b + 1], 1000, 0.65, generator=keyed(0, keys[b : b + 1])
        )
        assert torch.equal(alone[0], batch[b])


def test_a_rows_mask_does_not_depend_on_the_batch_padding():
    """The padded length ``max_len`` is set by the longest row of the batch, so it is "other
    rows" too: with a keyed generator a short row must get the same mask whether it is padded to
    its own length or to a long companion's (the KeyedGenerator contract: padding never changes
    a row's mask)."""
    mismatched = []
    for seed in range(20):
        alone = mw.mask_time_spans(torch.tensor([57]), 57, 0.65, generator=keyed(seed, [1]))
        batch = mw.mask_time_spans(
            torch.tensor([57, 400]), 400, 0.65, generator=keyed(seed, [1, 2])
        )
        if not torch.equal(alone[0], batch[0, :57]):
            mismatched.append(seed)
    assert not mismatched, f"seeds whose mask changed with the padding: {mismatched}"


# ---------------------------------------------------------------- mask_time_spans: statistics
def test_masked_fraction_matches_the_exact_expectation():
    # rate 0.65, span 10, 1000 frames: k = 65 spans always; exact E[fraction] = 0.4903. The
    # per-row std is ~0.021, so over 2000 rows the mean's std is ~5e-4; tolerance 0.003.
    want = ref.expected_time_span_fraction(1000, 0.65, 10)
    assert abs(want - 0.4903) < 1e-3
    m = mw.mask_time_spans(torch.full((2000,), 1000), 1000, 0.65, span=10, generator=seeded(0))
    assert abs(m.double().mean().item() - want) < 0.003


def test_long_rows_keep_their_rate_next_to_short_rows():
    """Contrast with fairseq's ``compute_mask_indices``: by default it cuts every row's masked
    indices to the batch's smallest count (``min_len``), so a 1000-frame row batched with
    200-frame rows is masked at ~15 %; here each row keeps its own count, so long rows get ~49 %
    next to short rows exactly as alone."""
    lengths = torch.tensor([1000, 200, 200, 200]).repeat(400)
    m = mw.mask_time_spans(lengths, 1000, 0.65, span=10, generator=seeded(5))
    long_rows = m[lengths == 1000]
    # 400 long rows: std of the mean ~1e-3; tolerance 0.006.
    assert (
        abs(long_rows.double().mean().item() - ref.expected_time_span_fraction(1000, 0.65, 10))
        < 0.006
    )
    short = m[lengths == 200][:, :200]
    assert (
        abs(short.double().mean().item() - ref.expected_time_span_fraction(200, 0.65, 10)) < 0.006
    )


def _hf_fraction(lengths_batches, T, rate, span, use_attention_mask):
    hf = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    state = np.random.get_state()
    np.random.seed(0)
    try:
        masked, real = 0, 0
        for lengths in lengths_batches:
            am = (torch.arange(T) < lengths[:, None]).long() if use_attention_mask else None
            m = hf._compute_mask_indices((len(lengths), T), rate, span, attention_mask=am)
            masked += int(m.sum())
            real += int(lengths.sum())
            if use_attention_mask:
                assert not m[(torch.arange(T) >= lengths[:, None]).numpy()].any()
    finally:
        np.random.set_state(state)
    return masked / real


@pytest.mark.parametrize("use_attention_mask", [False, True])
def test_masked_fraction_agrees_with_transformers(use_attention_mask):
    """Hugging Face draws one rounding offset per batch, maskwise one per row: the expected
    masked fraction is the same. 200 batches of 8 rows; the std of either estimate is about
    1e-3 (HF's shared offset correlates a batch), tolerance 0.008."""
    pytest.importorskip("transformers")
    T, rate, span = 1000, 0.65, 10
    g = seeded(7)
    batches = [
        torch.randint(400, T + 1, (8,), generator=g) if use_attention_mask else torch.full((8,), T)
        for _ in range(200)
    ]
    want = _hf_fraction(batches, T, rate, span, use_attention_mask)
    lengths = torch.cat(batches)
    m = mw.mask_time_spans(lengths, T, rate, span=span, generator=seeded(8))
    got = m.sum().item() / lengths.sum().item()
    assert abs(want - 0.49) < 0.02  # both are about 1 - exp(-0.65)
    assert abs(got - want) < 0.008, (got, want)


# ------------------------------------------------------------- mask_time_spans: errors, determinism
@pytest.mark.parametrize(
    "lengths, max_len, rate, kwargs, err, match",
    [
        (torch.tensor([10]), 10, 1.5, {}, ValueError, "1.5"),
        (torch.tensor([10]), 10, -0.1, {}, ValueError, "-0.1"),
        (torch.tensor([10]), 10, 0.5, dict(span=0), ValueError, "span.*0"),
        (torch.tensor([10]), 10, 0.5, dict(span=2.5), ValueError, "2.5"),
        (torch.tensor([10]), 10, 0.5, dict(min_spans=-1), ValueError, "-1"),
        (torch.tensor([10, 11]), 10, 0.5, {}, ValueError, "11"),
        (torch.tensor([10, -1]), 10, 0.5, {}, ValueError, "-1"),
        (torch.tensor([10.0]), 10, 0.5, {}, TypeError, "float"),
        ([10], 10, 0.5, {}, TypeError, "list"),
        (torch.tensor([[10]]), 10, 0.5, {}, TypeError, r"\(1, 1\)"),
        (torch.tensor([10]), -3, 0.5, {}, ValueError, "-3"),
        (torch.tensor([10]), 10.0, 0.5, {}, ValueError, "10.0"),
    ],
)
def test_mask_time_spans_bad_input(lengths, max_len, rate, kwargs, err, match):
    with pytest.raises(err, match=match):
        mw.mask_time_spans(lengths, max_len, rate, **kwargs)


def test_mask_time_spans_determinism_and_global_rng_untouched():
    lengths = torch.tensor([300, 200, 120])
    state = torch.get_rng_state()
    a = mw.mask_time_spans(lengths, 300, 0.5, generator=seeded(1))
    b = mw.mask_time_spans(lengths, 300, 0.5, generator=seeded(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, mw.mask_time_spans(lengths, 300, 0.5, generator=seeded(2)))
    k1 = mw.mask_time_spans(lengths, 300, 0.5, generator=keyed(3, [0, 1, 2]))
    k2 = mw.mask_time_spans(lengths, 300, 0.5, generator=keyed(3, [0, 1, 2]))
    assert torch.equal(k1, k2) and torch.equal(torch.get_rng_state(), state)


def test_policies_work_on_clips_shorter_than_their_time_width():
    # LD's T = 100 frames; a 40-frame clip caps it at 40 instead of raising.
    spec = torch.randn(3, 80, 40)
    out = mw.spec_augment(spec, policy="LD", generator=torch.Generator().manual_seed(0))
    assert out.time_masked.shape == (3, 40)
    with pytest.raises(ValueError, match="100"):
        mw.spec_augment(spec, time_width=100)
