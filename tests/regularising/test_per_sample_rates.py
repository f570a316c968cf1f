"""Per-sample rates: a range ``(low, high)`` draws one rate per row, uniformly and seeded, for
every masker that takes a rate; a (B,) tensor gives the rates. Statistical checks state their
tolerances."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import maskwise.functional as F
from maskwise.functional.select import per_sample_rates

B, L = 2000, 64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# name -> function (rate, generator) -> bool mask (B, L')
MASKERS: dict[str, Callable[[object, torch.Generator], torch.Tensor]] = {
    "sample_mask": lambda r, g: F.sample_mask(torch.ones(B, L, dtype=torch.bool), r, generator=g),
    "sample_mask(exact)": lambda r, g: F.sample_mask(
        torch.ones(B, L, dtype=torch.bool), r, exact=True, generator=g
    ),
    "mask_tokens": lambda r, g: F.mask_tokens(torch.full((B, L), 7), r, generator=g),
    "mask_words": lambda r, g: F.mask_words(torch.arange(L).expand(B, L), r, generator=g),
    "mask_spans": lambda r, g: F.mask_spans(
        torch.ones(B, L, dtype=torch.bool), r, mean_length=2.0, generator=g
    ),
    "mask_patches": lambda r, g: F.mask_patches(B, L, r, generator=g),
    "mask_features": lambda r, g: F.mask_features(torch.ones(B, L), r, generator=g)[1],
}


@pytest.mark.parametrize("name", sorted(MASKERS))
def test_a_range_draws_one_rate_per_row(name: str) -> None:
    masked = MASKERS[name]((0.1, 0.5), _gen()).float().mean(1)  # (B,) realised rates
    # The mean realised rate is the range's mid-point, 0.3: the rows' rates are uniform (std
    # 0.115) and each row adds sampling noise, so the mean over 2000 rows has std < 0.004;
    # tolerance 0.02.
    assert float(masked.mean()) == pytest.approx(0.3, abs=0.02)
    # and the rows differ: their spread is that of the uniform rates (0.115), not of one rate
    # (binomial, < 0.063 at 64 positions): more than 0.09.
    assert float(masked.std()) > 0.09
    assert float(masked.min()) >= 0.0 and float(masked.max()) <= 0.75


@pytest.mark.parametrize("name", sorted(MASKERS))
def test_a_range_is_seeded_and_a_point_range_is_that_rate(name: str) -> None:
    fn = MASKERS[name]
    assert torch.equal(fn((0.1, 0.5), _gen(3)), fn((0.1, 0.5), _gen(3)))
    point = fn((0.2, 0.2), _gen(4)).float().mean()
    assert float(point) == pytest.approx(0.2, abs=0.02)  # 128k positions: std < 0.0013


def test_a_tensor_gives_the_rates_per_row() -> None:
    rates = torch.tensor([0.0, 0.25, 0.5, 1.0]).repeat(500)
    masked = F.mask_patches(2000, 64, rates, generator=_gen()).float().mean(1)
    assert torch.allclose(masked, rates, atol=1 / 64)  # exact counts: round(rate * 64)
    spans = F.mask_time_spans(torch.full((2000,), 200), 200, rates, span=5, generator=_gen())
    share = spans.float().mean(1).view(500, 4).mean(0)
    # wav2vec2 spans overlap: about 1 - exp(-rate) of frames; rate 0 masks nothing.
    assert float(share[0]) == 0.0
    assert share.tolist() == sorted(share.tolist())
    ranged = F.mask_time_spans(torch.full((2000,), 200), 200, (0.0, 1.0), span=5, generator=_gen())
    assert float(ranged.float().mean(1).std()) > 0.1


def test_per_sample_rates_and_bad_ranges() -> None:
    r = per_sample_rates((0.1, 0.5), 10000, generator=_gen())
    assert isinstance(r, torch.Tensor) and r.dtype == torch.float64
    assert float(r.min()) >= 0.1 and float(r.max()) <= 0.5
    assert float(r.mean()) == pytest.approx(0.3, abs=0.005)  # std of the mean 0.0012
    assert per_sample_rates(0.2, 3) == 0.2
    with pytest.raises(ValueError, match="low <= high"):
        per_sample_rates((0.5, 0.1), 3)
    with pytest.raises(ValueError, match="high"):
        per_sample_rates((0.1, 1.5), 3)
    with pytest.raises(ValueError, match="pair"):
        per_sample_rates((0.1, 0.2, 0.3), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pair"):
        F.sample_mask(torch.ones(2, 4, dtype=torch.bool), (0.1,))  # type: ignore[arg-type]


def test_modules_take_a_range_and_equal_their_functional() -> None:
    import maskwise.nn as mnn

    x = torch.randn(8, 32, 4)
    ids = torch.randint(5, 50, (8, 32), generator=_gen(1))
    lengths = torch.full((8,), 32)
    cases = [
        (mnn.FeatureMask((0.1, 0.5), seed=0)(x), F.mask_features(x, (0.1, 0.5), generator=_gen())),
        (
            mnn.PatchMask((0.1, 0.5), seed=0)(x)[1],
            F.mask_patches(8, 32, (0.1, 0.5), generator=_gen()),
        ),
        (
            mnn.TokenMask((0.1, 0.5), mask_id=4, seed=0)(ids)[1],
            F.mask_tokens(ids, (0.1, 0.5), generator=_gen()),
        ),
        (
            mnn.TimeSpanMask((0.1, 0.5), span=4, seed=0)(x, lengths=lengths)[1],
            F.mask_time_spans(lengths, 32, (0.1, 0.5), span=4, generator=_gen()),
        ),
    ]
    for got, want in cases:
        got_t = got[1] if isinstance(got, tuple) else got
        want_t = want[1] if isinstance(want, tuple) else want
        assert torch.equal(got_t, want_t)
    m = mnn.FeatureMask((0.1, 0.5), seed=0)
    restored = mnn.FeatureMask(0.3, seed=1)
    restored.load_state_dict(m.state_dict())
    assert restored.rate == (0.1, 0.5)


def test_modules_that_need_one_count_per_row_refuse_a_range() -> None:
    import maskwise.nn as mnn

    for make in (
        lambda: mnn.PatchMask((0.1, 0.5), drop=True),
        lambda: mnn.BlockPatchMask((0.1, 0.5), grid=4),
        lambda: mnn.Erase((0.1, 0.5)),
        lambda: mnn.SpecAugment((0.1, 0.5)),
    ):
        with pytest.raises(ValueError, match="range"):
            make()
