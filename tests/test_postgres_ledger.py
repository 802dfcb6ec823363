"""tierwise.ledger.postgres: the ledger, evidence and budget holds in a real PostgreSQL.

Against the server this machine kind runs (127.0.0.1:5432, trust auth, database ``test``),
each test in a schema of its own that is dropped afterwards; skipped when it does not
answer. The same rows must give the same answers as the SQLite ledger (the monitoring
tests of test_ledger.py run on both, too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import load_settings
from tierwise.catalog.specs import load_default_catalog
from tierwise.cli.app import app
from tierwise.guards.budget import BudgetExceeded, BudgetGuard
from tierwise.ledger import Ledger, LedgerRow, LedgerUnavailable, day_start, open_ledger
from tierwise.ledger.evidence import EVAL, JUDGE, Outcome
from tierwise.ledger.reservations import Held, HoldsUnavailable
from tierwise.routing.provenance import default_ledger
from tierwise.testing import Reply, Simulator
from tierwise.testing.postgres import LOCAL_URL, unreachable

psycopg = pytest.importorskip("psycopg", reason="psycopg is the scale extra")
ROOT = Path(__file__).resolve().parents[1]
DOWN = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1
NOW = time.time() - 600

pytestmark = pytest.mark.skipif(unreachable() is not None, reason=str(unreachable()))


@pytest.fixture
def url(postgres_url: str) -> str:
    return postgres_url


def row(i: int, **fields: Any) -> LedgerRow:
    base: dict[str, Any] = dict(
        time=NOW + i, run_id=f"run-{i % 3}", thread_id=None, node="n",
        operation=("classification", "rewriting")[i % 2], complexity="simple",
        policy="balanced", provider=("openai", "groq")[i % 2 and i % 5 != 0],
        model=("gpt-4o", "llama", "mistral")[i % 3], tier=("paid", "free")[i % 3 != 0],
        outcome=("ok", "ok", "timeout", "rate_limited")[i % 4], sent=i % 4 != 3,
        latency=0.1 * (i % 17), time_to_first_token=None, input_tokens=10 + i,
        output_tokens=i % 7, cost=round(0.001 * (i % 11), 6), escalation=i % 13 == 0,
        repair=i % 9 == 0, detail="", call_id=f"call-{i // 2}", arm=None,
    )  # fmt: skip
    base.update(fields)
    return LedgerRow(**base)


def child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


# --------------------------------------------------------------------------- totals


def test_own_rows_count_at_once_other_writers_after_their_flush(url: str) -> None:
    with open_ledger(url) as mine, open_ledger(url) as theirs:
        assert type(mine).__name__ == "PostgresLedger" and isinstance(mine, Ledger)
        for i in range(5):
            mine.record(row(i, cost=0.25, model="gpt-4o", sent=True))
        assert mine.spent(since=day_start(NOW)) == pytest.approx(1.25)  # before any commit
        assert mine.requests("gpt-4o", since=0) == 5
        assert theirs.spent(since=day_start(NOW)) == 0.0
        mine.flush()
        time.sleep(theirs.refresh_interval + 0.05)
        assert theirs.spent(since=day_start(NOW)) == pytest.approx(1.25)
        theirs.record(row(9, cost=0.5, run_id="r"), durable=True)
        time.sleep(mine.refresh_interval + 0.05)
        assert mine.spent(since=0, run_id="r") == pytest.approx(0.5)
        assert mine.answered(since=0) == theirs.answered(since=0) == 4  # rows 0, 1, 4, 9


def test_queries_and_evidence_equal_the_sqlite_ledgers_for_the_same_rows(
    url: str, tmp_path: Path
) -> None:
    rows = [row(i) for i in range(300)]
    random.Random(7).shuffle(rows)
    outcomes = [Outcome(("classification", "rewriting")[i % 2], ("gpt-4o", "llama")[i % 3 == 0],
                        (i % 5) / 4, (EVAL, JUDGE)[i % 2], time=NOW + i, call_id=f"call-{i}",
                        dataset="d", item=str(i)) for i in range(80)]  # fmt: skip
    answers = []
    for ledger in (Ledger(tmp_path / "ledger.sqlite3"), open_ledger(url)):
        with ledger:
            for r in rows:
                ledger.record(r)
            ledger.evidence.record(outcomes)
            for i in range(0, 40, 3):
                ledger.evidence.record_features(f"call-{i}", "rewriting", [i, i + 1])
            ledger.evidence.record_features("call-0", "rewriting", [7])  # replaced
            pairs = [("classification", "gpt-4o"), ("rewriting", "llama"), ("x", "y")]
            answers.append({
                "rows": ledger.rows(),
                "recent": ledger.rows(limit=7, operation="rewriting"),
                "stats": ledger.stats(),
                "stats since": ledger.stats(since=NOW + 100, tier="free"),
                "health": ledger.health(since=0, last_n=10),
                "window": ledger.health_window("classification", "gpt-4o", 20),
                "performance": ledger.performance(since=0, last_n=15),
                "pairs": ledger.performance(pairs, since=NOW + 50, last_n=15),
                "spent": ledger.spent(since=NOW + 150, provider="groq"),
                "quality": ledger.evidence.quality(min_n=5),
                "quality since": ledger.evidence.quality(min_n=1, since=NOW + 40),
                "outcomes": ledger.evidence.outcomes(source=EVAL),
                "done": ledger.evidence.done("d", "classification", "gpt-4o"),
                "training": ledger.evidence.training_rows(),
            })
    sqlite, postgres = answers
    assert sqlite["stats"] and sqlite["health"] and sqlite["training"]  # not vacuous
    for key, expected in sqlite.items():
        assert same(postgres[key], expected), key


def same(a: object, b: object) -> bool:
    """Equal, floats to 1e-12 (sums in another order differ in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and same(
            [getattr(a, f.name) for f in dataclasses.fields(a)],
            [getattr(b, f.name) for f in dataclasses.fields(b)],
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def test_a_row_postgresql_refuses_is_dropped_and_the_rest_are_kept(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_ledger(url) as ledger, caplog.at_level(logging.ERROR):
        for i in range(5):  # SQLite stores a NUL in a text; PostgreSQL refuses it
            ledger.record(row(i, detail="nul \x00 byte" if i == 2 else ""))
        assert ledger.flush()
        assert [r.time for r in ledger.rows()] == [NOW + i for i in (0, 1, 3, 4)]
    assert "dropping unstorable row" in caplog.text


# --------------------------------------------------------------------------- durability


def test_a_killed_writers_rows_are_recovered_from_its_journal(url: str) -> None:
    """The child inherits ``XDG_DATA_HOME`` (``postgres_url``): its journal is found."""
    proc = child("""
        import os, sys, time
        from tierwise.ledger import LedgerRow, open_ledger
        ledger = open_ledger(sys.argv[1])
        ledger.flush_interval = 3600.0  # nothing is committed by the writer thread
        for i in range(25):
            ledger.record(LedgerRow(
                time=time.time(), run_id="killed", thread_id=None, node=None,
                operation="rewriting", complexity="simple", policy="balanced",
                provider="openai", model="gpt-4o", tier="paid", outcome="ok", sent=True,
                latency=1.0, time_to_first_token=None, input_tokens=1, output_tokens=1,
                cost=0.01, escalation=False, repair=False, detail=""))
        print("recorded", flush=True)
        time.sleep(60)
    """, url)
    assert proc.stdout is not None and proc.stdout.readline() == "recorded\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_ledger(url) as reopened:  # imports the dead writer's journal
        assert reopened.spent(since=0, run_id="killed") == pytest.approx(0.25)
    with open_ledger(url) as again:  # imported once
        assert len(again.rows()) == 25


# --------------------------------------------------------------------------- holds


def _held(ledger: Ledger) -> Held:
    found, _ = ledger.holds().hold(lambda read: (read(0.0), 0.0), provider="openai",
                                   run_id=None)  # fmt: skip
    assert isinstance(found, Held)
    return found


_HOLDER = """
    import socket, sys, time
    host = sys.argv[2]
    if host != "here":
        socket.gethostname = lambda: host  # a process on another machine
    from tierwise.ledger.postgres import PostgresLedger, PostgresReservations
    ledger = PostgresLedger(sys.argv[1])
    holds = PostgresReservations(ledger, ttl=float(sys.argv[3]))
    _, hold_id = holds.hold(lambda read: (None, 0.4), provider="openai", run_id=None)
    print(hold_id, flush=True)
    time.sleep(60)
"""


def test_a_sigkilled_processs_holds_are_released_within_their_expiry(url: str) -> None:
    with open_ledger(url) as ledger:
        local = child(_HOLDER, url, "here", "900")
        remote = child(_HOLDER, url, "elsewhere", "2.0")
        for proc in (local, remote):
            assert proc.stdout is not None and int(proc.stdout.readline())
        assert _held(ledger).held == pytest.approx(0.8)
        for proc in (local, remote):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed = time.monotonic()
        # this host's dead process: at once; the other host's: once its 2 s expire
        assert _held(ledger).held == pytest.approx(0.4)
        while _held(ledger).held > 0:
            assert time.monotonic() - killed < 5.0
            time.sleep(0.2)


@pytest.mark.timeout(600)
def test_a_day_cap_holds_for_four_processes_spending_through_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$1.00 a day shared by 4 processes x 10 concurrent 2,000-token calls of the priciest
    model, the ledger and the holds in PostgreSQL (benchmarks/budget_cap.py --postgres)."""
    from benchmarks.budget_cap import run

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # journals: not in the user's data dir
    result = run(4, 10, 2000, postgres=LOCAL_URL)
    assert result.spent <= 1.0 + 1e-9, result
    assert result.outcomes.get("paid", 0) >= 1, result  # the cap was spent, not refused


def test_holds_fail_closed_when_the_database_refuses(url: str) -> None:
    spec = next(s for s in load_default_catalog().models.values() if s.tier == "paid")
    policy = Policy(mode="balanced", max_cost_per_day=10.0)
    with open_ledger(url) as ledger:
        guard = BudgetGuard(ledger)
        assert guard.check(spec, 0.01, policy, run_id=None) is None
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE reservations")
        with pytest.raises(HoldsUnavailable, match="reservations"):
            ledger.holds().hold(lambda read: (None, 0.0), provider="x", run_id=None)
        refusal = guard.check(spec, 0.01, policy, run_id=None)
    assert isinstance(refusal, BudgetExceeded) and refusal.left == 0
    assert "could not be read" in str(refusal) and "reservations" in str(refusal)


# --------------------------------------------------------------------------- unavailable


def test_an_unreachable_server_is_one_clear_error(
    caplog: pytest.LogCaptureFixture, isolated_env: None
) -> None:
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match=r"PostgreSQL postgresql://postgres@127\.0\.0\.1:1"):
        open_ledger(DOWN)
    assert time.monotonic() - started < 15

    settings = load_settings()
    settings = type(settings)(**{**settings.__dict__,
                                 "state": settings.state.merged(None, DOWN)})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert default_ledger(settings) is None  # the router routes, unrecorded
    assert "check [state] postgres_url" in caplog.text

    result = CliRunner().invoke(app, ["stats", "--ledger", DOWN])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error: cannot open the ledger: PostgreSQL")
    assert "Traceback" not in result.output
    assert lines[1].startswith("hint: start PostgreSQL or fix [state] postgres_url")


def test_the_cli_records_into_and_reads_the_configured_database(
    url: str, tmp_path: Path, isolated_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with Simulator() as sim:
        sim.script("*", Reply.text("Monday.", usage=(12, 5)))
        config = tmp_path / "tierwise.toml"
        config.write_text(f'[state]\npostgres_url = "{url}"\n\n' + sim.toml_snippet())
        for name, value in sim.environment().items():
            if name.endswith("_KEY"):
                monkeypatch.setenv(name, value)
        for _ in range(2):
            result = CliRunner().invoke(app, ["ask", "rewriting", "when", "--config", str(config)])
            assert result.exit_code == 0, result.output
    assert not (tmp_path / "ledger.sqlite3").exists()  # not the file
    by_flag = CliRunner().invoke(app, ["stats", "--json", "--ledger", url])
    monkeypatch.setenv("TIERWISE_POSTGRES_URL", url)
    by_env = CliRunner().invoke(app, ["stats", "--json"])
    assert by_flag.exit_code == by_env.exit_code == 0, by_flag.output + by_env.output
    assert json.loads(by_flag.stdout) == json.loads(by_env.stdout)
    assert sum(s["successes"] for s in json.loads(by_env.stdout)) == 2
