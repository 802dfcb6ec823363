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

import atexit
import logging
import math
import os
import sqlite3
import threading
import time as _time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import platformdirs

from tierwise.ledger import queries
from tierwise.ledger.evidence import EvidenceStore
from tierwise.ledger.journal import Journal, recover_journals
from tierwise.ledger.queries import Health, ModelStats, Performance
from tierwise.ledger.reservations import HoldStore, Reservations
from tierwise.ledger.rows import LedgerRow, journal_body
from tierwise.ledger.schema import LedgerError, commit, connect
from tierwise.ledger.totals import Tally, answered_tally, requests_tally, spent_tally

__all__ = [
    "LEDGER_ENV",
    "Ledger",
    "close_shared_ledgers",
    "default_ledger_path",
    "shared_ledger",
]

logger = logging.getLogger(__name__)

LEDGER_ENV: Final = "TIERWISE_LEDGER"
"""Environment variable that overrides the default ledger file."""

# Commits whose rows can no longer be needed by a cached total are older than
# 2 * refresh_interval + this; the rows are then dropped from memory.
_KEEP_MARGIN: Final = 1.0
_MAX_TALLIES: Final = 256
_RETRY_LOG_EVERY: Final = 20


def default_ledger_path() -> Path:
    """``$TIERWISE_LEDGER``, else ``ledger.sqlite3`` in the user data dir (per platformdirs)."""
    explicit = os.environ.get(LEDGER_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_data_dir("tierwise")) / "ledger.sqlite3"


_LIVE: weakref.WeakSet[Ledger] = weakref.WeakSet()
# Connections inherited over fork(): never used and never closed in the child.
_ABANDONED: list[sqlite3.Connection] = []


class Ledger:
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
        if flush_interval <= 0 or batch_size < 1 or refresh_interval < 0 or busy_timeout < 0:
            raise ValueError("flush_interval > 0, batch_size >= 1, refresh_interval >= 0, "
                             "busy_timeout >= 0 are required")  # fmt: skip
        self.path = Path(path).expanduser() if path is not None else default_ledger_path()
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.refresh_interval = refresh_interval
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._evidence: EvidenceStore | None = None
        self._closed = False
        self._reset_state()
        try:
            self._reader = self._connect(init=True)
        except sqlite3.DatabaseError as exc:  # not a database, unreadable, locked for good
            raise LedgerError(f"{self.path}: cannot open the ledger: {exc}") from exc
        recover_journals(self._journal.directory, self._writer_id, self._commit_recovered,
                         self.path)  # fmt: skip
        _LIVE.add(self)

    def _reset_state(self) -> None:
        """Fresh in-memory state: at construction, and in a forked child."""
        self._lock = threading.Lock()  # pending/own rows, sequence numbers; never held for I/O
        self._wake = threading.Condition(self._lock)  # -> writer thread
        self._done = threading.Condition(self._lock)  # -> flush() waiters
        self._write_lock = threading.Lock()  # the write connection; batches commit in order
        self._read_lock = threading.Lock()  # the read connection and the cached totals
        self._writer_id = uuid.uuid4().hex
        self._seq = 0  # last sequence number handed out
        self._committed = 0  # own rows up to this sequence number are in the database
        self._trimmed = 0  # own rows up to this one are no longer kept in memory
        self._pending: list[tuple[int, LedgerRow]] = []
        self._own: deque[tuple[int, LedgerRow]] = deque()
        self._commits: deque[tuple[float, int]] = deque()
        self._tallies: OrderedDict[tuple[Any, ...], Tally] = OrderedDict()
        self._pending_since = 0.0  # monotonic time the oldest pending row was recorded
        self._urgent = False
        self._closing = False
        self._close_deadline = math.inf
        self._thread: threading.Thread | None = None
        self._failures = 0
        # This writer's journal (see the module doc), opened by the first record().
        self._journal = Journal(self.path, self._writer_id)

    @property
    def evidence(self) -> EvidenceStore:
        """Quality evidence kept in the same file (:mod:`tierwise.ledger.evidence`)."""
        if self._evidence is None:
            self._evidence = EvidenceStore(self.path, busy_timeout=self.busy_timeout)
        return self._evidence

    def holds(self) -> HoldStore:
        """A store of budget holds in this file, on a connection of its own (see budgets)."""
        return Reservations(self.path, busy_timeout=self.busy_timeout)

    def __repr__(self) -> str:
        """``Ledger('/path/ledger.sqlite3')``."""
        return f"Ledger({str(self.path)!r})"

    def __enter__(self) -> Ledger:
        """The ledger itself; leaving the block closes it (committing every row)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Commit every recorded row and release the file."""
        self.close()

    # ------------------------------------------------------------------ connections
    def _connect(self, *, init: bool = False) -> sqlite3.Connection:
        return connect(self.path, self.busy_timeout, init=init)

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The read connection, held for one query (or one snapshot of several)."""
        with self._read_lock:
            yield self._read_conn()

    # ------------------------------------------------------------------ writing
    def record(self, row: LedgerRow, *, durable: bool = False) -> None:
        """Queue ``row`` for the background writer; its cost counts in queries at once.

        Args:
            row: The attempt.
            durable: Return only once the row (and every row before it) is committed,
                so that even a hard kill right after cannot lose it.
        """
        body = journal_body(row) if self._journal.enabled else None  # outside the lock
        sync = False
        with self._lock:
            if self._closed:
                sync = True
            elif self._thread is None and not self._start_writer():
                sync = True
            self._seq += 1
            item = (self._seq, row)
            self._own.append(item)
            pending = self._pending
            pending.append(item)
            if len(pending) == 1:
                self._pending_since = _time.monotonic()
                self._wake.notify()
            elif len(pending) >= self.batch_size:
                self._wake.notify()
            # Under the lock: lines stay in sequence order, and the writer cannot commit
            # this row (and empty the journal) before its line is written.
            if body is not None and not self._closed:
                self._journal.append(self._seq, body)
        if sync:
            self._write_pending()
            if self._closed:
                self._close_writer()
                self._finish_journal()
        elif durable:
            self.flush()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Commit every row recorded so far; True once they are durable, False on timeout."""
        deadline = math.inf if timeout is None else _time.monotonic() + timeout
        with self._lock:
            target = self._seq
            if self._committed >= target:
                return True
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._urgent = True
                self._wake.notify()
                while self._committed < target:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0 or not thread.is_alive():
                        break
                    self._done.wait(min(remaining, 1.0))
                if self._committed >= target:
                    return True
        # No writer thread (closed, or threads unavailable at shutdown): write here.
        while not self._write_pending() and _time.monotonic() < deadline:
            _time.sleep(0.05)
        with self._lock:
            return self._committed >= target

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self, timeout: float = 30.0) -> None:
        """Commit every recorded row, stop the writer and close the file. Idempotent.

        Rows recorded after closing are written synchronously, so a late ``record()``
        (another atexit hook, a straggling thread) is still never lost.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            self._close_deadline = _time.monotonic() + timeout
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if not self._write_pending():
            with self._lock:
                lost = len(self._pending)
            logger.error("ledger %s: %d row(s) could not be written before close; they stay "
                         "in the journal until this process exits", self.path, lost)
        self._close_writer()
        self._finish_journal()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        if self._evidence is not None:
            self._evidence.close()
            self._evidence = None
        _LIVE.discard(self)

    def _close_writer(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _start_writer(self) -> bool:
        """Start the writer thread (caller holds ``_lock``); False if threads are unavailable."""
        thread = threading.Thread(target=self._run, name="tierwise-ledger-writer", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        """The writer thread: commit pending rows in batches until closed."""
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return  # closing, nothing left
                # The window starts when the oldest pending row was recorded, so no row
                # waits longer than flush_interval (plus a commit) even behind a slow commit.
                batch_ends = self._pending_since + self.flush_interval
                while (
                    len(self._pending) < self.batch_size
                    and not self._urgent
                    and not self._closing
                ):
                    remaining = batch_ends - _time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
            if self._write_pending():
                continue
            with self._lock:
                if self._closing and _time.monotonic() >= self._close_deadline:
                    return  # close() reports what is left
            _time.sleep(min(0.05 * 2 ** min(self._failures, 5), 1.0))

    def _write_pending(self) -> bool:
        """Commit every pending row in one transaction; False if the database refused."""
        with self._write_lock:
            with self._lock:
                batch = self._pending
                self._pending = []
                self._urgent = False
            if not batch:
                return True
            try:
                if self._writer is None:
                    self._writer = self._connect()
                commit(self._writer, batch, self._writer_id)
            except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O
                self._failures += 1
                if self._failures == 1 or self._failures % _RETRY_LOG_EVERY == 0:
                    logger.warning("ledger %s: commit of %d row(s) failed (%s); retrying",
                                   self.path, len(batch), exc)  # fmt: skip
                with self._lock:
                    if not self._pending:
                        self._pending_since = _time.monotonic()
                    self._pending[:0] = batch
                return False
            self._failures = 0
            with self._lock:
                self._committed = batch[-1][0]
                self._journal.trim(self._committed >= self._seq, self._pending)
                self._forget_committed(_time.monotonic())
                self._done.notify_all()
            return True

    def _forget_committed(self, now: float) -> None:
        """Drop own rows no cached total can still need (caller holds ``_lock``)."""
        self._commits.append((now, self._committed))
        keep = 2 * self.refresh_interval + _KEEP_MARGIN
        horizon = self._trimmed
        while self._commits and self._commits[0][0] < now - keep:
            horizon = self._commits.popleft()[1]
        own = self._own
        while own and own[0][0] <= horizon:
            own.popleft()
        self._trimmed = horizon

    # ------------------------------------------------------------------ journal
    def _finish_journal(self) -> None:
        """Once closed with every row committed: delete the journal and release it."""
        with self._lock:
            if self._committed < self._seq:
                return  # uncommitted rows: locked until exit, then recovered by the next opener
            fd = self._journal.detach()
        if fd is not None:
            self._journal.remove(fd)

    def _commit_recovered(self, rows: list[tuple[int, LedgerRow]], writer: str) -> int:
        return commit(self._read_conn(), rows, writer, recovered=True)

    # ------------------------------------------------------------------ totals
    def spent(
        self, *, since: float, provider: str | None = None, run_id: str | None = None
    ) -> float:
        """USD recorded since ``since`` by every process, optionally for one provider or run.

        This process's rows count at once (even before they are committed); other
        processes' within ``flush_interval + refresh_interval``. Each distinct ``since``
        is its own cached total, so pass a fixed boundary (:func:`~tierwise.ledger.rows.
        day_start`, ``0.0`` for a run), not a sliding ``now - window``.
        """
        provider = None if provider is None else str(provider)
        key = ("spent", since, provider, run_id)
        return self._total(key, lambda: spent_tally(since, provider, run_id))

    def requests(self, model: str, *, since: float, sent_only: bool = True) -> int:
        """Attempts of catalog model ``model`` since ``since``, by every process.

        With ``sent_only`` (the default) only requests that reached the provider count —
        what a provider's requests-per-day quota counts. Own rows count at once.
        """
        model = str(model)
        key = ("requests", since, model, sent_only)
        return round(self._total(key, lambda: requests_tally(model, since, sent_only)))

    def answered(self, *, since: float, policy: str | None = None) -> int:
        """Calls answered since ``since`` (under policy mode ``policy``), by every process.

        One row per answered call: the attempt that produced the answer. Own rows count
        at once. The learned mode's budget calibration reads the day's call volume here.
        """
        key = ("answered", since, policy)
        return round(self._total(key, lambda: answered_tally(since, policy)))

    def _total(self, key: tuple[Any, ...], make: Callable[[], Tally]) -> float:
        """Committed total (cached, refreshed incrementally) plus own uncommitted rows."""
        with self._read_lock:
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = make()
                if len(self._tallies) > _MAX_TALLIES:
                    self._tallies.popitem(last=False)
            else:
                self._tallies.move_to_end(key)
            if _time.monotonic() - tally.fetched > self.refresh_interval:
                tally.fetch(self._read_conn(), self._writer_id)
            while True:
                with self._lock:
                    if tally.delta_seq >= self._trimmed:
                        return tally.add_own(reversed(self._own), self._seq)
                # Rows this total still needed were dropped from memory (a reader stalled
                # for longer than the keep window): they are committed, so read again.
                tally.fetch(self._read_conn(), self._writer_id)

    # ------------------------------------------------------------------ monitoring
    def rows(
        self,
        *,
        since: float | None = None,
        operation: str | None = None,
        tier: str | None = None,
        limit: int | None = None,
    ) -> list[LedgerRow]:
        """:func:`tierwise.ledger.queries.rows`; this process's pending rows committed first."""
        self.flush()
        with self._reading() as conn:
            return queries.rows(conn, since=since, operation=operation, tier=tier, limit=limit)

    def stats(
        self,
        *,
        since: float | None = None,
        operation: str | None = None,
        tier: str | None = None,
    ) -> list[ModelStats]:
        """:func:`tierwise.ledger.queries.stats`; this process's pending rows committed first."""
        self.flush()
        with self._reading() as conn:
            return queries.stats(conn, since=since, operation=operation, tier=tier)

    def health_window(self, operation: str, model: str, last_n: int = 50) -> Health:
        """:func:`tierwise.ledger.queries.health_window` (committed rows)."""
        with self._reading() as conn:
            return queries.health_window(conn, operation, model, last_n)

    def health(
        self, *, last_n: int = 50, since: float | None = None, operation: str | None = None
    ) -> dict[tuple[str, str], Health]:
        """:func:`tierwise.ledger.queries.health` (committed rows)."""
        with self._reading() as conn:
            return queries.health(conn, last_n=last_n, since=since, operation=operation)

    def performance(
        self,
        pairs: Iterable[tuple[str, str]] | None = None,
        *,
        last_n: int = 20,
        since: float | None = None,
        operation: str | None = None,
    ) -> dict[tuple[str, str], Performance]:
        """:func:`tierwise.ledger.queries.performance` (committed rows)."""
        with self._reading() as conn:
            return queries.performance(
                conn, pairs, last_n=last_n, since=since, operation=operation
            )

    # ------------------------------------------------------------------ fork
    def _after_fork_in_child(self) -> None:
        """Forget the parent's rows, thread, connections and journal; the parent writes its rows.

        The child gets a writer id of its own, and its own journal at its first record().
        """
        for conn in (self._reader, self._writer):
            if conn is not None:
                _ABANDONED.append(conn)
        self._reader = None
        self._writer = None
        if self._evidence is not None:  # the parent's connection; the child opens its own
            _ABANDONED.append(self._evidence._conn)
        self._evidence = None
        self._journal.forget()  # the lock belongs to the parent's open file and stays held
        self._reset_state()


_SHARED: dict[Path, Ledger] = {}
_SHARED_LOCK = threading.Lock()


def shared_ledger(path: str | Path | None = None) -> Ledger:
    """The process's one open :class:`Ledger` on ``path`` (default: :func:`default_ledger_path`).

    Routers built without an explicit ledger share it, so a process has one writer
    thread and one connection per ledger file however many routers it builds.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite3"
        >>> shared_ledger(path) is shared_ledger(path)
        True
        >>> close_shared_ledgers()
    """
    key = (Path(path).expanduser() if path is not None else default_ledger_path()).resolve()
    with _SHARED_LOCK:
        ledger = _SHARED.get(key)
        if ledger is None or ledger.closed:
            ledger = _SHARED[key] = Ledger(key)
        return ledger


def close_shared_ledgers() -> None:
    """Close every ledger :func:`shared_ledger` opened (their rows are committed first)."""
    with _SHARED_LOCK:
        ledgers = list(_SHARED.values())
        _SHARED.clear()
    for ledger in ledgers:
        ledger.close()


def _close_all() -> None:
    """Atexit: commit every live ledger's rows (daemon writer threads still run here)."""
    for ledger in list(_LIVE):
        try:
            ledger.close()
        except Exception:  # pragma: no cover - nothing useful left to do at exit
            logger.exception("ledger %s: close at exit failed", ledger.path)


def _after_fork_in_child() -> None:
    for ledger in list(_LIVE):
        ledger._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
