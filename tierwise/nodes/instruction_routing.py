"""``instruction_routing``: which workflow an instruction belongs to — tool, plan or direct.

The pipeline's conditional edge after rewriting follows this decision, so it is a real
branch of the graph, not a label for the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.nodes.render import render
from tierwise.prompts.instruction_routing import ROUTE

__all__ = ["Route", "RouteDecision", "RoutingNode", "instruction_routing_node"]

Route = Literal["tool", "plan", "direct"]


class RouteDecision(BaseModel):
    """Where the instruction goes next."""

    route: Route = Field(description="tool: one tool action; plan: several steps; "
                         "direct: neither.")


class RoutingNode(OperationNode):
    """Chooses the route for ``instruction`` given the tools on offer."""

    operation = TaskType.INSTRUCTION_ROUTING
    schema = RouteDecision
    prompt = ROUTE
    max_tokens = 16
    combine = "vote"
    vote_fields = ("route",)

    def __init__(self, model: ModelLike | None, *, tools: Sequence[Any], input_key: str,
                 output_key: str, name: str) -> None:
        """See :func:`instruction_routing_node`."""
        super().__init__(model, name=name, reads=(input_key, "classification"),
                         writes=(output_key,))
        self.tool_names = tuple(_tool_name(t) for t in tools)

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Instruction, its classification and the tools' names."""
        found = state.get("classification")
        return {
            "instruction": state[self.reads[0]],
            "label": getattr(found, "label", None) or "unclassified",
            "complexity": state.get("complexity") or "moderate",
            "tools": ", ".join(self.tool_names) or "(none)",
        }


def _tool_name(tool: Any) -> str:
    """A tool's name, whether a LangChain tool, a function or an OpenAI tool dict."""
    if isinstance(tool, Mapping):
        return str(tool.get("function", tool).get("name", "tool"))
    return str(getattr(tool, "name", None) or getattr(tool, "__name__", None) or render(tool))


def instruction_routing_node(
    model: ModelLike | None = None,
    *,
    tools: Sequence[Any] = (),
    input_key: str = "instruction",
    output_key: str = "route",
    name: str = "route",
) -> RoutingNode:
    """A node deciding whether the instruction needs a tool, a plan or neither.

    Reads ``input_key`` and ``classification`` (optional); writes ``output_key``
    (:class:`RouteDecision`) and a ``report`` entry.

    Example:
        >>> instruction_routing_node(model="smollm2-135m").writes
        ('route',)
    """
    return RoutingNode(model, tools=tools, input_key=input_key, output_key=output_key,
                       name=name)
