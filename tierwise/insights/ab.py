"""A/B test reports: which arm's model is better, and whether the data can tell yet.

An :class:`~tierwise.catalog.policy.ABTest` puts arm a's or arm b's model first for each
thread and files every attempt of the call under ``"<test>:a"`` / ``"<test>:b"`` in the
ledger's ``arm`` column. This module reads those rows back, one *call* per ``call_id``
(its attempts: the arm's model, then any fallbacks), and compares the arms on:

* **success rate** — the arm's model answered the call itself (its own schema-repair
  retry allowed, no fallback to another model); two-proportion z-test;
* **quality** — the mean of the quality evidence (:mod:`tierwise.ledger.evidence`:
  evals, judges, escalations) recorded for the arm's calls, joined by ``call_id``; a call
  with several verdicts counts once, by their mean. Intention to treat: a call a
  fallback answered still counts for its arm, since that is what the arm delivered;
  Welch's t-test, the variances taken with two pseudo-scores (0 and 1) added so that a
  few identical scores never look certain;
* **cost per call** — USD of every attempt of the call; Welch's t-test;
* **latency** — seconds of every attempt of the call (what the caller waited), p50 and
  p95 shown, means compared by Welch's t-test.

Each metric gets a verdict. *Significant* at α (0.05): the better arm wins and there is
enough data to decide. Otherwise, if the observed difference is at least the smallest one
that matters (:data:`MIN_EFFECT`), the report says how many calls per arm would detect it
with 80 % power; if it is smaller, how many would show that no difference that matters
exists — and when the arms already have that many, it says so ("no difference that
matters", decided). The report's verdict is its *primary* metric's: quality when both
arms have quality evidence, else success rate.

Peeking at a running test and stopping at the first significant report inflates the
false-positive rate; decide the sample size up front (the estimate here helps) or
require a margin.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from tierwise.insights.statistics import (
    TestResult,
    interval,
    mean_var,
    sample_size_means,
    sample_size_proportions,
    two_proportion_z_test,
    welch_t_test,
)
from tierwise.ledger import OK, LedgerRow, percentile

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.ledger.evidence import Outcome

__all__ = [
    "A_BETTER",
    "B_BETTER",
    "MIN_EFFECT",
    "NO_DATA",
    "NO_DIFFERENCE",
    "NOT_YET",
    "ABReport",
    "ArmStats",
    "Call",
    "MetricComparison",
    "ab_reports",
    "calls_by_test",
    "compare",
]

B_BETTER: Final = "b better"
A_BETTER: Final = "a better"
NOT_YET: Final = "no difference yet"
NO_DIFFERENCE: Final = "no difference that matters"
NO_DATA: Final = "no data"

SUCCESS: Final = "success_rate"
QUALITY: Final = "quality"
COST: Final = "cost_per_call"
LATENCY: Final = "latency"

#: The smallest difference worth acting on, per metric: absolute for rates and scores
#: (2 points), relative to the larger arm's mean for cost and latency (5 %).
MIN_EFFECT: Final[Mapping[str, tuple[float, bool]]] = {
    SUCCESS: (0.02, False),
    QUALITY: (0.02, False),
    COST: (0.05, True),
    LATENCY: (0.05, True),
}


@dataclass(frozen=True, slots=True)
class Call:
    """One routed call of an A/B test: its arm and what its attempts did.

    Attributes:
        call_id: The ledger's ``call_id`` (quality evidence names it).
        test: The A/B test's name.
        operation: ``TaskType`` value.
        arm: ``"a"`` or ``"b"``.
        model: The arm's model (the call's first attempt).
        success: The arm's model produced the answer (no fallback).
        answered: Some model produced the answer.
        cost: USD over every attempt.
        latency: Seconds over every attempt.
    """

    call_id: str
    test: str
    operation: str
    arm: str
    model: str
    success: bool
    answered: bool
    cost: float
    latency: float


@dataclass(frozen=True, slots=True)
class ArmStats:
    """One arm's figures (rates with a 95 % Wilson interval)."""

    arm: str
    model: str | None
    calls: int
    successes: int
    answered: int
    success_rate: float | None
    success_interval: tuple[float, float] | None
    scored: int
    quality: float | None
    quality_interval: tuple[float, float] | None
    cost_per_call: float | None
    total_cost: float
    latency_p50: float | None
    latency_p95: float | None


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """Arm b against arm a on one metric.

    Attributes:
        metric: ``success_rate``, ``quality``, ``cost_per_call`` or ``latency``.
        higher_is_better: True for success and quality, False for cost and latency.
        a: Arm a's rate or mean (``None``: no data).
        b: Arm b's.
        n_a: Calls (or scored calls) behind ``a``.
        n_b: Calls (or scored calls) behind ``b``.
        difference: ``b - a``.
        test: ``"two-proportion z"`` or ``"Welch t"``.
        p_value: Two-sided p-value.
        verdict: :data:`B_BETTER`, :data:`A_BETTER`, :data:`NOT_YET`,
            :data:`NO_DIFFERENCE` or :data:`NO_DATA`.
        decided: Enough data to decide (significant, or no difference that matters
            with enough power to have seen one).
        needed_per_arm: Calls per arm for 80 % power: to detect the observed difference
            (or, when it is smaller than :data:`MIN_EFFECT`, the smallest that matters).
        more_per_arm: How many more calls per arm that is (0 when decided).
    """

    metric: str
    higher_is_better: bool
    a: float | None
    b: float | None
    n_a: int
    n_b: int
    difference: float | None
    test: str
    p_value: float | None
    verdict: str
    decided: bool
    needed_per_arm: int | None
    more_per_arm: int | None

    def describe(self) -> str:
        """One line: the verdict and, when undecided, the data still needed."""
        if self.verdict == NO_DATA:
            return f"{self.metric}: no data"
        p = _p(self.p_value)
        if self.decided:
            return f"{self.metric}: {self.verdict} ({p}), enough data to decide"
        more = "" if self.more_per_arm is None else (
            f"; about {self.more_per_arm} more calls per arm for 80% power"
        )
        return f"{self.metric}: {self.verdict} ({p}){more}"


@dataclass(frozen=True, slots=True)
class ABReport:
    """Arm a against arm b of one A/B test on one operation."""

    test: str
    operation: str
    a: ArmStats
    b: ArmStats
    metrics: tuple[MetricComparison, ...]
    primary: str
    alpha: float
    power: float

    @property
    def primary_metric(self) -> MetricComparison:
        """The comparison the verdict rests on."""
        return next(m for m in self.metrics if m.metric == self.primary)

    @property
    def verdict(self) -> str:
        """The primary metric's verdict."""
        return self.primary_metric.verdict

    @property
    def decided(self) -> bool:
        """Enough data to decide on the primary metric."""
        return self.primary_metric.decided

    def summary(self) -> str:
        """One sentence a person can act on.

        Example:
            ``"b better on quality (0.62 → 0.81, p < 0.001): enough data to decide"``
        """
        m = self.primary_metric
        if m.verdict == NO_DATA:
            return "no data: no calls recorded for one of the arms"
        change = f"{self.primary} {_fmt(m.metric, m.a)} → {_fmt(m.metric, m.b)}, {_p(m.p_value)}"
        if m.decided:
            head = f"{m.verdict} on {change}" if m.verdict in (A_BETTER, B_BETTER) else (
                f"{NO_DIFFERENCE} on {change}"
            )
            return f"{head}: enough data to decide"
        if m.more_per_arm is None:
            return f"not enough data yet ({change})"
        what = ("the observed difference" if m.difference is not None
                and abs(m.difference) >= _min_effect(m) else "a difference that matters")
        return (f"not enough data yet ({change}): about {m.more_per_arm} more calls per arm "
                f"({m.needed_per_arm} per arm in all) to detect {what} with "
                f"{self.power:.0%} power")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "test": self.test,
            "operation": self.operation,
            "verdict": self.verdict,
            "decided": self.decided,
            "primary": self.primary,
            "summary": self.summary(),
            "alpha": self.alpha,
            "power": self.power,
            "arms": {"a": asdict(self.a), "b": asdict(self.b)},
            "metrics": [asdict(m) for m in self.metrics],
        }


# --------------------------------------------------------------------------- reading


def calls_by_test(
    rows: Iterable[LedgerRow], models: Mapping[str, Mapping[str, str]] | None = None
) -> dict[tuple[str, str], list[Call]]:
    """The A/B calls in ``rows`` (time order), per (test, operation), oldest first.

    Rows without an ``arm`` are no A/B call and are skipped; a row without ``call_id``
    (never written by the router) counts as a call of its own. An arm's model is the one
    ``models[test][arm]`` names (the policy's test), else the one most of its calls tried
    first. A call assigned to the arm whose model could not be a
    candidate (not allowed, unavailable) is still the arm's call — intention to treat —
    and a failure of its model, so the arms stay comparable.
    """
    grouped: dict[tuple[str, str, str], list[LedgerRow]] = {}
    for index, row in enumerate(rows):
        if not row.arm:
            continue
        test, _, arm = row.arm.rpartition(":")
        key = row.call_id or f"#row{index}"
        grouped.setdefault((test, row.operation, key), []).append(row)
    firsts: dict[tuple[str, str, str], Counter[str]] = {}
    for (test, operation, _), attempts in grouped.items():
        arm = attempts[0].arm.rpartition(":")[2] if attempts[0].arm else ""
        firsts.setdefault((test, operation, arm), Counter())[attempts[0].model] += 1
    result: dict[tuple[str, str], list[Call]] = {}
    for (test, operation, call_id), attempts in grouped.items():
        arm = attempts[0].arm.rpartition(":")[2] if attempts[0].arm else ""
        model = (models or {}).get(test, {}).get(arm) or (
            firsts[(test, operation, arm)].most_common(1)[0][0]
        )
        result.setdefault((test, operation), []).append(Call(
            call_id=call_id,
            test=test,
            operation=operation,
            arm=arm,
            model=model,
            success=any(r.outcome == OK and r.model == model for r in attempts),
            answered=any(r.outcome == OK for r in attempts),
            cost=math.fsum(r.cost for r in attempts),
            latency=math.fsum(r.latency for r in attempts),
        ))
    return result


def call_scores(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """Per call_id, the mean score of its outcomes (outcomes without a call_id are skipped)."""
    totals: dict[str, list[float]] = {}
    for outcome in outcomes:
        if outcome.call_id:
            totals.setdefault(outcome.call_id, []).append(outcome.score)
    return {call: math.fsum(s) / len(s) for call, s in totals.items()}


def ab_reports(
    ledger: Ledger,
    *,
    test: str | None = None,
    operation: str | None = None,
    since: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    models: Mapping[str, Mapping[str, str]] | None = None,
) -> list[ABReport]:
    """Reports for every A/B test (or ``test``) with calls in ``ledger`` since ``since``.

    Sorted by test name, then operation. Quality evidence is joined by ``call_id``,
    whenever it was recorded. ``models`` (test -> arm -> catalog key, from the policy)
    names each arm's model; see :func:`calls_by_test`.
    """
    rows = ledger.rows(since=since, operation=operation)
    groups = calls_by_test(rows, models)
    if test is not None:
        groups = {key: calls for key, calls in groups.items() if key[0] == test}
    reports = []
    for (name, op), calls in sorted(groups.items()):
        wanted = {c.call_id for c in calls}
        scores = call_scores(
            o for o in ledger.evidence.outcomes(operation=op) if o.call_id in wanted
        )
        reports.append(compare(name, op, calls, scores, alpha=alpha, power=power))
    return reports


# --------------------------------------------------------------------------- comparing


def compare(
    test: str,
    operation: str,
    calls: Sequence[Call],
    scores: Mapping[str, float],
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> ABReport:
    """Arm b against arm a, from the test's calls and per-call quality scores.

    Example:
        >>> calls = [Call(f"c{i}", "t", "classification", "ab"[i % 2], "m" + "ab"[i % 2],
        ...               success=i % 2 == 1 or i % 4 == 0, answered=True, cost=0.0,
        ...               latency=0.1) for i in range(400)]
        >>> report = compare("t", "classification", calls, {})
        >>> report.verdict, report.decided, report.a.success_rate, report.b.success_rate
        ('b better', True, 0.5, 1.0)
    """
    arms = {arm: [c for c in calls if c.arm == arm] for arm in ("a", "b")}
    stats = {arm: _arm(arm, arm_calls, scores) for arm, arm_calls in arms.items()}
    scored = {arm: [scores[c.call_id] for c in arms[arm] if c.call_id in scores]
              for arm in arms}  # fmt: skip
    costs = {arm: [c.cost for c in arms[arm]] for arm in arms}
    latencies = {arm: [c.latency for c in arms[arm]] for arm in arms}
    metrics = [
        _success(stats["a"], stats["b"], alpha, power),
        _means(QUALITY, True, scored["a"], scored["b"], alpha, power),
        _means(COST, False, costs["a"], costs["b"], alpha, power),
        _means(LATENCY, False, latencies["a"], latencies["b"], alpha, power),
    ]
    primary = QUALITY if stats["a"].scored >= 2 and stats["b"].scored >= 2 else SUCCESS
    return ABReport(test, operation, stats["a"], stats["b"], tuple(metrics), primary,
                    alpha, power)  # fmt: skip


def _arm(arm: str, calls: Sequence[Call], scores: Mapping[str, float]) -> ArmStats:
    n = len(calls)
    models = Counter(c.model for c in calls)
    successes = sum(c.success for c in calls)
    scored = [scores[c.call_id] for c in calls if c.call_id in scores]
    quality_sum = math.fsum(scored)
    latencies = sorted(c.latency for c in calls)
    total_cost = math.fsum(c.cost for c in calls)
    return ArmStats(
        arm=arm,
        model=models.most_common(1)[0][0] if models else None,
        calls=n,
        successes=successes,
        answered=sum(c.answered for c in calls),
        success_rate=successes / n if n else None,
        success_interval=interval(successes, n) if n else None,
        scored=len(scored),
        quality=quality_sum / len(scored) if scored else None,
        quality_interval=interval(quality_sum, len(scored)) if scored else None,
        cost_per_call=total_cost / n if n else None,
        total_cost=total_cost,
        latency_p50=percentile(latencies, 0.5),
        latency_p95=percentile(latencies, 0.95),
    )


def _success(a: ArmStats, b: ArmStats, alpha: float, power: float) -> MetricComparison:
    if not a.calls or not b.calls:
        return _no_data(SUCCESS, True, a.calls, b.calls)
    result = two_proportion_z_test(a.successes, a.calls, b.successes, b.calls)
    p_a, p_b = a.successes / a.calls, b.successes / b.calls
    smallest, _ = MIN_EFFECT[SUCCESS]

    def needed(difference: float) -> float:
        if abs(p_b - p_a) >= smallest:
            return sample_size_proportions(p_a, p_b, alpha=alpha, power=power)
        base = min(max((p_a + p_b) / 2, smallest), 1 - smallest)  # a 2-point move from here
        return sample_size_proportions(base - difference / 2, base + difference / 2,
                                       alpha=alpha, power=power)  # fmt: skip

    return _judge(SUCCESS, True, p_a, p_b, a.calls, b.calls, result, "two-proportion z",
                  smallest, needed, alpha)  # fmt: skip


def _means(
    metric: str,
    higher_is_better: bool,
    a: Sequence[float],
    b: Sequence[float],
    alpha: float,
    power: float,
) -> MetricComparison:
    if not a or not b:
        return _no_data(metric, higher_is_better, len(a), len(b))
    mean_a, var_a = mean_var(a)
    mean_b, var_b = mean_var(b)
    if metric == QUALITY:
        # Scores live in [0, 1]: a few identical ones (all 1.0) have no sample variance,
        # which would make any difference certain and any sample "enough". The variance
        # is taken with two pseudo-scores, 0 and 1, added (means unchanged): negligible
        # at real sample sizes, honest at tiny ones.
        var_a, var_b = _padded_var(a), _padded_var(b)
    result = welch_t_test(mean_a, var_a, len(a), mean_b, var_b, len(b))
    share, relative = MIN_EFFECT[metric]
    smallest = share * max(abs(mean_a), abs(mean_b)) if relative else share

    def needed(difference: float) -> float:
        return sample_size_means(difference, var_a, var_b, alpha=alpha, power=power)

    return _judge(metric, higher_is_better, mean_a, mean_b, len(a), len(b), result,
                  "Welch t", smallest, needed, alpha)  # fmt: skip


def _judge(
    metric: str,
    higher_is_better: bool,
    a: float,
    b: float,
    n_a: int,
    n_b: int,
    result: TestResult,
    test: str,
    smallest: float,
    needed_for: Any,
    alpha: float,
) -> MetricComparison:
    """The verdict: significant, or the calls per arm it would take to decide."""
    difference = b - a

    def build(verdict: str, decided: bool, needed: float | None) -> MetricComparison:
        whole = None if needed is None or math.isinf(needed) else math.ceil(needed)
        more = None if whole is None else max(0, whole - min(n_a, n_b))
        if decided:
            more = 0
        elif more == 0:
            more = 1  # the estimate is met but the test is not yet significant
        return MetricComparison(metric, higher_is_better, a, b, n_a, n_b, difference, test,
                                result.p_value, verdict, decided, whole, more)  # fmt: skip

    if result.significant(alpha) and difference:
        better = (difference > 0) == higher_is_better
        return build(B_BETTER if better else A_BETTER, True, needed_for(difference))
    if abs(difference) >= smallest and smallest > 0:
        return build(NOT_YET, False, needed_for(difference))
    if smallest <= 0:  # both arms exactly the same (e.g. free models: cost 0)
        return build(NO_DIFFERENCE, min(n_a, n_b) >= 2, None)
    # Smaller than what matters: enough data once a difference that matters would show.
    needed = needed_for(math.copysign(smallest, difference or 1.0))
    enough = not math.isinf(needed) and min(n_a, n_b) >= needed
    return build(NO_DIFFERENCE if enough else NOT_YET, enough, needed)


def _padded_var(scores: Sequence[float]) -> float:
    return mean_var([*scores, 0.0, 1.0])[1]


def _no_data(metric: str, higher_is_better: bool, n_a: int, n_b: int) -> MetricComparison:
    return MetricComparison(metric, higher_is_better, None, None, n_a, n_b, None, "", None,
                            NO_DATA, False, None, None)  # fmt: skip


def _min_effect(m: MetricComparison) -> float:
    share, relative = MIN_EFFECT[m.metric]
    if not relative:
        return share
    return share * max(abs(m.a or 0.0), abs(m.b or 0.0))


def _p(p: float | None) -> str:
    if p is None:
        return "p -"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == SUCCESS:
        return f"{value:.0%}"
    if metric == COST:
        return f"${value:.6f}"
    if metric == LATENCY:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f}"
