"""Two-way bootstrap intervals: the noise of the seeds and of the test sample together (NumPy only).

A study's accuracy of one setting is a mean over S seeds (trained models) of a mean over the
same n test examples. Both are samples: another seed gives another model, another test sample
another accuracy (the binomial standard error at n = 500 near 80% is 1.8 points). The t
interval over seeds sees only the first; this bootstrap sees both:

    correct = np.stack([...])           # (S, n) bool: seed s's model classifies example j correctly
    two_way_bootstrap(correct)          # Bootstrap(mean=81.2, low=79.0, high=83.3, p=..., ...)
    two_way_bootstrap(dyn.astype(np.int8) - std)   # a paired difference, (S, n) in {-1, 0, 1}

Each of RESAMPLES resamples draws S seeds with replacement and, independently, n test examples
with replacement, and takes the mean (in percent) of values[seeds][:, examples]; the interval is
the percentile interval of those means at `level`. For a paired difference the caller passes
the difference per (seed, example): both sides then get the same resampled seeds and examples,
so what the seed and the test example share between methods cancels, as in a paired t test.
The generators are numpy's default_rng([SEED, 0]) (examples) and ([SEED, 1]) (seeds): the same
inputs give the same interval.

Where each seed has its own examples (the training set differs by seed), nested_bootstrap
resamples the seeds and then, for each seed drawn, that seed's own examples. Where the number is
a difference between two groups of each seed's test examples (the high- and low-FOSC halves of
Fig. 1a), split_bootstrap resamples them as two_way_bootstrap does and takes each group's mean
as a ratio of resampled sums.

With few seeds the seed resampling understates the seed-to-seed variance (by the factor
(S - 1) / S, and S = 3 cannot show much of a distribution): read the t interval beside it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
METHOD = ("two-way percentile bootstrap: seeds and test examples resampled with replacement, "
          "independently")
_CHUNK_ELEMENTS = 4_000_000  # resample counts converted to float at once


@dataclass(frozen=True)
class Bootstrap:
    """The mean (percent) of an (S, n) array, its bootstrap interval and the two-sided p-value
    of "the mean is 0" (the share of resampled means on the far side of 0, doubled)."""

    mean: float
    low: float
    high: float
    p: float
    seeds: int
    examples: int
    resamples: int = RESAMPLES
    level: float = LEVEL


def resampled_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples,) float: 100 x the mean of values[s*][:, j*] for s* S seeds and j* n examples
    drawn with replacement, independently, from an (S, n) array (bool, or a paired difference
    in {-1, 0, 1}: its sums are exact).

    The resampled examples depend only on (n, resamples, seed), so every interval of a report
    with one test set uses the same resamples (and computes them once): each resample is a
    count per example, and a seed's resampled mean is its counts-weighted mean."""
    values = _matrix(values)
    n_seeds, n = values.shape
    counts = _example_counts(n, resamples, seed)                     # (resamples, n)
    per_seed = np.empty((resamples, n_seeds))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    integers = n < 2 ** 24 and np.array_equal(values, np.round(values)) and np.abs(values).max() <= 1
    exact = np.float32 if integers else np.float64  # float32 sums integers of magnitude <= n exactly
    weights = values.T.astype(exact)
    for start in range(0, resamples, chunk):
        per_seed[start:start + chunk] = counts[start:start + chunk].astype(exact) @ weights
    per_seed /= n
    seeds = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(resamples, n_seeds))
    return 100.0 * np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)


@functools.lru_cache(maxsize=2)
def _example_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) unsigned ints, read-only: how often each of n examples is drawn in each
    resample of n draws with replacement."""
    rng = np.random.default_rng([seed, 0])
    counts = np.empty((resamples, n), dtype=np.uint16)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(m, n)) + n * np.arange(m)[:, None]
        counts[start:start + m] = np.bincount(drawn.ravel(), minlength=m * n).reshape(m, n)
    counts.setflags(write=False)
    return counts


def two_way_bootstrap(values, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = SEED) -> Bootstrap:
    """The percentile interval at `level` of resampled_means(values) and its p-value of 0.

    values: (S, n) numbers (bool correctness, or a paired difference of two in {-1, 0, 1}).
    p = min(1, 2 min(#{m* <= 0} + 1, #{m* >= 0} + 1) / (resamples + 1)): its smallest value is
    2 / (resamples + 1), about 0.001 for 2,000 resamples.
    """
    _check(resamples, level)
    values = _matrix(values)
    means = resampled_means(values, resamples, seed)
    return _percentile(means, float(100.0 * values.mean()), values.shape, resamples, level)


def split_bootstrap(values, inside, resamples: int = RESAMPLES, level: float = LEVEL,
                    seed: int = SEED) -> Bootstrap:
    """The two-way bootstrap of the mean over seeds of a within-seed difference of group means:
    seed s's mean of values[s] where inside[s] minus its mean where not (percent points).

    values: (S, n) numbers on the same n test examples; inside: (S, n) bool, each seed's own
    split of them (both groups non-empty). Each resample draws the seeds and examples as
    two_way_bootstrap does (the same draws), and a drawn seed's difference is the ratio of
    counts-weighted sums in each group, so the groups' sizes are resampled with the examples (a
    difference of means is not a fixed-weight mean: weights fixed at the sample's group sizes
    would count the size's noise as the values'). A resample in which some drawn seed's group
    is empty is left out (at n = 2,000 split in halves: never).
    """
    _check(resamples, level)
    values = _matrix(values)
    inside = np.asarray(inside, dtype=bool)
    if inside.shape != values.shape or not (inside.any(axis=1) & (~inside).any(axis=1)).all():
        raise ValueError("the split bootstrap needs an (S, n) split with both groups non-empty in every seed")
    n_seeds, n = values.shape
    counts = _example_counts(n, resamples, seed)
    per_seed = np.empty((resamples, n_seeds))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        c = counts[start:start + chunk].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed[start:start + chunk] = ((c @ (values * inside).T) / (c @ inside.T)
                                             - (c @ (values * ~inside).T) / (c @ (~inside).T))
    seeds = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(resamples, n_seeds))
    means = 100.0 * np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    means = means[np.isfinite(means)]
    estimate = float(100.0 * np.mean([v[m].mean() - v[~m].mean() for v, m in zip(values, inside)]))
    return _percentile(means, estimate, values.shape, means.size, level)


def nested_bootstrap(groups, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = SEED) -> Bootstrap:
    """The bootstrap of a mean over seeds whose examples differ by seed (each seed's own training
    set, say): `groups` holds S 1-D arrays, seed s's values on its own n_s examples (bool, or a
    paired difference in {-1, 0, 1} between two runs of seed s on the same examples).

    Each resample draws S seeds with replacement and, for each seed drawn, n_s of that seed's
    examples with replacement (a multinomial draw of its value counts: the same distribution);
    its mean is the mean over the drawn seeds of their resampled means, in percent. The point
    estimate is the mean over seeds of each seed's mean; the interval and p are two_way_bootstrap's.
    `examples` in the result is the smallest n_s. Generators: default_rng([seed, 2]) (examples)
    and ([seed, 3]) (seeds).
    """
    _check(resamples, level)
    groups = [np.asarray(g, dtype=float).ravel() for g in groups]
    if not groups or any(g.size == 0 or not np.isfinite(g).all() for g in groups):
        raise ValueError("the nested bootstrap needs one non-empty finite array per seed")
    examples, seeds = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 3])
    drawn = seeds.integers(0, len(groups), size=(resamples, len(groups)))
    slot_means = np.empty(drawn.shape)
    for s, g in enumerate(groups):
        slots = drawn == s
        values, counts = np.unique(g, return_counts=True)
        resampled = examples.multinomial(g.size, counts / g.size, size=int(slots.sum()))
        slot_means[slots] = resampled @ values / g.size
    means = 100.0 * slot_means.mean(axis=1)
    estimate = float(100.0 * np.mean([g.mean() for g in groups]))
    return _percentile(means, estimate, (len(groups), min(g.size for g in groups)), resamples, level)


def _check(resamples: int, level: float) -> None:
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")


def _percentile(means: np.ndarray, estimate: float, shape: tuple, resamples: int, level: float) -> Bootstrap:
    """The Bootstrap of resampled `means`: percentile interval at `level`, p-value of 0."""
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    below, above = int((means <= 0).sum()), int((means >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    return Bootstrap(estimate, float(low), float(high), p, shape[0], shape[1], resamples, level)


def _matrix(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"the bootstrap needs an (S seeds, n examples) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("the bootstrap needs finite values")
    return values
