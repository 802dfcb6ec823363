"""Money held for paid calls in flight, in the ledger file, so every process sharing it sees it.

A cost cap holds across processes only if a call's worst case is counted *before* the call
and by everyone: :class:`Reservations` keeps one row per call in flight in the table
``reservations`` beside ``attempts``. Taking one is one ``BEGIN IMMEDIATE`` transaction —
the database's write lock — that reads what is spent (committed attempts) and held (other
reservations), lets the caller decide what fits, and inserts the hold; so two processes
can never both take the last dollar. Releasing deletes the row once the call's real cost
is committed (the caller flushes the ledger first: for a moment both count, never
neither).

A process that dies with holds in flight leaves rows behind; they stop counting when their
process is gone (same host, pid no longer alive) or, from another host, when they expire
(``ttl`` after they were taken). The table is created on first use, like the evidence
tables, so an older ledger needs no migration.

:class:`HoldStore` is what :class:`~tierwise.guards.budget.BudgetGuard` needs from any
place holds live (this file, PostgreSQL, Redis): every implementation takes a hold in one
atomic step against what every process spent and holds, and raises
:class:`HoldsUnavailable` when its store cannot answer, so budgets fail closed.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final, Protocol, TypeAlias, TypeVar, runtime_checkable

from tierwise.ledger.queries import WriteConnection
from tierwise.ledger.schema import LedgerUnavailable, connect, retry_busy

__all__ = [
    "DEFAULT_TTL",
    "Decide",
    "INSERT_HOLD",
    "Held",
    "HoldId",
    "HoldStore",
    "HoldsUnavailable",
    "Reservations",
    "SpendCounter",
]

_T = TypeVar("_T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS reservations (
        id INTEGER PRIMARY KEY,
        amount REAL NOT NULL,
        provider TEXT NOT NULL,
        run_id TEXT,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        expires REAL NOT NULL
    )""",
)
#: A hold's row (parameters: amount, provider, run_id, pid, host, expires).
INSERT_HOLD: Final = (
    "INSERT INTO reservations (amount, provider, run_id, pid, host, expires) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
#: Seconds a hold counts at most, for holds of processes on other hosts that died.
DEFAULT_TTL: Final = 900.0

HoldId = int | str
"""A hold's handle in its store (a row id, a key)."""


class HoldsUnavailable(RuntimeError):
    """The store of holds cannot be read or written now; paid calls under a cap are refused."""


@dataclass(frozen=True, slots=True)
class Held:
    """What is spent (committed attempts) plus held (reservations) for one cap's scope."""

    spent: float
    held: float

    @property
    def used(self) -> float:
        """Spent and held together: what a new hold must fit beside."""
        return self.spent + self.held


Decide: TypeAlias = Callable[[Callable[..., Held]], tuple[_T, float]]
"""What :meth:`HoldStore.hold` runs atomically: given ``read``, a verdict and the amount to hold."""


class HoldStore(Protocol):
    """Holds of calls in flight, shared by every process routing on the same money."""

    def hold(
        self,
        decide: Decide[_T],
        *,
        provider: str,
        run_id: str | None,
    ) -> tuple[_T, HoldId | None]:
        """Atomically: ``decide`` from what is spent and held, then hold what it returns.

        ``decide`` gets ``read(since, provider=None, run_id=None, cap=None) -> Held`` and
        returns ``(verdict, amount)``; no other process's hold can be taken between the
        reads and this one, or — a store that decides optimistically (Redis) — the hold
        is taken only if the amount still fits under every ``cap`` read (the limit the
        caller compares that scope against; a lock-based store may ignore it). Zero holds
        nothing (``None`` id). Raises :class:`HoldsUnavailable`.
        """
        ...

    def release(self, hold_id: HoldId) -> None:
        """Drop a hold (its call's cost is committed). Raises :class:`HoldsUnavailable`."""
        ...

    def close(self) -> None:
        """Release connections; holds stay until released or expired."""
        ...


@runtime_checkable
class SpendCounter(Protocol):
    """A hold store that keeps its own spend counters instead of reading the ledger's rows.

    Every paid call's real cost must reach it — held or not — through :meth:`settle`
    (:mod:`tierwise.guards.redis_budget`: reading the ledger and holding in Redis would
    not be one atomic step).
    """

    def settle(
        self,
        hold_id: HoldId | None,
        *,
        cost: float,
        provider: str,
        run_id: str | None,
        day: float,
    ) -> None:
        """Drop hold ``hold_id`` (if any) and count ``cost`` USD as spent on ``day``."""
        ...


class Reservations:
    """The ``reservations`` table of one ledger file, on a connection of its own.

    Args:
        path: The ledger file.
        busy_timeout: Seconds to wait for another process's write lock.
        ttl: Seconds a hold counts at most (see the module doc).
    """

    def __init__(self, path: Path, *, busy_timeout: float = 10.0, ttl: float = DEFAULT_TTL):
        """Open a connection to ``path`` (created by the ledger) and the table."""
        self.path = path
        self.busy_timeout = busy_timeout
        self.ttl = ttl
        self._host = socket.gethostname()
        self._lock = threading.Lock()  # one transaction at a time on the connection
        self._conn: WriteConnection | None = None
        self._pid = -1

    def _connection(self) -> WriteConnection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own
            self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _open(self) -> WriteConnection:
        """A connection to the ledger database, the table created."""
        conn = connect(self.path, self.busy_timeout)
        for statement in _SCHEMA:
            retry_busy(partial(conn.execute, statement), self.busy_timeout)
        return conn

    def _begin(self, conn: WriteConnection) -> None:
        """Start the transaction no other process's hold can interleave with."""
        conn.execute("BEGIN IMMEDIATE")

    def _insert(self, conn: WriteConnection, values: tuple[object, ...]) -> HoldId:
        """Insert a hold's row; its id."""
        cursor = conn.execute(INSERT_HOLD, values)
        hold_id: int = getattr(cursor, "lastrowid")  # noqa: B009 - sqlite3's, not the protocol's
        return hold_id

    def hold(
        self,
        decide: Decide[_T],
        *,
        provider: str,
        run_id: str | None,
    ) -> tuple[_T, HoldId | None]:
        """:meth:`HoldStore.hold` in one ``BEGIN IMMEDIATE`` transaction.

        Dead processes' holds are dropped first.
        """
        with self._lock:
            try:
                return self._hold(decide, provider, run_id)
            except (sqlite3.Error, LedgerUnavailable) as exc:
                raise HoldsUnavailable(f"{self.path}: {exc}") from exc

    def _hold(
        self,
        decide: Decide[_T],
        provider: str,
        run_id: str | None,
    ) -> tuple[_T, HoldId | None]:
        conn = self._connection()
        self._begin(conn)
        try:
            now = _time.time()
            self._expire(conn, now)

            def read(
                since: float,
                provider: str | None = None,
                run_id: str | None = None,
                cap: float | None = None,  # the transaction holds the lock: not re-checked
            ) -> Held:
                where, params = "time >= ?", list[object]([since])
                hwhere, hparams = "1 = 1", list[object]()
                for column, value in (("provider", provider), ("run_id", run_id)):
                    if value is not None:
                        where += f" AND {column} = ?"
                        hwhere += f" AND {column} = ?"
                        params.append(value)
                        hparams.append(value)
                spent = conn.execute(
                    f"SELECT total(cost) FROM attempts WHERE {where}", params
                ).fetchone()[0]
                held = conn.execute(
                    f"SELECT total(amount) FROM reservations WHERE {hwhere}", hparams
                ).fetchone()[0]
                return Held(float(spent), float(held))

            verdict, amount = decide(read)
            hold_id: HoldId | None = None
            if amount > 0:
                hold_id = self._insert(
                    conn,
                    (float(amount), provider, run_id, os.getpid(), self._host, now + self.ttl),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return verdict, hold_id

    def release(self, hold_id: HoldId) -> None:
        """Drop hold ``hold_id`` (its call's cost must be committed by now)."""
        with self._lock:
            try:
                conn = self._connection()
                retry_busy(
                    lambda: conn.execute("DELETE FROM reservations WHERE id = ?", (hold_id,)),
                    self.busy_timeout,
                )
            except (sqlite3.Error, LedgerUnavailable) as exc:
                raise HoldsUnavailable(f"{self.path}: {exc}") from exc

    def _expire(self, conn: WriteConnection, now: float) -> None:
        """Drop holds past their expiry, and this host's holds whose process is gone."""
        conn.execute("DELETE FROM reservations WHERE expires < ?", (now,))
        pids = conn.execute(
            "SELECT DISTINCT pid FROM reservations WHERE host = ? AND pid != ?",
            (self._host, os.getpid()),
        ).fetchall()
        dead = [pid for (pid,) in pids if not _alive(pid)]
        if dead:
            conn.executemany(
                "DELETE FROM reservations WHERE host = ? AND pid = ?",
                [(self._host, pid) for pid in dead],
            )

    def close(self) -> None:
        """Close the connection (holds stay until released or expired)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as gone soon after)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
