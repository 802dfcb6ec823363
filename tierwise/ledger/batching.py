"""What every ledger does whatever its database: batch rows off the call path, count own rows.

:class:`BatchedLedger` is the ledger minus its database: :meth:`~BatchedLedger.record`
appends to memory and to the writer's journal, a background thread commits batches, and
the totals budgets read add this process's not-yet-committed rows to cached committed
totals (:mod:`tierwise.ledger.totals`). The SQLite :class:`~tierwise.ledger.store.Ledger`
and the PostgreSQL :class:`~tierwise.ledger.postgres.PostgresLedger` only say how a batch
is committed and where queries run, so both keep the same guarantees (see
:mod:`tierwise.ledger.store` for them).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time as _time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Final, Self

from tierwise.ledger import queries
from tierwise.ledger.evidence import EvidenceStore
from tierwise.ledger.journal import Journal, recover_journals
from tierwise.ledger.queries import Connection, Health, ModelStats, Performance
from tierwise.ledger.reservations import HoldStore
from tierwise.ledger.rows import LedgerRow, journal_body
from tierwise.ledger.totals import Tally, answered_tally, requests_tally, spent_tally

__all__ = ["BatchedLedger"]

logger = logging.getLogger(__name__)

# Commits whose rows can no longer be needed by a cached total are older than
# 2 * refresh_interval + this; the rows are then dropped from memory.
_KEEP_MARGIN: Final = 1.0
_MAX_TALLIES: Final = 256
_RETRY_LOG_EVERY: Final = 20

_LIVE: weakref.WeakSet[BatchedLedger] = weakref.WeakSet()


class BatchedLedger(ABC):
    """Every attempt's tokens, cost, latency and outcome, shared by processes (see the module).

    A subclass opens its database, then calls :meth:`_opened`; it implements the commit of
    a batch, the connection queries run on, and closing.

    Args:
        anchor: The local file the writers' journals sit beside.
        label: How logs name this ledger (no password).
        flush_interval: Longest time (s) a recorded row waits in memory before its batch
            is committed. Bounds what a hard kill can lose without a journal.
        batch_size: A batch is committed as soon as it holds this many rows.
        refresh_interval: How long (s) a cached cross-process total is reused before the
            rows appended since are read. 0 reads the database on every query.
    """

    #: Errors of a commit worth retrying (busy, locked, unreachable), not a bad row.
    TRANSIENT: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(
        self, anchor: Path, label: str, *, flush_interval: float, batch_size: int,
        refresh_interval: float,
    ) -> None:  # fmt: skip
        """Check the intervals; the subclass opens its database and calls :meth:`_opened`."""
        if flush_interval <= 0 or batch_size < 1 or refresh_interval < 0:
            raise ValueError("flush_interval > 0, batch_size >= 1, refresh_interval >= 0 "
                             "are required")  # fmt: skip
        self.path = anchor
        self.label = label
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.refresh_interval = refresh_interval
        self._evidence: EvidenceStore | None = None
        self._closed = False
        self._reset_state()

    def _opened(self) -> None:
        """The database answers: import dead writers' journals, commit at exit."""
        recover_journals(self._journal.directory, self._writer_id,
                         self._commit_recovered, self.label)  # fmt: skip
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

    # ------------------------------------------------------------------ the database
    @abstractmethod
    def _commit(self, batch: list[tuple[int, LedgerRow]], writer: str, recovered: bool) -> int:
        """Commit ``batch`` and ``writer``'s sequence number atomically (caller: write lock).

        ``recovered``: rows from a dead writer's journal; skip those it had committed.
        Returns the rows the batch brought. Raises one of :attr:`TRANSIENT` to be retried.
        """

    @abstractmethod
    def _connection(self) -> AbstractContextManager[Connection]:
        """A connection for one query or one snapshot (the caller holds the read lock)."""

    @abstractmethod
    def _close_writer(self) -> None:
        """Release what :meth:`_commit` holds (also after a late synchronous write)."""

    @abstractmethod
    def _close_readers(self) -> None:
        """Release every other connection, at :meth:`close`."""

    @abstractmethod
    def _abandon_connections(self) -> None:
        """In a forked child: drop (never close) the parent's connections."""

    @abstractmethod
    def _open_evidence(self) -> EvidenceStore:
        """The quality evidence store in the same database."""

    @abstractmethod
    def holds(self) -> HoldStore:
        """Budget holds in the same database, on a connection of their own."""

    @property
    def evidence(self) -> EvidenceStore:
        """Quality evidence kept in the same database (:mod:`tierwise.ledger.evidence`)."""
        if self._evidence is None:
            self._evidence = self._open_evidence()
        return self._evidence

    def __enter__(self) -> Self:
        """The ledger itself; leaving the block closes it (committing every row)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Commit every recorded row and release the database."""
        self.close()

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
        """Commit every recorded row, stop the writer and close the database. Idempotent.

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
            logger.error(
                "ledger %s: %d row(s) could not be written before close; they stay "
                "in the journal until this process exits",
                self.label,
                lost,
            )
        self._close_writer()
        self._finish_journal()
        with self._read_lock:
            self._close_readers()
        if self._evidence is not None:
            self._evidence.close()
            self._evidence = None
        _LIVE.discard(self)

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
                    len(self._pending) < self.batch_size and not self._urgent and not self._closing
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
                self._commit(batch, self._writer_id, False)
            except self.TRANSIENT as exc:  # locked, busy, unreachable, disk full, I/O
                self._failures += 1
                if self._failures == 1 or self._failures % _RETRY_LOG_EVERY == 0:
                    logger.warning("ledger %s: commit of %d row(s) failed (%s); retrying",
                                   self.label, len(batch), exc)  # fmt: skip
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
        with self._write_lock:
            return self._commit(rows, writer, True)

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
                with self._connection() as conn:
                    tally.fetch(conn, self._writer_id)
            while True:
                with self._lock:
                    if tally.delta_seq >= self._trimmed:
                        return tally.add_own(reversed(self._own), self._seq)
                # Rows this total still needed were dropped from memory (a reader stalled
                # for longer than the keep window): they are committed, so read again.
                with self._connection() as conn:
                    tally.fetch(conn, self._writer_id)

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
        with self._read_lock, self._connection() as conn:
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
        with self._read_lock, self._connection() as conn:
            return queries.stats(conn, since=since, operation=operation, tier=tier)

    def health_window(self, operation: str, model: str, last_n: int = 50) -> Health:
        """:func:`tierwise.ledger.queries.health_window` (committed rows)."""
        with self._read_lock, self._connection() as conn:
            return queries.health_window(conn, operation, model, last_n)

    def health(
        self, *, last_n: int = 50, since: float | None = None, operation: str | None = None
    ) -> dict[tuple[str, str], Health]:
        """:func:`tierwise.ledger.queries.health` (committed rows)."""
        with self._read_lock, self._connection() as conn:
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
        with self._read_lock, self._connection() as conn:
            return queries.performance(conn, pairs, last_n=last_n, since=since, operation=operation)

    # ------------------------------------------------------------------ fork
    def _after_fork_in_child(self) -> None:
        """Forget the parent's rows, thread, connections and journal; the parent writes its rows.

        The child gets a writer id of its own, and its own journal at its first record().
        """
        self._abandon_connections()
        self._evidence = None
        self._journal.forget()  # the lock belongs to the parent's open file and stays held
        self._reset_state()


def _close_all() -> None:
    """Atexit: commit every live ledger's rows (daemon writer threads still run here)."""
    for ledger in list(_LIVE):
        try:
            ledger.close()
        except Exception:  # pragma: no cover - nothing useful left to do at exit
            logger.exception("ledger %s: close at exit failed", ledger.label)


def _after_fork_in_child() -> None:
    for ledger in list(_LIVE):
        ledger._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
