"""Ensembles (several models answer one operation, combined) and the graphs' quality evidence.

Everything runs against the provider simulator with the node tests' rig (``tests/
pipeline_script.py``): one model per tier and protocol, answers scripted per operation by
:class:`Brain` — and here also per *model*, so ensemble members can disagree.
"""

from __future__ import annotations

import asyncio
import operator
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from tests.pipeline_script import (
    CATALOG,
    INSTRUCTION,
    PARAMETERS,
    REASONS,
    REWRITTEN,
    STEPS,
    USAGE,
    Brain,
    Call,
    Rig,
    make_rig,
)
from tierwise.catalog.policy import EnsembleSpec, OperationOverride, Policy
from tierwise.catalog.specs import Complexity, TaskType
from tierwise.graphs.pipeline import build_instruction_pipeline
from tierwise.graphs.steps import step_graph
from tierwise.ledger import Ledger
from tierwise.ledger.evidence import ESCALATION, JUDGE
from tierwise.nodes import Classification, Rewrite, classification_node, rewriting_node
from tierwise.nodes.base import ReportEntry
from tierwise.nodes.context import RunContext
from tierwise.prompts.classification import CLASSIFY as CLASSIFY_PROMPT
from tierwise.prompts.rewriting import REWRITE
from tierwise.routing.ensemble import (
    EnsembleResult,
    Scored,
    aensemble,
    best_score,
    ensemble,
    field_key,
    majority_vote,
)
from tierwise.routing.results import NoModelAvailable, RoutedResult
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Fault, Simulator

DRIVERS = ("invoke", "ainvoke")
#: Provider model id of each rig model, as the simulator sees it.
WIRE = {"tw-local": "tw-local:1b", "tw-free-a": "tw/free-a:free", "tw-free-b": "tw-free-b",
        "tw-paid": "tw/paid"}  # fmt: skip
MEMBERS = ("tw-free-a", "tw-free-b", "tw-local")
CLASSIFY = TaskType.CLASSIFICATION


@pytest.fixture
def rig(simulator: Simulator) -> Rig:
    return make_rig(simulator)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite3") as opened:
        yield opened


def ledger_router(rig: Rig, ledger: Ledger, policy: Policy | None = None) -> ModelRouter:
    """A rig router that records to ``ledger`` (no demotion: order stays the policy's)."""
    return ModelRouter(rig.settings, policy=policy or Policy(), factory=rig.factory,
                       snapshot=Snapshot.everything(CATALOG),
                       ledger=ledger, demotion=None)  # fmt: skip


def labels_by_model(**labels: str) -> dict[TaskType, Any]:
    """A Brain script: each model (catalog key) answers its own label."""
    by_wire = {WIRE[k.replace("_", "-")]: v for k, v in labels.items()}
    return {CLASSIFY: lambda call: {"label": by_wire[call.model], "complexity": "moderate"}}


def ask(router: ModelRouter, combiner: Any, driver: str, models: tuple[str, ...] = MEMBERS,
        **kwargs: Any) -> EnsembleResult:  # fmt: skip
    """Classify the instruction with an ensemble of ``models``, through ``driver``."""
    args = (router, CLASSIFY, CLASSIFY_PROMPT.format_messages(
        instruction=INSTRUCTION, labels="planning, action, question"))
    kwargs = {"models": models, "combiner": combiner, "schema": Classification, **kwargs}
    if driver == "invoke":
        return ensemble(*args, **kwargs)
    return asyncio.run(aensemble(*args, **kwargs))


# --------------------------------------------------------------------------- vote


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_vote_picks_the_label_two_of_three_members_agree_on(rig: Rig, driver: str) -> None:
    brain = Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                           tw_local="planning"))  # fmt: skip

    result = ask(rig.router(), majority_vote(field_key("label")), driver)

    assert isinstance(result, RoutedResult) and isinstance(result, EnsembleResult)
    assert result.value.label == "planning" and result.model == "tw-free-b"  # first of the 2
    assert result.summary == "2 of 3 votes" and result.combiner == "vote"
    assert [a.describe() for a in result.attempts] == [
        "tw-free-a (free): ok", "tw-free-b (free): ok", "tw-local (local): ok"]
    assert [(m.model, m.note, m.won) for m in result.members] == [
        ("tw-free-a", '{"label": "action"}', False),
        ("tw-free-b", '{"label": "planning"}', True),
        ("tw-local", '{"label": "planning"}', False),
    ]
    assert result.describe().startswith('vote (2 of 3 votes): tw-free-a {"label": "action"}; '
                                        '*tw-free-b')  # fmt: skip
    assert result.input_tokens == 3 * USAGE[0] and result.output_tokens == 3 * USAGE[1]
    assert sorted(c.model for c in brain.calls) == sorted(WIRE[m] for m in MEMBERS)
    assert result.provenance()["ensemble"] == result.describe()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_tie_goes_to_the_first_member(rig: Rig, driver: str) -> None:
    Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                   tw_local="question"))  # fmt: skip
    three = ask(rig.router(), majority_vote(field_key("label")), driver)
    two = ask(rig.router(), majority_vote(field_key("label")), driver,
              models=("tw-local", "tw-free-b"))  # fmt: skip

    assert (three.model, three.value.label, three.summary) == ("tw-free-a", "action",
                                                               "1 of 3 votes")
    assert (two.model, two.value.label) == ("tw-local", "question")  # the policy's order


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_failing_member_is_left_out_of_the_vote_but_its_attempts_are_kept(
    rig: Rig, driver: str
) -> None:
    Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                   tw_local="action"))  # fmt: skip
    rig.sim.script(rig.spec("tw-free-a"), Fault.server_error(503))

    result = ask(rig.router(), majority_vote(field_key("label")), driver)

    # Without tw-free-a's vote it is 1 against 1: the earlier survivor, tw-free-b, wins.
    assert (result.model, result.value.label, result.summary) == ("tw-free-b", "planning",
                                                                  "1 of 2 votes")
    # a member's only candidate is retried once after a transient failure (issue 14)
    failed, retried, *answered = result.attempts
    assert (failed.model, failed.ok) == ("tw-free-a", False) and "503" in failed.detail
    assert (retried.model, retried.ok) == ("tw-free-a", False)
    assert [a.model for a in answered] == ["tw-free-b", "tw-local"]
    first = result.members[0]
    assert not first.ok and first.note.startswith("failed: ") and not first.won
    assert "tw-free-a failed: " in result.describe()


@pytest.mark.parametrize("driver", DRIVERS)
def test_when_every_member_fails_the_error_lists_every_attempt(rig: Rig, driver: str) -> None:
    Brain(rig.sim)
    for key in MEMBERS:
        rig.sim.script(rig.spec(key), Fault.server_error(500))

    with pytest.raises(NoModelAvailable) as raised:
        ask(rig.router(), majority_vote(), driver)

    # each member's only candidate: tried, then retried once (transient 500)
    assert [a.model for a in raised.value.attempts] == [k for k in MEMBERS for _ in (1, 2)]
    assert all(not a.ok for a in raised.value.attempts)
    message = str(raised.value)
    assert "every ensemble member failed" in message
    assert all(f"{key} (" in message for key in MEMBERS)


def test_a_member_the_policy_does_not_allow_fails_without_an_attempt(rig: Rig) -> None:
    """free_first caps at free: the paid member finds no candidate; the others still vote."""
    Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="action", tw_paid="planning"))

    result = ask(rig.router(), majority_vote(field_key("label")), "invoke",
                 models=("tw-paid", "tw-free-a", "tw-free-b"))  # fmt: skip

    assert (result.model, result.value.label) == ("tw-free-a", "action")
    assert not result.members[0].ok and result.members[0].attempts == ()
    assert not rig.requests(tier="paid")


def test_an_ensemble_of_unknown_or_repeated_models_is_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="unknown ensemble model"):
        ask(rig.router(), majority_vote(), "invoke", models=("nope", "tw-free-a"))
    with pytest.raises(ValueError, match="two or more distinct"):
        ask(rig.router(), majority_vote(), "invoke", models=("tw-free-a", "tw-free-a"))


# --------------------------------------------------------------------------- best score


REWRITE_QUESTION = REWRITE.format_messages(instruction=INSTRUCTION)
REWRITES = {"tw/free-a:free": "Plan an offsite.", "tw-free-b": REWRITTEN,
            "tw-local:1b": "Lisbon offsite for 12 in May."}  # fmt: skip
JUDGED = {"Plan an offsite.": 3, REWRITTEN: 9, "Lisbon offsite for 12 in May.": 6}


def rewrite_by_model(call: Call) -> dict[str, Any]:
    return {"instruction": REWRITES[call.model]}


def score_by_subject(call: Call) -> dict[str, Any]:
    """The quality judge: the score of the rewrite the request shows."""
    [score] = [s for text, s in JUDGED.items() if text in call.text]
    return {"score": score, "reasons": REASONS}


@pytest.mark.parametrize("driver", DRIVERS)
def test_best_score_keeps_the_answer_the_judge_scores_highest(rig: Rig, driver: str) -> None:
    Brain(rig.sim, {TaskType.REWRITING: rewrite_by_model})
    judged: list[str] = []

    def score(result: RoutedResult) -> Scored:
        judged.append(result.model)
        return Scored(JUDGED[result.value.instruction])

    async def ascore(result: RoutedResult) -> float:
        return score(result).score

    combiner = best_score(ascore, sync_judge=score)
    args = (rig.router(), TaskType.REWRITING, REWRITE_QUESTION)
    kwargs: dict[str, Any] = {"models": MEMBERS, "combiner": combiner, "schema": Rewrite}
    result = (ensemble(*args, **kwargs) if driver == "invoke"
              else asyncio.run(aensemble(*args, **kwargs)))  # fmt: skip

    assert (result.model, result.value.instruction) == ("tw-free-b", REWRITTEN)
    assert (result.combiner, result.summary) == ("best_score", "score 9")
    assert [m.note for m in result.members] == ["score 3", "score 9", "score 6"]
    assert sorted(judged) == sorted(MEMBERS)


def test_a_candidate_the_judge_cannot_score_ranks_last(rig: Rig) -> None:
    Brain(rig.sim, {TaskType.REWRITING: rewrite_by_model})

    async def judge(result: RoutedResult) -> float:
        if result.model == "tw-free-a":
            raise NoModelAvailable(TaskType.QUALITY_SCORING, (), "no judge")
        return 1.0

    result = asyncio.run(aensemble(rig.router(), TaskType.REWRITING, REWRITE_QUESTION,
                                   models=MEMBERS, combiner=best_score(judge),
                                   schema=Rewrite))  # fmt: skip

    assert result.model == "tw-free-b"
    assert [m.note for m in result.members] == ["not scored", "score 1", "score 1"]


# --------------------------------------------------------------------------- concurrency


class ModelCalls(BaseCallbackHandler):
    """Logs when each chat model call starts and ends (LangChain callbacks, per member).

    With a barrier, every start waits until ``parties`` calls have started: it is passed
    only if that many calls are in flight at once.
    """

    run_inline = True  # called on the event loop's thread, in order, for the async path

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.events: list[tuple[str, UUID]] = []
        self.barrier = barrier
        self.met: list[bool] = []
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: dict[str, Any],
                            messages: list[list[BaseMessage]], *, run_id: UUID,
                            **kwargs: Any) -> None:  # fmt: skip
        with self._lock:
            self.events.append(("start", run_id))
        if self.barrier is not None:
            try:
                self.barrier.wait(timeout=10)
                self.met.append(True)
            except threading.BrokenBarrierError:
                self.met.append(False)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self.events.append(("end", run_id))


def test_async_members_are_all_in_flight_before_any_answers(rig: Rig) -> None:
    Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                   tw_local="planning"))  # fmt: skip
    calls = ModelCalls()

    ask(rig.router(), majority_vote(), "ainvoke", config={"callbacks": [calls]})

    kinds = [kind for kind, _ in calls.events]
    assert kinds == ["start"] * 3 + ["end"] * 3  # sequential calls would alternate


def test_sync_members_run_in_parallel_threads(rig: Rig) -> None:
    """Each member's call start waits for the other two: only concurrent calls get past."""
    Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                   tw_local="planning"))  # fmt: skip
    calls = ModelCalls(threading.Barrier(3))

    result = ask(rig.router(), majority_vote(field_key("label")), "invoke",
                 config={"callbacks": [calls]})  # fmt: skip

    assert calls.met == [True, True, True]
    assert result.value.label == "planning"


# --------------------------------------------------------------------------- ledger


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_members_ledger_rows_share_one_call_id(
    rig: Rig, ledger: Ledger, driver: str
) -> None:
    Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                   tw_local="planning"))  # fmt: skip
    rig.sim.script(rig.spec("tw-local"), Fault.server_error(503))

    result = ask(ledger_router(rig, ledger), majority_vote(field_key("label")), driver)

    assert ledger.flush()
    rows = [r for r in ledger.rows() if r.call_id == result.call_id]
    assert sorted(r.model for r in rows) == sorted([*MEMBERS, "tw-local"])  # with its retry
    assert Counter(r.ok for r in rows) == Counter({True: 2, False: 2})
    assert len({r.call_id for r in ledger.rows()}) == 1


# --------------------------------------------------------------------------- nodes


class NodeState(TypedDict, total=False):
    instruction: str
    classification: Classification
    complexity: str
    rewrite: Rewrite
    report: Annotated[list[ReportEntry], operator.add]


def one_node_graph(node: Any) -> Any:
    graph = StateGraph(NodeState, context_schema=RunContext)
    graph.add_node(node.name, node)
    graph.add_edge(START, node.name)
    graph.add_edge(node.name, END)
    return graph.compile()


def ensemble_context(operation: TaskType, *models: str, **policy: Any) -> RunContext:
    spec = EnsembleSpec(models=models or MEMBERS)
    return RunContext(policy=Policy(
        operations={operation: OperationOverride(forbid_tiers=frozenset(), ensemble=spec)},
        **policy,
    ))  # fmt: skip


def run_graph(graph: Any, payload: dict[str, Any], driver: str, **kwargs: Any) -> Any:
    if driver == "invoke":
        return graph.invoke(payload, **kwargs)
    return asyncio.run(graph.ainvoke(payload, **kwargs))


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_classification_node_with_an_ensemble_policy_returns_the_voted_label(
    rig: Rig, driver: str
) -> None:
    brain = Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                           tw_local="planning"))  # fmt: skip
    graph = one_node_graph(classification_node(rig.router()))

    out = run_graph(graph, {"instruction": INSTRUCTION}, driver,
                    context=ensemble_context(CLASSIFY))  # fmt: skip

    assert out["classification"] == Classification(label="planning",
                                                   complexity=Complexity.MODERATE)
    [entry] = out["report"]
    assert (entry["model"], entry["tier"], entry["status"]) == ("tw-free-b", "free", "ok")
    assert entry["attempts"] == ["tw-free-a (free): ok", "tw-free-b (free): ok",
                                 "tw-local (local): ok"]  # fmt: skip
    assert entry["ensemble"].startswith("vote (2 of 3 votes): ")
    assert len(entry["call_id"]) == 32 and entry["detail"] == ""
    assert (entry["input_tokens"], entry["output_tokens"]) == (3 * USAGE[0], 3 * USAGE[1])
    assert len(brain.of(CLASSIFY)) == 3 and not brain.of(TaskType.QUALITY_SCORING)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_rewriting_node_ensemble_keeps_the_rewrite_the_quality_judge_scores_best(
    rig: Rig, driver: str
) -> None:
    brain = Brain(rig.sim, {TaskType.REWRITING: rewrite_by_model,
                            TaskType.QUALITY_SCORING: score_by_subject})  # fmt: skip
    graph = one_node_graph(rewriting_node(rig.router()))

    out = run_graph(graph, {"instruction": INSTRUCTION}, driver,
                    context=ensemble_context(TaskType.REWRITING))  # fmt: skip

    assert out["rewrite"] == Rewrite(instruction=REWRITTEN)
    [entry] = out["report"]
    assert entry["model"] == "tw-free-b"
    assert entry["ensemble"].startswith("best_score (score 9): tw-free-a score 3; "
                                        "*tw-free-b score 9; tw-local score 6")  # fmt: skip
    judge_calls = brain.of(TaskType.QUALITY_SCORING)
    assert len(judge_calls) == 3 and all(INSTRUCTION in c.text for c in judge_calls)
    # The answer's tokens are the members' and the judge's: 6 calls.
    assert (entry["input_tokens"], entry["output_tokens"]) == (6 * USAGE[0], 6 * USAGE[1])
    assert len(entry["attempts"]) == 3  # the members'; the judge's calls are its own


def test_an_escalated_rerun_answers_with_one_routed_call(rig: Rig) -> None:
    brain = Brain(rig.sim, labels_by_model(tw_free_a="action", tw_free_b="planning",
                                           tw_local="planning", tw_paid="question"))
    graph = one_node_graph(classification_node(rig.router()))
    context = ensemble_context(CLASSIFY, mode="balanced")
    first = graph.invoke({"instruction": INSTRUCTION}, context=context)

    again = graph.invoke({"instruction": INSTRUCTION, "report": first["report"]},
                         context=context)  # fmt: skip

    _, rerun = again["report"]
    assert (rerun["model"], rerun["min_tier"], rerun["ensemble"]) == ("tw-paid", "paid", "")
    assert again["classification"].label == "question"
    assert len(brain.of(CLASSIFY)) == 4


# --------------------------------------------------------------------------- evidence


def test_a_low_score_records_a_judge_outcome_and_an_escalation_for_the_producer(
    rig: Rig, ledger: Ledger
) -> None:
    """Step graph: extract on free scores 3 → rerun on paid scores 9; all of it is filed."""
    Brain(rig.sim, {TaskType.QUALITY_SCORING: lambda call: {
        "score": 3 if call.count == 1 else 9, "reasons": REASONS}})
    graph = step_graph(ledger_router(rig, ledger, Policy(mode="balanced"))).compile(
        checkpointer=InMemorySaver(), interrupt_before=["score"])
    config: Any = {"configurable": {"thread_id": "t-1"}}

    graph.invoke({"task": STEPS[0], "instruction": INSTRUCTION}, config)  # stops at score
    assert [o.score for o in ledger.evidence.outcomes()] == [1.0]  # assess's, so far
    graph.invoke(None, config)  # resumed: score 3 -> extract again -> assess -> stops
    out = graph.invoke(None, config)  # resumed again: score 9 -> finish

    extracts = [e for e in out["report"] if e["node"] == "extract"]
    first, second = (e["call_id"] for e in extracts)
    assert [e["tier"] for e in extracts] == ["free", "paid"] and first != second
    found = {(o.call_id, o.source, o.model, o.score) for o in ledger.evidence.outcomes()}
    assert found == {
        (first, JUDGE, "tw-free-a", 1.0),   # assess: passed
        (first, JUDGE, "tw-free-a", 0.3),   # score 3/10
        (first, ESCALATION, "tw-free-a", 0.0),
        (second, JUDGE, "tw-paid", 1.0),
        (second, JUDGE, "tw-paid", 0.9),
    }  # fmt: skip
    outcomes = ledger.evidence.outcomes()
    assert all(o.operation == "parameter_extraction" for o in outcomes)
    assert {o.thread_id for o in outcomes} == {"t-1"}
    assert {o.detail for o in outcomes if o.source == JUDGE} == {
        "passed", "score 3/10 (poor)", "score 9/10 (excellent)"}
    # The judged producer calls kept their prompts' features (and only they did).
    rows = {r.call_id: r for r in ledger.evidence.training_rows()}
    assert set(rows) == {first, second}
    assert rows[first].score == pytest.approx((1.0 + 0.3 + 0.0) / 3) and rows[first].ids
    assert rows[second].model == "tw-paid"
    # Nothing of the prompt's text is in the ledger's files (database, WAL, journals).
    ledger.flush()
    files = [p for p in Path(ledger.path).parent.rglob("*") if p.is_file()]
    assert files and not any(STEPS[0].encode() in p.read_bytes() for p in files)
    # Resuming (twice) repeated no node that had run, so no outcome is filed twice.
    assert len(ledger.evidence.outcomes()) == 5


def test_the_pipeline_files_the_score_of_a_direct_answers_rewrite(
    rig: Rig, ledger: Ledger
) -> None:
    Brain(rig.sim, {TaskType.INSTRUCTION_ROUTING: {"route": "direct"},
                    TaskType.QUALITY_SCORING: {"score": 8, "reasons": REASONS}})
    graph = build_instruction_pipeline(router=ledger_router(rig, ledger))

    out = graph.invoke({"instruction": INSTRUCTION})

    [rewrite] = [e for e in out["result"].report.entries if e["node"] == "rewrite"]
    [outcome] = ledger.evidence.outcomes()
    assert (outcome.call_id, outcome.operation, outcome.model, outcome.score, outcome.source) == (
        rewrite["call_id"], "rewriting", "tw-free-a", 0.8, JUDGE)
    assert [r.call_id for r in ledger.evidence.training_rows()] == [rewrite["call_id"]]


def test_without_a_ledger_judging_and_escalating_file_nothing_and_work(rig: Rig) -> None:
    """The rig's plain router has no ledger: there is nowhere to file, and no error."""
    Brain(rig.sim, {TaskType.QUALITY_SCORING: {"score": 2, "reasons": REASONS}})
    graph = step_graph(rig.router(Policy(mode="balanced"))).compile()

    out = graph.invoke({"task": STEPS[0], "instruction": INSTRUCTION})

    assert [e["node"] for e in out["report"]].count("extract") == 2
    assert out["steps"][0].parameters == PARAMETERS[0]
