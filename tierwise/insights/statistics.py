"""Small, dependency-free statistics for comparing models: tests, intervals, sample sizes.

``tierwise ab report`` and ``tierwise recommend`` must say not only which model looked
better but whether the data can tell. Everything here is plain :mod:`math` (scipy is not a
dependency), exact enough for decisions and checked against closed forms in the tests:

* **two proportions** (success rates, 0/1 eval scores): the pooled two-proportion z-test;
* **two means** (quality scores, cost, latency): Welch's t-test, which does not assume
  equal variances — arms rarely have them. Its p-value needs Student's t distribution:
  :func:`t_sf` computes it *exactly* from the regularized incomplete beta function
  (Lentz's continued fraction, Numerical Recipes' ``betacf``), not from a normal
  approximation, so small samples (n of 5 or 10 per arm) get honest p-values;
* **sample size** for 80 % power at α = 0.05 (two-sided), by the usual normal-approximation
  formulas (Fleiss without continuity correction for proportions) — the estimate a
  power calculator gives, good enough to say "about 170 more calls per arm";
* **Wilson intervals** are :func:`tierwise.ledger.evidence.interval`, re-exported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

from tierwise.ledger.evidence import interval

__all__ = [
    "TestResult",
    "interval",
    "mean_var",
    "normal_sf",
    "regularized_beta",
    "sample_size_means",
    "sample_size_proportions",
    "t_sf",
    "two_proportion_z_test",
    "welch_t_test",
    "welch_t_test_samples",
]

_NORMAL: Final = NormalDist()
_EPS: Final = 3e-16
_TINY: Final = 1e-300
_MAX_ITERATIONS: Final = 500


@dataclass(frozen=True, slots=True)
class TestResult:
    """The outcome of a two-sample test of ``b`` against ``a``.

    Attributes:
        difference: ``b - a`` (rates or means).
        statistic: z or t.
        p_value: Two-sided p-value; 1.0 when there is nothing to compare.
        df: Degrees of freedom (Welch); ``None`` for the z-test.
    """

    __test__ = False  # not a pytest test class, despite the name

    difference: float
    statistic: float
    p_value: float
    df: float | None = None

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the difference is significant at ``alpha`` (two-sided)."""
        return self.p_value < alpha


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z (``erfc``: accurate far into the tail).

    Example:
        >>> round(normal_sf(1.959964), 4)
        0.025
    """
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> TestResult:
    """Pooled two-proportion z-test of rate b against rate a.

    The pooled variance is the one under the null hypothesis (equal rates), as in every
    textbook and power calculator. With no variance at all (both 0 % or both 100 %), or an
    empty arm, the rates cannot be told apart: p = 1.

    Example:
        >>> r = two_proportion_z_test(60, 100, 45, 100)
        >>> round(r.difference, 2), round(r.statistic, 3), round(r.p_value, 4)
        (-0.15, -2.124, 0.0337)
    """
    if n_a <= 0 or n_b <= 0:
        return TestResult(0.0, 0.0, 1.0)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return TestResult(p_b - p_a, 0.0, 1.0)
    z = (p_b - p_a) / math.sqrt(variance)
    return TestResult(p_b - p_a, z, min(1.0, 2 * normal_sf(abs(z))))


def mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and unbiased (n - 1) variance; variance 0 for fewer than two values."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def welch_t_test(
    mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int
) -> TestResult:
    """Welch's unequal-variances t-test of mean b against mean a, from summary figures.

    Degrees of freedom by Welch–Satterthwaite; the p-value from Student's t exactly
    (:func:`t_sf`). Arms of fewer than two values, or with no variance in either, give
    p = 1 (unless both are constant and differ, which is then certain: p = 0).

    Example:
        >>> r = welch_t_test(20.0, 4.0, 10, 22.0, 9.0, 12)
        >>> round(r.statistic, 3), round(r.df, 2), round(r.p_value, 4)
        (1.865, 19.19, 0.0775)
    """
    difference = mean_b - mean_a
    if n_a < 2 or n_b < 2:
        return TestResult(difference, 0.0, 1.0)
    se2_a, se2_b = var_a / n_a, var_b / n_b
    se2 = se2_a + se2_b
    if se2 <= 0:
        return TestResult(difference, 0.0, 0.0 if difference else 1.0)
    t = difference / math.sqrt(se2)
    df = se2 * se2 / (se2_a * se2_a / (n_a - 1) + se2_b * se2_b / (n_b - 1))
    return TestResult(difference, t, min(1.0, 2 * t_sf(abs(t), df)), df)


def welch_t_test_samples(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """:func:`welch_t_test` on two samples.

    Example:
        >>> round(welch_t_test_samples([1, 2, 3, 4], [3, 4, 5, 6]).p_value, 4)
        0.071
    """
    mean_a, var_a = mean_var(a)
    mean_b, var_b = mean_var(b)
    return welch_t_test(mean_a, var_a, len(a), mean_b, var_b, len(b))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (real, > 0) degrees of freedom.

    Exact: P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t²), the regularized
    incomplete beta function.

    Example:
        >>> round(t_sf(1.0, 1), 6)  # Cauchy: 1/2 - atan(1)/pi
        0.25
        >>> round(2 * t_sf(2.228139, 10), 4)  # the t table's 5 % point at df = 10
        0.05
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df):
        return normal_sf(t)
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2, 0.5)
    return tail if t >= 0 else 1.0 - tail


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1 and a, b > 0.

    Evaluated by its continued fraction (modified Lentz), using the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.

    Example:
        >>> round(regularized_beta(0.5, 2.0, 2.0), 6)
        0.5
        >>> round(regularized_beta(0.3, 1.0, 1.0), 6)  # uniform: x
        0.3
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be within [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1.0 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function (Numerical Recipes' betacf)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    return h  # pragma: no cover - converges in far fewer steps for the t distribution


def _z(alpha: float, power: float) -> tuple[float, float]:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be within (0, 1), got {alpha}, {power}")
    return _NORMAL.inv_cdf(1 - alpha / 2), _NORMAL.inv_cdf(power)


def sample_size_proportions(
    p_a: float, p_b: float, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Calls per arm to detect rates ``p_a`` vs ``p_b`` (two-sided ``alpha``, ``power``).

    Fleiss' formula without continuity correction::

        n = (z_{1-α/2} √(2 p̄ q̄) + z_{power} √(p_a q_a + p_b q_b))² / (p_a - p_b)²

    ``inf`` when the rates are equal (no sample detects a zero difference). Round up.

    Example:
        >>> math.ceil(sample_size_proportions(0.6, 0.45))
        173
    """
    if p_a == p_b:
        return math.inf
    z_alpha, z_power = _z(alpha, power)
    mean = (p_a + p_b) / 2
    root = (z_alpha * math.sqrt(2 * mean * (1 - mean))
            + z_power * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b)))  # fmt: skip
    return root * root / ((p_a - p_b) ** 2)


def sample_size_means(
    difference: float,
    var_a: float,
    var_b: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Values per arm to detect ``difference`` between means (normal approximation).

    ``n = (z_{1-α/2} + z_{power})² (σ_a² + σ_b²) / δ²``; ``inf`` for a zero difference.
    With σ = 1 and δ = 0.5 this is the textbook 63 per group. Round up.

    Example:
        >>> math.ceil(sample_size_means(0.5, 1.0, 1.0))
        63
    """
    if difference == 0:
        return math.inf
    z_alpha, z_power = _z(alpha, power)
    return (z_alpha + z_power) ** 2 * (var_a + var_b) / (difference * difference)
