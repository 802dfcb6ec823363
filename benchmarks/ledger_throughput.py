"""How many ledger rows per second reach the database, SQLite file vs PostgreSQL, same run.

One process records N rows as fast as it can (the router records one per attempt, off
its loop, into the same batched writer), then waits until every row is committed. Prints
per backend the median over the runs of: rows committed per second (N / time from the
first record() to the end of the last commit) and what one ``record()`` costs the caller
(the writer thread batches and commits meanwhile). Each run uses a fresh SQLite file and
a fresh PostgreSQL schema (dropped after); PostgreSQL is skipped, with the reason, when
it does not answer.

    python -m benchmarks.ledger_throughput               # 3 runs x 20,000 rows
    python -m benchmarks.ledger_throughput --rows 50000 --postgres postgresql://host/db
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from unittest import mock

from tierwise.ledger import Ledger, LedgerRow, open_ledger
from tierwise.testing.postgres import LOCAL_URL, scratch_schema, unreachable

__all__ = ["measure"]


def _row(i: int) -> LedgerRow:
    return LedgerRow(
        time=time.time(), run_id=f"run-{i % 50}", thread_id=None, node="classify",
        operation="classification", complexity="simple", policy="balanced",
        provider="openai", model=("gpt-4o", "gpt-4o-mini")[i % 2], tier="paid",
        outcome="ok", sent=True, latency=0.8, time_to_first_token=None,
        input_tokens=120, output_tokens=40, cost=0.0004, escalation=False, repair=False,
        detail="", call_id=f"call-{i}",
    )  # fmt: skip


def measure(open_target: Callable[[], Ledger], rows: int) -> tuple[float, float]:
    """(rows committed per second, microseconds per record() call) for one fresh ledger."""
    batch = [_row(i) for i in range(rows)]
    with open_target() as ledger:
        started = time.perf_counter()
        for row in batch:
            ledger.record(row)
        recorded = time.perf_counter()
        if not ledger.flush(timeout=300):
            raise RuntimeError(f"{ledger.label}: rows not committed within 300 s")
        committed = time.perf_counter()
        stored = len(ledger.rows(limit=rows + 1))
    if stored != rows:
        raise RuntimeError(f"{stored} rows stored of {rows}")
    return rows / (committed - started), (recorded - started) / rows * 1e6


@contextmanager
def _sqlite() -> Iterator[Callable[[], Ledger]]:
    with tempfile.TemporaryDirectory(prefix="tierwise-ledger-") as tmp:
        yield lambda: Ledger(Path(tmp) / "ledger.sqlite3")


@contextmanager
def _postgres(url: str) -> Iterator[Callable[[], Ledger]]:
    with scratch_schema(url, "tierwise_bench") as scratch, \
            tempfile.TemporaryDirectory(prefix="tierwise-data-") as data, \
            mock.patch.dict(os.environ, XDG_DATA_HOME=data):  # journals: not the user's dir
        yield lambda: open_ledger(scratch)


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 if a backend lost or did not commit rows."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_throughput")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", default=LOCAL_URL)
    args = parser.parse_args(argv)
    backends: list[tuple[str, Callable[[], AbstractContextManager[Callable[[], Ledger]]]]] = [
        ("SQLite file", _sqlite)
    ]
    reason = unreachable(args.postgres)
    if reason is None:
        backends.append(("PostgreSQL", lambda: _postgres(args.postgres)))
    print(f"ledger record throughput: {args.runs} runs x {args.rows:,} rows, one process, "
          "batched (batch_size 200, flush_interval 0.1 s); medians")  # fmt: skip
    print(f"{'backend':>12}  {'rows/s committed':>16}  {'record() us':>11}")
    for name, make in backends:
        rates, costs = [], []
        for _ in range(args.runs):
            with make() as open_target:
                rate, cost = measure(open_target, args.rows)
            rates.append(rate)
            costs.append(cost)
        print(f"{name:>12}  {statistics.median(rates):>16,.0f}  {statistics.median(costs):>11.1f}")
    if reason is not None:
        print(f"  PostgreSQL skipped: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
