"""The scripts in ``examples/`` run, as a user runs them, against the provider simulator.

Each example is a real subprocess (``python examples/NAME.py``) with default settings:
the environment points every provider and Ollama at the session's simulator, the home
directory is a fresh temporary one (no ``~/.env``, no user ``tierwise.toml``), and any
connection to a host other than 127.0.0.1 goes to a dead proxy. The simulator answers
each cognitive operation from a script matched on its prompt, so every assertion on the
printed output checks something the script decided.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from langchain_core.prompts import ChatPromptTemplate

from tierwise.catalog.specs import Provider
from tierwise.prompts.classification import CLASSIFY
from tierwise.prompts.decomposition import DECOMPOSE
from tierwise.prompts.instruction_routing import ROUTE
from tierwise.prompts.parameter_extraction import EXTRACT
from tierwise.prompts.quality_scoring import SCORE
from tierwise.prompts.rationale_generation import EXPLAIN
from tierwise.prompts.rewriting import REWRITE
from tierwise.prompts.structure_assessment import ASSESS
from tierwise.testing import ChatRequest, Fault, Reply, Simulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: Nothing listens on the discard port: a request that escapes to a real host fails at once.
DEAD_PROXY = "http://127.0.0.1:9"
#: Generous: the budget is < 10 s, but a loaded CI machine imports LangChain slowly.
TIMEOUT = 120


def opening(template: ChatPromptTemplate) -> str:
    """The fixed start of a prompt template's first message: enough to recognise it."""
    return str(template.messages[0].prompt.template).split("{", 1)[0]  # type: ignore[union-attr]


def asks(text: str) -> Callable[[ChatRequest], bool]:
    """A request whose first message starts with ``text``."""
    return lambda request: bool(request.messages) and request.messages[0].text.startswith(text)


def answer(sim: Simulator, template: ChatPromptTemplate | str, reply: Reply) -> None:
    """Every model answers ``reply`` to requests made from ``template`` (or starting with it)."""
    text = template if isinstance(template, str) else opening(template)
    assert text.strip(), "the prompt opens with a variable: recognise it by something else"
    sim.script("*", reply, when=asks(text))


RunExample = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_example(simulator: Simulator, tmp_path: Path) -> RunExample:
    """Run ``examples/NAME`` in a subprocess pointed at ``simulator``.

    ``run(name, *args, code=0, config="")``: ``config`` is added to the ``tierwise.toml``
    that points the providers at the simulator; the process must exit with ``code``.
    """
    home = tmp_path / "home"
    home.mkdir()
    # os.environ is already cleared of keys, endpoints and proxies by the simulator fixture
    env = {name: value for name, value in os.environ.items() if not name.startswith("TIERWISE_")}
    env.update(simulator.environment())
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        TIERWISE_CONFIG=str(tmp_path / "tierwise.toml"),
        HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY, ALL_PROXY=DEAD_PROXY,
        http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY, all_proxy=DEAD_PROXY,
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
    )

    def run(
        name: str, *args: str, code: int = 0, config: str = ""
    ) -> subprocess.CompletedProcess[str]:
        (tmp_path / "tierwise.toml").write_text(config + "\n" + simulator.toml_snippet())
        command = [sys.executable, str(EXAMPLES / name), *args]
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
        print(f"{name}: {time.perf_counter() - started:.1f} s")
        assert proc.returncode == code, f"{name}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def served_models(sim: Simulator) -> list[str]:
    """The models that answered chat requests (not the Ollama tag probe)."""
    return [r.model for r in sim.requests if r.model]


# --------------------------------------------------------------------------- run_pipeline

PLAN = ["Pick dates in May and a budget", "Book a venue in Lisbon for 12 people",
        "Arrange flights and hotels"]
REWRITTEN = "Plan a three-day offsite in Lisbon for a team of 12 people in May."
RATIONALE = "Dates and budget come first because venue and travel depend on them."


def script_pipeline(sim: Simulator) -> None:
    answer(sim, CLASSIFY, Reply.json({"label": "planning", "complexity": "complex"}))
    answer(sim, ROUTE, Reply.json({"route": "plan"}))
    answer(sim, REWRITE, Reply.json({"instruction": REWRITTEN}))
    answer(sim, DECOMPOSE, Reply.json({"steps": PLAN}))
    answer(sim, EXTRACT, Reply.json({"parameters": [{"name": "city", "value": "Lisbon"}]}))
    answer(sim, ASSESS, Reply.json({"well_formed": True, "complete": True, "defects": []}))
    answer(sim, SCORE, Reply.json({"score": 8, "reasons": ["concrete"]}))
    answer(sim, EXPLAIN, Reply.json({"rationale": RATIONALE}))


def test_run_pipeline(run_example: RunExample, simulator: Simulator) -> None:
    script_pipeline(simulator)
    out = run_example("run_pipeline.py", "Plan our offsite", "--policy", "local_only",
                      "--threshold", "7").stdout

    assert "instruction: Plan our offsite" in out
    # the context reached the run: local_only sends every node to a local (Ollama) model
    assert "policy local_only (max tier local), quality threshold 7" in out
    assert "label:      planning (complex)" in out
    assert "route:      plan" in out
    assert f"rewritten:  {REWRITTEN}" in out
    for number, step in enumerate(PLAN, 1):
        assert f"  {number}. {step}" in out
        assert f"step {number}: {step}" in out
    assert out.count('parameters: {"parameters":[{"name":"city","value":"Lisbon"}]}') == 3
    assert out.count("structure:  passed   quality: 8/10 (excellent)") == 3
    assert f"rationale:  {RATIONALE}" in out
    assert "best effort: no" in out

    # 5 pipeline nodes + 3 per step, each answered once by the simulator, all local
    calls = 5 + 3 * len(PLAN)
    assert len(served_models(simulator)) == calls
    assert {r.provider for r in simulator.requests if r.model} == {Provider.OLLAMA}
    report = out.split("routing report: ", 1)[1]
    assert report.startswith(f"{calls} model calls, $0.0000")
    assert f"answers per tier: local {calls}" in report
    rows = [line.split() for line in report.splitlines()[2:] if line.strip()]
    assert sorted(row[0] for row in rows) == sorted(
        ["classify", "route", "rewrite", "decompose", "rationale"]
        + ["extract", "assess", "score"] * len(PLAN))
    assert {row[3] for row in rows} == {"local"}


def test_run_pipeline_says_why_when_no_model_answers(
    run_example: RunExample, simulator: Simulator
) -> None:
    """Every free model is down and the settings keep classification off the local tier."""
    simulator.script("*", Fault.server_error(503))
    proc = run_example("run_pipeline.py", code=1, config=(
        '[policy.operations.classification]\nforbid_tiers = ["local"]\n'))
    lines = proc.stderr.splitlines()
    assert lines[0] == "error: no model could answer classification: every candidate failed"
    attempts = [line for line in lines if line.startswith("  - ")]
    assert attempts and all(": unavailable" in line for line in attempts)
    assert lines[-1].startswith("hint: `tierwise doctor`")
    assert len(served_models(simulator)) == len(attempts)


# --------------------------------------------------------------------------- custom_workflow

SUMMARY = "Export crashes when the file name contains an accented character."


def _label(request: ChatRequest) -> dict[str, str]:
    text = request.messages[-1].text.lower()
    if "crash" in text:
        return {"label": "bug", "complexity": "moderate"}
    return {"label": "question", "complexity": "simple"}


def script_inbox(sim: Simulator) -> None:
    answer(sim, CLASSIFY, Reply.function(_label))
    answer(sim, REWRITE, Reply.json({"instruction": SUMMARY}))
    answer(sim, SCORE, Reply.json({"score": 9, "reasons": ["specific"]}))


def test_custom_workflow(run_example: RunExample, simulator: Simulator) -> None:
    script_inbox(simulator)
    out = run_example("custom_workflow.py").stdout

    assert "classify       reads ('message',), writes ('classification', 'complexity')" in out
    assert "summarise      reads ('message',), writes ('summary',)" in out
    assert "check_summary  reads ('message', 'summary'), writes ('quality',)" in out
    bug, question = out.split("\nmessage: ")[1:]

    # the bug became a ticket: label and complexity from the classification, title from
    # the rewrite, needs_review from the score
    assert "classified: bug (moderate)" in bug
    assert (f"ticket:     {{'title': '{SUMMARY}', 'type': 'bug', 'priority': 'high', "
            "'needs_review': False}") in bug
    assert "summary quality: 9/10 (excellent)" in bug
    assert [line.split()[:2] for line in bug.split("provenance:\n")[1].splitlines()] == [
        ["classify", "classification"], ["summarise", "rewriting"],
        ["check_summary", "quality_scoring"]]

    # the question took the other branch of the conditional edge: the FAQ, no more models
    assert "classified: question (simple)" in question
    assert "reply:      Use 'Forgot password' on the sign-in page" in question
    assert [line.split()[:2] for line in question.split("provenance:\n")[1].splitlines()] == [
        ["classify", "classification"]]

    # every provenance line names the tier of a model the simulator really served
    lines = [line.split() for line in out.splitlines() if line.startswith("    ")
             and "↳" not in line]
    assert len(lines) == 4 == len(served_models(simulator))
    assert {line[3] for line in lines} == {"free"}


# --------------------------------------------------------------------------- langchain_app

POLISHED = "We're sorry about the blender! Your refund arrives within 5 business days."


def _support_label(request: ChatRequest) -> dict[str, str]:
    order = "where is my order" in request.messages[-1].text.lower()
    return {"label": "order_status" if order else "refund", "complexity": "simple"}


def _support_route(request: ChatRequest) -> dict[str, str]:
    return {"route": "tool" if "A-1042" in request.messages[-1].text else "direct"}


def _agent(request: ChatRequest) -> Reply | str:
    """Call the tool first; once its result is in, answer with it."""
    if request.last_is_tool_result:
        return f"Good news: your order {request.messages[-1].text}."
    return Reply.tool_call("lookup_order", {"order_id": "A-1042"})


def script_support_desk(sim: Simulator) -> list[ChatRequest]:
    """Script the desk; the returned list fills with the reply chain's requests."""
    polish_requests: list[ChatRequest] = []

    def polish(request: ChatRequest) -> str:
        polish_requests.append(request)
        return POLISHED

    answer(sim, CLASSIFY, Reply.function(_support_label))
    answer(sim, ROUTE, Reply.function(_support_route))
    answer(sim, "You polish customer-support replies", Reply.function(polish))
    answer(sim, "You are a support assistant.", Reply.function(_agent))
    return polish_requests


def test_langchain_app(run_example: RunExample, simulator: Simulator) -> None:
    polish_requests = script_support_desk(simulator)
    out = run_example("langchain_app.py").stdout
    order, refund = out.strip().split("\n\n")

    # triage graph inside LCEL -> RunnableBranch -> agent with a routed model and a tool
    assert "triage:      order_status, route tool" in order
    assert "classification: " in order and "instruction_routing: " in order
    assert "tool call:   lookup_order({'order_id': 'A-1042'})" in order
    assert ("answer:      Good news: your order shipped on Monday by DHL, arriving Thursday."
            in order)
    # triage graph -> prompt | RoutedChatModel | StrOutputParser
    assert "triage:      refund, route direct" in refund
    assert f"answer:      {POLISHED}" in refund
    for part in (order, refund):
        assert "answered by: " in part and "(free, $0.00000)" in part

    # the polishing request carried the draft the app chose for the "refund" label
    (polish,) = polish_requests
    assert polish.messages[-1].text == (
        "Customer wrote: i want my money back, the blender broke after 2 days\n"
        "Draft reply: refund ok, 5 business days, no need to send it back")
    # agent: tool call, then the answer after the tool result; triage: 2 calls per message
    assert len(served_models(simulator)) == 2 * 2 + 1 + 2


# --------------------------------------------------------------------------- offline_testing

OFFLINE_TESTS = ["test_pipeline_books_the_table", "test_pipeline_falls_back_on_429_and_503"]


def test_offline_testing_runs_as_a_script(run_example: RunExample, tmp_path: Path) -> None:
    out = run_example("offline_testing.py").stdout
    assert out.splitlines() == [f"passed  {name}" for name in OFFLINE_TESTS]
    # Simulated calls are not the user's: nothing in the (temporary) home's ledger, or any
    # other tierwise file, for `tierwise stats` to show.
    home = tmp_path / "home"
    assert home.is_dir()
    assert [p for p in home.rglob("*") if "tierwise" in str(p)] == []


def _offline_testing() -> ModuleType:
    path = EXAMPLES / "offline_testing.py"
    spec = importlib.util.spec_from_file_location("offline_testing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_testing_has_the_tests_we_run() -> None:
    names = [name for name in vars(_offline_testing()) if name.startswith("test_")]
    assert names == OFFLINE_TESTS


@pytest.mark.parametrize("name", OFFLINE_TESTS)
def test_offline_testing_under_pytest(name: str, simulator: Simulator) -> None:
    """As pytest runs a user's copy: each test with the plugin's ``simulator`` fixture.

    (``python -m pytest examples/offline_testing.py`` does the same in a subprocess, at
    the cost of a second pytest start-up with every installed plugin.)
    """
    test = getattr(_offline_testing(), name)
    assert list(inspect.signature(test).parameters) == ["simulator"]  # the fixture's name
    test(simulator)
