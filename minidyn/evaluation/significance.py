"""Tests for a study's comparisons: McNemar's exact test for two models on the same images, the
paired t test over seeds, and Holm's correction for a family of tests (pure Python, no scipy).

    mcnemar_exact(correct_a, correct_b)   # McNemar(p=0.22, k_ab=1, k_ba=5)
    paired_t_p(2.0, 1.0, 3)               # 0.074: mean difference 2, sample std 1 over 3 seeds
    holm([0.01, 0.04, 0.03, 0.005])       # [0.03, 0.06, 0.06, 0.02]

McNemar: of the examples on which two classifiers disagree, k_ab are correct under a only and
k_ba under b only; under "a and b are equally accurate" each disagreement goes either way with
probability 1/2, so k_ab ~ Binomial(k_ab + k_ba, 1/2). The p-value is the exact two-sided one,
twice the smaller tail (the distribution is symmetric), computed with exact integers. The
approximate `minidyn.evaluation.evaluate.mcnemar` of the sanity flags is a different, one-sided
z rule and stays as it is.

Holm (1979): with m p-values sorted p_(1) <= ... <= p_(m), the adjusted p_(i) is
max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where adjusted p <= alpha keeps the chance of
any false rejection in the family at most alpha, whatever the dependence between the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from minidyn.evaluation.aggregate import t_cdf


@dataclass(frozen=True)
class McNemar:
    p: float
    k_ab: int  # examples correct under a, not under b
    k_ba: int  # the reverse


def binomial_two_sided(k: int, n: int) -> float:
    """The exact two-sided p-value of k successes in n trials of probability 1/2:
    min(1, 2 P(X <= min(k, n - k))), X ~ Binomial(n, 1/2); 1 for n = 0."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2 * tail / 2 ** n)  # int / int: the correctly rounded float, even for large n


def mcnemar_exact(correct_a, correct_b) -> McNemar:
    """The exact McNemar test of two classifiers' (n,) bool correctness on the same examples."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"McNemar needs two (n,) arrays of the same examples, got {a.shape} and {b.shape}")
    k_ab, k_ba = int((a & ~b).sum()), int((b & ~a).sum())
    return McNemar(binomial_two_sided(k_ab, k_ab + k_ba), k_ab, k_ba)


def paired_t_p(mean: float, std: float | None, n: int) -> float | None:
    """The two-sided p-value of the paired t test of "the mean difference is 0" from the mean and
    sample std of n paired differences: 2 P(T_{n-1} >= |mean| sqrt(n) / std). None for n < 2;
    with std 0 (every pair the same difference) 0 when the mean is not 0, else 1."""
    if n < 2 or std is None:
        return None
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    t = abs(mean) * math.sqrt(n) / std
    return min(1.0, 2 * (1 - t_cdf(t, n - 1)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given."""
    p = [float(v) for v in p_values]
    if any(not 0 <= v <= 1 for v in p):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(p)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
