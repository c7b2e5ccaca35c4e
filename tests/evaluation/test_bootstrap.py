"""The two-way bootstrap over seeds and test examples: constants, the binomial limit, test-sample noise."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidyn.evaluation.aggregate import paired_difference
from minidyn.evaluation.bootstrap import nested_bootstrap, resampled_means, split_bootstrap, two_way_bootstrap


@settings(max_examples=30, deadline=None)
@given(seeds=st.integers(1, 5), n=st.integers(1, 60), value=st.sampled_from([0, 1, -1]))
def test_the_interval_of_a_constant_has_zero_width(seeds, n, value):
    b = two_way_bootstrap(np.full((seeds, n), value), resamples=200)
    assert b.low == b.high == b.mean == 100 * value


def test_one_seed_and_many_examples_give_the_binomial_interval():
    rng = np.random.default_rng(1)
    n, p = 4000, 0.8
    correct = rng.random((1, n)) < p
    b = two_way_bootstrap(correct)
    mean = correct.mean()
    half = 100 * 1.959964 * math.sqrt(mean * (1 - mean) / n)        # the normal approximation
    assert b.mean == pytest.approx(100 * mean)
    assert b.high - b.low == pytest.approx(2 * half, rel=0.08)
    assert b.low == pytest.approx(100 * mean - half, abs=0.25) and b.high == pytest.approx(100 * mean + half, abs=0.25)


def test_the_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(200):
        correct = rng.random((1, 300)) < 0.7
        b = two_way_bootstrap(correct, resamples=400, seed=trial)
        covered += b.low <= 70.0 <= b.high
    assert 0.89 <= covered / 200 <= 0.99, covered


def test_identical_seeds_keep_the_test_sample_noise_that_the_t_interval_misses():
    rng = np.random.default_rng(3)
    n = 1000
    a = np.repeat(rng.random((1, n)) < 0.8, 5, axis=0)      # five seeds, identical per example
    b = np.repeat(rng.random((1, n)) < 0.7, 5, axis=0)
    t = paired_difference({s: 100 * a[s].mean() for s in range(5)}, {s: 100 * b[s].mean() for s in range(5)})
    assert t.low == t.high                                   # the seeds agree: a zero-width t interval
    boot = two_way_bootstrap(a.astype(np.int8) - b)
    d = a[0].astype(float) - b[0]
    half = 100 * 1.959964 * d.std() / math.sqrt(n)           # the paired test-sample standard error
    assert boot.high - boot.low == pytest.approx(2 * half, rel=0.1)
    assert boot.p < 0.01                                     # 10 points on 1000 examples


def test_seed_noise_widens_the_interval_beyond_the_test_sample_alone():
    rng = np.random.default_rng(4)
    one = rng.random((1, 500)) < 0.8
    shifted = np.concatenate([one, rng.random((2, 500)) < 0.6, rng.random((2, 500)) < 0.95])
    assert np.ptp([two_way_bootstrap(shifted).low, two_way_bootstrap(shifted).high]) > \
        2 * np.ptp([two_way_bootstrap(one).low, two_way_bootstrap(one).high])


def test_a_fixed_seed_gives_the_same_resamples_and_a_paired_difference_resamples_both_sides_alike():
    rng = np.random.default_rng(5)
    a, b = rng.random((3, 200)) < 0.8, rng.random((3, 200)) < 0.7
    np.testing.assert_array_equal(resampled_means(a), resampled_means(a))
    # the same seeds and examples for both sides: the difference of the resampled means
    np.testing.assert_allclose(resampled_means(a.astype(np.int8) - b), resampled_means(a) - resampled_means(b))


def test_a_p_value_near_one_for_no_difference_and_small_for_a_clear_one():
    rng = np.random.default_rng(6)
    same = rng.random((3, 400)) < 0.8
    assert two_way_bootstrap(same.astype(np.int8) - same).p == 1.0
    better = same | (rng.random((3, 400)) < 0.5)
    assert two_way_bootstrap(better.astype(np.int8) - same).p == pytest.approx(2 / 2001)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="seeds, n examples"):
        two_way_bootstrap(np.ones(5))


# --- the nested bootstrap: each seed with its own examples ------------------------------------
def naive_nested(groups, resamples, rng):
    """The nested bootstrap written as its definition: draw seeds, then each drawn seed's examples."""
    means = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(groups), size=len(groups))
        means.append(100 * np.mean([rng.choice(groups[s], size=len(groups[s])).mean() for s in drawn]))
    return np.quantile(means, [0.025, 0.975])


def test_the_nested_bootstrap_is_its_definition():
    """Four seeds of 300 own examples with different shares: the multinomial shortcut gives the
    interval of the literal resampling (within its Monte Carlo error, a few tenths of a point)."""
    rng = np.random.default_rng(3)
    groups = [rng.random(300) < p for p in (0.55, 0.6, 0.62, 0.7)]
    b = nested_bootstrap(groups, resamples=4000)
    low, high = naive_nested(groups, 4000, np.random.default_rng(4))
    assert b.mean == pytest.approx(100 * np.mean([g.mean() for g in groups]))
    assert (b.low, b.high) == pytest.approx((low, high), abs=0.6)
    assert (b.seeds, b.examples) == (4, 300)


def test_the_nested_bootstrap_keeps_each_seeds_example_noise():
    """Seeds with the same share (a t interval of zero width) still leave the examples' noise:
    about the binomial interval of all their examples together."""
    groups = [np.arange(1000) % 5 < 4 for _ in range(4)]                  # 80% in every seed
    b = nested_bootstrap(groups)
    half = 100 * 1.959964 * math.sqrt(0.8 * 0.2 / 4000)
    assert b.high - b.low == pytest.approx(2 * half, rel=0.1)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), value=st.sampled_from([0, 1, -1]))
def test_the_nested_interval_of_a_constant_has_zero_width(sizes, value):
    b = nested_bootstrap([np.full(n, value) for n in sizes], resamples=100)
    assert b.low == b.high == b.mean == 100 * value


def test_the_nested_bootstrap_refuses_an_empty_seed():
    with pytest.raises(ValueError, match="one non-empty finite array per seed"):
        nested_bootstrap([np.ones(3), np.array([])])


def test_the_split_bootstrap_of_one_seed_is_the_two_sample_binomial_interval():
    """Accuracy 80% in one half of 2,000 examples and 25% in the other: the interval of the
    difference is the normal one of two independent proportions of 1,000 (weights fixed at the
    halves' sizes would widen it by the size's noise, ~1.6x here)."""
    rng = np.random.default_rng(5)
    n = 2000
    inside = np.arange(n) % 2 == 0
    correct = np.where(inside, rng.random(n) < 0.8, rng.random(n) < 0.25)[None]
    b = split_bootstrap(correct, inside[None])
    a_in, a_out = correct[0, inside].mean(), correct[0, ~inside].mean()
    half = 100 * 1.959964 * math.sqrt(a_in * (1 - a_in) / 1000 + a_out * (1 - a_out) / 1000)
    assert b.mean == pytest.approx(100 * (a_in - a_out))
    assert b.high - b.low == pytest.approx(2 * half, rel=0.1)
    assert (b.seeds, b.examples) == (1, n)


def test_the_split_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    covered = 0
    for trial in range(200):
        inside = rng.random((1, 300)) < 0.5                          # the split varies with the sample
        correct = np.where(inside, rng.random((1, 300)) < 0.7, rng.random((1, 300)) < 0.4)
        b = split_bootstrap(correct, inside, resamples=400, seed=trial)
        covered += b.low <= 30.0 <= b.high
    assert 0.89 <= covered / 200 <= 0.99, covered


def test_the_split_bootstrap_refuses_an_empty_group():
    with pytest.raises(ValueError, match="both groups non-empty in every seed"):
        split_bootstrap(np.ones((2, 4)), np.array([[True, False, True, False], [True] * 4]))
