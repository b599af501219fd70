"""The statistics behind ``tfgrpo eval``: unbiased Pass@k, BCa bootstrap intervals over
problems, and a paired sign-flip permutation test (both from ``scipy.stats``).

Problems are the unit of resampling: the answers to one problem are correlated (the same
difficulty), so resampling answers would make intervals too narrow. Every random draw comes
from a seeded generator, so a report is reproducible.
"""

from __future__ import annotations

import warnings
from math import comb
from typing import Sequence

import numpy as np
from scipy import stats

EXACT_UP_TO = 16  # problems; 2**16 sign patterns are enumerated instead of sampled
SMALL_SAMPLE = 20  # problems; below this an eval's verdict carries a small-sample warning
ALPHA = 0.05  # the level of the paired test (the intervals are 1 - ALPHA)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k answers is right) from n >= k answers, c right:
    1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"k={k} is larger than the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values`` (one value per problem), by
    ``scipy.stats.bootstrap``: bias-corrected and accelerated, better than the percentile
    interval at the small numbers of problems an eval often has. A constant gives itself."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (0.0, 0.0)
    if np.ptp(x) == 0:
        return (float(x[0]), float(x[0]))
    for method in ("BCa", "percentile"):  # BCa is undefined on some degenerate resamplings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                (x,), np.mean, confidence_level=level, n_resamples=resamples, method=method, rng=_rng(seed)
            )
        low, high = res.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return (float(low), float(high))
    return (float(x.mean()), float(x.mean()))


def paired_permutation_p(diffs: Sequence[float], *, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of a paired sign-flip test of "mean difference = 0", by
    ``scipy.stats.permutation_test`` (one sample: the signs are permuted).

    With at most ``EXACT_UP_TO`` problems every sign pattern is enumerated (an exact test);
    beyond that ``resamples`` random patterns are drawn.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < 2 or not d.any():
        return 1.0  # one problem (or none, or no difference) can show nothing
    res = stats.permutation_test(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        alternative="two-sided",
        rng=_rng(seed),
        n_resamples=np.inf if d.size <= EXACT_UP_TO else resamples,
    )
    return float(min(1.0, res.pvalue))


def _rng(seed: int) -> np.random.Generator:
    """A generator for any integer seed (a run's --seed may be negative; numpy takes none)."""
    return np.random.default_rng(seed % 2**64)
