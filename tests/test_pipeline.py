"""The instruction pipeline, triage and extraction graphs, end to end against the simulator.

Every model answer is scripted per operation (``tests/pipeline_script.py``): the tests
show what the graphs make of them — the final result, where each request went, the
escalations in the routing report, tool calls validated and executed, sub-tasks run in
parallel, the run context, progress events, schemas, ``langgraph.json`` and the graph's
shape (a Mermaid snapshot).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from langgraph.graph.state import CompiledStateGraph
from pydantic import ValidationError

from tests.pipeline_script import (
    INSTRUCTION,
    PAID_ANSWER_COST,
    PARAMETERS,
    RATIONALE,
    REASONS,
    REWRITTEN,
    STEPS,
    USAGE,
    Brain,
    Call,
    Rig,
    book_venue,
    is_operation,
    make_rig,
    plain_chat_model,
)
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Provider, TaskType, Tier
from tierwise.graphs import (
    PipelineResult,
    RoutingReport,
    StepOutcome,
    build_extraction,
    build_instruction_pipeline,
    build_triage,
)
from tierwise.graphs.state import Escalation
from tierwise.nodes import (
    Plan,
    QualityScore,
    RouteDecision,
    StructureAssessment,
    ToolCall,
    ToolResult,
)
from tierwise.nodes.base import OperationNode
from tierwise.nodes.decomposition import plan_problem
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Fault, Reply, Simulator

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "pipeline.mmd"
PASSED = StructureAssessment(well_formed=True, complete=True, defects=[])
GOOD = QualityScore(score=9, reasons=REASONS)
DRIVERS = ("invoke", "ainvoke")


@pytest.fixture
def rig(simulator: Simulator) -> Rig:
    return make_rig(simulator)


def run(graph: Any, payload: dict[str, Any], driver: str = "invoke", **kwargs: Any) -> Any:
    if driver == "invoke":
        return graph.invoke(payload, **kwargs)
    return asyncio.run(graph.ainvoke(payload, **kwargs))


def result_of(graph: Any, driver: str = "invoke", **kwargs: Any) -> PipelineResult:
    out = run(graph, {"instruction": INSTRUCTION}, driver, **kwargs)
    assert list(out) == ["result"]
    result: PipelineResult = out["result"]
    return result


def good_step(index: int, **changes: Any) -> StepOutcome:
    return StepOutcome(index=index, task=STEPS[index], parameters=PARAMETERS[index],
                       structure=PASSED, quality=GOOD, **changes)


def runs(result: PipelineResult) -> Counter[tuple[str, int | None]]:
    """How many times each (node, step) ran, from the routing report."""
    return Counter((e["node"], e["step"]) for e in result.report.entries)


def assert_totals(report: RoutingReport) -> None:
    """The report's totals are the sums over its entries."""
    entries = report.entries
    assert report.calls == len(entries)
    assert report.cost == pytest.approx(sum(e["cost"] for e in entries))
    assert report.input_tokens == sum(e["input_tokens"] for e in entries)
    assert report.output_tokens == sum(e["output_tokens"] for e in entries)
    assert report.model_time == pytest.approx(sum(e["latency"] for e in entries), abs=1e-3)
    assert report.by_tier == dict(Counter(e["tier"] for e in entries if e["status"] == "ok"))


def score_for_step(step: int, *scores: int) -> Any:
    """A quality-scoring script: ``scores`` in turn for ``step`` (last one repeats), 9 else."""

    def answer(call: Call) -> dict[str, Any]:
        if call.step != step:
            return {"score": 9, "reasons": REASONS}
        return {"score": scores[min(call.count, len(scores)) - 1], "reasons": REASONS}

    return answer


# --------------------------------------------------------------------------- 2. happy path


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_plan_route_gives_the_expected_result(rig: Rig, driver: str) -> None:
    brain = Brain(rig.sim)
    graph = build_instruction_pipeline(router=rig.router(), max_steps=3)

    result = result_of(graph, driver)

    assert result == PipelineResult(
        instruction=INSTRUCTION, rewritten=REWRITTEN, label="planning",
        complexity="moderate", route="plan", plan=STEPS,
        steps=[good_step(0), good_step(1), good_step(2)], quality=None,
        rationale=RATIONALE, best_effort=False, report=result.report,
    )  # fmt: skip
    report = result.report
    assert_totals(report)
    assert report.escalations == []
    assert report.calls == 14 and report.by_tier == {"free": 14} and report.cost == 0.0
    assert (report.input_tokens, report.output_tokens) == (14 * USAGE[0], 14 * USAGE[1])
    order = [(e["node"], e["step"]) for e in report.entries]
    assert order[:4] == [("classify", None), ("route", None), ("rewrite", None),
                         ("decompose", None)]
    assert order[-1] == ("rationale", None)
    for step in range(3):  # steps interleave; within one, the order is fixed
        assert [n for n, s in order if s == step] == ["extract", "assess", "score"]
    assert all(e["model"] == "tw-free-a" for e in report.entries)
    assert len(brain.calls) == 14 == len(rig.requests(tier="free"))


def test_the_direct_route_scores_the_rewrite(rig: Rig) -> None:
    Brain(rig.sim, {
        TaskType.CLASSIFICATION: {"label": "question", "complexity": "simple"},
        TaskType.INSTRUCTION_ROUTING: {"route": "direct"},
    })  # fmt: skip

    result = result_of(build_instruction_pipeline(router=rig.router()))

    assert (result.route, result.label, result.complexity) == ("direct", "question", "simple")
    assert result.plan == [] and result.steps == [] and result.quality == GOOD
    assert [e["node"] for e in result.report.entries] == [
        "classify", "route", "rewrite", "score", "rationale"
    ]
    assert rig.requests(operation=TaskType.DECOMPOSITION) == []


# --------------------------------------------------------------------------- 3. bad plans


def test_a_schema_invalid_decomposition_from_free_falls_back_to_paid(rig: Rig) -> None:
    """Router level: every free answer fails the schema, so paid answers (no escalation)."""
    brain = Brain(rig.sim)
    for key in ("tw-free-a", "tw-free-b"):
        rig.sim.script(rig.spec(key), Fault.schema_violation(),
                       when=is_operation(TaskType.DECOMPOSITION))
    graph = build_instruction_pipeline(router=rig.router(Policy(mode="balanced")))

    result = result_of(graph)

    assert result.plan == STEPS and len(result.steps) == 3 and not result.best_effort
    [entry] = [e for e in result.report.entries if e["node"] == "decompose"]
    assert (entry["model"], entry["tier"], entry["min_tier"]) == ("tw-paid", "paid", None)
    assert entry["cost"] == pytest.approx(PAID_ANSWER_COST)
    *failed, last = entry["attempts"]
    assert last == "tw-paid (paid): ok"
    assert {a.split(" ")[0] for a in failed} == {"tw-free-a", "tw-free-b"}
    assert all("(free): invalid_output" in a for a in failed)
    assert result.report.escalations == []  # a fallback inside one call, not an escalation
    assert result.report.cost == pytest.approx(PAID_ANSWER_COST)
    assert result.report.by_tier == {"free": 13, "paid": 1}
    assert_totals(result.report)
    free_plans = rig.requests(tier="free", operation=TaskType.DECOMPOSITION)
    assert free_plans and all(r.outcome == "schema_violation" for r in free_plans)
    assert [c.tier for c in brain.of(TaskType.DECOMPOSITION)] == ["paid"]


REPEATING = [STEPS[0], STEPS[1], f"  {STEPS[0].upper()} "]


def test_an_unusable_plan_from_free_escalates_decomposition_to_paid(rig: Rig) -> None:
    """Graph level: a schema-valid plan with a repeated step is rerun on the paid tier."""
    brain = Brain(rig.sim, {
        TaskType.DECOMPOSITION: lambda call: {
            "steps": STEPS if call.tier == "paid" else REPEATING
        },
    })  # fmt: skip
    graph = build_instruction_pipeline(router=rig.router(Policy(mode="balanced")))

    result = result_of(graph)

    reason = plan_problem(Plan(steps=REPEATING))
    assert reason is not None and reason.startswith("step repeated: ")
    first, second = [e for e in result.report.entries if e["node"] == "decompose"]
    assert (first["tier"], first["min_tier"], first["detail"]) == ("free", None, reason)
    assert (second["tier"], second["min_tier"], second["escalation"]) == ("paid", "paid", 1)
    assert second["detail"] == ""
    assert result.report.escalations == [Escalation(
        node="decompose", step=None, decision="escalated", reason=reason,
        from_tier="free", to_tier="paid",
    )]  # fmt: skip
    assert result.plan == STEPS and [s.task for s in result.steps] == STEPS
    assert not result.best_effort
    assert [c.tier for c in brain.of(TaskType.DECOMPOSITION)] == ["free", "paid"]
    assert len(rig.requests(tier="paid")) == 1
    assert_totals(result.report)


# --------------------------------------------------------------------------- 4. low scores


def test_a_low_score_escalates_that_step_exactly_once(rig: Rig) -> None:
    brain = Brain(rig.sim, {TaskType.QUALITY_SCORING: score_for_step(1, 2, 9)})
    graph = build_instruction_pipeline(router=rig.router(Policy(mode="balanced")))

    result = result_of(graph)

    escalated = Escalation(node="extract", step=1, decision="escalated",
                           reason="score 2/10 (poor)", from_tier="free", to_tier="paid")
    assert result.report.escalations == [escalated]
    assert result.steps == [good_step(0), good_step(1, escalations=[escalated]), good_step(2)]
    assert not result.best_effort
    counts = runs(result)
    assert [counts["extract", i] for i in range(3)] == [1, 2, 1]
    assert [counts["score", i] for i in range(3)] == [1, 2, 1]
    assert [counts["assess", i] for i in range(3)] == [1, 2, 1]
    assert [len(brain.of(TaskType.PARAMETER_EXTRACTION, i)) for i in range(3)] == [1, 2, 1]
    # Only the producer moved up; the judges judged the better answer on free again.
    [paid] = rig.requests(tier="paid")
    assert [c.tier for c in brain.of(TaskType.PARAMETER_EXTRACTION, 1)] == ["free", "paid"]
    assert [c.tier for c in brain.of(TaskType.QUALITY_SCORING, 1)] == ["free", "free"]
    assert paid.model == "tw/paid"
    assert result.report.cost == pytest.approx(PAID_ANSWER_COST)
    assert_totals(result.report)


def test_without_a_higher_tier_the_step_is_kept_as_best_effort(rig: Rig) -> None:
    """free_first (the default) caps at free: nothing is rerun, nothing is paid for."""
    Brain(rig.sim, {TaskType.QUALITY_SCORING: score_for_step(1, 2)})
    graph = build_instruction_pipeline(router=rig.router())

    result = result_of(graph)

    kept = Escalation(node="extract", step=1, decision="kept",
                      reason="score 2/10 below the threshold 6", from_tier="free",
                      note="best effort: the policy allows no tier above free")
    assert result.steps[1].escalations == [kept] and result.steps[1].best_effort
    assert not result.steps[0].best_effort and not result.steps[2].best_effort
    assert result.report.escalations == [kept] and result.best_effort
    assert runs(result)["extract", 1] == 1
    assert rig.sim.requests_for(rig.spec("tw-paid")) == []
    assert rig.requests(tier="paid") == []


def test_a_tier_with_nothing_available_is_not_escalated_to(rig: Rig) -> None:
    """The policy allows paid but no paid model is reachable: keep at once, call nothing."""
    Brain(rig.sim, {TaskType.QUALITY_SCORING: score_for_step(1, 2)})
    everything = Snapshot.everything(rig.settings.catalog)
    router = ModelRouter(
        rig.settings, policy=Policy(mode="balanced"), factory=rig.factory, ledger=None,
        snapshot=Snapshot(everything.available - {"tw-paid"}),
    )
    result = result_of(build_instruction_pipeline(router=router))

    assert result.steps[1].escalations == [
        Escalation(node="extract", step=1, decision="kept",
                   reason="score 2/10 below the threshold 6", from_tier="free",
                   note="best effort: no model above free can answer now"),
    ]
    assert runs(result)["extract", 1] == 1  # no failed escalation, no second judgement
    assert all(e["status"] == "ok" for e in result.report.entries)


def test_a_failed_escalation_keeps_the_earlier_answer(rig: Rig) -> None:
    """The paid tier is down: step 1 keeps its free answer, and the report says why."""
    Brain(rig.sim, {TaskType.QUALITY_SCORING: score_for_step(1, 2)})
    rig.sim.script(rig.spec("tw-paid"), Fault.server_error(503))
    graph = build_instruction_pipeline(router=rig.router(Policy(mode="balanced")))

    result = result_of(graph)

    failure = "no model could answer parameter_extraction: every candidate failed"
    assert result.steps[1].escalations == [
        Escalation(node="extract", step=1, decision="escalated", reason="score 2/10 (poor)",
                   from_tier="free", to_tier=None, note=f"failed: {failure}"),
        Escalation(node="extract", step=1, decision="kept",
                   reason="score 2/10 below the threshold 6", from_tier="free",
                   note=f"best effort: the escalated call failed ({failure})"),
    ]
    assert result.steps[1].parameters == PARAMETERS[1] and result.steps[1].best_effort
    failed = [e for e in result.report.entries if e["status"] == "failed"]
    assert [(e["node"], e["step"], e["min_tier"], e["tier"]) for e in failed] == [
        ("extract", 1, "paid", None)
    ]
    assert "503" in failed[0]["attempts"][0]
    # the kept answer's verdicts stand: it is not judged a second time
    assert runs(result)["assess", 1] == 1 and runs(result)["score", 1] == 1
    assert_totals(result.report)


def test_a_first_answer_nobody_can_give_reaches_the_caller(rig: Rig) -> None:
    from tierwise.routing.results import NoModelAvailable

    Brain(rig.sim)
    rig.sim.script("*", Fault.server_error(500), when=is_operation(TaskType.CLASSIFICATION))
    graph = build_instruction_pipeline(router=rig.router())

    with pytest.raises(NoModelAvailable, match="classification"):
        graph.invoke({"instruction": INSTRUCTION})

    assert rig.requests(operation=TaskType.INSTRUCTION_ROUTING) == []


def test_the_pipeline_runs_on_a_plain_chat_model(simulator: Simulator) -> None:
    """No router: every answer is 'unrouted', and a poor step is kept (no tiers to climb)."""
    brain = Brain(simulator, {TaskType.QUALITY_SCORING: score_for_step(1, 2)})
    graph = build_instruction_pipeline(router=plain_chat_model(simulator), tools=[book_venue])

    result = result_of(graph)

    assert result.plan == STEPS and [s.parameters for s in result.steps] == PARAMETERS
    assert all(s.tool_result is not None for s in result.steps)
    assert result.report.by_tier == {"unrouted": 17} and result.report.cost == 0.0
    assert [(e.decision, e.from_tier, e.note) for e in result.report.escalations] == [
        ("kept", "unrouted", "best effort: the model is not routed, so there is no higher tier")
    ]
    assert {(c.provider, c.model) for c in brain.calls} == {(Provider.OPENAI, "tw/plain")}


# --------------------------------------------------------------------------- 5. local only


def test_local_only_from_the_run_context_never_reaches_a_hosted_provider(
    simulator: Simulator,
) -> None:
    """The packaged catalog on the simulator: local_only answers from Ollama models only.

    The embedded model (the local tier's last resort) is left out of the snapshot: it is
    exercised by its own tests, and every Ollama answer here is good.
    """
    settings = simulator.settings()
    catalog = settings.catalog
    local = {s.key for s in catalog if s.tier is Tier.LOCAL and s.provider is Provider.OLLAMA}
    snapshot = Snapshot(available=frozenset(k for k in catalog.models if k != catalog.embedded))
    router = ModelRouter(settings, policy=Policy(mode="balanced"), snapshot=snapshot)
    brain = Brain(simulator, {TaskType.QUALITY_SCORING: score_for_step(2, 2)})
    graph = build_instruction_pipeline(router=router, tools=[book_venue])

    result = result_of(graph, context={"policy": {"mode": "local_only"}})

    chats = [r for r in simulator.requests if r.body is not None]
    assert chats and {r.provider for r in chats} == {Provider.OLLAMA}
    for provider in Provider:
        if provider not in (Provider.OLLAMA, Provider.EMBEDDED):
            assert simulator.requests_for(provider=provider) == [], provider
    assert {e["tier"] for e in result.report.entries} == {"local"}
    assert {e["model"] for e in result.report.entries} <= local
    assert {c.operation for c in brain.calls} == set(TaskType)  # all nine operations ran
    assert all(s.tool_result is not None for s in result.steps)
    kept = result.steps[2].escalations
    assert [(e.decision, e.note) for e in kept] == [
        ("kept", "best effort: the policy allows no tier above local")
    ]


# --------------------------------------------------------------------------- 6. tools


def booking_tool(log: list[tuple[str, int]], *, fail: bool = False) -> Any:
    @tool
    def book_venue(city: str, people: int) -> str:
        """Book a meeting venue in a city for a number of people."""
        if fail:
            raise RuntimeError("the venue system is down")
        log.append((city, people))
        return f"booked a venue in {city} for {people}"

    return book_venue


TOOL_ROUTE = {TaskType.INSTRUCTION_ROUTING: {"route": "tool"}}


@pytest.mark.parametrize(
    "bad",
    [Reply.tool_call("book_venue", {"city": "Lisbon", "people": "a dozen"}),
     Reply.tool_call("launch_rockets", {"count": 3}), Fault.schema_violation()],
    ids=["wrong-type", "unknown-tool", "schema-violation"],
)  # fmt: skip
def test_a_tool_call_is_validated_then_executed(rig: Rig, bad: Reply | Fault) -> None:
    booked: list[tuple[str, int]] = []
    Brain(rig.sim, TOOL_ROUTE)
    rig.sim.script(rig.spec("tw-free-a"), bad, when=is_operation(TaskType.TOOL_USE_FORMATTING))
    graph = build_instruction_pipeline(router=rig.router(), tools=[booking_tool(booked)])

    result = result_of(graph)

    assert result.route == "tool" and result.plan == []
    [step] = result.steps
    assert (step.index, step.task) == (0, REWRITTEN)
    assert step.tool_call is not None
    assert (step.tool_call.name, step.tool_call.args) == ("book_venue",
                                                          {"city": "Lisbon", "people": 12})
    assert step.tool_result == ToolResult(name="book_venue",
                                          output="booked a venue in Lisbon for 12",
                                          latency=step.tool_result.latency)
    assert booked == [("Lisbon", 12)]  # the tool really ran, once
    [entry] = [e for e in result.report.entries if e["node"] == "format_tool_call"]
    assert entry["model"] == "tw-free-b"
    assert entry["attempts"][0].startswith("tw-free-a (free): invalid_output")
    assert entry["attempts"][-1] == "tw-free-b (free): ok"
    assert [r.model for r in rig.requests(operation=TaskType.TOOL_USE_FORMATTING)] == [
        "tw/free-a:free", "tw-free-b"
    ]


def test_a_tool_that_raises_is_a_result_and_the_graph_goes_on(rig: Rig) -> None:
    brain = Brain(rig.sim, TOOL_ROUTE)
    graph = build_instruction_pipeline(router=rig.router(),
                                       tools=[booking_tool([], fail=True)])

    result = result_of(graph)

    [step] = result.steps
    assert step.tool_result is not None and step.tool_result.output is None
    assert step.tool_result.error == "RuntimeError: the venue system is down"
    assert step.structure == PASSED and step.quality == GOOD  # judged after the failure
    [assess] = brain.of(TaskType.STRUCTURE_ASSESSMENT)
    assert "the venue system is down" in assess.text  # the judges saw the error
    assert result.rationale == RATIONALE


def test_openai_dict_tools_are_formatted_but_not_executed(rig: Rig) -> None:
    Brain(rig.sim, TOOL_ROUTE)
    as_dict = {"type": "function", "function": {
        "name": "book_venue", "description": "Book a venue.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "people": {"type": "integer"}},
                       "required": ["city", "people"]},
    }}  # fmt: skip
    graph = build_instruction_pipeline(router=rig.router(), tools=[as_dict])

    result = result_of(graph)

    [step] = result.steps
    assert step.tool_call is not None and step.tool_call.name == "book_venue"
    assert step.tool_result is None
    assert "step:execute_tool" not in graph.get_graph(xray=True).nodes


def test_a_plan_step_can_call_a_tool_too(rig: Rig) -> None:
    booked: list[tuple[str, int]] = []
    Brain(rig.sim)
    graph = build_instruction_pipeline(router=rig.router(), tools=[booking_tool(booked)])

    result = result_of(graph)

    assert result.route == "plan"
    assert booked == [("Lisbon", 12)] * 3
    assert all(s.tool_call == ToolCall(name="book_venue", args={"city": "Lisbon", "people": 12},
                                       id=s.tool_call.id) for s in result.steps if s.tool_call)
    assert [s.tool_result is not None for s in result.steps] == [True, True, True]


# --------------------------------------------------------------------------- 7. parallel steps

LATENCY = 0.5


@pytest.mark.parametrize("driver", DRIVERS)
def test_sub_tasks_run_concurrently(rig: Rig, driver: str) -> None:
    """Every extraction request arrives before the first one is answered.

    The simulator holds each extraction answer for ``LATENCY`` s; if the steps ran one
    after the other, the second request would only be sent after the first answer.
    Only the arrival spread matters, not how fast the machine is.
    """
    brain = Brain(rig.sim)
    rig.sim.script("*", Reply.function(brain), first_byte=LATENCY,
                   when=is_operation(TaskType.PARAMETER_EXTRACTION))
    graph = build_instruction_pipeline(router=rig.router())

    result = result_of(graph, driver)

    extractions = brain.of(TaskType.PARAMETER_EXTRACTION)
    assert sorted(c.step for c in extractions) == [0, 1, 2]
    arrived = [c.arrived for c in extractions]
    assert max(arrived) - min(arrived) < LATENCY, "a step waited for another one's answer"
    logged = rig.requests(operation=TaskType.PARAMETER_EXTRACTION)
    assert len(logged) == 3 and max(r.time for r in logged) - min(r.time for r in logged) < LATENCY
    assert all(e["latency"] >= LATENCY for e in result.report.entries if e["node"] == "extract")
    assert [s.index for s in result.steps] == [0, 1, 2]


# --------------------------------------------------------------------------- 8. run context


def test_the_run_context_changes_the_run(rig: Rig) -> None:
    Brain(rig.sim)  # every score is 9
    graph = build_instruction_pipeline(router=rig.router())  # free_first: capped at free

    default = result_of(graph)
    strict = result_of(graph, context={"policy": {"mode": "balanced"},
                                       "quality_threshold": 9.5})
    paid_before = len(rig.requests(tier="paid"))
    frozen = result_of(graph, context={"policy": {"mode": "balanced"},
                                       "quality_threshold": 9.5, "max_escalations": 0})

    assert default.report.escalations == [] and not default.best_effort
    # 9 < 9.5: each step's extraction reruns once on paid, then is kept (limit reached).
    for step in strict.steps:
        assert [(e.decision, e.from_tier, e.to_tier) for e in step.escalations] == [
            ("escalated", "free", "paid"), ("kept", "paid", None)
        ]
        assert step.escalations[1].note == "best effort: max_escalations (1) reached"
    assert strict.best_effort and paid_before == 3
    assert strict.report.cost == pytest.approx(3 * PAID_ANSWER_COST)
    # No escalation allowed: kept at once, nothing more paid for.
    assert [[e.decision for e in s.escalations] for s in frozen.steps] == [["kept"]] * 3
    assert frozen.steps[0].escalations[0].note == "best effort: max_escalations (0) reached"
    assert len(rig.requests(tier="paid")) == paid_before


def test_the_run_context_can_be_a_model_instance(rig: Rig) -> None:
    from tierwise.nodes import RunContext

    Brain(rig.sim, {TaskType.QUALITY_SCORING: score_for_step(0, 7)})
    graph = build_instruction_pipeline(router=rig.router())

    result = result_of(graph, context=RunContext(quality_threshold=8))

    assert [s.best_effort for s in result.steps] == [True, False, False]


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"quality_threshold": 11}, "quality_threshold"),
        ({"max_escalations": 4}, "max_escalations"),
        ({"policy": {"mode": "cheapest"}}, "policy.mode"),
        ({"policy": {"mode": "local_only", "max_tier": "paid"}}, "policy"),
        ({"quality_treshold": 7}, "quality_treshold"),
    ],
    ids=["threshold", "escalations", "mode", "tier-cap", "typo"],
)
def test_an_invalid_run_context_names_the_field(
    rig: Rig, context: dict[str, Any], field: str
) -> None:
    Brain(rig.sim)
    graph = build_instruction_pipeline(router=rig.router())

    with pytest.raises(ValidationError) as caught:
        graph.invoke({"instruction": INSTRUCTION}, context=context)

    assert caught.value.title == "RunContext"
    assert field in {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert rig.sim.requests == []  # rejected before the first node


# --------------------------------------------------------------------------- 9. progress


def test_progress_events_for_every_node(rig: Rig) -> None:
    Brain(rig.sim)
    graph = build_instruction_pipeline(router=rig.router(), tools=[book_venue])

    events = list(graph.stream({"instruction": INSTRUCTION}, stream_mode="custom",
                               subgraphs=True))

    started = Counter((e["node"], e["step"]) for _, e in events if e["status"] == "started")
    done = [(ns, e) for ns, e in events if e["status"] == "done"]
    top = ["classify", "route", "rewrite", "decompose", "rationale"]
    per_step = ["extract", "format_tool_call", "execute_tool", "assess", "score"]
    expected = Counter([(n, None) for n in top] + [(n, i) for i in range(3) for n in per_step])
    assert started == expected
    assert Counter((e["node"], e["step"]) for _, e in done) == expected
    for namespace, event in done:
        assert isinstance(event["latency"], float) and event["latency"] >= 0
        assert namespace == () if event["step"] is None else namespace[0].startswith("step:")
        if event["node"] == "execute_tool":
            assert (event["operation"], event["tool"], event["error"]) == ("tool", "book_venue",
                                                                          None)
        else:
            assert event["operation"] in {t.value for t in TaskType}
            assert (event["model"], event["tier"]) == ("tw-free-a", "free")
            assert event["cost"] == 0.0 and event["escalation"] == 0


# --------------------------------------------------------------------------- 10. triage, extraction


def test_graph_names_and_schemas(rig: Rig) -> None:
    router = rig.router()
    triage, extraction = build_triage(router=router), build_extraction(router=router)
    pipeline = build_instruction_pipeline(router=router)

    assert (triage.name, extraction.name, pipeline.name) == ("triage", "extraction",
                                                             "instruction_pipeline")
    for graph in (triage, pipeline):
        schema = graph.get_input_jsonschema()
        assert set(schema["properties"]) == {"instruction", "run_id"}
        assert schema["required"] == ["instruction"]
    assert set(triage.get_output_jsonschema()["properties"]) == {
        "classification", "complexity", "route", "report"
    }
    assert set(pipeline.get_output_jsonschema()["properties"]) == {"result"}
    steps = extraction.get_input_jsonschema()
    assert steps["required"] == ["task"]
    assert set(steps["properties"]) == {"step", "task", "instruction", "complexity", "run_id"}
    assert set(extraction.get_output_jsonschema()["properties"]) == {"outcome", "report"}
    for graph in (triage, extraction, pipeline):
        context = graph.get_context_jsonschema()
        assert context is not None
        assert set(context["properties"]) == {"policy", "quality_threshold", "max_escalations",
                                              "max_wait"}
        assert graph.checkpointer is None


def test_triage_invoke_batch_stream_astream(rig: Rig) -> None:
    Brain(rig.sim, {TaskType.CLASSIFICATION: {"label": "bug", "complexity": "simple"}})
    triage = build_triage(router=rig.router(), labels=("bug", "idea"))
    payload = {"instruction": "The export button crashes the app"}

    out = triage.invoke(payload)
    batch = triage.batch([payload, payload])
    chunks = list(triage.stream(payload, stream_mode="updates"))

    async def collect() -> list[dict[str, Any]]:
        return [c async for c in triage.astream(payload, stream_mode="updates")]

    async_chunks = asyncio.run(collect())

    assert sorted(out) == ["classification", "complexity", "report", "route"]
    assert (out["classification"].label, out["complexity"]) == ("bug", "simple")
    assert out["route"] == RouteDecision(route="plan")
    assert [e["node"] for e in out["report"]] == ["classify", "route"]
    assert [(b["classification"], b["route"]) for b in batch] == [
        (out["classification"], out["route"])
    ] * 2
    for streamed in (chunks, async_chunks):
        assert [next(iter(c)) for c in streamed] == ["classify", "route"]
        assert streamed[0]["classify"]["classification"] == out["classification"]


def test_extraction_invoke_batch_stream_astream(rig: Rig) -> None:
    booked: list[tuple[str, int]] = []
    brain = Brain(rig.sim)
    graph = build_extraction(router=rig.router(), tools=[booking_tool(booked)])

    out = graph.invoke({"task": STEPS[0]})
    batch = graph.batch([{"task": STEPS[1], "step": 1}, {"task": STEPS[2], "step": 2}])
    chunks = list(graph.stream({"task": STEPS[0]}, stream_mode="updates"))

    async def collect() -> list[dict[str, Any]]:
        return [c async for c in graph.astream({"task": STEPS[0]}, stream_mode="updates")]

    async_chunks = asyncio.run(collect())

    outcome = out["outcome"]
    assert sorted(out) == ["outcome", "report"]
    assert outcome == StepOutcome(
        index=0, task=STEPS[0], parameters=PARAMETERS[0], structure=PASSED,
        tool_call=ToolCall(name="book_venue", args={"city": "Lisbon", "people": 12},
                           id=outcome.tool_call.id),
        tool_result=ToolResult(name="book_venue", output="booked a venue in Lisbon for 12",
                               latency=outcome.tool_result.latency),
    )  # fmt: skip
    assert outcome.quality is None  # no quality score in the extraction graph
    assert [e["node"] for e in out["report"]] == ["extract", "format_tool_call", "assess"]
    assert [b["outcome"].parameters for b in batch] == PARAMETERS[1:]
    assert [b["outcome"].index for b in batch] == [1, 2]
    nodes = ["extract", "format_tool_call", "execute_tool", "assess", "finish"]
    for streamed in (chunks, async_chunks):
        assert [next(iter(c)) for c in streamed] == nodes
    assert len(booked) == 5
    assert brain.of(TaskType.QUALITY_SCORING) == []


# --------------------------------------------------------------------------- 11. langgraph.json


def operation_nodes(graph: Any) -> list[OperationNode]:
    """Every model-asking node of a compiled graph, subgraphs included."""
    found: list[OperationNode] = []
    for spec in graph.builder.nodes.values():
        runnable = spec.runnable
        if isinstance(runnable, OperationNode):
            found.append(runnable)
        elif isinstance(runnable, CompiledStateGraph):
            found += operation_nodes(runnable)
    return found


def test_every_langgraph_json_graph_imports_and_compiles(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangGraph Server's own loader finds each graph: a factory building it over the settings.

    ``_graph_from_spec`` is what ``langgraph dev`` runs (it reads the module's ``__dict__``,
    so a module ``__getattr__`` would not do); the factory is then called the way the
    server calls it per run. The settings come from a ``tierwise.toml`` pointing every
    provider at the simulator and the simulator's dummy keys: nothing can reach a real host.
    """
    config = tmp_path / "tierwise.toml"
    config.write_text(simulator.toml_snippet())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TIERWISE_CONFIG", str(config))
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "ledger.sqlite3"))
    for name, value in simulator.environment().items():
        monkeypatch.setenv(name, value)
    # langgraph_api reads its settings when imported; these are the in-memory runtime's.
    for name, value in {"REDIS_URI": "unused", "DATABASE_URI": ":memory:",
                        "MIGRATIONS_PATH": "__inmem",
                        "LANGGRAPH_RUNTIME_EDITION": "inmem"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    from langgraph_api._factory_utils import classify_factory, invoke_factory, is_factory
    from langgraph_api.graph import GraphSpec, _graph_from_spec
    from langgraph_sdk.runtime import _ReadRuntime

    from tierwise.graphs.common import SERVED

    manifest = json.loads((ROOT / "langgraph.json").read_text())
    assert set(manifest["graphs"]) == {"instruction_pipeline", "triage", "extraction"}
    SERVED.clear()
    graphs = {}

    async def serve(name: str, factory: Any) -> Any:
        runtime = _ReadRuntime(access_context="assistants.read", user=None, store=None)
        first = await invoke_factory(factory, name, {"configurable": {}}, runtime)
        assert await invoke_factory(factory, name, {"configurable": {}}, runtime) is first
        return first

    for name, target in manifest["graphs"].items():
        path, attribute = target.rsplit(":", 1)
        factory = _graph_from_spec(GraphSpec(name, path=str(ROOT / path), variable=attribute))
        classify_factory(factory, name)
        assert is_factory(name)
        graph = asyncio.run(serve(name, factory))  # built once
        assert isinstance(graph, CompiledStateGraph) and graph.name == name
        assert graph.get_graph().nodes and graph.checkpointer is None
        nodes = operation_nodes(graph)
        assert nodes
        for node in nodes:
            router = node.answerer.router
            assert router is SERVED.router  # one router for every served graph
            for provider in Provider:
                if provider is not Provider.EMBEDDED:
                    assert router.settings.base_url(provider).startswith(simulator.url)
        graphs[name] = graph

    out = graphs["triage"].invoke({"instruction": "Book a room"},
                                  context={"policy": {"mode": "local_only"}})
    assert out["route"].route in ("tool", "plan", "direct")
    assert {r.provider for r in simulator.requests} == {Provider.OLLAMA}
    SERVED.clear()


# --------------------------------------------------------------------------- 12. mermaid


def test_the_pipeline_graph_matches_its_mermaid_snapshot(rig: Rig) -> None:
    graph = build_instruction_pipeline(router=rig.router(), tools=[book_venue])
    drawn = graph.get_graph(xray=True).draw_mermaid()

    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(drawn)
    how = "run UPDATE_SNAPSHOTS=1 python -m pytest tests/test_pipeline.py -k mermaid"
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: {how}"
    assert drawn == SNAPSHOT.read_text(), (
        f"the pipeline's shape changed; if that is intended, {how} and review the diff"
    )
    for node in ("classify", "route", "rewrite", "decompose", "score", "rationale",
                 "finalize", "step:extract", "step:format_tool_call", "step:execute_tool",
                 "step:assess", "step:score", "step:finish"):
        assert node in graph.get_graph(xray=True).nodes, node
