"""maskwise.experiments.stats: paired intervals, verdicts, McNemar, item bootstrap, the
"still fitting" flag and detectable effects, on hand-computed cases and small simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")

from maskwise.experiments.stats import (  # noqa: E402
    McNemarResult,
    PairedDifference,
    best_epoch_fraction,
    detectable_effect,
    mcnemar,
    paired_bootstrap_items,
    paired_difference,
    still_fitting,
    verdict,
)

T_975_DF2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)


def test_t_interval_by_hand() -> None:
    # differences [1, 2, 3]: mean 2, sd 1, half-width t_{0.975,2} * 1 / sqrt(3)
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = T_975_DF2 / math.sqrt(3)
    assert (d.mean, d.method, d.n) == (2.0, "paired t", 3)
    assert (d.ci_low, d.ci_high) == pytest.approx((2 - half, 2 + half))
    assert d.ci_low == pytest.approx(-0.4841, abs=1e-4) and d.ci_high == pytest.approx(
        4.4841, abs=1e-4
    )
    assert scipy_stats.t.ppf(0.975, 2) == pytest.approx(T_975_DF2)
    # the same interval as scipy's ttest_rel
    ci = scipy_stats.ttest_rel([11.0, 12.0, 13.0], [10.0, 10.0, 10.0]).confidence_interval()
    assert (d.ci_low, d.ci_high) == pytest.approx((ci.low, ci.high))
    # a 90 % interval is narrower
    d90 = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0], confidence=0.9)
    assert d.ci_low < d90.ci_low < d90.ci_high < d.ci_high
    assert d.as_dict() == {
        "mean": 2.0,
        "ci_low": d.ci_low,
        "ci_high": d.ci_high,
        "method": "paired t",
    }


def test_sign_flip_for_lower_is_better() -> None:
    ppl_masked, ppl_base = [9.0, 9.5, 10.0], [10.0, 10.0, 10.5]  # masking lowers perplexity
    d = paired_difference(ppl_masked, ppl_base, higher_is_better=False)
    raw = paired_difference(ppl_masked, ppl_base)
    assert d.mean == pytest.approx(2 / 3) and raw.mean == pytest.approx(-2 / 3)
    assert (d.ci_low, d.ci_high) == pytest.approx((-raw.ci_high, -raw.ci_low))
    b = paired_difference(ppl_masked, ppl_base, higher_is_better=False, method="bootstrap")
    assert b.mean == pytest.approx(2 / 3)


def test_verdict_boundaries() -> None:
    def v(lo: float, hi: float) -> str:
        return verdict(PairedDifference((lo + hi) / 2, lo, hi, "paired t", 5))

    assert v(0.1, 2.0) == "helps"
    assert v(0.0, 2.0) == "no effect"  # an end at exactly zero is inside the interval
    assert v(-1.0, 1.0) == "no effect"
    assert v(-2.0, 0.0) == "no effect"
    assert v(-2.0, -1e-9) == "hurts"
    assert v(1.5, 1.5) == "helps"  # a degenerate interval away from zero
    assert verdict(paired_difference([1, 2, 3], [0, 0, 0])) == "no effect"  # wide at n = 3
    assert verdict(paired_difference([1, 2, 3, 2, 2], [0, 0, 0, 0, 0])) == "helps"


def test_bootstrap_reproducible_and_sane() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(80, 1, 10)
    masked = base + rng.normal(1.0, 0.5, 10)
    a = paired_difference(masked, base, method="bootstrap", seed=3)
    b = paired_difference(masked, base, method="bootstrap", seed=3)
    c = paired_difference(masked, base, method="bootstrap", seed=4)
    assert a == b and a.method == "bootstrap BCa" and a.n == 10
    assert a.ci_low < a.mean < a.ci_high and (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    t = paired_difference(masked, base)
    assert a.mean == t.mean
    assert abs((a.ci_high - a.ci_low) - (t.ci_high - t.ci_low)) < 0.5 * (t.ci_high - t.ci_low)


def test_t_interval_coverage() -> None:
    # 200 draws of 10 N(0, 1) differences, true mean 0: a 95 % interval should cover 0 in about
    # 190 of them (binomial sd ~3.1); the tolerance 180..198 (90-99 %) is about -3.2 / +2.6 sd
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        d = rng.normal(0.0, 1.0, 10)
        r = paired_difference(d, np.zeros(10))
        covered += r.ci_low <= 0.0 <= r.ci_high
    assert 180 <= covered <= 198


def test_equal_differences_give_the_point() -> None:
    for method in ("t", "bootstrap"):
        d = paired_difference([3.0, 4.0, 5.0], [2.0, 3.0, 4.0], method=method)  # type: ignore[arg-type]
        assert (d.mean, d.ci_low, d.ci_high) == (1.0, 1.0, 1.0)
        assert verdict(d) == "helps"
    zero = paired_difference([1.0, 1.0], [1.0, 1.0], method="bootstrap")
    assert (zero.ci_low, zero.ci_high) == (0.0, 0.0) and verdict(zero) == "no effect"


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="masked and baseline have 1 pair"):
        paired_difference([1.0], [0.0])
    with pytest.raises(ValueError, match="masked and baseline have 0 pair"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="got 3 and 2 values"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(ValueError, match="1-d"):
        paired_difference([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="method"):
        paired_difference([1.0, 2.0], [0.0, 0.0], method="z")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [0.0, 0.0], confidence=95)


def test_mcnemar_exact_by_hand() -> None:
    # b = 1 (masked right, baseline wrong), c = 6: two-sided exact p = 2 * P(X <= 1 | 7, 1/2)
    masked = [True] * 3 + [True] + [False] * 6 + [False] * 2
    base = [True] * 3 + [False] + [True] * 6 + [False] * 2
    r = mcnemar(masked, base)
    assert (r.b, r.c, r.method) == (1, 6, "exact binomial")
    assert r.p_value == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
    assert r.statistic == 1.0
    assert mcnemar(base, masked).p_value == pytest.approx(0.125)  # symmetric in the two systems
    # no discordant item: nothing to test
    assert mcnemar([1, 0, 1], [1, 0, 1]) == McNemarResult(0.0, 1.0, 0, 0, "exact binomial")
    # all discordant items one way, b = 10, c = 0: p = 2 / 2^10
    assert mcnemar([1] * 10, [0] * 10).p_value == pytest.approx(2 / 1024)


def test_mcnemar_chi_square_by_formula() -> None:
    # b = 30, c = 15 (b + c = 45 >= 25): chi2 = (|30 - 15| - 1)^2 / 45 = 196 / 45, 1 dof
    masked = np.array([1] * 30 + [0] * 15 + [1] * 100 + [0] * 55, dtype=bool)
    base = np.array([0] * 30 + [1] * 15 + [1] * 100 + [0] * 55, dtype=bool)
    r = mcnemar(masked, base)
    stat = 196 / 45
    assert (r.b, r.c, r.method) == (30, 15, "chi-square, continuity corrected")
    assert r.statistic == pytest.approx(stat)
    # the chi-square sf with 1 dof is erfc(sqrt(x / 2))
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(stat / 2)))
    assert 0.03 < r.p_value < 0.04
    # the switch: b + c = 24 exact, 25 chi-square
    assert mcnemar([1] * 24, [0] * 24).method == "exact binomial"
    assert mcnemar([1] * 25, [0] * 25).method.startswith("chi-square")


def test_mcnemar_bad_inputs() -> None:
    with pytest.raises(ValueError, match="one entry per test item"):
        mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="correct_masked must hold booleans"):
        mcnemar([2, 0], [1, 0])


def test_paired_bootstrap_items() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.7
    masked = base | (rng.random(400) < 0.3)  # masked gets every item the baseline gets, and more
    d = paired_bootstrap_items(masked, base, n_resamples=500, seed=1)
    assert d.mean == pytest.approx(masked.mean() - base.mean())
    assert 0 < d.ci_low < d.mean < d.ci_high and d.n == 400
    assert d.method == "item bootstrap percentile"
    assert d == paired_bootstrap_items(masked, base, n_resamples=500, seed=1)
    assert verdict(d) == "helps"
    flipped = paired_bootstrap_items(masked, base, higher_is_better=False, n_resamples=500, seed=1)
    assert (flipped.mean, flipped.ci_low, flipped.ci_high) == pytest.approx(
        (-d.mean, -d.ci_high, -d.ci_low)
    )
    # a corpus metric from summed per-item statistics (matches / totals, like BLEU precisions)
    stats_m = np.array([[3, 4], [1, 5], [4, 4], [2, 6]] * 20, dtype=float)
    stats_b = np.array([[2, 4], [1, 5], [3, 4], [2, 6]] * 20, dtype=float)

    def precision(rows: np.ndarray) -> float:
        total = rows.sum(axis=0)
        return float(total[0] / total[1])

    p = paired_bootstrap_items(stats_m, stats_b, metric=precision, n_resamples=300)
    assert p.mean == pytest.approx(10 / 19 - 8 / 19) and p.ci_low > 0
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap_items([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap_items([1], [0])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap_items([1.0, float("nan")], [0.0, 1.0])


def test_best_epoch_fraction_and_still_fitting() -> None:
    assert best_epoch_fraction(15, 15) == 1.0
    assert best_epoch_fraction(3, 10) == pytest.approx(0.3)
    # last 40 % of a 10-epoch budget: epochs 7..10 flagged, 6 not
    assert [still_fitting(best_epoch_fraction(e, 10)) for e in range(1, 11)] == [False] * 6 + [
        True
    ] * 4
    # FSDD 13-14 of 15 and Fashion-MNIST 9 of 10 (the examples) are flagged
    assert still_fitting(best_epoch_fraction(13, 15)) and still_fitting(best_epoch_fraction(9, 10))
    assert not still_fitting(0.5) and still_fitting(0.5, threshold=0.4)
    for bad in ((0, 10), (11, 10), (1, 0)):
        with pytest.raises(ValueError):
            best_epoch_fraction(*bad)


def test_detectable_effect() -> None:
    effects = [detectable_effect(1.0, n) for n in (2, 3, 5, 10, 20, 50)]
    assert all(a > b for a, b in zip(effects, effects[1:]))  # more seeds detect smaller effects
    assert detectable_effect(2.0, 10) == pytest.approx(2 * detectable_effect(1.0, 10))
    # large n: the normal approximation (z_0.975 + z_0.8) sigma / sqrt(n)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert detectable_effect(1.0, 2000) == pytest.approx(z / math.sqrt(2000), rel=2e-3)
    # higher power or confidence asks for a larger effect
    assert detectable_effect(1.0, 10, power=0.9) > effects[3]
    assert detectable_effect(1.0, 10, confidence=0.99) > effects[3]
    assert detectable_effect(0.0, 5) == 0.0
    # simulated power at the detectable effect, n = 5: ~0.8 (sd of the estimate ~0.009)
    n, delta = 5, effects[2]
    rng = np.random.default_rng(0)
    d = rng.normal(delta, 1.0, (3000, n))
    tstat = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(tstat) > scipy_stats.t.ppf(0.975, n - 1))
    assert 0.77 < power < 0.83
    for kwargs in ({"n": 1}, {"n": 5, "power": 1.0}, {"n": 5, "confidence": 0.0}):
        with pytest.raises(ValueError):
            detectable_effect(1.0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="std_of_differences"):
        detectable_effect(-1.0, 5)
