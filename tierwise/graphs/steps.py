"""The step graph: one sub-task carried out and checked — and ``build_extraction``.

    extract ─► format_tool_call ─► execute_tool ─► assess ─┬─► score ─┬─► finish
       ▲          (with tools)      (runnable tools)       │          │
       └──────────── escalate: malformed / incomplete ─────┘          │
       └──────────── escalate: score below the run's threshold ───────┘

An escalated extraction that finds no model goes straight to ``finish``: the earlier
answer and its verdicts stand, and are not judged again.

The pipeline sends every sub-task of a plan (and the single action of the ``tool``
route) through this graph in parallel; ``build_extraction`` is the same graph without
the quality score, for callers who only want parameters, a valid tool call and a
structure check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer
from pydantic import BaseModel

from tierwise.catalog.specs import TaskType
from tierwise.graphs.common import SERVED, shared_router
from tierwise.graphs.escalation import (
    Ladder,
    Stage,
    escalation_edge,
    escalation_log,
    quality_problem,
)
from tierwise.graphs.state import (
    ExtractionOutput,
    StepInput,
    StepOutcome,
    StepOutput,
    StepState,
)
from tierwise.nodes.base import ModelLike, latest_entry
from tierwise.nodes.context import RunContext
from tierwise.nodes.parameter_extraction import parameter_extraction_node
from tierwise.nodes.quality_scoring import quality_scoring_node
from tierwise.nodes.structure_assessment import structure_assessment_node
from tierwise.nodes.tool_use_formatting import (
    runnable_tools,
    tool_execution_node,
    tool_use_formatting_node,
)

__all__ = ["build_extraction", "step_graph", "step_stages"]


def _structure_problem(state: Mapping[str, Any], context: RunContext) -> str | None:
    found = state.get("structure")
    return found.problem() if found is not None else None


def _unless_failed(node: str, *, then: str, otherwise: str) -> Any:
    """An edge to ``then``, or to ``otherwise`` when ``node``'s last run failed."""

    def route(state: Mapping[str, Any]) -> str:
        last = latest_entry(state.get("report") or (), node, state.get("step"))
        return otherwise if last is not None and last["status"] == "failed" else then

    route.__name__ = f"after_{node}"
    return route


def step_stages(*, scoring: bool) -> tuple[Stage, ...]:
    """The judged stages of the step graph: extraction, judged by assess (and score)."""
    stages = [Stage("extract", TaskType.PARAMETER_EXTRACTION, _structure_problem, "assess")]
    if scoring:
        stages.append(Stage("extract", TaskType.PARAMETER_EXTRACTION, quality_problem, "score"))
    return tuple(stages)


def step_graph(
    router: ModelLike,
    *,
    tools: Sequence[Any] = (),
    parameters: type[BaseModel] | None = None,
    scoring: bool = True,
    output_schema: type[Any] = StepOutput,
) -> StateGraph[StepState, RunContext, Any, Any]:
    """The uncompiled step graph (see the module docstring) over ``router``."""
    graph: StateGraph[StepState, RunContext, Any, Any] = StateGraph(
        StepState, context_schema=RunContext, input_schema=StepInput,
        output_schema=output_schema,
    )
    ladder = Ladder.of(router)
    extract = parameter_extraction_node(router, schema=parameters)
    extract.keep_features = True  # assess (and score) judge it: the router learns from it
    graph.add_node("extract", extract)
    chain = ["extract"]
    if tools:
        graph.add_node("format_tool_call", tool_use_formatting_node(router, tools=tools))
        chain.append("format_tool_call")
        if runnable_tools(tools):
            graph.add_node("execute_tool", tool_execution_node(tools))
            chain.append("execute_tool")
    graph.add_node("assess", structure_assessment_node(router, producer="extract"))
    chain.append("assess")
    graph.add_edge(START, "extract")
    # An escalated extraction that found no model keeps the earlier answer, whose
    # verdicts are already in the state: straight to finish, nothing to judge again.
    graph.add_conditional_edges(
        "extract", _unless_failed("extract", then=chain[1], otherwise="finish"),
        [chain[1], "finish"],
    )
    for a, b in zip(chain[1:], chain[2:], strict=False):
        graph.add_edge(a, b)

    stages = step_stages(scoring=scoring)
    after_assess = "score" if scoring else "finish"
    graph.add_conditional_edges(
        "assess", escalation_edge(stages[0], after_assess, ladder),
        ["extract", after_assess],
    )
    if scoring:
        graph.add_node("score", quality_scoring_node(router, producer="extract"))
        graph.add_conditional_edges(
            "score", escalation_edge(stages[1], "finish", ladder), ["extract", "finish"]
        )

    def finish(state: StepState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        """Collect the step's outputs, verdicts and escalation decisions."""
        context = runtime.context if isinstance(runtime.context, RunContext) else RunContext()
        log = escalation_log(state, stages, context, ladder)
        outcome = StepOutcome(
            index=state.get("step") or 0, task=state["task"],
            parameters=state.get("parameters"), tool_call=state.get("tool_call"),
            tool_result=state.get("tool_result"), structure=state.get("structure"),
            quality=state.get("quality"), escalations=log,
            best_effort=any(e.decision == "kept" for e in log),
        )
        return {"outcome": outcome, "steps": [outcome]}

    graph.add_node("finish", finish)
    graph.add_edge("finish", END)
    return graph


def build_extraction(
    *,
    router: ModelLike | None = None,
    tools: Sequence[Any] = (),
    parameters: type[BaseModel] | None = None,
    checkpointer: Checkpointer = None,
) -> CompiledStateGraph[StepState, RunContext, StepInput, ExtractionOutput]:
    """Parameters → tool call (validated; executed for LangChain tools) → structure check.

    Args:
        router: a :class:`~tierwise.routing.router.ModelRouter`, a plain chat model or a
            catalog key (default: a router over the loaded settings).
        tools: tools to format a call for (LangChain tools, functions or OpenAI dicts).
        parameters: a pydantic model the extracted parameters must fit.
        checkpointer: LangGraph checkpointer (``None``: no persistence).

    Example:
        >>> from tierwise.testing import Simulator
        >>> from tierwise import ModelRouter
        >>> with Simulator() as sim:
        ...     graph = build_extraction(router=ModelRouter(sim.settings()))
        ...     out = graph.invoke({"task": "Book a room in Porto for 3 people"})
        >>> out["outcome"].structure is not None, graph.name
        (True, 'extraction')
    """
    graph = step_graph(shared_router(router), tools=tools, parameters=parameters,
                       scoring=False, output_schema=ExtractionOutput)
    return graph.compile(checkpointer=checkpointer, name="extraction")


#: langgraph.json's entry: an async graph factory serving extraction over the process's settings.
graph = SERVED.factory(build_extraction)
