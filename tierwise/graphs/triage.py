"""``build_triage``: classify an instruction (label + complexity) and choose its route."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from tierwise.graphs.common import SERVED, shared_router
from tierwise.graphs.state import InstructionInput, TriageOutput, TriageState
from tierwise.nodes.base import ModelLike
from tierwise.nodes.classification import DEFAULT_LABELS, classification_node
from tierwise.nodes.context import RunContext
from tierwise.nodes.instruction_routing import instruction_routing_node

__all__ = ["build_triage"]


def build_triage(
    *,
    router: ModelLike | None = None,
    tools: Sequence[Any] = (),
    labels: Sequence[str] = DEFAULT_LABELS,
    checkpointer: Checkpointer = None,
) -> CompiledStateGraph[TriageState, RunContext, InstructionInput, TriageOutput]:
    """Classify → route: what kind of instruction, how hard, and which workflow it needs.

    Args:
        router: a :class:`~tierwise.routing.router.ModelRouter`, a plain chat model or a
            catalog key (default: a router over the loaded settings).
        tools: the tools the routing node may send a single action to.
        labels: the classification's label set.
        checkpointer: LangGraph checkpointer (``None``: no persistence).

    Example:
        >>> from tierwise.testing import Simulator
        >>> from tierwise import ModelRouter
        >>> with Simulator() as sim:
        ...     triage = build_triage(router=ModelRouter(sim.settings()), labels=("bug", "idea"))
        ...     out = triage.invoke({"instruction": "The export button crashes the app"})
        >>> out["classification"].label in ("bug", "idea"), sorted(out)
        (True, ['classification', 'complexity', 'report', 'route'])
    """
    model = shared_router(router)
    graph: StateGraph[TriageState, RunContext, InstructionInput, TriageOutput] = StateGraph(
        TriageState, context_schema=RunContext, input_schema=InstructionInput,
        output_schema=TriageOutput,
    )
    graph.add_node("classify", classification_node(model, labels=labels))
    graph.add_node("route", instruction_routing_node(model, tools=tools))
    graph.add_edge(START, "classify")
    graph.add_edge("classify", "route")
    graph.add_edge("route", END)
    return graph.compile(checkpointer=checkpointer, name="triage")


#: langgraph.json's entry: an async graph factory serving triage over the process's settings.
graph = SERVED.factory(build_triage)
