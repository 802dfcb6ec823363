"""tierwise.ledger.store: storage, own-write visibility, several processes, kills, stats.

Processes are real (``python -c`` children on the same file); the ledger module imports
only the standard library and platformdirs, so each child starts in a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import platformdirs
import pytest

import tierwise.ledger.batching as batching_module
import tierwise.ledger.journal as journal_module
import tierwise.ledger.store as store_module
from tests.backends import both_backends
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Provider, Tier
from tierwise.ledger import (
    DAY,
    LEDGER_ENV,
    SCHEMA_VERSION,
    Attempt,
    Health,
    Ledger,
    LedgerError,
    LedgerRow,
    day_start,
    default_ledger_path,
    open_ledger,
    percentile,
)
from tierwise.ledger.rows import journal_body
from tierwise.providers.failures import FailureKind

NOW = 1_750_000_000.0  # a fixed instant; rows carry their own times
JOURNAL = journal_module.AVAILABLE  # the journal needs flock


def make_row(**fields: Any) -> LedgerRow:
    base: dict[str, Any] = dict(
        time=NOW, run_id="run-1", thread_id="thread-1", node="classify",
        operation="classification", complexity="simple", policy="balanced",
        provider="openai", model="gpt-4o", tier="paid", outcome="ok", sent=True,
        latency=1.0, time_to_first_token=None, input_tokens=100, output_tokens=20,
        cost=0.001, escalation=False, repair=False, detail="",
    )  # fmt: skip
    base.update(fields)
    return LedgerRow(**base)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(path: Path, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A SQLite ledger; a PostgreSQL one for the second run of a ``both_backends`` test."""
    postgres = getattr(request, "param", "sqlite") == "postgres"
    with open_ledger(request.getfixturevalue("postgres_url") if postgres else path) as opened:
        yield opened


def stored_count(path: Path) -> int:
    """Rows committed, read behind the ledger's back."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM attempts").fetchone()[0])


# --------------------------------------------------------------------------- storage


def test_rows_round_trip_with_costs_stored_as_given(path: Path) -> None:
    rows = [
        make_row(cost=0.1, time=NOW),
        make_row(cost=1e-7, time=NOW + 1, run_id=None, thread_id=None, node=None,
                 time_to_first_token=0.25, escalation=True),
        make_row(cost=1 / 3, time=NOW + 2, outcome="timeout", sent=True, repair=True,
                 detail="read timed out after 60 s", input_tokens=0, output_tokens=0),
        make_row(cost=0.0, time=NOW + 3, outcome="rate_limited", sent=False,
                 provider="groq", model="llama-3.1-8b", tier="free", detail="ünïcødé ✓"),
    ]  # fmt: skip
    with Ledger(path) as ledger:
        for row in rows:
            ledger.record(row)
    with Ledger(path) as reopened:
        assert reopened.rows() == rows
        assert [r.cost for r in reopened.rows()] == [0.1, 1e-7, 1 / 3, 0.0]  # bit-exact


@both_backends
def test_enum_fields_are_stored_as_their_values(ledger: Ledger) -> None:
    row = make_row(provider=Provider.GEMINI, tier=Tier.FREE, outcome=FailureKind.TIMEOUT)
    ledger.record(row)
    (back,) = ledger.rows()
    assert back == row
    assert type(back.provider) is str and back.provider == "gemini"
    assert type(back.outcome) is str and back.outcome == "timeout"


def test_from_attempt_maps_every_field() -> None:
    attempt = Attempt(
        "gemini-flash", Provider.GEMINI, Tier.FREE, FailureKind.INVALID_OUTPUT, 0.75,
        detail="schema violation", sent=True, input_tokens=12, output_tokens=34, cost=0.0,
        time_to_first_token=0.1, repair=True,
    )  # fmt: skip
    row = LedgerRow.from_attempt(
        attempt, operation="classification", complexity="moderate",
        policy=Policy(mode="free_first"), run_id="r", thread_id="t", node="n",
        escalation=True, time=123.0,
    )  # fmt: skip
    assert row == LedgerRow(
        time=123.0, run_id="r", thread_id="t", node="n", operation="classification",
        complexity="moderate", policy="free_first", provider="gemini", model="gemini-flash",
        tier="free", outcome="invalid_output", sent=True, latency=0.75,
        time_to_first_token=0.1, input_tokens=12, output_tokens=34, cost=0.0,
        escalation=True, repair=True, detail="schema violation",
    )  # fmt: skip
    ok = LedgerRow.from_attempt(
        Attempt("m", Provider.OPENAI, Tier.PAID, None, 1.0), operation="rewriting",
        complexity="simple", policy="balanced",
    )  # fmt: skip
    assert ok.ok and ok.outcome == "ok" and ok.policy == "balanced"
    assert abs(ok.time - time.time()) < 5


def test_wal_mode_schema_version_and_indexes(ledger: Ledger, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    assert {
        "attempts_time", "attempts_model_time", "attempts_provider_time", "attempts_run",
        "attempts_operation_model",
    } <= indexes  # fmt: skip


def test_hot_queries_use_the_indexes(ledger: Ledger, path: Path) -> None:
    plans = {
        "day": "SELECT total(cost) FROM attempts WHERE time >= 0",
        "provider": "SELECT total(cost) FROM attempts WHERE time >= 0 AND provider = 'x'",
        "run": "SELECT total(cost) FROM attempts WHERE time >= 0 AND run_id = 'x'",
        "rpd": "SELECT count(*) FROM attempts WHERE model = 'm' AND time >= 0 AND sent = 1",
    }
    with sqlite3.connect(path) as conn:
        for name, sql in plans.items():
            plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (name, plan)


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    Ledger(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="newer tierwise"):
        Ledger(newer)

    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(LedgerError, match="not a tierwise ledger"):
        Ledger(foreign)

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(LedgerError, match="cannot open"):
        Ledger(garbage)

    with pytest.raises(ValueError, match="file"):
        Ledger(":memory:")


def test_default_path_is_in_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LEDGER_ENV, raising=False)
    monkeypatch.setattr(
        platformdirs, "user_data_dir", lambda app: str(tmp_path / "data" / app)
    )
    expected = tmp_path / "data" / "tierwise" / "ledger.sqlite3"
    assert default_ledger_path() == expected
    with Ledger() as ledger:  # creates the directories
        assert ledger.path == expected
    assert expected.is_file()
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "elsewhere.sqlite3"))
    assert default_ledger_path() == tmp_path / "elsewhere.sqlite3"


def test_day_start_is_utc_midnight() -> None:
    assert day_start(5 * DAY) == 5 * DAY
    assert day_start(5 * DAY + 1.5) == 5 * DAY
    assert day_start(6 * DAY - 1e-6) == 5 * DAY
    assert day_start() <= time.time() < day_start() + DAY


# --------------------------------------------------------------------------- own writes


def test_own_writes_count_before_the_writer_commits(path: Path) -> None:
    # The writer would wait a minute before committing, and totals would be reused for a
    # minute: only the in-memory path can make these numbers right.
    with Ledger(path, flush_interval=60, refresh_interval=60) as ledger:
        assert ledger.spent(since=NOW) == 0.0
        assert ledger.requests("gpt-4o", since=NOW) == 0
        ledger.record(make_row(cost=0.25))
        ledger.record(make_row(cost=0.5, sent=False, provider="groq", run_id="run-2"))
        assert stored_count(path) == 0  # nothing committed yet
        assert ledger.spent(since=NOW) == 0.75
        assert ledger.spent(since=NOW, provider="openai") == 0.25
        assert ledger.spent(since=NOW, provider=Provider.GROQ) == 0.5
        assert ledger.spent(since=0, run_id="run-2") == 0.5
        assert ledger.spent(since=NOW + 1) == 0.0  # rows before `since` do not count
        assert ledger.requests("gpt-4o", since=NOW) == 1  # not-sent rows are not requests
        assert ledger.requests("gpt-4o", since=NOW, sent_only=False) == 2

        assert ledger.flush()
        assert stored_count(path) == 2
        assert ledger.spent(since=NOW) == 0.75  # committed now: still counted once
        ledger.refresh_interval = 0  # re-read the database on every query from here
        assert ledger.spent(since=NOW) == 0.75
        ledger.record(make_row(cost=1.0))
        assert ledger.spent(since=NOW) == 1.75
        assert ledger.requests("gpt-4o", since=NOW) == 2


def test_durable_record_is_committed_when_it_returns(path: Path) -> None:
    with Ledger(path, flush_interval=60) as ledger:
        ledger.record(make_row())
        assert stored_count(path) == 0
        ledger.record(make_row(), durable=True)
        assert stored_count(path) == 2  # the durable row and every row before it


def test_periodic_flush_commits_without_being_asked(path: Path) -> None:
    with Ledger(path, flush_interval=0.02) as ledger:
        ledger.record(make_row())
        deadline = time.monotonic() + 5
        while stored_count(path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stored_count(path) == 1


def test_another_writer_is_seen_after_its_flush_and_the_refresh(path: Path) -> None:
    with (
        Ledger(path, refresh_interval=60, flush_interval=60) as mine,
        Ledger(path, refresh_interval=60) as theirs,
    ):
        mine.record(make_row(cost=1.0))
        assert mine.spent(since=NOW) == 1.0
        theirs.record(make_row(cost=2.0))
        theirs.flush()
        assert mine.spent(since=NOW) == 1.0  # cached total, younger than refresh_interval
        mine.refresh_interval = 0  # as if the interval had passed
        assert mine.spent(since=NOW) == 3.0
        assert theirs.spent(since=NOW) == 2.0  # mine is not flushed yet
        mine.flush()
        theirs.refresh_interval = 0
        assert theirs.spent(since=NOW) == 3.0


def test_totals_are_exact_while_threads_record_and_the_writer_commits(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each own row is counted exactly once, whether it is pending, committing or committed.

    Costs are whole numbers so the totals are exact. Every read must lie between the rows
    whose record() had returned before the read and those whose record() had started.
    Rows are dropped from memory aggressively to exercise the re-read path too.
    """
    monkeypatch.setattr(batching_module, "_KEEP_MARGIN", 0.0)
    threads, per_thread = 4, 400
    started = done = 0
    counter = threading.Lock()
    violations: list[tuple[int, float, int]] = []

    with Ledger(path, flush_interval=0.002, batch_size=7, refresh_interval=0.001) as ledger:

        def work(n: int) -> None:
            nonlocal started, done
            for i in range(per_thread):
                with counter:
                    started += 1
                ledger.record(make_row(cost=1.0, run_id=f"t{n}", time=NOW + i))
                with counter:
                    done += 1

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            with counter:
                low = done
            value = ledger.spent(since=NOW)
            with counter:
                high = started
            if not low <= value <= high:
                violations.append((low, value, high))
        for w in workers:
            w.join()
        total = threads * per_thread
        assert not violations
        assert ledger.spent(since=NOW) == total
        assert ledger.spent(since=0, run_id="t2") == per_thread
        assert ledger.requests("gpt-4o", since=NOW) == total
    with Ledger(path) as reopened:
        assert reopened.spent(since=NOW) == total


def test_record_after_close_is_written_synchronously(path: Path) -> None:
    ledger = Ledger(path)
    ledger.record(make_row(cost=1.0))
    ledger.close()
    ledger.close()  # idempotent
    assert stored_count(path) == 1
    ledger.record(make_row(cost=2.0))  # e.g. a straggling thread at exit
    assert stored_count(path) == 2
    assert ledger.spent(since=NOW) == 3.0  # queries reopen the file


def test_an_unstorable_row_is_dropped_and_the_rest_are_kept(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.record(make_row(node="before"))
    ledger.record(make_row(node="bad", cost="not a number"))
    ledger.record(make_row(node="after"))
    assert ledger.flush()
    assert [r.node for r in ledger.rows()] == ["before", "after"]
    assert "dropping unstorable row" in caplog.text


# --------------------------------------------------------------------------- restart


def test_requests_survive_a_restart(path: Path) -> None:
    today = day_start()
    with Ledger(path) as ledger:
        for _ in range(3):
            ledger.record(make_row(model="gemini-flash", provider="gemini", tier="free",
                                   cost=0.0, time=today + 10))  # fmt: skip
        ledger.record(make_row(model="gemini-flash", sent=False, time=today + 11))
        ledger.record(make_row(model="gemini-flash", time=today - 10))  # yesterday
    with Ledger(path) as restarted:
        assert restarted.requests("gemini-flash", since=day_start()) == 3
        assert restarted.requests("gemini-flash", since=day_start(), sent_only=False) == 4
        assert restarted.requests("gemini-flash", since=0) == 4
        assert restarted.requests("other", since=0) == 0


# --------------------------------------------------------------------------- processes

_WRITER = textwrap.dedent("""
    import sys, time
    from tierwise.ledger import Ledger, LedgerRow
    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    provider = {"a": "openai", "b": "groq"}[name]
    print("ready", flush=True)
    sys.stdin.readline()  # both processes open the new file and write at the same moment
    with Ledger(path, flush_interval=0.003, batch_size=4) as ledger:
        for i in range(n):
            ledger.record(LedgerRow(
                time.time(), "run-" + name, None, f"{name}:{i}", "classification", "simple",
                "balanced", provider, "model-" + name, "paid", "ok", True, 0.1, None, 10, 5,
                0.001, False, False, ""), durable=(i % 3 == 0))
            if i % 3 == 0:
                time.sleep(0.001)  # let the other process's commits interleave
    print("done", flush=True)
""")

_READER = textwrap.dedent("""
    import sys
    from tierwise.ledger import Ledger
    with Ledger(sys.argv[1]) as ledger:
        print(ledger.spent(since=0), ledger.spent(since=0, provider="openai"),
              ledger.spent(since=0, run_id="run-b"), ledger.requests("model-a", since=0),
              ledger.requests("model-b", since=0))
""")


def child_env() -> dict[str, str]:
    """Children import the same tierwise as this test process, wherever pytest runs."""
    root = str(Path(store_module.__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip


def _python(code: str, *args: object, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), **kwargs,
    )  # fmt: skip


def test_two_processes_write_concurrently_and_a_third_sees_both(path: Path) -> None:
    n = 300
    procs = [_python(_WRITER, path, name, n, stdin=subprocess.PIPE) for name in ("a", "b")]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
        assert err == ""  # no "database is locked", no retry warnings
    with sqlite3.connect(path) as conn:
        nodes = {node for (node,) in conn.execute("SELECT node FROM attempts")}
        # The two writers' commits interleaved (each did ~100 durable commits).
        sequence = [node[0] for (node,) in conn.execute("SELECT node FROM attempts ORDER BY id")]
    assert nodes == {f"{name}:{i}" for name in "ab" for i in range(n)}
    switches = sum(1 for x, y in zip(sequence, sequence[1:], strict=False) if x != y)
    assert switches > 1, "the writers did not overlap; the test proves nothing"

    reader = _python(_READER, path)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    total, openai, run_b, requests_a, requests_b = out.split()
    assert float(total) == pytest.approx(2 * n * 0.001)
    assert float(openai) == pytest.approx(n * 0.001)
    assert float(run_b) == pytest.approx(n * 0.001)
    assert (int(requests_a), int(requests_b)) == (n, n)


_KILLED = textwrap.dedent("""
    import sys, time
    from tierwise.ledger import Ledger, LedgerRow
    path, mode, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # "journal": no batch is committed before the kill, however many rows are recorded.
    ledger = Ledger(path, flush_interval=interval, batch_size=10**9 if mode == "journal" else 200)
    i = 0
    while True:
        ledger.record(LedgerRow(
            time.time(), "run", None, str(i), "classification", "simple", "balanced",
            "openai", "gpt-4o", "paid", "ok", True, 0.1, None, 10, 5, 0.001, False, False, ""),
            durable=(mode == "durable"))
        i += 1
        if mode == "batches" and i % 10 == 0:
            ledger.flush()  # a batch of completed attempts ends here
            print(i, flush=True)
        elif mode == "durable":
            print(i, flush=True)
        elif mode == "interval" and i % 10 == 0:
            print(i, time.monotonic(), flush=True)
        elif mode == "journal":
            print(i, flush=True)  # rows 0 .. i-1 have been recorded (record() returned)
            continue  # as fast as possible: the kill lands mid-record now and then
        time.sleep(0.001)
""")


def _stored_indices(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(int(n) for (n,) in conn.execute("SELECT node FROM attempts"))


def _kill_after(proc: subprocess.Popen[str], lines: int) -> str:
    """Read ``lines`` progress lines, SIGKILL the child, return the last line."""
    assert proc.stdout is not None
    last = ""
    for _ in range(lines):
        last = proc.stdout.readline()
        assert last, proc.stderr.read() if proc.stderr else "child died"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return last


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_mid_batch_loses_no_flushed_row(path: Path) -> None:
    # The writer alone would wait 60 s, so rows after the last flush are pending when the
    # kill lands: the kill is mid-batch, and only the flushed prefix is guaranteed.
    proc = _python(_KILLED, path, "batches", 60)
    flushed = int(_kill_after(proc, 5))
    stored = _stored_indices(path)
    assert stored[:flushed] == list(range(flushed))
    assert stored == list(range(len(stored)))  # a prefix: commits are in order, no holes


def _stored_nodes(path: Path) -> list[int]:
    """Stored indices in commit (id) order, duplicates kept."""
    with sqlite3.connect(path) as conn:
        return [int(n) for (n,) in conn.execute("SELECT node FROM attempts ORDER BY id")]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.skipif(not JOURNAL, reason="no journal without fcntl")
def test_kill_loses_no_recorded_row_the_journal_recovers_them(path: Path) -> None:
    # Nothing is committed by the child (a minute-long flush interval, no flush()): every
    # recorded row is only in memory and in the journal when the kill lands.
    proc = _python(_KILLED, path, "journal", 60)
    recorded = int(_kill_after(proc, 500))
    assert _stored_nodes(path) == []
    (journal,) = Path(f"{path}.journal").glob("*.jsonl")  # the dead writer's
    with Ledger(path) as recovering:  # opening the file recovers them
        assert recovering.spent(since=0) == pytest.approx(len(_stored_nodes(path)) * 0.001)
    stored = _stored_nodes(path)
    assert stored[:recorded] == list(range(recorded))  # everything record() returned for
    assert stored == list(range(len(stored)))  # in order, no holes, no duplicates
    assert not journal.exists()
    with Ledger(path):  # opening again imports nothing twice
        pass
    assert _stored_nodes(path) == stored


@pytest.mark.skipif(not JOURNAL, reason="no journal without fcntl")
def test_journal_is_emptied_by_commits_and_deleted_on_close(path: Path) -> None:
    ledger = Ledger(path, flush_interval=60)
    journals = Path(f"{path}.journal")
    assert not journals.exists()  # opened by the first record(), not by opening the file
    ledger.record(make_row(node="a"))
    ledger.record(make_row(node="b"))
    (journal,) = journals.glob("*.jsonl")
    lines = journal.read_bytes().splitlines()
    assert [line.split(b"\t")[0] for line in lines] == [b"1", b"2"]
    assert ledger.flush()
    assert journal.stat().st_size == 0  # everything committed: emptied
    ledger.record(make_row(node="c"))
    assert journal.read_bytes().startswith(b"3\t")
    ledger.close()
    assert list(journals.iterdir()) == []
    assert stored_count(path) == 3


@pytest.mark.skipif(not JOURNAL, reason="no journal without fcntl")
def test_a_long_journal_is_rewritten_with_the_pending_rows_only(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_JOURNAL_LIMIT", 0)
    real_commit = store_module.commit
    with Ledger(path, flush_interval=60) as ledger:

        def commit_while_recording(*args: Any, **kwargs: Any) -> int:
            ledger.record(make_row(node="during-1"))  # pending when the commit ends
            ledger.record(make_row(node="during-2"))
            return real_commit(*args, **kwargs)

        for i in range(3):
            ledger.record(make_row(node=str(i)))
        (journal,) = Path(f"{path}.journal").glob("*.jsonl")
        monkeypatch.setattr(store_module, "commit", commit_while_recording)
        assert ledger._write_pending()
        monkeypatch.setattr(store_module, "commit", real_commit)
        assert [line.split(b"\t")[0] for line in journal.read_bytes().splitlines()] == [
            b"4", b"5",
        ]  # fmt: skip
        assert list(journal.parent.iterdir()) == [journal]  # replaced in place
    assert stored_count(path) == 5


_HOLDER = textwrap.dedent("""
    import sys, time
    from tierwise.ledger import Ledger, LedgerRow
    ledger = Ledger(sys.argv[1], flush_interval=60)
    ledger.record(LedgerRow(
        0.0, "run", None, "0", "classification", "simple", "balanced", "openai", "gpt-4o",
        "paid", "ok", True, 0.1, None, 10, 5, 0.001, False, False, ""))
    print("recorded", flush=True)
    sys.stdin.readline()
    ledger.close()
    print("closed", flush=True)
""")


@pytest.mark.skipif(not JOURNAL, reason="no journal without fcntl")
def test_a_live_writers_journal_is_not_imported(path: Path) -> None:
    proc = _python(_HOLDER, path, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline() == "recorded\n"
        (journal,) = Path(f"{path}.journal").glob("*.jsonl")
        with Ledger(path):  # the holder is alive and holds its journal's lock
            pass
        assert journal.exists()
        assert stored_count(path) == 0
        proc.stdin.write("close\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "closed\n"
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not journal.exists()
    with Ledger(path):
        pass
    assert _stored_nodes(path) == [0]  # committed once, by its writer


def _journal_line(seq: int, row: LedgerRow) -> bytes:
    body = journal_body(row)
    assert body is not None
    return b"%d\t%s\n" % (seq, body)


@pytest.mark.skipif(not JOURNAL, reason="no journal without fcntl")
def test_recovery_skips_committed_rows_and_a_partial_last_line(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Ledger(path).close()
    with sqlite3.connect(path) as conn:  # the dead writer had committed up to seq 2
        conn.execute("INSERT INTO writers VALUES ('dead', 2, 1, 0.0)")
    journals = Path(f"{path}.journal")
    journals.mkdir()
    rows = [make_row(node=str(i), cost=float(i)) for i in range(1, 5)]
    data = b"".join(_journal_line(i, row) for i, row in enumerate(rows, 1))
    (journals / "dead.jsonl").write_bytes(data + _journal_line(5, make_row(node="5"))[:-30])
    with Ledger(path) as ledger:
        assert [r.node for r in ledger.rows()] == ["3", "4"]
        assert ledger.rows()[0] == rows[2]  # every field round-trips
    assert "malformed line 5 (a write cut short)" in caplog.text
    assert list(journals.iterdir()) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT seq FROM writers WHERE writer = 'dead'").fetchone() == (4,)
    (journals / "dead.jsonl").write_bytes(data)  # the same rows again: all committed
    with Ledger(path):
        pass
    assert stored_count(path) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.skipif(not JOURNAL, reason="no journal without fcntl")
def test_a_forked_child_has_its_own_journal(path: Path) -> None:
    with Ledger(path, flush_interval=60) as ledger:
        ledger.record(make_row(node="parent"))
        (parent_journal,) = Path(f"{path}.journal").glob("*.jsonl")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                ledger.record(make_row(node="child"))
                names = {p.name for p in Path(f"{path}.journal").glob("*.jsonl")}
                code = 0 if len(names) == 2 and parent_journal.name in names else 2
                ledger.close()  # deletes the child's journal only
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [p.name for p in Path(f"{path}.journal").glob("*.jsonl")] == [
            parent_journal.name
        ]
        with Ledger(path):  # the parent is alive: its journal is left alone
            pass
        assert parent_journal.exists()
    assert sorted(r.node or "" for r in Ledger(path).rows()) == ["child", "parent"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_loses_no_durable_row(path: Path) -> None:
    proc = _python(_KILLED, path, "durable", 60)
    recorded = int(_kill_after(proc, 20))
    assert _stored_indices(path)[:recorded] == list(range(recorded))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_loses_no_row_older_than_the_flush_interval(path: Path) -> None:
    """Without flush() calls, the writer commits on its own within about flush_interval.

    The child keeps recording. Once it reports ``count`` rows, the test waits for the
    writer to commit them (observing how long that took), kills the child mid-batch, and
    checks they are all there.
    """
    interval = 0.05
    proc = _python(_KILLED, path, "interval", interval)
    assert proc.stdout is not None
    for _ in range(3):
        line = proc.stdout.readline()
    count, at = int(line.split()[0]), float(line.split()[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as conn:
            if conn.execute("SELECT count(*) FROM attempts").fetchone()[0] >= count:
                break
        time.sleep(0.005)
    committed_after = time.monotonic() - at
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stored = _stored_indices(path)
    assert stored[:count] == list(range(count))
    assert stored == list(range(len(stored)))
    # flush_interval plus scheduling; loose, so that a loaded CI machine does not flake.
    assert committed_after < interval + 2.0


_EXITS = textwrap.dedent("""
    import sys
    from tierwise.ledger import Ledger, LedgerRow
    path, how = sys.argv[1], sys.argv[2]
    ledger = Ledger(path, flush_interval=60)  # only the exit can commit these rows
    for i in range(25):
        ledger.record(LedgerRow(
            0.0, "run", None, str(i), "classification", "simple", "balanced", "openai",
            "gpt-4o", "paid", "ok", True, 0.1, None, 10, 5, 0.001, False, False, ""))
    if how == "exit":
        sys.exit(3)
    if how == "raise":
        raise RuntimeError("boom")
""")


@pytest.mark.parametrize("how", ["end", "exit", "raise"])
def test_normal_exit_commits_every_row(path: Path, how: str) -> None:
    proc = _python(_EXITS, path, how)
    proc.communicate(timeout=60)
    assert proc.returncode == {"end": 0, "exit": 3, "raise": 1}[how]
    assert _stored_indices(path) == list(range(25))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_write_the_parents_rows(path: Path) -> None:
    with Ledger(path, flush_interval=60) as ledger:
        for i in range(3):
            ledger.record(make_row(node=f"parent-{i}"))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                ledger.record(make_row(node="child"))
                ledger.close()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        # The child's committed row counts; the parent's pending rows count once (the child
        # dropped its copies of them instead of writing them too).
        assert ledger.spent(since=NOW) == pytest.approx(0.004)
    with Ledger(path) as reopened:
        assert sorted(r.node or "" for r in reopened.rows()) == [
            "child", "parent-0", "parent-1", "parent-2",
        ]  # fmt: skip


# --------------------------------------------------------------------------- monitoring


def _monitoring_rows() -> list[LedgerRow]:
    op, other_op = "classification", "rewriting"
    a = dict(operation=op, model="gpt-4o", provider="openai", tier="paid")
    return [
        make_row(**a, latency=1.0, cost=0.01, input_tokens=100, output_tokens=10),
        make_row(**a, latency=2.0, cost=0.01, input_tokens=100, output_tokens=10),
        make_row(**a, latency=3.0, cost=0.01, input_tokens=100, output_tokens=10),
        make_row(**a, latency=4.0, cost=0.01, input_tokens=100, output_tokens=10),
        make_row(**a, latency=5.0, cost=0.0, input_tokens=0, output_tokens=0,
                 outcome="timeout"),
        # invalid output, repaired by the same model: one failure, no fallback
        make_row(**a, latency=1.5, cost=0.005, outcome="invalid_output", escalation=True),
        make_row(**a, latency=10.0, cost=0.006, repair=True, escalation=True),
        # refused locally: never sent, still made the router move on
        make_row(**a, latency=0.0, cost=0.0, input_tokens=0, output_tokens=0,
                 outcome="rate_limited", sent=False),
        # another model, same operation, free tier
        make_row(operation=op, model="llama-3.1-8b", provider="groq", tier="free",
                 latency=0.5, cost=0.0),
        # same model, other operation
        make_row(operation=other_op, model="gpt-4o", provider="openai", tier="paid",
                 latency=7.0, cost=0.02),
        # too old for `since`
        make_row(**a, time=NOW - 3600, latency=100.0, cost=5.0),
    ]  # fmt: skip


@both_backends
def test_stats_on_a_constructed_set_of_rows(ledger: Ledger) -> None:
    for row in _monitoring_rows():
        ledger.record(row)
    stats = {(s.operation, s.model): s for s in ledger.stats(since=NOW)}
    assert list(stats) == [
        ("classification", "gpt-4o"), ("classification", "llama-3.1-8b"),
        ("rewriting", "gpt-4o"),
    ]  # fmt: skip
    gpt = stats["classification", "gpt-4o"]
    assert (gpt.provider, gpt.tier) == ("openai", "paid")
    assert gpt.attempts == 8
    assert gpt.calls == 7
    assert gpt.skipped == 1
    assert gpt.successes == 5
    assert gpt.success_rate == pytest.approx(5 / 7)
    assert gpt.fallbacks_caused == 2  # the timeout and the local refusal
    assert gpt.repairs == 1
    assert gpt.escalations == 2
    assert gpt.p50_latency == 3.0  # of the successes: 1, 2, 3, 4, 10
    assert gpt.p95_latency == pytest.approx(8.8)
    assert (gpt.input_tokens, gpt.output_tokens) == (600, 80)
    assert gpt.spend == pytest.approx(0.051)
    assert gpt.cost_per_success == pytest.approx(0.051 / 5)

    llama = stats["classification", "llama-3.1-8b"]
    assert (llama.calls, llama.successes, llama.success_rate) == (1, 1, 1.0)
    assert (llama.spend, llama.cost_per_success, llama.fallbacks_caused) == (0.0, 0.0, 0)
    assert stats["rewriting", "gpt-4o"].p95_latency == 7.0

    everything = {(s.operation, s.model): s for s in ledger.stats()}
    assert everything["classification", "gpt-4o"].attempts == 9  # the old row too
    assert everything["classification", "gpt-4o"].p50_latency == 3.5


@both_backends
def test_stats_filters_by_operation_and_tier(ledger: Ledger) -> None:
    for row in _monitoring_rows():
        ledger.record(row)
    by_op = ledger.stats(since=NOW, operation="rewriting")
    assert [(s.operation, s.model, s.calls) for s in by_op] == [("rewriting", "gpt-4o", 1)]
    free = ledger.stats(tier=Tier.FREE)
    assert [(s.model, s.calls) for s in free] == [("llama-3.1-8b", 1)]
    assert ledger.stats(since=NOW + 1) == []


@both_backends
def test_a_model_without_successes_has_no_latency_or_cost_per_success(ledger: Ledger) -> None:
    ledger.record(make_row(outcome="unavailable", cost=0.0))
    ledger.record(make_row(outcome="rate_limited", sent=False, cost=0.0))
    (s,) = ledger.stats()
    assert (s.successes, s.success_rate, s.p50_latency, s.cost_per_success) == (0, 0.0, None,
                                                                                None)  # fmt: skip
    ledger.record(make_row(model="never-sent", outcome="budget_exceeded", sent=False))
    never = next(s for s in ledger.stats() if s.model == "never-sent")
    assert (never.calls, never.success_rate, never.fallbacks_caused) == (0, None, 1)


@both_backends
def test_rows_filters_and_limit(ledger: Ledger) -> None:
    rows = _monitoring_rows()
    for row in rows:
        ledger.record(row)
    assert ledger.rows()[0].time == NOW - 3600  # time order, not record order
    assert len(ledger.rows(since=NOW)) == len(rows) - 1
    assert {r.operation for r in ledger.rows(operation="rewriting")} == {"rewriting"}
    assert {r.model for r in ledger.rows(tier="free")} == {"llama-3.1-8b"}
    last_two = ledger.rows(limit=2)
    assert last_two == sorted(rows, key=lambda r: r.time)[-2:] == rows[-3:-1]


@both_backends
def test_health_windows(ledger: Ledger) -> None:
    for i in range(60):  # oldest 10 fail, then alternate ok(fast) / unavailable
        outcome = "unavailable" if i < 10 or i % 2 else "ok"
        ledger.record(make_row(model="flaky", outcome=outcome, latency=float(i), time=NOW + i))
    for i in range(5):
        ledger.record(make_row(model="steady", latency=0.5 + i, time=NOW + i))
    ledger.record(make_row(model="steady", outcome="rate_limited", sent=False, time=NOW + 9))
    ledger.flush()

    flaky = ledger.health_window("classification", "flaky", last_n=50)
    assert flaky == Health(success_rate=0.5, p50_latency=34.0, n=50)
    assert ledger.health_window("classification", "flaky", last_n=4) == Health(0.5, 57.0, 4)
    assert ledger.health_window("classification", "steady") == Health(1.0, 2.5, 5)  # unsent
    assert ledger.health_window("classification", "unknown") == Health(None, None, 0)
    assert ledger.health_window("rewriting", "steady").n == 0

    bulk = ledger.health(last_n=50, since=0)
    assert bulk == {
        ("classification", "flaky"): flaky,
        ("classification", "steady"): Health(1.0, 2.5, 5),
    }
    assert ledger.health(since=0, operation="rewriting") == {}
    assert ledger.health() == {}  # default window: the last 24 hours (rows are from 2025)


def test_percentile_edges() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([float(x) for x in range(1, 101)], 0.5) == 50.5
    assert percentile([float(x) for x in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_a_row_is_a_frozen_value() -> None:
    row = make_row()
    with pytest.raises(AttributeError):
        row.cost = 2.0  # type: ignore[misc]
    assert replace(row, cost=2.0).cost == 2.0
