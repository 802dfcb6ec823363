"""Does a day cap hold when several processes spend through one ledger at once, or Redis?

``max_cost_per_day = 1.00``, one ledger file, N processes each making C concurrent
``ainvoke`` calls pinned to claude-opus-4 (the priciest paid model: $15 / $75 per million
tokens) against the simulator, whose every model answers with about T tokens. Prints
the spend the ledger recorded per run, the calls answered and refused. The cap holds
when every spend is <= $1.00.

    python -m benchmarks.budget_cap            # 3 x 10 with 500 and 2,000 tokens, 1 x 10 with 2,000
    python -m benchmarks.budget_cap --postgres postgresql://postgres@127.0.0.1:5432/test
    python -m benchmarks.budget_cap --redis redis://127.0.0.1:6379/0

With ``--postgres`` the ledger and the holds are in that database instead (a fresh schema
per run, dropped after), and 4 processes share the cap. With ``--redis`` the holds are in
Redis (``[state] redis_url``, a key prefix per run, deleted after) and each of the 4
processes has a ledger file of its own, as processes on different hosts would: only
Redis coordinates them; the spend is summed over the files. Both also print the budget
reservation round trip per routed call (reserve + settle, median) against SQLite's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

__all__ = ["Run", "reservation_round_trip", "run"]

ROOT = Path(__file__).resolve().parents[1]

_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from tierwise.catalog.policy import Policy
    from tierwise.catalog.settings import load_settings
    from tierwise.ledger import open_ledger
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.results import NoModelAvailable
    from tierwise.guards.budget import BudgetExceeded

    path, concurrency, cap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    policy = Policy(mode="quality_first", max_tier="paid", max_cost_per_day=cap,
                    operations={"rewriting": {"pin": "claude-opus-4"}})

    async def main() -> dict[str, int]:
        with open_ledger(path) as ledger:
            router = ModelRouter(load_settings(), policy=policy, ledger=ledger)
            sys.stdout.write("ready\\n"); sys.stdout.flush()
            sys.stdin.readline()  # every process starts its calls at once

            async def one(i: int) -> str:
                try:
                    result = await router.ainvoke("rewriting", f"rewrite request {i}")
                except BudgetExceeded:
                    return "refused"
                except NoModelAvailable:
                    return "failed"
                return result.tier.value
            outcomes = await asyncio.gather(*(one(i) for i in range(concurrency)))
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    print(json.dumps(asyncio.run(main())), flush=True)
""")


@dataclass(frozen=True)
class Run:
    """One run's outcome: recorded spend (USD) and what the calls got."""

    processes: int
    concurrency: int
    answer_tokens: int
    spent: float
    outcomes: dict[str, int]


def run(
    processes: int, concurrency: int, answer_tokens: int, cap: float = 1.0,
    postgres: str | None = None, redis: str | None = None,
) -> Run:  # fmt: skip
    """Run the workload once on a fresh ledger; the spend is read back from it.

    ``postgres``: a server URL; the ledger is then a fresh schema there, not a file.
    ``redis``: a server URL; the holds are then in Redis, and each process has a ledger
    file of its own.
    """
    if postgres is None:
        return _run(processes, concurrency, answer_tokens, cap, None, redis)
    from tierwise.testing.postgres import scratch_schema

    with scratch_schema(postgres, "tierwise_budget") as url:
        return _run(processes, concurrency, answer_tokens, cap, url, None)


def _run(
    processes: int, concurrency: int, answer_tokens: int, cap: float, url: str | None,
    redis: str | None,
) -> Run:  # fmt: skip
    from tierwise.ledger import day_start, open_ledger
    from tierwise.testing import Reply, Simulator

    text = ("lorem ipsum " * (answer_tokens // 2 + 1))[: answer_tokens * 4]
    prefix = f"bench-budget-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="tierwise-budget-") as tmp, Simulator() as sim, \
            mock.patch.dict(os.environ, XDG_DATA_HOME=tmp):  # journals: not the user's dir
        sim.script("*", Reply.text(text))
        config = Path(tmp) / "tierwise.toml"
        state = f'\n[state]\nredis_url = "{redis}"\nredis_prefix = "{prefix}"\n'
        config.write_text(sim.toml_snippet() + (state if redis else ""))
        ledgers: list[str | Path] = [
            url or Path(tmp) / f"ledger-{i if redis else 0}.sqlite3" for i in range(processes)
        ]
        ledger_path = ledgers[0]
        env = {
            **os.environ, **sim.environment(),
            "TIERWISE_CONFIG": str(config), "TIERWISE_LEDGER": str(ledger_path),
            "XDG_DATA_HOME": tmp, "XDG_CONFIG_HOME": tmp,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }  # fmt: skip
        for path in set(ledgers):
            open_ledger(path).close()  # created once, before the processes race to open it
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), str(concurrency), str(cap)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp,
            )
            for path in ledgers
        ]
        outcomes: dict[str, int] = {}
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline() == "ready\n"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            for child in children:
                out, _ = child.communicate(timeout=300)
                if child.returncode != 0:
                    raise RuntimeError(f"a spending process failed ({child.returncode})")
                for key, count in json.loads(out.strip().splitlines()[-1]).items():
                    outcomes[key] = outcomes.get(key, 0) + count
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            if redis:
                _forget(redis, prefix)
        spent = 0.0
        for path in set(ledgers):
            with open_ledger(path) as ledger:
                spent += ledger.spent(since=day_start())
    return Run(processes, concurrency, answer_tokens, spent, outcomes)


def _forget(url: str, prefix: str) -> None:
    """Delete a run's keys from Redis."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{{{prefix}}}:*"):
        client.delete(key)
    client.close()


def reservation_round_trip(redis: str | None, calls: int = 300) -> list[float]:
    """Seconds per routed call's budget bookkeeping: reserve the worst case, settle it.

    What the router adds per paid call under a cost cap: on SQLite a write transaction on
    the ledger file, on Redis the read and take scripts plus the settle script.
    """
    from tierwise.catalog.policy import Policy
    from tierwise.catalog.settings import load_settings
    from tierwise.catalog.state import StateConfig
    from tierwise.guards.budget import BudgetGuard, Reservation
    from tierwise.guards.shared import shared_holds
    from tierwise.ledger import Ledger

    settings = load_settings(credentials=None)
    spec = settings.catalog.spec("claude-opus-4")
    policy = Policy(mode="balanced", max_cost_per_day=1_000_000.0)
    prefix = f"bench-hold-{uuid.uuid4().hex[:8]}"
    state = StateConfig(redis_url=redis, redis_prefix=prefix)
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tierwise-hold-") as tmp:
        with Ledger(Path(tmp) / "ledger.sqlite3") as ledger:
            holds = shared_holds(dataclasses.replace(settings, state=state), ledger)
            guard = BudgetGuard(ledger, holds=holds)
            try:
                for i in range(calls + 20):
                    started = time.perf_counter()
                    held = guard.reserve(spec, policy, prompt_tokens=200, max_tokens=500,
                                         expected_tokens=500, run_id=None)  # fmt: skip
                    assert isinstance(held, Reservation)
                    held.settle(held.amount / 2)
                    if i >= 20:  # the first ones open connections and seed the day
                        times.append(time.perf_counter() - started)
            finally:
                if redis:
                    _forget(redis, prefix)
    return times


def main(argv: list[str] | None = None) -> int:
    """Print the spend of each configuration; exit 1 if any crossed the cap."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.budget_cap")
    parser.add_argument("--postgres", metavar="URL", help="ledger and holds in PostgreSQL")
    parser.add_argument("--redis", metavar="URL", help="holds in Redis, a ledger file each")
    args = parser.parse_args(argv)
    postgres, redis = args.postgres, args.redis
    if postgres and redis:
        parser.error("choose one of --postgres and --redis")
    configurations = ((3, 10, 500), (3, 10, 2000), (1, 10, 2000))
    if postgres is not None or redis is not None:
        configurations = ((4, 10, 500), (4, 10, 2000), (1, 10, 2000))
    worst = 0.0
    where = ("PostgreSQL" if postgres else "holds in Redis, a ledger file per process"
             if redis else "one ledger file")  # fmt: skip
    print(f"max_cost_per_day = $1.00, {where}, calls pinned to claude-opus-4, simulator")
    print(f"{'processes x calls':>18}  {'answer tokens':>13}  {'recorded spend':>14}  outcomes")
    for processes, concurrency, tokens in configurations:
        result = run(processes, concurrency, tokens, postgres=postgres, redis=redis)
        worst = max(worst, result.spent)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        print(f"{f'{processes} x {concurrency}':>18}  {tokens:>13,}  "
              f"${result.spent:>13.4f}  {outcomes}")  # fmt: skip
    print(f"highest spend: ${worst:.4f} (cap $1.00)")
    if redis is not None:
        print("budget reservation round trip per routed call (reserve + settle, one process):")
        for where, url in (("SQLite", None), ("Redis", redis)):
            times = reservation_round_trip(url)
            low, _, high = statistics.quantiles(times, n=4)
            print(f"  {where:>6}: median {statistics.median(times) * 1e3:.3f} ms "
                  f"(IQR {low * 1e3:.3f}-{high * 1e3:.3f} ms, {len(times)} calls)")  # fmt: skip
    return 0 if worst <= 1.0 + 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
