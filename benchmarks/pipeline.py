"""Per-node and total time of the instruction pipeline on the embedded model.

Run: ``python -m benchmarks.pipeline [--runs 3] [INSTRUCTION]``. Runs the pipeline with
the ``local_only`` policy and no hosted provider or Ollama reachable (keys and Ollama host
cleared for this process), so every call is answered by the embedded llama.cpp model —
what a fresh install without keys does. Prints, per node, the median seconds over the
runs (sub-task nodes summed over the sub-tasks, which share the one embedded model), the
number of model calls, and the total wall time of a run. Target: <= 30 s per run on the
2-core machine the project is built on.

Per-node seconds are the nodes' own latencies; sub-task nodes run concurrently and queue
on the model's lock, so their sums include waiting and add up to more than their share of
the wall time. The pipeline records into a temporary ledger and data dir, not the user's.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

from benchmarks._isolation import scratch_state
from benchmarks._stats import Spread

DEFAULT_INSTRUCTION = "Plan a three-day team offsite in Lisbon"
_HOSTED_ENV = (
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "GROQ_API_KEY", "OPENROUTER_API_KEY",
    "MISTRAL_API_KEY", "HF_TOKEN", "HUGGINGFACEHUB_API_TOKEN", "OPENAI_API_KEY",
)


def _offline() -> None:
    """No keys and an unreachable Ollama: the embedded model answers everything."""
    for name in _HOSTED_ENV:
        os.environ.pop(name, None)
    os.environ["OLLAMA_HOST"] = "http://127.0.0.1:9"  # discard port: nothing listens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instruction", nargs="?", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    _offline()
    with scratch_state():
        _run(args.instruction, args.runs)


def _run(instruction: str, runs: int) -> None:
    """Time ``runs`` runs of the pipeline on ``instruction`` and print the figures."""
    from tierwise import ModelRouter, Policy, build_instruction_pipeline

    router = ModelRouter(policy=Policy(mode="local_only"))
    pipeline = build_instruction_pipeline(router=router)
    node_times: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, int] = {}
    totals: list[float] = []
    models: set[str] = set()
    for run in range(runs):
        started = time.perf_counter()
        out = pipeline.invoke({"instruction": instruction})
        wall = time.perf_counter() - started
        result = out["result"]
        per_node: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for entry in result.report.entries:
            per_node[entry["node"]] += entry["latency"]
            count[entry["node"]] += 1
            models.add(f"{entry['model']} ({entry['tier']})")
        for node, seconds in per_node.items():
            node_times[node].append(seconds)
        calls = dict(count)
        totals.append(wall)
        print(f"run {run + 1}: {wall:.1f} s, route {result.route}, "
              f"{len(result.plan)} plan steps, {sum(count.values())} model calls")

    print(f"\ninstruction: {instruction!r}; models: {', '.join(sorted(models))}")
    print(f"{'node':<18} {'calls':>5}  seconds per run (median, min-max over {runs})")
    for node, values in node_times.items():
        print(f"{node:<18} {calls.get(node, 0):>5}  {Spread.of(values).cell(2)}")
    print(f"\ntotal per run: {Spread.of(totals).text('s', digits=1)} (target <= 30 s)")


if __name__ == "__main__":
    main()
