"""Statistics of the evidence protocol: paired differences over seeds with confidence intervals,
the verdict read from an interval, McNemar's test and a paired bootstrap over test items, the
"baseline still fitting" flag and the smallest effect a number of seeds can detect.

Pairing: run ``i`` of the masked arm and run ``i`` of the unmasked arm share a seed, i.e. the same
initialisation, batch order and data split, so the statistics work on the per-seed differences
``masked[i] - baseline[i]``, signed so that a positive difference means *better than no masking*
(for a lower-is-better metric such as perplexity the sign is flipped).

numpy and scipy are imported inside the functions that use them: ``maskwise.experiments`` imports
without them, and only computing a statistic needs them.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "McNemarResult",
    "PairedDifference",
    "best_epoch_fraction",
    "detectable_effect",
    "mcnemar",
    "paired_bootstrap_items",
    "paired_difference",
    "still_fitting",
    "Verdict",
    "verdict",
]

#: The verdicts of SPEC.md, "Evidence protocol".
Verdict = Literal["helps", "no effect", "hurts"]

#: Method names written into :attr:`PairedDifference.method` (and ``summary.json``'s ``diff``).
T_METHOD = "paired t"
BOOTSTRAP_METHOD = "bootstrap BCa"
ITEM_BOOTSTRAP_METHOD = "item bootstrap percentile"


@dataclass(frozen=True)
class PairedDifference:
    """A mean paired difference (positive = better than the baseline) and its confidence interval.

    Attributes:
        mean: The mean of the signed differences (for :func:`paired_bootstrap_items`: the metric
            difference on the full test set).
        ci_low: Lower end of the confidence interval.
        ci_high: Upper end of the confidence interval.
        method: How the interval was computed: ``"paired t"``, ``"bootstrap BCa"`` or
            ``"item bootstrap percentile"``.
        n: The number of pairs (seeds; test items for :func:`paired_bootstrap_items`).

    Example:
        >>> d = PairedDifference(mean=1.0, ci_low=0.5, ci_high=1.5, method="paired t", n=5)
        >>> d.as_dict()
        {'mean': 1.0, 'ci_low': 0.5, 'ci_high': 1.5, 'method': 'paired t'}
    """

    mean: float
    ci_low: float
    ci_high: float
    method: str
    n: int

    def as_dict(self) -> dict[str, float | str]:
        """The ``diff`` object of ``summary.json``: ``mean``, ``ci_low``, ``ci_high``, ``method``.

        Example:
            >>> sorted(PairedDifference(0.0, -1.0, 1.0, "paired t", 3).as_dict())
            ['ci_high', 'ci_low', 'mean', 'method']
        """
        return {
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "method": self.method,
        }


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two systems scored on the same test items.

    Attributes:
        statistic: ``min(b, c)`` for the exact test, the continuity-corrected chi-square
            ``(|b - c| - 1)^2 / (b + c)`` otherwise.
        p_value: Two-sided p-value of "both systems have the same accuracy".
        b: Items the masked system got right and the baseline wrong.
        c: Items the baseline got right and the masked system wrong.
        method: ``"exact binomial"`` or ``"chi-square, continuity corrected"``.

    Example:
        >>> McNemarResult(1.0, 0.125, 1, 6, "exact binomial").b
        1
    """

    statistic: float
    p_value: float
    b: int
    c: int
    method: str


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _differences(
    masked: npt.ArrayLike, baseline: npt.ArrayLike, higher_is_better: bool
) -> np.ndarray:
    """The signed per-seed differences, after checking shapes, lengths and finiteness."""
    import numpy as np

    m = np.asarray(masked, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if m.ndim != 1 or b.ndim != 1:
        raise ValueError(
            f"masked and baseline must be 1-d (one value per seed), got shapes {m.shape} and "
            f"{b.shape}"
        )
    if len(m) != len(b):
        raise ValueError(
            f"masked and baseline must pair one value per seed, got {len(m)} and {len(b)} values"
        )
    if not (np.isfinite(m).all() and np.isfinite(b).all()):
        raise ValueError(f"masked and baseline must be finite, got {m.tolist()} and {b.tolist()}")
    if len(m) < 2:
        raise ValueError(
            f"masked and baseline have {len(m)} pair(s): a confidence interval needs at least 2 "
            "seeds per arm"
        )
    return m - b if higher_is_better else b - m


def _bootstrap_kwargs(seed: int) -> dict[str, object]:
    """scipy >= 1.15 takes ``rng``; older versions take ``random_state``."""
    import numpy as np
    import scipy.stats

    if "rng" in inspect.signature(scipy.stats.bootstrap).parameters:
        return {"rng": np.random.default_rng(seed)}
    return {"random_state": np.random.default_rng(seed)}  # pragma: no cover - scipy < 1.15


def paired_difference(
    masked: npt.ArrayLike,
    baseline: npt.ArrayLike,
    *,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    method: Literal["t", "bootstrap"] = "t",
    n_resamples: int = 9999,
    seed: int = 0,
) -> PairedDifference:
    """The mean paired difference of the masked arm to the baseline over seeds, with its CI.

    ``masked[i]`` and ``baseline[i]`` are the test metric of the two arms trained with seed ``i``
    (same initialisation, batch order and split). The differences are ``masked - baseline`` when
    ``higher_is_better`` and ``baseline - masked`` otherwise (perplexity, loss), so a positive
    difference always means better than the baseline.

    Methods:
        * ``"t"``: the paired t interval ``mean ± t_{(1+confidence)/2, n-1} · sd / sqrt(n)`` with
          the sample standard deviation (``ddof=1``) of the differences and the quantile from
          ``scipy.stats.t.ppf``. This is the interval of ``scipy.stats.ttest_rel``; it is computed
          directly so that equal differences (``sd = 0``) give the point ``[mean, mean]`` rather
          than scipy's NaN.
        * ``"bootstrap"``: ``scipy.stats.bootstrap`` of the mean of the differences, BCa
          (bias-corrected and accelerated, scipy's default), ``n_resamples`` resamples drawn from
          ``numpy.random.default_rng(seed)``, so the same inputs and seed give the same interval.
          When all differences are equal the bootstrap distribution is degenerate (scipy warns
          and returns NaN): the point is returned as both ends. With few seeds a bootstrap
          interval is too narrow (it cannot see beyond the values observed); prefer ``"t"``
          below ~10 seeds.

    Args:
        masked: The masked arm's metric per seed.
        baseline: The unmasked arm's metric per seed, in the same seed order.
        higher_is_better: Whether a larger metric is better (accuracy, BLEU) or worse (perplexity).
        confidence: Confidence level of the interval, in (0, 1).
        method: ``"t"`` or ``"bootstrap"``.
        n_resamples: Bootstrap resamples (``method="bootstrap"`` only).
        seed: Seed of the bootstrap resampling (``method="bootstrap"`` only).

    Returns:
        The :class:`PairedDifference`; ``method`` is ``"paired t"`` or ``"bootstrap BCa"``.

    Raises:
        ValueError: Fewer than two pairs, arrays of different lengths or not 1-d, non-finite
            values, a confidence outside (0, 1) or an unknown method.

    Example:
        >>> d = paired_difference([81.0, 83.0, 85.0], [80.0, 81.0, 82.0])
        >>> d.mean, round(d.ci_low, 3), round(d.ci_high, 3), d.method, d.n
        (2.0, -0.484, 4.484, 'paired t', 3)
        >>> paired_difference([10.0, 11.0], [12.0, 12.5], higher_is_better=False).mean  # perplexity
        1.75
    """
    import numpy as np

    _check_confidence(confidence)
    d = _differences(masked, baseline, higher_is_better)
    n = len(d)
    mean = float(d.mean())
    if method == "t":
        import scipy.stats

        quantile = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
        half = quantile * float(d.std(ddof=1)) / math.sqrt(n)
        return PairedDifference(mean, mean - half, mean + half, T_METHOD, n)
    if method == "bootstrap":
        if float(np.ptp(d)) == 0.0:  # degenerate: every resample has the same mean
            return PairedDifference(mean, mean, mean, BOOTSTRAP_METHOD, n)
        import scipy.stats

        res = scipy.stats.bootstrap(
            (d,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            **_bootstrap_kwargs(seed),
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return PairedDifference(mean, low, high, BOOTSTRAP_METHOD, n)
    raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")


def verdict(diff: PairedDifference) -> Verdict:
    """The verdict read from a paired difference's confidence interval (SPEC.md).

    ``"helps"`` when the whole interval lies above zero (``ci_low > 0``), ``"hurts"`` when it lies
    below zero (``ci_high < 0``), ``"no effect"`` when it contains zero (an end exactly at zero
    counts as containing it).

    Args:
        diff: A difference signed so that positive means better than the baseline.

    Returns:
        ``"helps"``, ``"no effect"`` or ``"hurts"``.

    Example:
        >>> verdict(PairedDifference(1.0, 0.2, 1.8, "paired t", 5))
        'helps'
        >>> verdict(PairedDifference(0.5, -0.1, 1.1, "paired t", 5))
        'no effect'
    """
    if diff.ci_low > 0:
        return "helps"
    if diff.ci_high < 0:
        return "hurts"
    return "no effect"


def mcnemar(correct_masked: npt.ArrayLike, correct_baseline: npt.ArrayLike) -> McNemarResult:
    """McNemar's test of two systems' accuracy on the same test items.

    Only the discordant items count: ``b`` items the masked system got right and the baseline
    wrong, ``c`` the reverse. Under the null (equal accuracy) ``b ~ Binomial(b + c, 1/2)``.

    * ``b + c < 25``: the exact two-sided binomial test, ``scipy.stats.binomtest(b, b + c, 0.5)``
      (``statistic = min(b, c)``); with no discordant item the p-value is 1.
    * otherwise: the chi-square test with continuity correction (Edwards),
      ``statistic = (|b - c| - 1)^2 / (b + c)`` and ``p = scipy.stats.chi2.sf(statistic, 1)``.

    Args:
        correct_masked: Per item, whether the masked system was right (bool or 0/1).
        correct_baseline: Per item, whether the baseline was right, same items in the same order.

    Returns:
        The :class:`McNemarResult`.

    Raises:
        ValueError: Arrays not 1-d, of different lengths, or with values other than 0/1.

    Example:
        >>> r = mcnemar([1, 1, 1, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 0])
        >>> r.b, r.c, r.method, r.p_value
        (4, 0, 'exact binomial', 0.125)
    """
    import numpy as np

    m = np.asarray(correct_masked)
    b_arr = np.asarray(correct_baseline)
    if m.ndim != 1 or b_arr.ndim != 1 or len(m) != len(b_arr):
        raise ValueError(
            "correct_masked and correct_baseline must be 1-d with one entry per test item, got "
            f"shapes {m.shape} and {b_arr.shape}"
        )
    for name, arr in (("correct_masked", m), ("correct_baseline", b_arr)):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1), got values {np.unique(arr)}")
    mb, bb = m.astype(bool), b_arr.astype(bool)
    b = int(np.sum(mb & ~bb))
    c = int(np.sum(~mb & bb))
    import scipy.stats

    if b + c < 25:
        if b + c == 0:
            return McNemarResult(0.0, 1.0, b, c, "exact binomial")
        p = float(scipy.stats.binomtest(b, b + c, 0.5).pvalue)
        return McNemarResult(float(min(b, c)), min(p, 1.0), b, c, "exact binomial")
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return McNemarResult(
        stat, float(scipy.stats.chi2.sf(stat, 1)), b, c, "chi-square, continuity corrected"
    )


def _mean_metric(rows: np.ndarray) -> float:
    return float(rows.mean())


def paired_bootstrap_items(
    scores_masked: npt.ArrayLike,
    scores_baseline: npt.ArrayLike,
    *,
    metric: Callable[[np.ndarray], float] | None = None,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> PairedDifference:
    """A paired bootstrap over test items of a corpus metric (Koehn 2004): the CI of the difference.

    Each resample draws ``n_items`` item indices with replacement (``numpy.random.default_rng
    (seed)``) and scores *both* systems on the same items: ``metric(scores_masked[idx]) -
    metric(scores_baseline[idx])`` (sign flipped when not ``higher_is_better``). The interval is
    the percentile interval of those differences; ``mean`` is the difference on the full test set.

    ``scores_*`` hold per-item statistics, one row per item (axis 0), and ``metric`` turns the
    selected rows into the corpus metric. The default, the mean of the rows, serves accuracy
    (0/1 per item) and ROUGE (per-document scores, averaged). A corpus metric that is not a mean
    of per-item scores needs additive per-item sufficient statistics: BLEU from each sentence's
    n-gram match and total counts plus hypothesis and reference lengths, with ``metric`` computing
    BLEU from ``rows.sum(axis=0)`` (sacrebleu's paired bootstrap, ``--paired-bs``, does the same).

    Args:
        scores_masked: Per-item statistics of the masked system, shape ``(n_items, ...)``.
        scores_baseline: Per-item statistics of the baseline on the same items, same shape.
        metric: Rows -> corpus metric; default: the mean of the rows.
        higher_is_better: Whether a larger metric is better.
        confidence: Confidence level of the interval, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        A :class:`PairedDifference` with ``method="item bootstrap percentile"`` and ``n`` the
        number of items.

    Raises:
        ValueError: Fewer than two items, different numbers of items, non-finite scores, a
            confidence outside (0, 1) or ``n_resamples < 1``.

    Example:
        >>> d = paired_bootstrap_items([1, 1, 1, 0] * 25, [1, 0, 1, 0] * 25, n_resamples=200)
        >>> d.mean, d.ci_low > 0, d.method
        (0.25, True, 'item bootstrap percentile')
    """
    import numpy as np

    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    m = np.asarray(scores_masked, dtype=float)
    b = np.asarray(scores_baseline, dtype=float)
    if m.ndim == 0 or b.ndim == 0 or len(m) != len(b):
        raise ValueError(
            "scores_masked and scores_baseline must hold one row per test item for the same "
            f"items, got shapes {m.shape} and {b.shape}"
        )
    if len(m) < 2:
        raise ValueError(
            f"scores_masked and scores_baseline have {len(m)} item(s): a bootstrap needs at least 2"
        )
    if not (np.isfinite(m).all() and np.isfinite(b).all()):
        raise ValueError("scores_masked and scores_baseline must be finite")
    score = metric if metric is not None else _mean_metric
    sign = 1.0 if higher_is_better else -1.0
    n = len(m)
    point = sign * (float(score(m)) - float(score(b)))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for k in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        diffs[k] = sign * (float(score(m[idx])) - float(score(b[idx])))
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return PairedDifference(point, float(low), float(high), ITEM_BOOTSTRAP_METHOD, n)


def best_epoch_fraction(best_epoch: int, epochs_budget: int) -> float:
    """Where the best dev epoch fell in the epoch budget: ``best_epoch / epochs_budget``.

    Epochs count from 1 (as ``RunResult.best_epoch``), so the last epoch gives 1.0.

    Args:
        best_epoch: The 1-based epoch with the best dev metric.
        epochs_budget: The maximum number of epochs the run was allowed.

    Returns:
        A fraction in (0, 1].

    Raises:
        ValueError: ``epochs_budget < 1`` or ``best_epoch`` outside ``1..epochs_budget``.

    Example:
        >>> best_epoch_fraction(9, 10)
        0.9
    """
    if epochs_budget < 1:
        raise ValueError(f"epochs_budget must be at least 1, got {epochs_budget}")
    if not 1 <= best_epoch <= epochs_budget:
        raise ValueError(f"best_epoch must lie in 1..{epochs_budget}, got {best_epoch}")
    return best_epoch / epochs_budget


def still_fitting(fraction: float, threshold: float = 0.6) -> bool:
    """Whether the baseline was still fitting: its best dev epoch fell in the last 40 % of the
    budget, i.e. ``fraction > threshold``.

    Such a comparison is flagged "baseline still fitting: not a test of regularisation". With a
    10-epoch budget epochs 7-10 are flagged and epoch 6 (fraction 0.6) is not.

    Args:
        fraction: :func:`best_epoch_fraction` (or its mean over seeds).
        threshold: The fraction above which the baseline counts as still fitting.

    Returns:
        True when ``fraction > threshold``.

    Example:
        >>> still_fitting(best_epoch_fraction(14, 15)), still_fitting(0.6)
        (True, False)
    """
    return fraction > threshold


def detectable_effect(
    std_of_differences: float, n: int, *, confidence: float = 0.95, power: float = 0.8
) -> float:
    """The smallest true mean difference a two-sided paired t test on ``n`` seeds detects.

    Exact power of the one-sample t test on the ``n`` paired differences, from the noncentral t
    distribution (``scipy.stats.nct``): with ``df = n - 1``, critical value ``c = t_{(1 +
    confidence)/2, df}`` and noncentrality ``λ = δ·sqrt(n)/σ``, the power is ``P(T' > c) + P(T' <
    -c)``; the returned ``δ`` solves power = ``power`` (``scipy.optimize.brentq``). For large ``n``
    it tends to the normal approximation ``(z_{(1+confidence)/2} + z_{power}) σ / sqrt(n)``.

    ``std_of_differences`` is the standard deviation of the per-seed *differences*; for two
    independent arms of seed std ``σ`` (no pairing benefit) it is ``σ·sqrt(2)``.

    Args:
        std_of_differences: Standard deviation of the paired differences (metric units).
        n: Number of seeds (pairs), at least 2.
        confidence: ``1 - α`` of the test, in (0, 1).
        power: Required power, in (0, 1).

    Returns:
        The detectable difference, in the units of ``std_of_differences`` (0 when it is 0).

    Raises:
        ValueError: ``n < 2``, a negative or non-finite standard deviation, or ``confidence`` /
            ``power`` outside (0, 1).

    Example:
        >>> round(detectable_effect(1.0, 10), 3)
        0.996
        >>> detectable_effect(1.6 * 2**0.5, 3) > 5  # SST-2, unpaired seed std 1.6 pp, 3 seeds
        True
    """
    _check_confidence(confidence)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie strictly between 0 and 1, got {power}")
    if n < 2:
        raise ValueError(f"n must be at least 2 seeds for a paired t test, got {n}")
    if not (math.isfinite(std_of_differences) and std_of_differences >= 0):
        raise ValueError(f"std_of_differences must be finite and >= 0, got {std_of_differences}")
    if std_of_differences == 0 or power <= 1.0 - confidence:
        return 0.0
    import scipy.optimize
    import scipy.stats

    df = n - 1
    crit = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, df))

    def shortfall(nc: float) -> float:
        # P(T' < -c) written as P(T'' > c) with noncentrality -nc: scipy's nct.cdf returns NaN
        # far in the lower tail (df = 1), its sf does not
        upper = scipy.stats.nct.sf(crit, df, nc)
        lower = scipy.stats.nct.sf(crit, df, -nc)
        reach = upper + lower
        return float(reach) - power

    high = crit + 4.0
    while shortfall(high) < 0:
        high *= 2.0
    nc = float(scipy.optimize.brentq(shortfall, 0.0, high, xtol=1e-10))
    return nc * std_of_differences / math.sqrt(n)
