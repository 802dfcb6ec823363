"""Chain recommendations: which model should lead each operation's tier, from the record.

The catalog's chains are the tierwise team's estimates; the ledger (did the model answer,
how fast, at what cost) and the quality evidence (:mod:`tierwise.ledger.evidence`: evals,
judges, escalations) are what happened. For each operation and each tier of its chain,
this module ranks the models that have enough record and, when the record says another
model should lead, suggests the change and the ``tierwise.toml`` snippet that makes it.

The rule, within one tier (chains are per tier; the policy decides the tier order):

1. **Quality.** Measured quality (mean evidence score, 95 % Wilson interval) for models
   with at least ``min_n`` outcomes; when fewer than two models of the tier have that
   much, their success rate (answered without failing) over at least ``min_n`` sent
   attempts stands in for it. Models with less are listed, not ranked.
2. **Good enough.** Every ranked model whose interval overlaps the best one's is as good
   as the data can tell.
3. **Cheapest, then fastest.** Among those: the lowest cost per successful call (costs
   within 5 % of each other count as equal — free models all cost 0), then the lowest
   p50 latency of the successful calls, then the higher quality.

A change is suggested only when the current first model of the tier is itself ranked
(otherwise the record says nothing about the model it would replace). *How sure*: the
winner is compared with the current first model on what decided it — quality by Welch's
t-test on the scores (z-test on success rates), cost by Welch on the cost per attempt,
latency by Welch on the successful calls' latencies — and the suggestion is marked
significant when that advantage is significant at α = 0.05.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tierwise.catalog.specs import Catalog, TaskType, Tier
from tierwise.insights.statistics import (
    TestResult,
    interval,
    two_proportion_z_test,
    welch_t_test_samples,
)
from tierwise.ledger import OK, LedgerRow, percentile

if TYPE_CHECKING:
    from tierwise.ledger import Ledger
    from tierwise.ledger.evidence import Outcome

__all__ = [
    "MEASURED",
    "SUCCESS_RATE",
    "ModelRecord",
    "Recommendation",
    "TierRecommendation",
    "recommend",
    "recommend_operation",
    "toml_snippet",
]

MEASURED: Final = "measured quality"
SUCCESS_RATE: Final = "success rate"
RULE: Final = (
    "among models whose quality interval overlaps the best's, the cheapest per "
    "successful call (within 5%), then the fastest (p50), then the best quality"
)
_COST_TOLERANCE: Final = 0.05


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """What the ledger and the evidence say about one model on one operation.

    Attributes:
        operation: ``TaskType`` value.
        model: Catalog key.
        tier: ``Tier`` value.
        in_chain: The model is in the operation's current chain for its tier.
        attempts: Sent attempts in the ledger.
        successes: Of those, answers.
        success_rate: ``successes / attempts``.
        evidence: Quality outcomes recorded for it.
        measured: Mean outcome score (``None`` with no outcome).
        quality: The quality the rule ranks on (measured, or success rate; see ``basis``).
        quality_interval: 95 % Wilson interval of ``quality``.
        basis: :data:`MEASURED` or :data:`SUCCESS_RATE`; ``None``: too little record.
        cost_per_success: USD over every attempt / successes.
        p50_latency: Seconds, successful attempts.
        quality_per_dollar: ``quality / cost_per_success`` (``None`` when free or unknown).
        quality_per_second: ``quality / p50_latency``.
    """

    operation: str
    model: str
    tier: str
    in_chain: bool
    attempts: int
    successes: int
    success_rate: float | None
    evidence: int
    measured: float | None
    quality: float | None
    quality_interval: tuple[float, float] | None
    basis: str | None
    cost_per_success: float | None
    p50_latency: float | None
    quality_per_dollar: float | None
    quality_per_second: float | None


@dataclass(frozen=True, slots=True)
class TierRecommendation:
    """The rule's choice for one tier of one operation, against the current chain.

    Attributes:
        operation: ``TaskType`` value.
        tier: ``Tier`` value.
        current: The chain's order now.
        suggested: The order to use; ``None`` to keep ``current``.
        best: The model the rule picks (``None``: nothing ranked).
        incumbent: The current first model.
        basis: What quality means here (:data:`MEASURED` or :data:`SUCCESS_RATE`).
        reason: Why, in words, with the figures.
        decided_by: ``quality``, ``cost`` or ``latency`` (what put ``best`` ahead).
        p_value: Of ``best`` against ``incumbent`` on ``decided_by``.
        significant: ``p_value`` < α.
    """

    operation: str
    tier: str
    current: tuple[str, ...]
    suggested: tuple[str, ...] | None
    best: str | None
    incumbent: str | None
    basis: str | None
    reason: str
    decided_by: str | None = None
    p_value: float | None = None
    significant: bool = False

    def change(self) -> str | None:
        """``"move X above Y in <op>'s free tier"``, or ``None`` when nothing changes."""
        if self.suggested is None or self.best is None:
            return None
        if self.best not in self.current:
            return f"add {self.best} first in {self.operation}'s {self.tier} tier"
        return f"move {self.best} above {self.incumbent} in {self.operation}'s {self.tier} tier"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Every tier's recommendation for one operation, and the snippet applying them."""

    operation: str
    tiers: tuple[TierRecommendation, ...]
    models: tuple[ModelRecord, ...]

    @property
    def changes(self) -> tuple[TierRecommendation, ...]:
        """The tiers whose order should change."""
        return tuple(t for t in self.tiers if t.suggested is not None)

    @property
    def snippet(self) -> str | None:
        """The ``[chains.<operation>]`` table for ``tierwise.toml``; ``None``: no change."""
        return toml_snippet([self])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "operation": self.operation,
            "rule": RULE,
            "changes": [t.change() for t in self.changes],
            "snippet": self.snippet,
            "tiers": [asdict(t) for t in self.tiers],
            "models": [asdict(m) for m in self.models],
        }


def toml_snippet(recommendations: Iterable[Recommendation]) -> str | None:
    """``[chains.<op>]`` tables with the suggested orders, for ``tierwise.toml``.

    ``load_settings`` replaces only the tiers a ``[chains.<op>]`` table names, so the
    other tiers of the chain stay as they are.

    Example:
        >>> tier = TierRecommendation("classification", "free", ("x", "y"), ("y", "x"),
        ...                           "y", "x", MEASURED, "")
        >>> print(toml_snippet([Recommendation("classification", (tier,), ())]))
        [chains.classification]
        free = ["y", "x"]
    """
    tables = []
    for rec in recommendations:
        lines = [f"{t.tier} = {json.dumps(list(t.suggested))}"
                 for t in rec.changes if t.suggested is not None]  # fmt: skip
        if lines:
            tables.append("\n".join([f"[chains.{rec.operation}]", *lines]))
    return "\n\n".join(tables) if tables else None


# --------------------------------------------------------------------------- reading


def recommend(
    ledger: Ledger,
    catalog: Catalog,
    *,
    operation: str | None = None,
    since: float | None = None,
    min_n: int = 20,
    alpha: float = 0.05,
) -> list[Recommendation]:
    """A :class:`Recommendation` per operation with a record in ``ledger`` since ``since``."""
    rows = ledger.rows(since=since, operation=operation)
    outcomes = ledger.evidence.outcomes(operation=operation, since=since)
    ops = sorted({r.operation for r in rows} | {o.operation for o in outcomes})
    known = {op.value for op in TaskType}
    return [
        recommend_operation(
            op, catalog,
            [r for r in rows if r.operation == op],
            [o for o in outcomes if o.operation == op],
            min_n=min_n, alpha=alpha,
        )  # fmt: skip
        for op in ops
        if op in known
    ]


@dataclass
class _Evidence:
    """Raw figures of one model, kept for the significance tests."""

    attempts: int = 0
    successes: int = 0
    cost: float = 0.0
    costs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def recommend_operation(
    operation: str,
    catalog: Catalog,
    rows: Sequence[LedgerRow],
    outcomes: Sequence[Outcome],
    *,
    min_n: int = 20,
    alpha: float = 0.05,
) -> Recommendation:
    """The recommendation for one operation from its ledger rows and quality outcomes."""
    op = TaskType(operation)
    raw: dict[str, _Evidence] = {}
    for row in rows:
        if not row.sent or row.model not in catalog.models:
            continue
        e = raw.setdefault(row.model, _Evidence())
        e.attempts += 1
        e.cost += row.cost
        e.costs.append(row.cost)
        if row.outcome == OK:
            e.successes += 1
            e.latencies.append(row.latency)
    for outcome in outcomes:
        if outcome.model in catalog.models:
            raw.setdefault(outcome.model, _Evidence()).scores.append(outcome.score)
    tiers, records = [], []
    for tier in Tier:
        chain = catalog.chains[op].tier(tier)
        members = [k for k in raw if catalog.models[k].tier is tier]
        members.sort(key=lambda k: (chain.index(k) if k in chain else len(chain), k))
        if not members and not chain:
            continue
        measured = sum(len(raw[k].scores) >= min_n for k in members) >= 2
        tier_records = [_record(op.value, k, tier, k in chain, raw[k], measured, min_n)
                        for k in members]  # fmt: skip
        records += tier_records
        if tier_records:
            tiers.append(_choose(op.value, tier, chain, tier_records, raw, alpha))
    return Recommendation(op.value, tuple(tiers), tuple(records))


def _record(
    operation: str,
    model: str,
    tier: Tier,
    in_chain: bool,
    e: _Evidence,
    measured_basis: bool,
    min_n: int,
) -> ModelRecord:
    scores = e.scores
    mean = math.fsum(scores) / len(scores) if scores else None
    rate = e.successes / e.attempts if e.attempts else None
    quality: float | None = None
    span: tuple[float, float] | None = None
    basis: str | None = None
    if measured_basis and len(scores) >= min_n:
        quality, span, basis = mean, interval(math.fsum(scores), len(scores)), MEASURED
    elif not measured_basis and e.attempts >= min_n:
        quality, span, basis = rate, interval(e.successes, e.attempts), SUCCESS_RATE
    cost = e.cost / e.successes if e.successes else None
    p50 = percentile(sorted(e.latencies), 0.5)
    return ModelRecord(
        operation=operation,
        model=model,
        tier=tier.value,
        in_chain=in_chain,
        attempts=e.attempts,
        successes=e.successes,
        success_rate=rate,
        evidence=len(scores),
        measured=mean,
        quality=quality,
        quality_interval=span,
        basis=basis,
        cost_per_success=cost,
        p50_latency=p50,
        quality_per_dollar=(quality / cost if quality is not None and cost else None),
        quality_per_second=(quality / p50 if quality is not None and p50 else None),
    )


def _choose(
    operation: str,
    tier: Tier,
    chain: tuple[str, ...],
    records: Sequence[ModelRecord],
    raw: Mapping[str, _Evidence],
    alpha: float,
) -> TierRecommendation:
    """Apply the rule (module doc) to one tier's ranked models."""
    ranked = [r for r in records if r.quality is not None and r.quality_interval is not None]
    incumbent = chain[0] if chain else None
    basis = ranked[0].basis if ranked else None

    def keep(reason: str) -> TierRecommendation:
        return TierRecommendation(operation, tier.value, chain, None, None, incumbent, basis,
                                  reason)  # fmt: skip

    if not ranked:
        return keep("no model has enough record to rank")
    top = max(ranked, key=lambda r: r.quality or 0.0)
    assert top.quality_interval is not None
    eligible = [r for r in ranked
                if r.quality_interval is not None
                and r.quality_interval[1] >= top.quality_interval[0]]  # fmt: skip

    def cost(r: ModelRecord) -> float:
        return math.inf if r.cost_per_success is None else r.cost_per_success

    cheapest = min(cost(r) for r in eligible)
    affordable = [r for r in eligible if cost(r) <= cheapest * (1 + _COST_TOLERANCE) + 1e-12]
    best = min(affordable, key=lambda r: (
        math.inf if r.p50_latency is None else r.p50_latency, -(r.quality or 0.0),
        chain.index(r.model) if r.model in chain else len(chain),
    ))  # fmt: skip
    by_key = {r.model: r for r in ranked}
    if incumbent is None or incumbent not in by_key:
        return keep(f"the current first choice {incumbent or '-'} has too little record "
                    f"to compare (best measured: {best.model})")  # fmt: skip
    current = by_key[incumbent]
    if best.model == incumbent:
        return keep(f"{incumbent} is already first: {_figures(current)}")
    decided_by, result = _advantage(best, current, raw, eligible, basis)
    order = (best.model, *(k for k in chain if k != best.model))
    reason = (f"{best.model} ({_figures(best)}) against {incumbent} ({_figures(current)}): "
              f"{_why(decided_by, result, alpha)}")  # fmt: skip
    return TierRecommendation(
        operation, tier.value, chain, order, best.model, incumbent, basis, reason,
        decided_by, result.p_value, result.significant(alpha),
    )  # fmt: skip


def _advantage(
    best: ModelRecord,
    current: ModelRecord,
    raw: Mapping[str, _Evidence],
    eligible: Sequence[ModelRecord],
    basis: str | None,
) -> tuple[str, TestResult]:
    """What put ``best`` ahead of ``current``, and the test of that difference."""
    b, c = raw[best.model], raw[current.model]
    if current not in eligible:  # the incumbent's quality is out of the top's interval
        if basis == MEASURED:
            return "quality", welch_t_test_samples(c.scores, b.scores)
        return "quality", two_proportion_z_test(c.successes, c.attempts,
                                                b.successes, b.attempts)  # fmt: skip
    cost_best = best.cost_per_success or 0.0
    cost_current = math.inf if current.cost_per_success is None else current.cost_per_success
    if cost_best < cost_current / (1 + _COST_TOLERANCE) - 1e-12:
        return "cost", welch_t_test_samples(c.costs, b.costs)
    return "latency", welch_t_test_samples(c.latencies, b.latencies)


def _why(decided_by: str, result: TestResult, alpha: float) -> str:
    p = "p < 0.001" if result.p_value < 0.001 else f"p = {result.p_value:.3f}"
    sure = "significant" if result.significant(alpha) else "not significant yet"
    if decided_by == "quality":
        return f"better quality ({p}, {sure})"
    edge = "cheaper" if decided_by == "cost" else "faster"
    return f"as good (quality intervals overlap) and {edge} ({p}, {sure})"


def _figures(r: ModelRecord) -> str:
    parts = []
    if r.quality is not None and r.quality_interval is not None:
        low, high = r.quality_interval
        n = r.evidence if r.basis == MEASURED else r.attempts
        name = "quality" if r.basis == MEASURED else "success"
        parts.append(f"{name} {r.quality:.2f} [{low:.2f}-{high:.2f}], n={n}")
    if r.cost_per_success:
        parts.append(f"${r.cost_per_success:.6f}/success")
    if r.p50_latency is not None:
        parts.append(f"p50 {r.p50_latency * 1000:.0f} ms")
    return ", ".join(parts) or "no record"
