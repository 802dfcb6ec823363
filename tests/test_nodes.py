"""Each operation node alone in a tiny StateGraph, against the provider simulator.

A node is built by its factory, dropped into a ``StateGraph`` whose state has only the
keys the node reads and writes (plus ``report``), and run with ``invoke`` and
``ainvoke`` — over a :class:`ModelRouter` and over a plain chat model. The real
LangChain clients talk HTTP to the simulator; the answers are scripted per operation
(see ``tests/pipeline_script.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from tests.pipeline_script import (
    INSTRUCTION,
    PAID_ANSWER_COST,
    PARAMETERS,
    RATIONALE,
    REASONS,
    REWRITTEN,
    STEPS,
    TIMEOUT,
    USAGE,
    Brain,
    Rig,
    book_venue,
    make_rig,
    plain_chat_model,
)
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Complexity, Provider, TaskType
from tierwise.nodes import (
    Classification,
    Plan,
    QualityScore,
    Rationale,
    Rewrite,
    RouteDecision,
    StructureAssessment,
    ToolCall,
    ToolResult,
    classification_node,
    decomposition_node,
    instruction_routing_node,
    parameter_extraction_node,
    quality_scoring_node,
    rationale_generation_node,
    rewriting_node,
    structure_assessment_node,
    tool_execution_node,
    tool_use_formatting_node,
)
from tierwise.nodes.base import OperationNode, ReportEntry
from tierwise.testing import Simulator

DRIVERS = ("invoke", "ainvoke")


def tiny_graph(node: Any, *extra_keys: str) -> CompiledStateGraph[Any, Any, Any, Any]:
    """``START -> node -> END`` over a state of exactly the node's keys, plus ``report``."""
    keys = dict.fromkeys((*node.reads, *node.writes, *extra_keys), Any)
    state = TypedDict(
        "TinyState", {**keys, "report": Annotated[list[ReportEntry], operator.add]}, total=False
    )
    graph = StateGraph(state)
    graph.add_node(node.name, node)
    graph.add_edge(START, node.name)
    graph.add_edge(node.name, END)
    return graph.compile()


def run(graph: Any, payload: dict[str, Any], driver: str, **kwargs: Any) -> dict[str, Any]:
    if driver == "invoke":
        return graph.invoke(payload, **kwargs)
    return asyncio.run(graph.ainvoke(payload, **kwargs))


@pytest.fixture
def rig(simulator: Simulator) -> Rig:
    return make_rig(simulator)


@pytest.fixture
def plain_model(simulator: Simulator) -> ChatOpenAI:
    return plain_chat_model(simulator)


# --------------------------------------------------------------------------- the nine nodes


@dataclasses.dataclass(frozen=True)
class Case:
    """One node factory, the state it starts from and what it must write."""

    id: str
    build: Callable[[Any], OperationNode]
    state: dict[str, Any]
    expected: dict[str, Any]
    #: A piece of the state the node must have put into its prompt.
    prompt_has: str


CASES = [
    Case(
        "classification", lambda m: classification_node(m),
        {"instruction": INSTRUCTION},
        {"classification": Classification(label="planning", complexity=Complexity.MODERATE),
         "complexity": "moderate"},
        INSTRUCTION,
    ),
    Case(
        "instruction_routing", lambda m: instruction_routing_node(m, tools=[book_venue]),
        {"instruction": INSTRUCTION}, {"route": RouteDecision(route="plan")}, "book_venue",
    ),
    Case(
        "rewriting", lambda m: rewriting_node(m),
        {"instruction": INSTRUCTION}, {"rewrite": Rewrite(instruction=REWRITTEN)}, INSTRUCTION,
    ),
    Case(
        "decomposition", lambda m: decomposition_node(m, max_steps=3),
        {"rewrite": Rewrite(instruction=REWRITTEN)}, {"plan": Plan(steps=STEPS)}, REWRITTEN,
    ),
    Case(
        "parameter_extraction", lambda m: parameter_extraction_node(m),
        {"task": STEPS[0], "instruction": INSTRUCTION}, {"parameters": PARAMETERS[0]}, STEPS[0],
    ),
    Case(
        "tool_use_formatting", lambda m: tool_use_formatting_node(m, tools=[book_venue]),
        {"task": STEPS[0], "parameters": PARAMETERS[0]},
        {"tool_call": ToolCall(name="book_venue", args={"city": "Lisbon", "people": 12})},
        '"value":"Lisbon"',
    ),
    Case(
        "structure_assessment", lambda m: structure_assessment_node(m),
        {"task": STEPS[0], "parameters": PARAMETERS[0]},
        {"structure": StructureAssessment(well_formed=True, complete=True, defects=[])},
        '"value":"Lisbon"',
    ),
    Case(
        "quality_scoring", lambda m: quality_scoring_node(m),
        {"task": STEPS[0], "parameters": PARAMETERS[0]},
        {"quality": QualityScore(score=9, reasons=REASONS)}, STEPS[0],
    ),
    Case(
        "rationale_generation", lambda m: rationale_generation_node(m),
        {"instruction": INSTRUCTION, "plan": Plan(steps=STEPS)},
        {"rationale": Rationale(rationale=RATIONALE)}, STEPS[2],
    ),
]  # fmt: skip


def written(out: dict[str, Any], case: Case) -> dict[str, Any]:
    """What the node wrote, tool-call ids (the simulator's) left out."""
    found = {key: out[key] for key in case.expected}
    if "tool_call" in found:
        assert isinstance(found["tool_call"].id, str) and found["tool_call"].id
        found["tool_call"] = found["tool_call"].model_copy(update={"id": None})
    return found


def assert_types(out: dict[str, Any], case: Case) -> None:
    for key, value in case.expected.items():
        if isinstance(value, BaseModel):
            assert type(out[key]) is type(value), key


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_node_alone_writes_its_result_and_a_report_entry(
    rig: Rig, case: Case, driver: str
) -> None:
    brain = Brain(rig.sim)
    node = case.build(rig.router())
    graph = tiny_graph(node)

    out = run(graph, dict(case.state), driver)

    assert written(out, case) == case.expected
    assert_types(out, case)
    [entry] = out["report"]
    assert entry == {
        "node": node.name, "operation": case.id, "step": None, "status": "ok",
        "model": "tw-free-a", "provider": "openrouter", "tier": "free", "min_tier": None,
        "escalation": 0, "input_tokens": USAGE[0], "output_tokens": USAGE[1], "cost": 0.0,
        "latency": entry["latency"], "attempts": ["tw-free-a (free): ok"],
        "detail": entry["detail"], "call_id": entry["call_id"], "ensemble": "",
    }  # fmt: skip
    assert 0 < entry["latency"] < TIMEOUT
    assert len(entry["call_id"]) == 32  # the routed call's id, as the ledger files it
    [call] = brain.calls
    assert call.operation is TaskType(case.id) and call.model == "tw/free-a:free"
    assert case.prompt_has in call.text


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_node_works_with_a_plain_chat_model(
    simulator: Simulator, plain_model: ChatOpenAI, case: Case, driver: str
) -> None:
    brain = Brain(simulator)
    node = case.build(plain_model)

    out = run(tiny_graph(node), dict(case.state), driver)

    assert written(out, case) == case.expected
    assert_types(out, case)
    [entry] = out["report"]
    assert (entry["model"], entry["provider"], entry["tier"]) == ("tw/plain", "unrouted",
                                                                  "unrouted")
    assert (entry["input_tokens"], entry["output_tokens"], entry["cost"]) == (*USAGE, 0.0)
    assert entry["attempts"] == ["tw/plain (unrouted): ok"] and entry["latency"] > 0
    assert (entry["call_id"], entry["ensemble"]) == ("", "")  # nothing routed
    [call] = brain.calls
    assert (call.provider, call.model) == (Provider.OPENAI, "tw/plain")


def test_judges_write_their_verdict_into_the_report(rig: Rig) -> None:
    Brain(rig.sim, {
        TaskType.STRUCTURE_ASSESSMENT: {"well_formed": True, "complete": False,
                                        "defects": ["no date"]},
        TaskType.QUALITY_SCORING: {"score": 5, "reasons": ["vague"]},
    })  # fmt: skip
    state = {"task": STEPS[0], "parameters": PARAMETERS[0]}
    assess = run(tiny_graph(structure_assessment_node(rig.router())), dict(state), "invoke")
    score = run(tiny_graph(quality_scoring_node(rig.router())), dict(state), "invoke")

    assert assess["report"][0]["detail"] == "incomplete: no date"
    assert not assess["structure"].passed
    assert score["report"][0]["detail"] == "score 5/10 (good)"


# --------------------------------------------------------------------------- escalation floor


def test_a_producer_that_already_answered_asks_a_higher_tier(rig: Rig) -> None:
    """The report says extract answered on free: the rerun's floor is paid."""
    brain = Brain(rig.sim)
    node = parameter_extraction_node(rig.router(Policy(mode="balanced")))
    earlier = run(tiny_graph(node), {"task": STEPS[0], "instruction": INSTRUCTION}, "invoke")

    again = run(tiny_graph(node), {"task": STEPS[0], "instruction": INSTRUCTION,
                                   "report": earlier["report"]}, "invoke")

    first, second = again["report"]
    assert (first["tier"], first["min_tier"], first["escalation"]) == ("free", None, 0)
    assert (second["tier"], second["min_tier"], second["escalation"]) == ("paid", "paid", 1)
    assert second["cost"] == pytest.approx(PAID_ANSWER_COST)
    assert [c.tier for c in brain.calls] == ["free", "paid"]


def test_a_judge_judges_again_on_the_same_tier(rig: Rig) -> None:
    brain = Brain(rig.sim)
    node = quality_scoring_node(rig.router(Policy(mode="balanced")))
    state = {"task": STEPS[0], "parameters": PARAMETERS[0]}
    earlier = run(tiny_graph(node), dict(state), "invoke")

    again = run(tiny_graph(node), {**state, "report": earlier["report"]}, "invoke")

    assert [(e["tier"], e["min_tier"], e["escalation"]) for e in again["report"]] == [
        ("free", None, 0), ("free", None, 0)
    ]
    assert [c.tier for c in brain.calls] == ["free", "free"]


# --------------------------------------------------------------------------- complexity


@pytest.mark.parametrize(
    ("complexity", "tier", "model"),
    [("simple", "free", "tw/free-a:free"), ("complex", "paid", "tw/paid")],
)
def test_the_classified_complexity_decides_the_next_nodes_tier(
    rig: Rig, complexity: str, tier: str, model: str
) -> None:
    """Balanced policy: a complex instruction puts paid first for every node after classify."""
    brain = Brain(rig.sim, {
        TaskType.CLASSIFICATION: {"label": "planning", "complexity": complexity},
    })  # fmt: skip
    router = rig.router(Policy(mode="balanced"))
    classify, extract = classification_node(router), parameter_extraction_node(router)
    keys = dict.fromkeys((*classify.reads, *classify.writes, *extract.reads, *extract.writes),
                         Any)
    state = TypedDict(
        "TwoNodes", {**keys, "report": Annotated[list[ReportEntry], operator.add]}, total=False
    )
    graph = StateGraph(state)
    graph.add_node(classify.name, classify)
    graph.add_node(extract.name, extract)
    graph.add_edge(START, classify.name)
    graph.add_edge(classify.name, extract.name)
    graph.add_edge(extract.name, END)

    out = graph.compile().invoke({"instruction": INSTRUCTION, "task": STEPS[0]})

    assert out["complexity"] == complexity
    assert [c.model for c in brain.of(TaskType.CLASSIFICATION)] == ["tw/free-a:free"]
    assert [c.model for c in brain.of(TaskType.PARAMETER_EXTRACTION)] == [model]
    assert [r.model for r in rig.sim.requests if r.body] == ["tw/free-a:free", model]
    entry = out["report"][1]
    assert (entry["node"], entry["tier"], entry["min_tier"]) == ("extract", tier, None)
    expected_cost = PAID_ANSWER_COST if tier == "paid" else 0.0
    assert entry["cost"] == pytest.approx(expected_cost)


# --------------------------------------------------------------------------- tool execution


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_tool_execution_node_runs_the_call(driver: str) -> None:
    booked: list[tuple[str, int]] = []

    @tool
    def book_venue(city: str, people: int) -> str:
        """Book a meeting venue in a city for a number of people."""
        booked.append((city, people))
        return f"booked {city} for {people}"

    graph = tiny_graph(tool_execution_node([book_venue]))
    call = ToolCall(name="book_venue", args={"city": "Lisbon", "people": 12}, id="c1")

    out = run(graph, {"tool_call": call}, driver)

    assert booked == [("Lisbon", 12)]
    result = out["tool_result"]
    assert result == ToolResult(name="book_venue", output="booked Lisbon for 12",
                                latency=result.latency)
    assert not out.get("report")  # no model was asked


def test_a_tool_that_raises_gives_an_error_result() -> None:
    def book_venue(city: str, people: int) -> str:
        """Book a meeting venue in a city for a number of people."""
        raise RuntimeError("the venue system is down")

    graph = tiny_graph(tool_execution_node([book_venue]))  # a plain function works too
    out = run(graph, {"tool_call": ToolCall(name="book_venue", args={"city": "Lisbon",
                                                                     "people": 12})}, "invoke")

    assert out["tool_result"].output is None
    assert out["tool_result"].error == "RuntimeError: the venue system is down"


def test_openai_dict_tools_are_never_executed() -> None:
    spec = {"type": "function", "function": {"name": "book_venue", "parameters": {}}}
    node = tool_execution_node([spec])
    graph = tiny_graph(node)

    out = run(graph, {"tool_call": ToolCall(name="book_venue", args={})}, "invoke")

    assert node.tools == {} and "tool_result" not in out


# --------------------------------------------------------------------------- construction


def test_factories_reject_what_they_cannot_use(
    rig: Rig, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # a catalog key builds the default router:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # keep it off the user's config
    monkeypatch.chdir(tmp_path)
    router = rig.router()
    with pytest.raises(ValueError, match="distinct"):
        classification_node(router, labels=("bug", "bug"))
    with pytest.raises(ValueError, match="max_steps"):
        decomposition_node(router, max_steps=9)
    with pytest.raises(ValueError, match="unknown catalog model 'no-such-model'"):
        rewriting_node("no-such-model")
