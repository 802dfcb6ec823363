"""``python -m benchmarks``: tierwise against LangChain and LiteLLM, on the simulator.

Runs every peer benchmark (or ``--only NAME``, repeatable), prints each section's rows as
it finishes and writes ``latest.md`` (the table, how it was made, the notes) and
``latest.png`` (one chart panel per measurement) into ``--out``: by default
``benchmarks/results/local/``, which git ignores, so a run leaves the checkout clean. The
published figures (``benchmarks/results/latest.md``, the README) are copied from a named
run by hand. Every benchmark runs on its own temporary ledger and data dir
(:func:`benchmarks._isolation.scratch_state`), whatever the user's own ledger holds.
``--quick`` takes fewer samples (for the smoke test; its figures are rough). The peers
come from the ``bench`` extra (``pip install -e '.[bench]'``); without LiteLLM its columns
say so and the rest still runs.

Nothing leaves 127.0.0.1: every client is pointed at the simulator with a dummy key, and
an audit hook refuses any other connection or name lookup in this process.

Benchmarks: selection, overhead, failover, throughput, pipeline, scale.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from types import ModuleType

from benchmarks._isolation import scratch_state
from benchmarks._offline import REFUSED, guard_network, offline_environment

MODULES = {
    "selection": "benchmarks.selection_cost",
    "overhead": "benchmarks.call_overhead",
    "failover": "benchmarks.failover_time",
    "throughput": "benchmarks.free_tier_throughput",
    "pipeline": "benchmarks.pipeline_overhead",
    "scale": "benchmarks.scale",
}
#: Where a run writes by default: ignored by git (the tracked results are published by hand).
RESULTS = Path(__file__).resolve().parent / "results" / "local"


def _module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(MODULES[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke test)")
    parser.add_argument(
        "--only", action="append", choices=list(MODULES), metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(MODULES)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    names = [n for n in MODULES if not args.only or n in args.only]

    guard_network()
    offline_environment()
    with scratch_state():
        return _run(args, names, argv)


def _run(args: argparse.Namespace, names: list[str], argv: list[str] | None) -> int:
    """Run ``names`` and write the results (inside :func:`scratch_state`)."""
    from benchmarks._common import Options
    from benchmarks._report import load_average, markdown_table, write_chart, write_markdown

    options = Options(quick=args.quick)
    command = shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None
                                                          else sys.argv[1:])])
    load_before = load_average()
    print(f"{command}\nload average {load_before}", flush=True)
    started = time.perf_counter()
    sections = []
    for name in names:
        begun = time.perf_counter()
        print(f"\n== {name}", flush=True)
        section = _module(name).run(options)
        section.seconds = time.perf_counter() - begun
        sections.append(section)
        print(markdown_table([section]), flush=True)
        print(f"({section.seconds:.0f} s; load average {load_average()})", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    chart = args.out / "latest.png"
    drawn = write_chart(chart, sections)
    write_markdown(
        args.out / "latest.md", sections, command=command, load_before=load_before,
        load_after=load_average(), seconds=time.perf_counter() - started,
        chart=chart.name if drawn else None, refused=sorted(set(REFUSED)),
    )
    if REFUSED:
        print(f"refused non-loopback connections: {sorted(set(REFUSED))}", file=sys.stderr)
    print(f"\nwrote {args.out / 'latest.md'}" + (f" and {chart}" if drawn else
                                                   " (no chart: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
