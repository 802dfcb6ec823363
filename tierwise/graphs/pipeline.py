"""The instruction pipeline: classify, route, rewrite, then tool, plan or direct.

    classify ─► route ─► rewrite ─┬─ tool ───► step (one action) ──────────┐
                            ▲     ├─ plan ───► decompose ─► step × N (Send) ─┼─► rationale
                            │     │              ▲   └─ escalate ─┘          │       │
                            │     └─ direct ─► score ───────────────────────┘   finalize
                            └───────── escalate: score below threshold ┘

``route``'s decision is the conditional edge after ``rewrite``; every sub-task of a plan
runs the step graph (``graphs.steps``) in parallel through ``Send``. Steps whose output a
judge can find wanting — the plan (blank or repeated steps), each step's structure and
quality, a direct answer's quality — have escalation edges (``graphs.escalation``).
The classification's complexity estimate travels in the state, so every node after it
asks the router for that complexity's tier order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Send
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
    InstructionInput,
    PipelineOutput,
    PipelineResult,
    PipelineState,
    RoutingReport,
)
from tierwise.graphs.steps import step_graph
from tierwise.nodes.base import ModelLike, latest_entry
from tierwise.nodes.classification import DEFAULT_LABELS, classification_node
from tierwise.nodes.context import RunContext
from tierwise.nodes.decomposition import decomposition_node, plan_problem
from tierwise.nodes.instruction_routing import instruction_routing_node
from tierwise.nodes.quality_scoring import quality_scoring_node
from tierwise.nodes.rationale_generation import rationale_generation_node
from tierwise.nodes.rewriting import rewriting_node

__all__ = ["PIPELINE_STAGES", "build_instruction_pipeline"]


def _plan_problem(state: Mapping[str, Any], context: RunContext) -> str | None:
    return plan_problem(state.get("plan"))


#: The pipeline's own judged stages (each sub-task's are in ``graphs.steps``).
PIPELINE_STAGES = (
    Stage("decompose", TaskType.DECOMPOSITION, _plan_problem, "decompose"),
    Stage("rewrite", TaskType.REWRITING, quality_problem, "score"),
)


def _rewritten(state: Mapping[str, Any]) -> str:
    rewrite = state.get("rewrite")
    return rewrite.instruction if rewrite is not None else str(state["instruction"])


def _step(state: Mapping[str, Any], index: int, task: str) -> Send:
    payload = {"step": index, "task": task, "instruction": _rewritten(state),
               "complexity": state.get("complexity") or "moderate"}
    if state.get("run_id"):
        payload["run_id"] = state["run_id"]
    return Send("step", payload)


def _follow_route(state: Mapping[str, Any]) -> str | list[Send]:
    """The conditional edge after ``rewrite``: the route the routing node chose.

    A rewrite rerun only after a direct answer scored low; if that escalation found no
    model, the earlier rewrite and its score stand: on to the rationale.
    """
    last = latest_entry(state.get("report") or (), "rewrite")
    if last is not None and last["status"] == "failed":
        return "rationale"
    route = state["route"].route
    if route == "plan":
        return "decompose"
    if route == "tool":
        return [_step(state, 0, _rewritten(state))]
    return "score"


def _fan_out(state: Mapping[str, Any]) -> list[Send]:
    """One ``Send`` per sub-task of the plan: they run in parallel."""
    return [_step(state, i, task) for i, task in enumerate(state["plan"].steps)]


def build_instruction_pipeline(
    *,
    router: ModelLike | None = None,
    tools: Sequence[Any] | None = None,
    checkpointer: Checkpointer = None,
    labels: Sequence[str] = DEFAULT_LABELS,
    max_steps: int = 3,
    parameters: type[BaseModel] | None = None,
) -> CompiledStateGraph[PipelineState, RunContext, InstructionInput, PipelineOutput]:
    """The instruction pipeline (see the module docstring), compiled.

    Args:
        router: a :class:`~tierwise.routing.router.ModelRouter`, a plain chat model (no
            routing, no escalation) or a catalog key; default: a router over the loaded
            settings. All nodes share it.
        tools: tools a step may call: LangChain tools and functions are executed, OpenAI
            tool dicts only formatted. Calls are validated against the tools' schemas.
        checkpointer: LangGraph checkpointer; with one, a run interrupted after some
            nodes resumes on the same ``thread_id`` without repeating their model calls.
        labels: the classification's label set.
        max_steps: most sub-tasks a plan may have.
        parameters: a pydantic model each step's parameters must fit.

    Per run, ``context=`` takes a :class:`~tierwise.nodes.context.RunContext` (or its
    JSON): the policy, the quality threshold and the escalation limit.

    Example:
        >>> from tierwise.testing import Simulator
        >>> from tierwise import ModelRouter
        >>> with Simulator() as sim:
        ...     pipeline = build_instruction_pipeline(router=ModelRouter(sim.settings()))
        ...     out = pipeline.invoke({"instruction": "Plan a three-day offsite in Lisbon"})
        >>> out["result"].route in ("tool", "plan", "direct"), pipeline.name
        (True, 'instruction_pipeline')
    """
    model = shared_router(router)
    ladder = Ladder.of(model)
    tools = list(tools or ())
    graph: StateGraph[PipelineState, RunContext, InstructionInput, PipelineOutput] = StateGraph(
        PipelineState, context_schema=RunContext, input_schema=InstructionInput,
        output_schema=PipelineOutput,
    )
    graph.add_node("classify", classification_node(model, labels=labels))
    graph.add_node("route", instruction_routing_node(model, tools=tools))
    rewrite = rewriting_node(model)
    # score judges it on the direct route; on the others its features wait unlabelled
    # (one small row; training ignores features without a verdict).
    rewrite.keep_features = True
    graph.add_node("rewrite", rewrite)
    graph.add_node("decompose", decomposition_node(model, max_steps=max_steps))
    graph.add_node("step", step_graph(model, tools=tools, parameters=parameters).compile())
    graph.add_node("score", quality_scoring_node(model, input_key="instruction",
                                                 subject_keys=("rewrite",), producer="rewrite"))
    graph.add_node("rationale", rationale_generation_node(
        model, subject_keys=("route", "plan", "rewrite", "quality")))

    def finalize(state: PipelineState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        """Assemble the result and the routing report."""
        context = runtime.context if isinstance(runtime.context, RunContext) else RunContext()
        steps = sorted(state.get("steps") or [], key=lambda s: s.index)
        log = escalation_log(state, PIPELINE_STAGES, context, ladder)
        log += [e for s in steps for e in s.escalations]
        found, plan, rationale = state.get("classification"), state.get("plan"), state.get(
            "rationale")
        route = state["route"].route
        result = PipelineResult(
            instruction=state["instruction"], rewritten=_rewritten(state),
            label=found.label if found else None,
            complexity=state.get("complexity") or "moderate", route=route,
            plan=plan.steps if plan is not None and route == "plan" else [],
            steps=steps, quality=state.get("quality") if route == "direct" else None,
            rationale=rationale.rationale if rationale else None,
            best_effort=any(e.decision == "kept" for e in log),
            report=RoutingReport.of(list(state.get("report") or []), log),
        )
        return {"result": result}

    graph.add_node("finalize", finalize)

    graph.add_edge(START, "classify")
    graph.add_edge("classify", "route")
    graph.add_edge("route", "rewrite")
    graph.add_conditional_edges(
        "rewrite", _follow_route, ["step", "decompose", "score", "rationale"]
    )
    graph.add_conditional_edges(
        "decompose", escalation_edge(PIPELINE_STAGES[0], _fan_out, ladder), ["decompose", "step"]
    )
    graph.add_conditional_edges(
        "score", escalation_edge(PIPELINE_STAGES[1], "rationale", ladder),
        ["rewrite", "rationale"],
    )
    graph.add_edge("step", "rationale")
    graph.add_edge("rationale", "finalize")
    graph.add_edge("finalize", END)
    return graph.compile(checkpointer=checkpointer, name="instruction_pipeline")


#: langgraph.json's entry: an async graph factory serving the pipeline over the settings.
graph = SERVED.factory(build_instruction_pipeline)
