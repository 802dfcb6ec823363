"""The ledger: one SQLite row per model attempt, and the spend, quota and health read from it.

Every attempt the router makes — answered, failed, or refused before it was sent — becomes
one :class:`~tierwise.ledger.rows.LedgerRow`. Budgets (:mod:`tierwise.guards.budget`) read
today's spend and a free model's requests today from here, so caps and daily quotas hold
across processes and restarts; ``tierwise stats`` / ``report`` and the selector's health
ordering read the same rows (:mod:`tierwise.ledger.queries`).

Why it is built this way (the file itself: :mod:`tierwise.ledger.schema`):

* **Off the call path.** :meth:`Ledger.record` appends the row to an in-memory queue and
  one line to the writer's journal (:mod:`tierwise.ledger.journal`; no SQLite) and
  returns; a background thread commits queued rows in batches, one transaction per
  batch, at most ``flush_interval`` after the first row of a batch was recorded. A busy
  database makes only that thread wait.
* **Own writes are visible at once.** Budgets must see a call's cost before the next call
  is checked, not after the next batch. :meth:`Ledger.spent` and :meth:`Ledger.requests`
  add this process's not-yet-committed rows to the committed totals, each counted exactly
  once (:mod:`tierwise.ledger.totals`).
* **Cheap repeated reads.** A total is cached per query for ``refresh_interval`` seconds
  and refreshed incrementally. Other processes' spend is therefore seen within
  ``flush_interval + refresh_interval`` (0.6 s by default); this process's own at once.

Durability — what a recorded row survives:

* **Normal exit** (:meth:`Ledger.close`, leaving a ``with`` block, interpreter exit through
  ``atexit`` — a finished script, ``sys.exit``, an uncaught exception): every row is
  committed before the process ends.
* **A hard kill** (``SIGKILL``, ``os._exit``, a crash, the OOM killer — and ``SIGTERM``
  when the application installs no handler, since Python then runs no ``atexit`` hooks):
  no row whose :meth:`Ledger.record` returned is lost: it is in the writer's journal, and
  the next process to open the ledger imports it (:mod:`tierwise.ledger.journal`).
  Without ``fcntl`` (Windows) there is no journal: rows recorded in the last
  ``flush_interval`` may be lost; ``record(row, durable=True)`` commits before returning.
* **Power loss / OS crash**: ``synchronous=NORMAL`` may roll back the last transactions,
  and the journal (never fsynced) may lose its last lines; the file stays consistent.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Final

import platformdirs

from tierwise.ledger.batching import BatchedLedger
from tierwise.ledger.evidence import EvidenceStore
from tierwise.ledger.reservations import HoldStore, Reservations
from tierwise.ledger.rows import LedgerRow
from tierwise.ledger.schema import LedgerError, commit, connect

__all__ = [
    "LEDGER_ENV",
    "Ledger",
    "default_ledger_path",
]

logger = logging.getLogger(__name__)

LEDGER_ENV: Final = "TIERWISE_LEDGER"
"""Environment variable that overrides the default ledger file."""


def default_ledger_path() -> Path:
    """``$TIERWISE_LEDGER``, else ``ledger.sqlite3`` in the user data dir (per platformdirs)."""
    explicit = os.environ.get(LEDGER_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_data_dir("tierwise")) / "ledger.sqlite3"


# Connections inherited over fork(): never used and never closed in the child.
_ABANDONED: list[object] = []


class Ledger(BatchedLedger):
    """Every attempt's tokens, cost, latency and outcome, in a SQLite file shared by processes.

    Args:
        path: The SQLite file; default :func:`default_ledger_path`. Parent directories
            are created.
        flush_interval: Longest time (s) a recorded row waits in memory before its batch
            is committed. Bounds what a hard kill can lose.
        batch_size: A batch is committed as soon as it holds this many rows.
        refresh_interval: How long (s) a cached cross-process total is reused before the
            rows appended since are read. 0 reads the database on every query.
        busy_timeout: Seconds a connection waits for another process's write lock.

    Example:
        >>> import tempfile, pathlib
        >>> from tierwise.catalog.specs import Provider, Tier
        >>> from tierwise.ledger import Attempt, LedgerRow, day_start
        >>> attempt = Attempt("gpt-4o", Provider.OPENAI, Tier.PAID, None, 1.2, cost=0.01)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with Ledger(pathlib.Path(tmp) / "ledger.sqlite3") as ledger:
        ...         ledger.record(LedgerRow.from_attempt(
        ...             attempt, operation="rewriting", complexity="simple", policy="balanced"))
        ...         print(ledger.spent(since=day_start()), ledger.requests("gpt-4o", since=0))
        0.01 1
    """

    TRANSIENT: ClassVar[tuple[type[Exception], ...]] = (sqlite3.OperationalError,)

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        flush_interval: float = 0.1,
        batch_size: int = 200,
        refresh_interval: float = 0.5,
        busy_timeout: float = 10.0,
    ) -> None:
        """Open (creating if needed) the ledger file and check its schema version."""
        if path is not None and str(path) == ":memory:":
            raise ValueError("the ledger is shared through a file; give a path (tmp dir in tests)")
        if busy_timeout < 0:
            raise ValueError("busy_timeout >= 0 is required")
        target = Path(path).expanduser() if path is not None else default_ledger_path()
        super().__init__(target, str(target), flush_interval=flush_interval,
                         batch_size=batch_size, refresh_interval=refresh_interval)  # fmt: skip
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._conn_lock = threading.Lock()
        try:
            self._reader = connect(self.path, self.busy_timeout, init=True)
        except sqlite3.DatabaseError as exc:  # not a database, unreadable, locked for good
            raise LedgerError(f"{self.path}: cannot open the ledger: {exc}") from exc
        self._opened()

    def __repr__(self) -> str:
        """``Ledger('/path/ledger.sqlite3')``."""
        return f"Ledger({str(self.path)!r})"

    def holds(self) -> HoldStore:
        """A store of budget holds in this file, on a connection of its own (see budgets)."""
        return Reservations(self.path, busy_timeout=self.busy_timeout)

    def _open_evidence(self) -> EvidenceStore:
        return EvidenceStore(self.path, busy_timeout=self.busy_timeout)

    # ------------------------------------------------------------------ connections
    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The one read connection (callers hold the read lock; recovery the write lock)."""
        with self._conn_lock:
            if self._reader is None:
                self._reader = connect(self.path, self.busy_timeout)
            reader = self._reader
        yield reader

    def _commit(self, batch: list[tuple[int, LedgerRow]], writer: str, recovered: bool) -> int:
        if recovered:  # at open, before any writer thread: on the read connection
            with self._connection() as conn:
                return commit(conn, batch, writer, recovered=True)
        if self._writer is None:
            self._writer = connect(self.path, self.busy_timeout)
        return commit(self._writer, batch, writer)

    def _close_writer(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _close_readers(self) -> None:
        with self._conn_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _abandon_connections(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                _ABANDONED.append(conn)
        self._reader = None
        self._writer = None
        if self._evidence is not None:  # the parent's connection; the child opens its own
            _ABANDONED.append(self._evidence._conn)
