"""How a node answers through an ensemble: its combiner, and the quality judge for free text.

When the run's policy gives a node's operation an
:class:`~tierwise.catalog.policy.EnsembleSpec`, the node asks every member at once
(:mod:`tierwise.routing.ensemble`) and keeps one answer. Combiner ``auto`` means:

* **vote** for operations whose answer is a label — ``classification`` (the label),
  ``instruction_routing`` (the route), ``structure_assessment`` (well-formed, complete),
  ``quality_scoring`` (the score; judging it with a quality score would be circular) and
  ``tool_use_formatting`` (the tool call) — each node names its label fields
  (``OperationNode.vote_fields``), so answers that agree on the label but word their
  other fields differently count as one vote;
* **best_score** for free text — ``rewriting``, ``decomposition``,
  ``rationale_generation`` and ``parameter_extraction`` (several correct extractions rarely
  match field for field, so votes would scatter): each candidate is scored by a
  ``quality_scoring`` call through the same router, with the quality scoring prompt.

The judge's calls are ordinary routed calls with their own call ids (the ledger files
them under ``quality_scoring``); their cost is part of the ensemble's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from tierwise.catalog.policy import EnsembleSpec, Policy
from tierwise.catalog.specs import Complexity, TaskType
from tierwise.nodes.scores import QualityScore
from tierwise.prompts.quality_scoring import SCORE
from tierwise.routing.ensemble import (
    Combiner,
    Scored,
    best_score,
    field_key,
    majority_vote,
)
from tierwise.routing.results import RoutedResult
from tierwise.routing.router import ModelRouter

__all__ = ["JUDGE_MAX_TOKENS", "CombinerKind", "combiner_for", "quality_judges"]

CombinerKind = Literal["vote", "best_score"]

#: Answer size a judge call budgets for (the quality scoring node's).
JUDGE_MAX_TOKENS = 80


def combiner_for(
    spec: EnsembleSpec,
    *,
    auto: CombinerKind,
    vote_fields: Sequence[str],
    router: ModelRouter,
    messages: Sequence[BaseMessage],
    render: Callable[[Any], str],
    complexity: Complexity,
    policy: Policy,
    config: RunnableConfig,
) -> Combiner:
    """The combiner ``spec`` asks for (``auto``: the node's kind, see the module doc).

    Args:
        spec: the ensemble of the node's operation.
        auto: what ``combiner = "auto"`` means for this node.
        vote_fields: the label fields votes compare (empty: the whole answer).
        router: the router the judge's calls go through.
        messages: the node's question (the judge sees its non-system text as the task).
        render: turns a candidate's value into the text the judge reads.
        complexity: the run's complexity estimate, for the judge's tier order.
        policy: the run's policy, for the judge's calls.
        config: the node's run config (tracing, run id for run budgets).
    """
    kind = auto if spec.combiner == "auto" else spec.combiner
    if kind == "vote":
        return majority_vote(field_key(*vote_fields)) if vote_fields else majority_vote()
    judge, sync_judge = quality_judges(
        router, task=task_text(messages), render=render, complexity=complexity,
        policy=policy, config=config,
    )  # fmt: skip
    return best_score(judge, sync_judge=sync_judge)


def task_text(messages: Sequence[BaseMessage]) -> str:
    """What a question asked, without the operation's fixed system instructions."""
    return "\n".join(m.text for m in messages if not isinstance(m, SystemMessage))


def quality_judges(
    router: ModelRouter,
    *,
    task: str,
    render: Callable[[Any], str],
    complexity: Complexity,
    policy: Policy,
    config: RunnableConfig,
) -> tuple[Callable[[RoutedResult], Awaitable[Scored]], Callable[[RoutedResult], Scored]]:
    """An async and a sync judge scoring a candidate 0-10 with a ``quality_scoring`` call.

    The call is a plain routed one (the run's policy, its own overrides for
    ``quality_scoring``), never an ensemble itself. It raises
    :class:`~tierwise.routing.results.NoModelAvailable` when no model can judge: the
    combiner then ranks that candidate last.
    """
    schema = QualityScore

    kwargs: dict[str, Any] = {
        "schema": schema, "complexity": complexity, "policy": policy,
        "max_tokens": JUDGE_MAX_TOKENS, "config": config,
    }  # fmt: skip

    def question(candidate: RoutedResult) -> list[BaseMessage]:
        return SCORE.format_messages(task=task, subject=render(candidate.value) or "(empty)")

    async def judge(candidate: RoutedResult) -> Scored:
        result = await router.ainvoke(TaskType.QUALITY_SCORING, question(candidate), **kwargs)
        return Scored(float(result.value.score), result.attempts)

    def sync_judge(candidate: RoutedResult) -> Scored:
        result = router.invoke(TaskType.QUALITY_SCORING, question(candidate), **kwargs)
        return Scored(float(result.value.score), result.attempts)

    return judge, sync_judge


