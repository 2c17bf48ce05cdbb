"""Small statistics for comparing runs over seeds: Welch's t-test and the Student-t distribution.

A table row is a group of runs that differ only in seed; two rows differ by more than
seed noise when Welch's two-sided t-test (unequal variances) gives p < 0.05 (GUIDE
section 6: "a gap inside the spread is not a result"). The Student-t tail comes from the
regularised incomplete beta function, evaluated by its continued fraction (modified Lentz
method, as in Numerical Recipes section 6.4), so the core needs no scipy.

    two-sided p(t, df) = I_x(df / 2, 1 / 2),   x = df / (df + t^2)

One row tested against many (every row against the best, every pair of rows) is a family of
tests: at p < 0.05 each, some of them come out "different" by chance alone. ``holm`` adjusts the
family's p-values (Holm's step-down procedure) so that the chance of any false "different" in the
family stays at most 0.05, whatever the dependence between the tests; with one test it changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05  # the significance level of every verdict in the table
_EPS = 1e-15  # relative accuracy of the continued fraction
_TINY = 1e-300  # keeps Lentz's denominators away from zero
_MAX_TERMS = 10_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),  # the even step, then the odd one
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def regularized_beta(a: float, b: float, x: float, one_minus_x: float | None = None) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) for a, b > 0 and x in [0, 1].

    ``one_minus_x``: 1 - x computed by the caller without cancellation (x near 1 loses digits in 1 - x).
    """
    y = 1.0 - x if one_minus_x is None else one_minus_x
    if a <= 0 or b <= 0 or not 0.0 <= x <= 1.0:
        raise ValueError(f"regularized_beta needs a, b > 0 and x in [0, 1], got a={a}, b={b}, x={x}")
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, y) / b  # symmetry: I_x(a, b) = 1 - I_{1-x}(b, a)


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's T with ``df`` > 0 degrees of freedom (non-integer allowed: Welch)."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isnan(t):
        raise ValueError("t is NaN")
    if math.isinf(t):
        return 0.0
    return min(1.0, regularized_beta(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t)))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's T with ``df`` degrees of freedom."""
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


@dataclass(frozen=True)
class Welch:
    """Welch's two-sample t-test of mean a vs mean b: statistic, Welch-Satterthwaite df, two-sided p."""

    t: float
    df: float
    p: float


def welch_from_stats(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> Welch:
    """Welch's test from each group's mean, sample standard deviation (ddof 1) and size (both n >= 2).

    t = (mean_a - mean_b) / se, se^2 = s_a^2 / n_a + s_b^2 / n_b;
    df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1)).
    Two groups without any spread: equal means give p = 1, different means p = 0.
    """
    if n_a < 2 or n_b < 2:
        raise ValueError(f"Welch's test needs n >= 2 in both groups, got {n_a} and {n_b}")
    va, vb = std_a**2 / n_a, std_b**2 / n_b
    se2, diff = va + vb, mean_a - mean_b
    if se2 == 0.0:
        df = float(n_a + n_b - 2)
        return Welch(0.0, df, 1.0) if diff == 0 else Welch(math.copysign(math.inf, diff), df, 0.0)
    t = diff / math.sqrt(se2)
    df = se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return Welch(t, df, t_two_sided_p(t, df))


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's test of two samples (each of size >= 2)."""
    def mean_std(x: Sequence[float]) -> tuple[float, float]:
        m = math.fsum(x) / len(x)
        return m, math.sqrt(math.fsum((v - m) ** 2 for v in x) / (len(x) - 1)) if len(x) > 1 else 0.0

    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return welch_from_stats(ma, sa, len(a), mb, sb, len(b))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of a family of tests, in the order given.

    Step-down: sort the m p-values ascending, p_(0) <= ... <= p_(m-1); the adjusted value of p_(i) is
    max over j <= i of min(1, (m - j) * p_(j)). Rejecting where the adjusted p < alpha keeps the
    family-wise error rate at alpha under any dependence, and rejects everything Bonferroni (m * p)
    rejects, often more: the smallest p pays the factor m, the next m - 1, and so on. The running max
    keeps the adjusted values in the order of the raw ones. One test (m = 1): the raw p.
    """
    for p in p_values:
        if not 0.0 <= p <= 1.0:  # also refuses NaN
            raise ValueError(f"holm: a p-value must be in [0, 1], got {p}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
