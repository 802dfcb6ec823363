"""``decomposition``: ordered sub-tasks, each small enough for one model call or tool.

:func:`plan_problem` is the deterministic check the pipeline's conditional edge applies
on top of the schema: a plan that repeats a step or has blank steps is valid JSON but
not a usable plan, and escalates like any other poor answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.prompts.decomposition import DECOMPOSE

__all__ = ["DecompositionNode", "Plan", "decomposition_node", "plan_problem"]


class Plan(BaseModel):
    """Ordered sub-tasks."""

    steps: list[str] = Field(min_length=1, max_length=8,
                             description="Ordered sub-tasks, one distinct action each.")


def plan_problem(plan: Plan | None) -> str | None:
    """Why ``plan`` is not usable (blank or repeated steps), or ``None`` when it is."""
    if plan is None:
        return "no plan"
    seen: set[str] = set()
    for step in plan.steps:
        key = " ".join(step.lower().split())
        if not key:
            return "a step is blank"
        if key in seen:
            return f"step repeated: {step.strip()[:60]!r}"
        seen.add(key)
    return None


class DecompositionNode(OperationNode):
    """Splits ``instruction`` into at most ``max_steps`` ordered sub-tasks."""

    operation = TaskType.DECOMPOSITION
    prompt = DECOMPOSE
    max_tokens = 200

    def __init__(self, model: ModelLike | None, *, max_steps: int, input_key: str,
                 output_key: str, name: str) -> None:
        """See :func:`decomposition_node`."""
        if not 1 <= max_steps <= 8:
            raise ValueError(f"max_steps must be between 1 and 8, got {max_steps}")
        super().__init__(model, name=name, reads=(input_key,), writes=(output_key,))
        self.max_steps = max_steps
        self.schema = _plan_schema(max_steps)

    def verdict(self, value: Any) -> str:
        """What :func:`plan_problem` finds wrong with the plan, for the report."""
        return plan_problem(value) or ""

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The instruction (the rewritten one when the state has it) and the step limit."""
        return {"instruction": _text(state[self.reads[0]]), "max_steps": self.max_steps}

    def update(self, value: Any, state: Mapping[str, Any]) -> dict[str, Any]:
        """The plan, stripped of surrounding whitespace."""
        return {self.writes[0]: Plan(steps=[s.strip() for s in value.steps])}


def _plan_schema(max_steps: int) -> type[Plan]:
    """:class:`Plan` with the node's step limit, so the schema itself bounds the answer."""
    class BoundedPlan(Plan):
        steps: list[Annotated[str, Field(max_length=160)]] = Field(
            min_length=1, max_length=max_steps,
            description="Ordered sub-tasks, one distinct action each.",
        )

    BoundedPlan.__name__ = "Plan"
    return BoundedPlan


def _text(value: Any) -> str:
    return str(getattr(value, "instruction", value))


def decomposition_node(
    model: ModelLike | None = None,
    *,
    max_steps: int = 3,
    input_key: str = "rewrite",
    output_key: str = "plan",
    name: str = "decompose",
) -> DecompositionNode:
    """A node splitting the instruction at ``input_key`` into ordered sub-tasks.

    Reads ``input_key`` (a string, or a :class:`~tierwise.nodes.rewriting.Rewrite`);
    writes ``output_key`` (:class:`Plan`) and a ``report`` entry.

    Example:
        >>> decomposition_node(model="smollm2-135m", max_steps=3).max_steps
        3
    """
    return DecompositionNode(model, max_steps=max_steps, input_key=input_key,
                             output_key=output_key, name=name)
