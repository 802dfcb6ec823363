"""The ledger file: its tables, opening and migrating it, the transaction that appends rows.

Why it is built this way:

* **SQLite in WAL mode** (``synchronous=NORMAL``, a ``busy_timeout``): readers never wait
  for writers, several processes can append to one file, and a commit is a write to the
  WAL file without an ``fsync``. It needs nothing beyond the standard library.
* **Exactly once.** Every batch commits, in the same transaction, the sequence number of
  the last row it holds for its writer (table ``writers``), so a batch recovered from a
  dead writer's journal skips what that writer had committed, and own-row totals know
  which rows the database already counts.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time as _time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tierwise.ledger.rows import COLUMNS, SELECT_ROW, LedgerRow, to_params

__all__ = [
    "SCHEMA_VERSION",
    "LedgerError",
    "LedgerUnavailable",
    "commit",
    "connect",
    "retry_busy",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
"""``PRAGMA user_version`` of the ledger file this code reads and writes."""


class LedgerError(RuntimeError):
    """The ledger file cannot be used (written by a newer tierwise, or not a ledger)."""


class LedgerUnavailable(LedgerError):
    """The ledger's database server does not answer or refused a statement (PostgreSQL).

    A SQLite ledger raises :class:`sqlite3.Error` in the same places; callers that must
    go on without a ledger catch both.
    """


_INSERT: Final = f"INSERT INTO attempts ({SELECT_ROW}) VALUES ({', '.join('?' * len(COLUMNS))})"
_UPSERT_WRITER: Final = (
    "INSERT INTO writers (writer, seq, pid, updated) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (writer) DO UPDATE SET seq = max(seq, excluded.seq), "
    "pid = excluded.pid, updated = excluded.updated"
)

_SCHEMA: Final = (
    """CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        run_id TEXT,
        thread_id TEXT,
        node TEXT,
        operation TEXT NOT NULL,
        complexity TEXT NOT NULL,
        policy TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        tier TEXT NOT NULL,
        outcome TEXT NOT NULL,
        sent INTEGER NOT NULL,
        latency REAL NOT NULL,
        time_to_first_token REAL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        escalation INTEGER NOT NULL,
        repair INTEGER NOT NULL,
        detail TEXT NOT NULL,
        call_id TEXT,
        arm TEXT
    )""",
    "CREATE INDEX attempts_time ON attempts (time)",
    "CREATE INDEX attempts_model_time ON attempts (model, time)",
    "CREATE INDEX attempts_provider_time ON attempts (provider, time)",
    "CREATE INDEX attempts_run ON attempts (run_id)",
    "CREATE INDEX attempts_operation_model ON attempts (operation, model)",
    "CREATE INDEX attempts_call ON attempts (call_id)",
    "CREATE INDEX attempts_arm ON attempts (arm, operation)",
    # Per Ledger instance: the last of its rows that is committed (see the module doc).
    """CREATE TABLE writers (
        writer TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        updated REAL NOT NULL
    ) WITHOUT ROWID""",
)


# Version 1 ledgers gain the columns that group attempts into calls and A/B arms.
_MIGRATE_V1: Final = (
    "ALTER TABLE attempts ADD COLUMN call_id TEXT",
    "ALTER TABLE attempts ADD COLUMN arm TEXT",
    "CREATE INDEX attempts_call ON attempts (call_id)",
    "CREATE INDEX attempts_arm ON attempts (arm, operation)",
)


def connect(path: Path, busy_timeout: float, *, init: bool = False) -> sqlite3.Connection:
    """A connection (autocommit, WAL, ``synchronous=NORMAL``); ``init`` creates or migrates."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # Changing the journal mode may answer SQLITE_BUSY without waiting.
        mode = retry_busy(
            lambda: str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]),
            busy_timeout,
        )
        if init and mode.lower() != "wal":
            logger.warning("ledger %s: WAL mode unavailable (journal_mode=%s); "
                           "concurrent writers will wait for each other", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        if init:
            retry_busy(lambda: _ensure_schema(conn, path), busy_timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables of an empty file, migrate an older one, refuse a newer one."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise LedgerError(f"{path}: ledger schema version {version} was written by a "
                          f"newer tierwise (this one reads version {SCHEMA_VERSION})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have just created it.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
            if tables:
                raise LedgerError(f"{path} is a SQLite file but not a tierwise ledger")
            for statement in _SCHEMA:
                conn.execute(statement)
        elif version == 1:
            for statement in _MIGRATE_V1:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def commit(
    conn: sqlite3.Connection,
    batch: list[tuple[int, LedgerRow]],
    writer: str,
    *,
    recovered: bool = False,
) -> int:
    """Insert ``batch`` and advance ``writer``'s committed sequence number, atomically.

    A row that cannot be stored at all (a value of the wrong type) is dropped with an
    error in the log rather than blocking every row behind it forever. ``recovered``
    (rows from a dead writer's journal): rows the writer had committed are skipped, in
    the same transaction. Returns the number of rows the batch brought (before drops).
    """
    good: list[tuple[int, tuple[Any, ...]]] = []
    for seq, row in batch:
        try:
            good.append((seq, to_params(row)))
        except (TypeError, ValueError, OverflowError) as exc:
            logger.error("ledger: dropping unstorable row #%d (%s): %r", seq, exc, row)
    conn.execute("BEGIN IMMEDIATE")
    try:
        count = len(batch)
        if recovered:
            found = conn.execute("SELECT seq FROM writers WHERE writer = ?", (writer,)).fetchone()
            done = 0 if found is None else int(found[0])
            good = [item for item in good if item[0] > done]
            count = sum(1 for seq, _ in batch if seq > done)
            if not count:
                conn.execute("COMMIT")
                return 0
        try:
            conn.executemany(_INSERT, [params for _, params in good])
        except sqlite3.OperationalError:
            raise
        except (sqlite3.Error, OverflowError):
            for _, params in good:  # find and drop the offending row(s)
                try:
                    conn.execute(_INSERT, params)
                except sqlite3.OperationalError:
                    raise
                except (sqlite3.Error, OverflowError) as exc:
                    logger.error("ledger: dropping unstorable row (%s): %r", exc, params)
        conn.execute(_UPSERT_WRITER, (writer, batch[-1][0], os.getpid(), _time.time()))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count


def retry_busy(action: Callable[[], Any], timeout: float) -> Any:
    """Run ``action``, retrying while SQLite says busy/locked, for up to ``timeout`` seconds."""
    deadline = _time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or _time.monotonic() >= deadline:
                raise
        _time.sleep(delay)
        delay = min(delay * 2, 0.1)
