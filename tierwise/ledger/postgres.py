"""The ledger in PostgreSQL: for processes on several machines, or more than SQLite serves.

:class:`PostgresLedger` is the SQLite :class:`~tierwise.ledger.store.Ledger` with another
database under it (:class:`~tierwise.ledger.batching.BatchedLedger` holds everything
else): rows are batched off the call path by a writer thread, own rows count in totals at
once, other processes' within ``flush_interval + refresh_interval``, and ``tierwise
stats / budget / report / recommend / ab report`` read the same queries. Quality evidence
and budget holds (:class:`PostgresReservations`) live in the same database.

Why it is built this way (the SQL and the pool: :mod:`tierwise.ledger.pg`):

* **Ids in commit order.** Totals are refreshed by reading rows with ``id`` above the
  last one seen, which is exact only if no row with a lower id commits later. A
  sequence alone does not promise that under concurrent transactions, so every batch
  takes ``LOCK TABLE attempts IN SHARE ROW EXCLUSIVE MODE`` first: batches of all
  processes commit one after another (as SQLite's write lock makes them), while reads
  never wait.
* **Holds under one lock.** A hold is taken in a transaction that first takes a
  transaction-level advisory lock of the schema, then reads spend and holds and inserts
  — so two processes never both take the last dollar; releasing needs no lock.
* **Durability.** A recorded row is in the writer's local journal until committed (as
  with SQLite), so a killed process's rows are imported by the next process on that
  machine that opens the same database. Power loss on the server is PostgreSQL's
  ``synchronous_commit``.
* **PostgreSQL down.** Opening fails with :class:`~tierwise.ledger.schema.LedgerUnavailable`;
  later, commits are retried in the background (rows wait in memory and in the journal),
  reads raise ``LedgerUnavailable`` and budget holds :class:`~tierwise.ledger.
  reservations.HoldsUnavailable`, so paid calls under a cap are refused (fail closed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time as _time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Final

import platformdirs
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tierwise.catalog.state import redact_url
from tierwise.ledger.batching import BatchedLedger
from tierwise.ledger.evidence import EvidenceStore
from tierwise.ledger.pg import PgConnection, open_pool
from tierwise.ledger.queries import WriteConnection
from tierwise.ledger.reservations import (
    DEFAULT_TTL,
    INSERT_HOLD,
    HoldId,
    HoldStore,
    Reservations,
)
from tierwise.ledger.rows import COLUMNS, SELECT_ROW, LedgerRow, to_params
from tierwise.ledger.schema import LedgerUnavailable
from tierwise.ledger.store import Ledger

__all__ = ["PostgresLedger", "PostgresReservations", "journal_anchor"]

logger = logging.getLogger(__name__)

_INSERT: Final = f"INSERT INTO attempts ({SELECT_ROW}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
# COPY is the bulk path (one statement per batch); _INSERT finds a row COPY refused.
_COPY: Final = f"COPY attempts ({SELECT_ROW}) FROM STDIN"
_UPSERT_WRITER: Final = (
    "INSERT INTO writers (writer, seq, pid, updated) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (writer) DO UPDATE SET seq = greatest(writers.seq, excluded.seq), "
    "pid = excluded.pid, updated = excluded.updated"
)
# Pooled connections kept by processes that forked: never used or closed in the child.
_ABANDONED: list[ConnectionPool] = []


def journal_anchor(url: str) -> Path:
    """The local path this database's writers keep their journals beside (per URL)."""
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]
    return Path(platformdirs.user_data_dir("tierwise")) / "postgres" / digest


class PostgresLedger(Ledger):
    """Every attempt's tokens, cost, latency and outcome, in a PostgreSQL database.

    A :class:`~tierwise.ledger.store.Ledger` (every place typed so takes it) whose
    database hooks are PostgreSQL's; :func:`~tierwise.ledger.store.open_ledger` picks it
    for a ``postgresql://`` URL.

    Args:
        url: ``postgresql://user@host:port/db`` (``?options=-csearch_path%3Dschema`` for
            a schema of its own).
        flush_interval: Longest time (s) a recorded row waits before its batch commits.
        batch_size: A batch is committed as soon as it holds this many rows.
        refresh_interval: How long (s) a cached cross-process total is reused.
        busy_timeout: Accepted for the same signature; PostgreSQL's reads never wait.
        pool_size: Connections this process keeps at most (writer, reads, evidence, holds).

    Raises:
        LedgerUnavailable: PostgreSQL does not answer or refuses the connection.
    """

    TRANSIENT: ClassVar[tuple[type[Exception], ...]] = (
        psycopg.OperationalError, PoolTimeout, LedgerUnavailable,
    )  # fmt: skip

    def __init__(
        self,
        url: str,
        *,
        flush_interval: float = 0.1,
        batch_size: int = 200,
        refresh_interval: float = 0.5,
        busy_timeout: float = 10.0,
        pool_size: int = 8,
    ) -> None:
        """Connect, create the tables if needed, import dead local writers' journals."""
        BatchedLedger.__init__(self, journal_anchor(url), f"PostgreSQL {redact_url(url)}",
                               flush_interval=flush_interval, batch_size=batch_size,
                               refresh_interval=refresh_interval)  # fmt: skip
        self.url = url
        self.busy_timeout = busy_timeout
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = open_pool(url, max_size=pool_size)
        self._pg_reader = PgConnection(self._pool, url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._opened()

    def __repr__(self) -> str:
        """``PostgresLedger('postgresql://user:***@host/db')``."""
        return f"PostgresLedger({redact_url(self.url)!r})"

    def _connected(self) -> ConnectionPool:
        """The pool (opened again for a row recorded after :meth:`close`)."""
        if self._pool is None:
            self._pool = open_pool(self.url, max_size=self.pool_size)
            self._pg_reader = PgConnection(self._pool, self.url)
        return self._pool

    def holds(self) -> HoldStore:
        """Budget holds in this database (see :class:`PostgresReservations`)."""
        return PostgresReservations(self)

    def _open_evidence(self) -> EvidenceStore:
        return EvidenceStore(self.label, conn=PgConnection(self._connected(), self.url))

    @contextmanager
    def _connection(self) -> Iterator[PgConnection]:  # type: ignore[override]
        self._connected()
        yield self._pg_reader

    def _commit(self, batch: list[tuple[int, LedgerRow]], writer: str, recovered: bool) -> int:
        with self._connected().connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE attempts IN SHARE ROW EXCLUSIVE MODE")
            done = 0
            if recovered:
                found = conn.execute("SELECT seq FROM writers WHERE writer = %s", (writer,))
                row = found.fetchone()
                done = 0 if row is None else int(row[0])
            fresh = [(seq, row) for seq, row in batch if seq > done]
            if not fresh:
                return 0
            _insert(conn, fresh)
            conn.execute(_UPSERT_WRITER, (writer, batch[-1][0], os.getpid(), _time.time()))
        return len(fresh)

    def _close_writer(self) -> None:
        """Close the pool once :meth:`close` began (the writer is the last to need it)."""
        if self.closed:
            with self._write_lock:
                self._close_pool()

    def _close_readers(self) -> None:
        self._close_pool()

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=5)

    def _abandon_connections(self) -> None:
        if self._pool is not None:
            _ABANDONED.append(self._pool)
        self._pool = None


def _insert(conn: psycopg.Connection[Any], batch: list[tuple[int, LedgerRow]]) -> None:
    """Insert the rows; a row PostgreSQL refuses (a NUL in a text) is dropped and logged.

    Without dropping it, the batch would be retried forever and every later row with it.
    """
    params: list[tuple[Any, ...]] = []
    for seq, row in batch:
        try:
            params.append(to_params(row))
        except (TypeError, ValueError, OverflowError) as exc:
            logger.error("ledger: dropping unstorable row #%d (%s): %r", seq, exc, row)
    try:
        with conn.transaction(), conn.cursor().copy(_COPY) as copy:
            for one in params:
                copy.write_row(one)
    except psycopg.OperationalError:
        raise
    except psycopg.DatabaseError:
        for one in params:  # find and drop the offending row(s)
            try:
                with conn.transaction():
                    conn.execute(_INSERT, one)
            except psycopg.OperationalError:
                raise
            except psycopg.DatabaseError as exc:
                logger.error("ledger: dropping unstorable row (%s): %r", exc, one)


class PostgresReservations(Reservations):
    """:class:`~tierwise.ledger.reservations.Reservations` in a :class:`PostgresLedger`'s database.

    Taking a hold is one transaction under an advisory lock of the schema (see the
    module doc); expiry is the same as in a SQLite file: this host's dead processes at
    once, others' after ``ttl``.
    """

    def __init__(self, ledger: PostgresLedger, *, ttl: float = DEFAULT_TTL) -> None:
        """Holds in ``ledger``'s database, on connections from its pool."""
        super().__init__(ledger.path, ttl=ttl)
        self.path = Path(ledger.label)  # errors name the database, without a password
        self._ledger = ledger

    def _connection(self) -> WriteConnection:
        return PgConnection(self._ledger._connected(), self._ledger.url)

    def _begin(self, conn: WriteConnection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # READ COMMITTED: the reads see the lock's last holder
        try:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.reservations'))"
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _insert(self, conn: WriteConnection, values: tuple[object, ...]) -> HoldId:
        found = conn.execute(f"{INSERT_HOLD} RETURNING id", values).fetchone()
        return int(found[0])
