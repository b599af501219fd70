"""The statistics behind ``tfgrpo eval``: unbiased Pass@k, percentile bootstrap intervals over
problems, and a paired sign-flip permutation test.

Problems are the unit of resampling: the answers to one problem are correlated (the same
difficulty), so resampling answers would make intervals too narrow. Every random draw comes
from a seeded generator, so a report is reproducible.
"""

from __future__ import annotations

from math import comb
from typing import Sequence

import numpy as np

EXACT_UP_TO = 16  # problems; 2**16 sign patterns are enumerated instead of sampled


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k answers is right) from n >= k answers, c right:
    1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"k={k} is larger than the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def bootstrap_ci(values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def paired_permutation_p(diffs: Sequence[float], *, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of a paired sign-flip test of "mean difference = 0".

    Under the null the sign of each problem's difference is a coin flip. With at most
    ``EXACT_UP_TO`` problems every sign pattern is enumerated (an exact test); beyond that
    ``resamples`` random patterns are drawn and p = (1 + hits) / (1 + resamples).
    """
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return 1.0
    observed = abs(d.mean())
    tol = 1e-12
    if d.size <= EXACT_UP_TO:
        patterns = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        means = np.abs(patterns @ d) / d.size
        return float((means >= observed - tol).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, d.size))
    hits = int((np.abs(signs @ d) / d.size >= observed - tol).sum())
    return (1 + hits) / (1 + resamples)
