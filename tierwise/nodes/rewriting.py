"""``rewriting``: a clearer, self-contained restatement of the instruction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.prompts.rewriting import REWRITE

__all__ = ["Rewrite", "RewritingNode", "rewriting_node"]


class Rewrite(BaseModel):
    """The restated instruction."""

    instruction: str = Field(min_length=1, max_length=400,
                             description="The instruction, clear and self-contained.")


class RewritingNode(OperationNode):
    """Restates ``instruction`` clearly, keeping every fact."""

    operation = TaskType.REWRITING
    schema = Rewrite
    prompt = REWRITE
    max_tokens = 160

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The instruction."""
        return {"instruction": state[self.reads[0]]}


def rewriting_node(
    model: ModelLike | None = None,
    *,
    input_key: str = "instruction",
    output_key: str = "rewrite",
    name: str = "rewrite",
) -> RewritingNode:
    """A node restating the text at ``input_key`` clearly and self-contained.

    Reads ``input_key``; writes ``output_key`` (:class:`Rewrite`) and a ``report`` entry.

    Example:
        >>> rewriting_node(model="smollm2-135m", output_key="clear").writes
        ('clear',)
    """
    return RewritingNode(model, name=name, reads=(input_key,), writes=(output_key,))
