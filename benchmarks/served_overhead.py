"""Served overhead: a triage run through LangGraph Server vs the same run in-process.

Both run ``langgraph.json``'s ``triage`` graph (classify → route: two model calls) over
the same settings — every provider pointed at the zero-latency simulator (its own
process), the same ``tierwise.toml``, dummy keys, a ledger file each — so the difference
is what serving adds: HTTP, the server's run queue, its checkpointer and JSON output.

* in-process: the graph factory's graph, ``ainvoke`` on one event loop;
* served: ``POST /runs/wait`` (stateless) to ``langgraph dev --no-browser`` (no
  ``--allow-blocking``) started in a copy of the project, through one keep-alive client;
* the server's floor: the same request to a one-node graph that calls no model (added to
  the copy's ``langgraph.json`` as ``echo``), so the overhead can be told apart from
  what tierwise does.

Runs are interleaved one by one after a warm-up; prints the median (min–max) of each and
the extra latency, median served minus median in-process, and their ratio.

    python -m benchmarks.served_overhead [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tierwise.testing.langgraph_dev import langgraph_dev, served_environment

ROOT = Path(__file__).resolve().parents[1]
INPUT = {"instruction": "The export button crashes the app"}
ECHO = '''"""A one-node graph that calls no model: the server's own floor."""
from typing_extensions import TypedDict
from langgraph.graph import START, StateGraph


class State(TypedDict):
    instruction: str


def echo(state: State) -> State:
    return state


graph = StateGraph(State).add_node("echo", echo).add_edge(START, "echo").compile(name="echo")
'''


@contextmanager
def simulator() -> Iterator[tuple[str, dict[str, str]]]:
    """The zero-latency simulator in a child process: its tierwise.toml and environment."""
    command = [sys.executable, "-m", "tierwise.testing", "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        toml, env = [], {}
        for line in proc.stdout:
            if line.startswith("GET /_sim/requests"):
                break
            if line.startswith("export "):
                name, value = line[len("export "):].strip().split("=", 1)
                env[name] = value
            elif not line.startswith(("#", "tierwise provider simulator")):
                toml.append(line)
        yield "".join(toml), env
    finally:
        proc.terminate()
        proc.wait(10)


def project_copy(base: Path, toml: str, env: dict[str, str], ledger: str) -> Path:
    """The project with a ``.env`` pointing it at the simulator (what the README says)."""
    project = base / "project"
    project.mkdir()
    shutil.copytree(ROOT / "tierwise", project / "tierwise",
                    ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((ROOT / "langgraph.json").read_text())
    manifest["graphs"]["echo"] = "./echo.py:graph"
    (project / "langgraph.json").write_text(json.dumps(manifest))
    (project / "echo.py").write_text(ECHO)
    (project / "tierwise.toml").write_text(toml)
    values = {**env, "TIERWISE_CONFIG": str(project / "tierwise.toml"),
              "TIERWISE_LEDGER": str(base / ledger)}
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return project


def spread(samples: list[float]) -> str:
    return (f"{statistics.median(samples) * 1e3:7.1f} ms "
            f"({min(samples) * 1e3:.1f}–{max(samples) * 1e3:.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.served_overhead",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    with simulator() as (toml, sim_env), tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        project = project_copy(base, toml, sim_env, "served.sqlite3")
        (base / "home").mkdir()
        # The in-process run reads the same settings, from this process's environment.
        os.environ.update(served_environment(
            base / "home", **sim_env, TIERWISE_CONFIG=str(project / "tierwise.toml"),
            TIERWISE_LEDGER=str(base / "in-process.sqlite3")))
        from tierwise.graphs.triage import graph as factory

        loop = asyncio.new_event_loop()
        triage = loop.run_until_complete(factory({"configurable": {}}))

        def in_process() -> float:
            started = time.perf_counter()
            out = loop.run_until_complete(triage.ainvoke(INPUT))
            assert out["route"].route
            return time.perf_counter() - started

        env = served_environment(base / "home", PYTHONPATH=str(project))
        with langgraph_dev(project, env) as url, httpx.Client(base_url=url, timeout=60) as http:

            def post(graph: str) -> float:
                started = time.perf_counter()
                response = http.post("/runs/wait", json={"assistant_id": graph, "input": INPUT})
                elapsed = time.perf_counter() - started
                out = response.json()
                assert response.status_code == 200 and "__error__" not in out, out
                assert graph == "echo" or out["route"]["route"]
                return elapsed

            def served() -> float:
                return post("triage")

            def echo() -> float:
                return post("echo")

            variants = (in_process, served, echo)
            for _ in range(args.warmup):
                for run in variants:
                    run()
            samples: dict[str, list[float]] = {run.__name__: [] for run in variants}
            for i in range(args.runs):  # interleaved, the first variant rotating
                for run in variants[i % 3:] + variants[:i % 3]:
                    samples[run.__name__].append(run())
        loop.close()

    local, remote, floor = samples["in_process"], samples["served"], samples["echo"]
    extra = statistics.median(remote) - statistics.median(local)
    print(f"triage run, zero-latency simulator, median (min–max) of {args.runs}:")
    print(f"  in-process ainvoke              {spread(local)}")
    print(f"  langgraph dev /runs/wait        {spread(remote)}")
    print(f"  extra latency served            {extra * 1e3:7.1f} ms "
          f"(× {statistics.median(remote) / statistics.median(local):.2f})")
    print(f"  server floor (echo, no model)   {spread(floor)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
