"""The graphs served by the real LangGraph Server (``langgraph dev``), over HTTP.

One server for the module, started as a user would in a copy of the project: no
``--allow-blocking`` (the server's blockbuster turns any blocking call on its event loop
into a failed run), its keys and ``TIERWISE_CONFIG`` from the project's ``.env`` (which
``langgraph.json`` names), every provider pointed at a simulator started here. Also the
availability probe the router runs on the event loop (``ProbeCache``/``aprobe``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tierwise.catalog.settings import ProviderConfig
from tierwise.catalog.specs import Provider, TaskType
from tierwise.providers.clients import Availability, ProbeCache, aprobe, probe
from tierwise.testing import Simulator
from tierwise.testing.langgraph_dev import free_port, langgraph_dev, served_environment

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ("instruction_pipeline", "triage", "extraction")
SERVER_LOG: list[Path] = []  # where the running server writes, for failure messages


class ServerBlocked(AssertionError):
    """The server failed a run for a blocking call on its event loop (BlockingError)."""


def _copy_project(simulator: Simulator, dest: Path) -> Path:
    """The project as a user checks it out, with a ``.env`` pointing it at ``simulator``."""
    project = dest / "project"
    project.mkdir()
    shutil.copytree(ROOT / "tierwise", project / "tierwise",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("langgraph.json", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    (project / "tierwise.toml").write_text(simulator.toml_snippet())
    env = {**simulator.environment(), "TIERWISE_CONFIG": str(project / "tierwise.toml"),
           "TIERWISE_LEDGER": str(project / "ledger.sqlite3")}
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return project


@pytest.fixture(scope="module")
def module_simulator() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


@pytest.fixture(scope="module")
def server(
    module_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``langgraph dev`` in a copy of the project (its own tierwise first on the path)."""
    base = tmp_path_factory.mktemp("served")
    project = _copy_project(module_simulator, base)
    (base / "home").mkdir()
    env = served_environment(base / "home", PYTHONPATH=str(project))
    SERVER_LOG[:] = [base / "server.log"]
    with langgraph_dev(project, env, log=SERVER_LOG[0]) as url:
        yield url
    assert not (ROOT / ".langgraph_api").exists() or _ignored(".langgraph_api/")


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path]).returncode == 0


@pytest.fixture
def client(server: str, module_simulator: Simulator) -> Iterator[httpx.Client]:
    module_simulator.reset()
    with httpx.Client(base_url=server, timeout=120) as http:
        yield http


def _wait(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    _check_blocking(out)
    assert "__error__" not in out, f"{out}\n{_log_tail()}"
    return dict(out)


def _check_blocking(out: Any) -> None:
    if "BlockingError" in json.dumps(out):
        raise ServerBlocked(f"{out}\n{_log_tail()}")


def _log_tail() -> str:
    return SERVER_LOG[0].read_text(errors="replace")[-4000:] if SERVER_LOG else ""


def _sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields.get("data", "null"))))
    return events


def test_every_graph_of_langgraph_json_is_served(client: httpx.Client) -> None:
    found = client.post("/assistants/search", json={"limit": 20}).json()
    assert {a["graph_id"] for a in found} == set(GRAPHS)
    for name in GRAPHS:  # the context schema reaches the server (Studio's policy form)
        schemas = client.get(f"/assistants/{_assistant(client, name)}/schemas").json()
        assert "policy" in schemas["context_schema"]["properties"]


def _assistant(client: httpx.Client, graph: str) -> str:
    found = client.post("/assistants/search", json={"graph_id": graph}).json()
    return str(found[0]["assistant_id"])


def test_triage_and_pipeline_over_runs_wait(
    client: httpx.Client, module_simulator: Simulator
) -> None:
    triage = _wait(client, "/runs/wait", {
        "assistant_id": "triage", "input": {"instruction": "The export button crashes"}})
    assert triage["route"]["route"] in ("tool", "plan", "direct")
    assert triage["classification"]["label"]
    assert {e["operation"] for e in triage["report"]} == {"classification", "instruction_routing"}

    out = _wait(client, "/runs/wait", {
        "assistant_id": "instruction_pipeline",
        "input": {"instruction": "Plan a three-day offsite in Lisbon"}})
    result = out["result"]
    assert result["route"] in ("tool", "plan", "direct") and result["rationale"]
    assert result["report"]["calls"] >= 4
    assert module_simulator.requests  # every answer came from the simulator

    steps = _wait(client, "/runs/wait", {
        "assistant_id": "extraction",
        "input": {"step": 0, "task": "Book a room for 12 people in Lisbon",
                  "instruction": "Plan a three-day offsite in Lisbon"}})
    assert steps["outcome"]["task"] == "Book a room for 12 people in Lisbon"


def test_runs_stream_sends_the_nodes_progress_as_custom_events(client: httpx.Client) -> None:
    response = client.post("/runs/stream", json={
        "assistant_id": "triage", "input": {"instruction": "Why was I charged twice?"},
        "stream_mode": ["custom", "values"]})
    assert response.status_code == 200, response.text
    events = _sse(response.text)
    _check_blocking([data for event, data in events if event == "error"])
    custom = [data for event, data in events if event == "custom"]
    assert [(e["node"], e["status"]) for e in custom] == [
        ("classify", "started"), ("classify", "done"), ("route", "started"), ("route", "done")]
    assert all(isinstance(e["latency"], float) for e in custom if e["status"] == "done")
    assert not [data for event, data in events if event == "error"]
    final = [data for event, data in events if event == "values"][-1]
    assert final["route"]["route"] in ("tool", "plan", "direct")


def test_a_context_policy_override_routes_the_run_as_asked(
    client: httpx.Client, module_simulator: Simulator
) -> None:
    local = _wait(client, "/runs/wait", {
        "assistant_id": "triage", "input": {"instruction": "Book a room"},
        "context": {"policy": {"mode": "local_only"}}})
    assert {e["tier"] for e in local["report"]} == {"local"}
    assert {r.provider for r in module_simulator.requests} == {Provider.OLLAMA}

    module_simulator.reset()
    paid = _wait(client, "/runs/wait", {
        "assistant_id": "triage", "input": {"instruction": "Book a room"},
        "context": {"policy": {"mode": "quality_first", "max_tier": "paid"}}})
    assert {e["tier"] for e in paid["report"]} == {"paid"}
    assert Provider.OLLAMA not in {r.provider for r in module_simulator.requests}

    bad = client.post("/runs/wait", json={
        "assistant_id": "triage", "input": {"instruction": "Book a room"},
        "context": {"policy": {"mode": "cheapest_please"}}})
    assert "mode" in bad.text  # the policy is validated, not ignored


def test_a_thread_resumes_from_the_servers_checkpointer(
    client: httpx.Client, module_simulator: Simulator
) -> None:
    thread = client.post("/threads", json={}).json()["thread_id"]
    _wait(client, f"/threads/{thread}/runs/wait", {
        "assistant_id": "triage", "input": {"instruction": "The export button crashes"},
        "interrupt_before": ["route"]})
    state = client.get(f"/threads/{thread}/state").json()
    assert state["next"] == ["route"] and state["values"]["classification"]["label"]
    asked = len(module_simulator.requests)

    resumed = _wait(client, f"/threads/{thread}/runs/wait",
                    {"assistant_id": "triage", "input": None})
    assert resumed["route"]["route"] in ("tool", "plan", "direct")
    assert resumed["classification"] == state["values"]["classification"]  # not asked again
    operations = [e["operation"] for e in resumed["report"]]
    assert operations == [TaskType.CLASSIFICATION.value, TaskType.INSTRUCTION_ROUTING.value]
    assert len(module_simulator.requests) == asked + 1  # only the routing call
    history = client.post(f"/threads/{thread}/history", json={"limit": 10}).json()
    assert len(history) >= 3  # input, after classify, after route


# --------------------------------------------------------------------------- the probe


async def test_aprobe_sees_what_probe_sees_without_blocking(simulator: Simulator) -> None:
    simulator.add_ollama_models("qwen3:4b")
    settings = simulator.settings()
    found = await aprobe(settings)
    expected = await asyncio.to_thread(probe, settings)
    assert found == expected
    assert found.statuses[Provider.OLLAMA].ready
    assert "qwen3:4b" in (found.statuses[Provider.OLLAMA].models or ())


async def test_aprobe_reports_an_unreachable_ollama(simulator: Simulator) -> None:
    settings = simulator.settings().with_providers(
        {Provider.OLLAMA: ProviderConfig(base_url=f"http://127.0.0.1:{free_port()}")},
        simulator.credentials())
    status = (await aprobe(settings)).statuses[Provider.OLLAMA]
    assert not status.ready and "not reachable" in status.detail and status.hint


async def test_probe_cache_refreshes_in_the_background_once_probed(
    simulator: Simulator,
) -> None:
    calls: list[str] = []
    first, second = (Availability({Provider.OLLAMA: _status(n)}) for n in (1, 2))

    async def fake(settings: Any) -> Availability:
        calls.append("async")
        await asyncio.sleep(0)
        return first if len(calls) == 1 else second

    def refuse(settings: Any) -> Availability:
        raise AssertionError("a sync probe on the event loop")

    cache = ProbeCache(simulator.settings(), ttl=0.0, sync_probe=refuse, async_probe=fake)
    assert await cache.aget() is first          # no probe yet: awaited
    assert cache.get() is first                 # stale: the last one, while a task refreshes
    assert await cache.aget() is first          # one refresh in flight, not two
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == ["async", "async"]
    assert cache.get() is second or await cache.aget() is second


def test_probe_cache_probes_in_place_outside_a_loop(simulator: Simulator) -> None:
    seen: list[Availability] = []

    def sync(settings: Any) -> Availability:
        seen.append(probe(settings))
        return seen[-1]

    cache = ProbeCache(simulator.settings(), ttl=60.0, sync_probe=sync)
    assert cache.get() is cache.get() is seen[0]  # fresh: probed once
    cache.invalidate()
    assert cache.get() is seen[1]


def _status(n: int) -> Any:
    from tierwise.providers.clients import ProviderStatus

    return ProviderStatus(Provider.OLLAMA, True, f"probe {n}", models=frozenset())


async def test_the_suite_fails_a_blocking_call_on_the_event_loop(simulator: Simulator) -> None:
    """conftest's blockbuster is on in async tests: the old on-loop probe would fail here."""
    from blockbuster import BlockingError

    with pytest.raises(BlockingError, match="socket"):
        probe(simulator.settings())


if sys.platform == "win32":  # pragma: no cover - process groups
    pytestmark = pytest.mark.skip(reason="the server is stopped through its process group")
