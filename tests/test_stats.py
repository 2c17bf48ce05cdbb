"""The Student-t distribution and Welch's t-test of pjepa.eval.stats, against table values and worked examples."""

from __future__ import annotations

import math
import random

import pytest

from pjepa.eval.stats import holm, regularized_beta, t_cdf, t_two_sided_p, welch, welch_from_stats


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


def test_holm_worked_example():
    """m = 4; sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the running max makes
    the last 0.06; back in the given order: 0.03, 0.06, 0.06, 0.02."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm([0.5, 0.4]) == [0.8, 0.8]  # 2 x 0.4, then max(0.8, 1 x 0.5)
    assert holm([0.9, 0.6, 0.7]) == [1.0, 1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_holm_properties_on_random_families():
    """Adjusted >= raw, <= 1, in the raw order (a smaller raw p never gets a larger adjusted one), between the
    raw p and Bonferroni's m x p, and the smallest p always gets exactly min(1, m x p); m = 1 is the identity."""
    rng = random.Random(0)
    for _ in range(500):
        m = rng.randint(1, 12)
        p = [rng.random() ** rng.choice((1, 3, 8)) for _ in range(m)]
        if rng.random() < 0.2:
            p[rng.randrange(m)] = p[0]  # ties
        adj = holm(p)
        assert len(adj) == m and all(a_ <= 1.0 for a_ in adj)
        assert all(raw <= a_ <= min(1.0, m * raw) for raw, a_ in zip(p, adj))
        assert all(adj[i] <= adj[j] for i in range(m) for j in range(m) if p[i] <= p[j])
        assert min(adj) == min(1.0, m * min(p))
        if m == 1:
            assert adj == p
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="p-value must be in"):
            holm([0.01, bad])


def test_holm_against_statsmodels_where_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = random.Random(1)
    for m in (2, 5, 10):
        p = [rng.random() ** 3 for _ in range(m)]
        assert holm(p) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]), rel=1e-12)
