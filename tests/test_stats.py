"""The Student-t distribution and Welch's t-test of pjepa.eval.stats, against table values and worked examples."""

from __future__ import annotations

import math
import random

import pytest

from pjepa.eval.stats import regularized_beta, t_cdf, t_two_sided_p, welch, welch_from_stats


@pytest.mark.parametrize("t, df, p", [
    (2.776, 4, 0.050),  # the t table's 95 % two-sided critical values
    (2.228, 10, 0.050),
    (12.706, 1, 0.050),
    (1.960, 1e6, 0.050),  # large df: the normal distribution
    (4.604, 4, 0.010),
    (3.169, 10, 0.010),
])
def test_two_sided_p_at_table_critical_values(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert t_two_sided_p(-t, df) == t_two_sided_p(t, df)


def test_closed_forms():
    for t in (0.1, 1.0, 3.0, 30.0):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)  # Cauchy
        assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-12)
    assert t_two_sided_p(0.0, 7) == 1.0 and t_two_sided_p(math.inf, 3) == 0.0
    assert t_cdf(0.0, 5) == 0.5 and t_cdf(2.776, 4) == pytest.approx(0.975, abs=1e-4)
    assert regularized_beta(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - sum_{j<2} C(4,j) .4^j .6^(4-j)
    assert regularized_beta(0.5, 0.5, 0.25) == pytest.approx(2 / math.pi * math.asin(0.5), rel=1e-12)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_two_sided_p(1.0, 0)


def test_welch_worked_example():
    """A textbook example (two samples of 15, unequal spread; scipy agrees): t = -2.46, df = 24.99, p = 0.021."""
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    res = welch(a, b)
    assert res.t == pytest.approx(-2.4554, abs=1e-4)
    assert res.df == pytest.approx(24.9885, abs=1e-4)
    assert res.p == pytest.approx(0.021378, abs=1e-6)
    # by hand: s^2 / n of each group, then Welch-Satterthwaite
    va, vb = 2 ** 2 / 3, 4 ** 2 / 5
    assert welch_from_stats(10, 2, 3, 4, 4, 5).df == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 4))


def test_welch_edge_cases():
    assert welch_from_stats(5, 0, 3, 5, 0, 4).p == 1.0  # no spread, equal means
    assert welch_from_stats(5, 0, 3, 4, 0, 4).p == 0.0  # no spread, different means: certainly different
    with pytest.raises(ValueError, match="n >= 2"):
        welch_from_stats(5, 1, 1, 4, 1, 3)


def test_against_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(300):
        t, df = rng.uniform(-20, 20) * rng.random() ** 2, rng.uniform(0.5, 300)
        ref = 2 * stats.t.sf(abs(t), df)
        assert t_two_sided_p(t, df) == pytest.approx(ref, rel=1e-9, abs=1e-300)
    a, b = [rng.gauss(0, 1) for _ in range(4)], [rng.gauss(1, 3) for _ in range(7)]
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert welch(a, b).p == pytest.approx(ref.pvalue, rel=1e-9)
