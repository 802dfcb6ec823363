"""``rationale_generation``: the reasoning behind a plan or decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.nodes.render import render, render_keys
from tierwise.prompts.rationale_generation import EXPLAIN

__all__ = ["Rationale", "RationaleNode", "rationale_generation_node"]


class Rationale(BaseModel):
    """Why the plan or decision serves the instruction."""

    rationale: str = Field(min_length=1, max_length=500, description="The reasoning, briefly.")


class RationaleNode(OperationNode):
    """Explains the plan or decision at ``subject_keys`` for ``instruction``."""

    operation = TaskType.RATIONALE_GENERATION
    schema = Rationale
    prompt = EXPLAIN
    max_tokens = 180

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The instruction and what is being explained."""
        instruction, *subject = self.reads
        return {"instruction": render(state[instruction]),
                "subject": render_keys(state, subject)}


def rationale_generation_node(
    model: ModelLike | None = None,
    *,
    input_key: str = "instruction",
    subject_keys: Sequence[str] = ("route", "plan"),
    output_key: str = "rationale",
    name: str = "rationale",
) -> RationaleNode:
    """A node explaining the plan or decision at ``subject_keys``.

    Reads ``input_key`` and ``subject_keys``; writes ``output_key`` (:class:`Rationale`) and
    a ``report`` entry.

    Example:
        >>> rationale_generation_node(model="smollm2-135m").reads
        ('instruction', 'route', 'plan')
    """
    return RationaleNode(model, name=name, reads=(input_key, *subject_keys),
                         writes=(output_key,))
