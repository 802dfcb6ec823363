"""Conditional escalation edges: continue, or rerun the judged step on a higher tier.

After a node whose output can be judged, an edge asks the judge (a deterministic check or
the verdict a judge node wrote into the state) whether the output is good enough. If not,
and the step may still escalate — it has not used up the run's ``max_escalations``, its
last answer came from a routed tier, and the policy allows a tier above that one for the
step's operation — the edge goes back to the step's producer node, which then asks for a
tier above its last answer (``nodes.base.escalation_floor``). Otherwise the graph goes
on with the result it has, and :func:`escalation_log` marks it best effort.

Everything here is derived from the state's report, so a resumed run decides the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Complexity, TaskType, Tier
from tierwise.graphs.state import Escalation
from tierwise.nodes.base import UNROUTED, ModelLike, ReportEntry, latest_entry, runs_of
from tierwise.nodes.context import RunContext
from tierwise.routing.router import ModelRouter

__all__ = [
    "Judge",
    "Ladder",
    "Stage",
    "escalation_edge",
    "escalation_log",
    "may_escalate",
    "quality_problem",
]

#: Where a graph goes when a stage passes: a function of the state.
Next = Callable[[Mapping[str, Any]], str | list[Send]]

#: A judge: the state and run context in, what is wrong out (``None``: good enough).
Judge = Callable[[Mapping[str, Any], RunContext], str | None]


def quality_problem(state: Mapping[str, Any], context: RunContext) -> str | None:
    """The judge of a scored step: the ``quality`` score below the run's threshold."""
    found = state.get("quality")
    return found.shortfall(context.quality_threshold) if found is not None else None


@dataclass(frozen=True, slots=True)
class Stage:
    """A judged step of a graph: who produced the output, who judged it, and how."""

    producer: str
    operation: TaskType
    judge: Judge
    judged_by: str


@dataclass(frozen=True, slots=True)
class Ladder:
    """What a graph can escalate to: the router's policy and the tiers that can answer now.

    ``reachable`` gives, for an operation, complexity and policy, the tiers of the
    candidates the router's selector would try now (availability and cooling included),
    so an edge never sends a step up to a tier with nothing in it — on a machine with only
    the embedded model, a poor answer is kept at once instead of failing an escalation.
    """

    policy: Policy
    reachable: Callable[[TaskType, Complexity, Policy], frozenset[Tier]]

    @classmethod
    def of(cls, model: ModelLike) -> Ladder:
        """The ladder of ``model``: a router's, or none for a plain chat model."""
        if not isinstance(model, ModelRouter):
            return cls(Policy(), lambda operation, complexity, policy: frozenset())
        router = model

        def reachable(
            operation: TaskType, complexity: Complexity, policy: Policy
        ) -> frozenset[Tier]:
            chain = router.selector.candidates(operation, complexity, policy, router.snapshot())
            return frozenset(spec.tier for spec in chain)

        return cls(router.policy, reachable)


def may_escalate(
    report: Sequence[ReportEntry],
    stage: Stage,
    step: int | None,
    context: RunContext,
    ladder: Ladder,
    complexity: Complexity,
) -> tuple[bool, str]:
    """Whether ``stage``'s producer may answer again on a higher tier, and if not, why."""
    last = latest_entry(report, stage.producer, step)
    if last is None:
        return False, "the step never answered"
    if last["status"] == "failed":
        return False, f"the escalated call failed ({last['detail']})"
    if last["tier"] in (None, UNROUTED):
        return False, "the model is not routed, so there is no higher tier"
    if runs_of(report, stage.producer, step) > context.max_escalations:
        return False, f"max_escalations ({context.max_escalations}) reached"
    rank = Tier(str(last["tier"])).rank
    policy = context.policy or ladder.policy
    if not any(t.rank > rank for t in policy.allowed_tiers(stage.operation, complexity)):
        return False, f"the policy allows no tier above {last['tier']}"
    if not any(t.rank > rank for t in ladder.reachable(stage.operation, complexity, policy)):
        return False, f"no model above {last['tier']} can answer now"
    return True, ""


def escalation_edge(
    stage: Stage, then: str | Next, ladder: Ladder
) -> Callable[[Mapping[str, Any], Runtime[RunContext]], str | list[Send]]:
    """A conditional edge after ``stage.judged_by``: back to the producer, or on to ``then``.

    ``then`` is a node name or a function of the state (e.g. one returning ``Send``s).
    ``ladder`` holds the router's policy (for runs whose context names none) and what
    can answer now.
    """

    def go_on(state: Mapping[str, Any]) -> str | list[Send]:
        return then if isinstance(then, str) else then(state)

    def escalate_or_continue(
        state: Mapping[str, Any], runtime: Runtime[RunContext]
    ) -> str | list[Send]:
        context = runtime.context if isinstance(runtime.context, RunContext) else RunContext()
        if stage.judge(state, context) is None:
            return go_on(state)
        allowed, _ = may_escalate(
            state.get("report") or (), stage, state.get("step"), context, ladder,
            Complexity(state.get("complexity") or "moderate"),
        )
        return stage.producer if allowed else go_on(state)

    escalate_or_continue.__name__ = f"after_{stage.judged_by}"
    return escalate_or_continue


def escalation_log(
    state: Mapping[str, Any],
    stages: Sequence[Stage],
    context: RunContext,
    ladder: Ladder,
) -> list[Escalation]:
    """The escalation decisions behind ``state``, for the routing report.

    Per producer: one ``escalated`` record per rerun (with the verdict that caused it)
    and one ``kept`` record when its final output still fails one of its judges.
    """
    report: Sequence[ReportEntry] = state.get("report") or ()
    step = state.get("step")
    complexity = Complexity(state.get("complexity") or "moderate")
    log: list[Escalation] = []
    for producer in dict.fromkeys(s.producer for s in stages):
        judged = [s for s in stages if s.producer == producer]
        voices = {producer, *(s.judged_by for s in judged)}
        runs = [e for e in report if e["node"] == producer and e["step"] == step]
        for before, after in zip(runs, runs[1:], strict=False):
            log.append(Escalation(
                node=producer, step=step, decision="escalated",
                reason=_cause(report, after, voices, step),
                from_tier=before["tier"], to_tier=after["tier"],
                note="" if after["status"] == "ok" else f"failed: {after['detail']}",
            ))
        problems = [p for s in judged if runs and (p := s.judge(state, context)) is not None]
        if problems:
            _, why = may_escalate(report, judged[0], step, context, ladder, complexity)
            # The answer kept is the last one that came (a failed rerun answered nothing).
            kept = next((r for r in reversed(runs) if r["status"] == "ok"), runs[-1])
            log.append(Escalation(
                node=producer, step=step, decision="kept", reason=problems[0],
                from_tier=kept["tier"], note=f"best effort: {why}",
            ))
    return log


def _cause(
    report: Sequence[ReportEntry], rerun: ReportEntry, voices: set[str], step: int | None
) -> str:
    """The last verdict a judge (or the producer itself) recorded before ``rerun``."""
    cause = ""
    for entry in report:
        if entry is rerun:
            break
        if entry["step"] == step and entry["node"] in voices and entry["detail"]:
            cause = entry["detail"]
    return cause or "judged not good enough"
