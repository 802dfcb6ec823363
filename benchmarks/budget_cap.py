"""Does a day cap hold when several processes spend through one ledger at once?

``max_cost_per_day = 1.00``, one ledger file, N processes each making C concurrent
``ainvoke`` calls pinned to claude-opus-4 (the priciest paid model: $15 / $75 per million
tokens) against the simulator, whose every model answers with about T tokens. Prints
the spend the ledger recorded per run, the calls answered and refused. The cap holds
when every spend is <= $1.00.

    python -m benchmarks.budget_cap            # 3 x 10 with 500 and 2,000 tokens, 1 x 10 with 2,000
    python -m benchmarks.budget_cap --postgres postgresql://postgres@127.0.0.1:5432/test

With ``--postgres`` the ledger and the holds are in that database instead (a fresh schema
per run, dropped after), and 4 processes share the cap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

__all__ = ["Run", "run"]

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
    postgres: str | None = None,
) -> Run:  # fmt: skip
    """Run the workload once on a fresh ledger; the spend is read back from it.

    ``postgres``: a server URL; the ledger is then a fresh schema there, not a file.
    """
    if postgres is None:
        return _run(processes, concurrency, answer_tokens, cap, None)
    from tierwise.testing.postgres import scratch_schema

    with scratch_schema(postgres, "tierwise_budget") as url:
        return _run(processes, concurrency, answer_tokens, cap, url)


def _run(
    processes: int, concurrency: int, answer_tokens: int, cap: float, url: str | None
) -> Run:
    from tierwise.ledger import day_start, open_ledger
    from tierwise.testing import Reply, Simulator

    text = ("lorem ipsum " * (answer_tokens // 2 + 1))[: answer_tokens * 4]
    with tempfile.TemporaryDirectory(prefix="tierwise-budget-") as tmp, Simulator() as sim, \
            mock.patch.dict(os.environ, XDG_DATA_HOME=tmp):  # journals: not the user's dir
        sim.script("*", Reply.text(text))
        config = Path(tmp) / "tierwise.toml"
        config.write_text(sim.toml_snippet())
        ledger_path: str | Path = url or Path(tmp) / "ledger.sqlite3"
        env = {
            **os.environ, **sim.environment(),
            "TIERWISE_CONFIG": str(config), "TIERWISE_LEDGER": str(ledger_path),
            "XDG_DATA_HOME": tmp, "XDG_CONFIG_HOME": tmp,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }  # fmt: skip
        open_ledger(ledger_path).close()  # created once, before the processes race to open it
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(ledger_path), str(concurrency), str(cap)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp,
            )
            for _ in range(processes)
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
        with open_ledger(ledger_path) as ledger:
            spent = ledger.spent(since=day_start())
    return Run(processes, concurrency, answer_tokens, spent, outcomes)


def main(argv: list[str] | None = None) -> int:
    """Print the spend of each configuration; exit 1 if any crossed the cap."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.budget_cap")
    parser.add_argument("--postgres", metavar="URL", help="ledger and holds in PostgreSQL")
    postgres = parser.parse_args(argv).postgres
    configurations = ((3, 10, 500), (3, 10, 2000), (1, 10, 2000))
    if postgres is not None:
        configurations = ((4, 10, 500), (4, 10, 2000), (1, 10, 2000))
    worst = 0.0
    where = "PostgreSQL" if postgres else "one ledger file"
    print(f"max_cost_per_day = $1.00, {where}, calls pinned to claude-opus-4, simulator")
    print(f"{'processes x calls':>18}  {'answer tokens':>13}  {'recorded spend':>14}  outcomes")
    for processes, concurrency, tokens in configurations:
        result = run(processes, concurrency, tokens, postgres=postgres)
        worst = max(worst, result.spent)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        print(f"{f'{processes} x {concurrency}':>18}  {tokens:>13,}  "
              f"${result.spent:>13.4f}  {outcomes}")  # fmt: skip
    print(f"highest spend: ${worst:.4f} (cap $1.00)")
    return 0 if worst <= 1.0 + 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
