"""Per-node and total time of the instruction pipeline on the embedded model.

Run: ``python -m benchmarks.pipeline [--runs 3] [INSTRUCTION]``. Runs the pipeline with
the ``local_only`` policy and no hosted provider or Ollama reachable (keys and Ollama host
cleared for this process), so every call is answered by the embedded llama.cpp model —
what a fresh install without keys does. Prints, per node, the median seconds over the
runs (sub-task nodes summed over the sub-tasks), the number of model calls, the total
wall time of a run, and the CPU seconds of a run in this process and its embedded-model
workers. Target: <= 12 s per run on the 2-core machine the project is built on.

Per-node seconds are the nodes' own latencies; sub-task nodes run concurrently on the
embedded model's workers (two on 2 cores) and queue when all are busy, so their sums
include waiting and add up to more than their share of the wall time. CPU seconds say
how much work a run was when the machine is shared: other jobs stretch the wall time,
not the CPU time. The pipeline records into a temporary ledger and data dir, not the user's.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections import defaultdict
from pathlib import Path

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


def _cpu_seconds() -> float:
    """CPU seconds of this process and its children, live ones (the model's workers,
    read from /proc on Linux) and reaped ones."""
    ticks = os.sysconf("SC_CLK_TCK")
    live = 0.0
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile: counted as reaped
            live += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + live + reaped.ru_utime + reaped.ru_stime


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
    cpu: list[float] = []
    models: set[str] = set()
    for run in range(runs):
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        out = pipeline.invoke({"instruction": instruction})
        wall = time.perf_counter() - started
        cpu.append(_cpu_seconds() - cpu_started)
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
        print(f"run {run + 1}: {wall:.1f} s ({cpu[-1]:.1f} s CPU), route {result.route}, "
              f"{len(result.plan)} plan steps, {sum(count.values())} model calls")

    print(f"\ninstruction: {instruction!r}; models: {', '.join(sorted(models))}")
    print(f"{'node':<18} {'calls':>5}  seconds per run (median, min-max over {runs})")
    for node, values in node_times.items():
        print(f"{node:<18} {calls.get(node, 0):>5}  {Spread.of(values).cell(2)}")
    print(f"\ntotal per run: {Spread.of(totals).text('s', digits=1)} (target <= 12 s); "
          f"CPU per run: {Spread.of(cpu).text('s', digits=1)}; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
