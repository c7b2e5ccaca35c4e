"""Exact McNemar against hand-computed binomial tails; Holm against a worked example."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidyn.evaluation.evaluate import mcnemar
from minidyn.evaluation.aggregate import paired_difference
from minidyn.evaluation.significance import binomial_two_sided, holm, mcnemar_exact, paired_t_p


def pair(k_ab, k_ba, both=3, neither=2):
    a = [True] * k_ab + [False] * k_ba + [True] * both + [False] * neither
    b = [False] * k_ab + [True] * k_ba + [True] * both + [False] * neither
    return np.array(a), np.array(b)


@pytest.mark.parametrize("k_ab, k_ba, p", [
    (1, 5, 2 * Fraction(1 + 6, 64)),               # 2 P(X <= 1), X ~ Bin(6, 1/2) = 14/64
    (0, 5, 2 * Fraction(1, 32)),                   # 2/32
    (5, 0, 2 * Fraction(1, 32)),
    (2, 8, 2 * Fraction(1 + 10 + 45, 1024)),       # 112/1024
    (3, 3, 1), (0, 0, 1), (4, 5, 1),               # the doubled tail capped at 1
])
def test_exact_mcnemar_is_the_doubled_binomial_tail(k_ab, k_ba, p):
    result = mcnemar_exact(*pair(k_ab, k_ba))
    assert (result.k_ab, result.k_ba) == (k_ab, k_ba)
    assert result.p == pytest.approx(float(p), rel=1e-12)


def test_exact_mcnemar_is_exact_for_thousands_of_discordant_pairs():
    # 2 sum_{i<=4900} C(10000, i) / 2^10000: about 2 Phi(-1.99) = 0.0466 (continuity-corrected normal)
    p = binomial_two_sided(4900, 10000)
    assert p == pytest.approx(2 * 0.5 * math.erfc(99.5 / 50 / math.sqrt(2)), rel=0.01)
    assert binomial_two_sided(0, 40) == 2 / 2 ** 40


def test_the_approximate_mcnemar_of_the_sanity_flags_is_unchanged():
    assert mcnemar(*pair(10, 1)) == (True, 10, 1)       # 9 > 2 sqrt(11)
    assert mcnemar(*pair(5, 1)) == (False, 5, 1)        # 4 < 2 sqrt(6)


def test_holm_against_a_worked_example():
    # sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == [] and holm([0.02]) == [0.02]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=20))
def test_holm_adjusted_p_values_are_at_least_the_raw_ones_at_most_one_and_keep_their_order(p):
    adjusted = holm(p)
    assert all(raw <= adj <= 1 for raw, adj in zip(p, adjusted))
    order = sorted(range(len(p)), key=lambda i: p[i])
    assert all(adjusted[i] <= adjusted[j] for i, j in zip(order, order[1:]))


def test_the_paired_t_p_value_is_where_the_t_interval_reaches_0():
    # d = 1, 3, 2: mean 2, std 1; the 95% interval 2 +- 4.303 / sqrt(3) includes 0, so p > 0.05;
    # t = 2 sqrt(3) = 3.464 on 2 df: p = 0.0742 (tables)
    assert paired_t_p(2.0, 1.0, 3) == pytest.approx(0.0742, abs=5e-4)
    d = paired_difference({0: 1.0, 1: 2.0, 2: 4.0, 3: 3.5}, {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, level=1 - paired_t_p(2.625, float(np.std([1, 2, 4, 3.5], ddof=1)), 4))
    assert d.low == pytest.approx(0.0, abs=1e-6)          # the (1 - p) interval ends at 0
    assert paired_t_p(2.0, 0.0, 3) == 0.0 and paired_t_p(0.0, 0.0, 3) == 1.0 and paired_t_p(2.0, None, 1) is None
