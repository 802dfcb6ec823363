"""Cross-process totals the guards read on every call: spend, requests sent, calls answered.

A total is cached per query and kept current incrementally: refreshing it scans only
rows appended since the previous read (``id >`` the last id seen), and the ledger adds
its own not-yet-committed rows from memory. Every batch commits, in the same
transaction, the sequence number of the last row it holds (table ``writers``), and a
total is read in one statement together with that number, so each own row is counted
exactly once — from the database or from memory, never both.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Callable, Iterable
from typing import Any

from tierwise.ledger.queries import Connection
from tierwise.ledger.rows import OK, LedgerRow

__all__ = ["Tally", "answered_tally", "requests_tally", "spent_tally"]


class Tally:
    """A cached total (spend or request count) for one query, kept current incrementally.

    ``db`` sums committed rows with ``id <= last_id``; in that snapshot this ledger's own
    rows were committed up to sequence number ``snap``. ``delta`` adds own rows with
    ``snap < seq <= delta_seq`` from memory.
    """

    __slots__ = (
        "delta", "delta_seq", "db", "fetched", "full_sql", "inc_sql", "last_id", "match",
        "params",
    )  # fmt: skip

    def __init__(
        self, expr: str, where: str, params: tuple[Any, ...], match: Callable[[LedgerRow], float]
    ) -> None:
        """The total of ``expr`` over rows matching ``where`` (SQL) and ``match`` (memory)."""
        tail = "(SELECT max(id) FROM attempts), (SELECT seq FROM writers WHERE writer = ?)"
        self.full_sql = f"SELECT (SELECT total({expr}) FROM attempts WHERE {where}), {tail}"
        # NOT INDEXED: scan only the new rows by rowid, whatever indexes the filter could use.
        self.inc_sql = (
            f"SELECT (SELECT total({expr}) FROM attempts NOT INDEXED "
            f"WHERE id > ? AND {where}), {tail}"
        )
        self.params = params
        self.match = match
        self.db = 0.0
        self.last_id: int | None = None
        self.fetched = -math.inf
        self.delta = 0.0
        self.delta_seq = 0

    def fetch(self, conn: Connection, writer: str) -> None:
        """Read the rows committed since the last fetch; own rows restart from that snapshot."""
        now = _time.monotonic()
        if self.last_id is None:
            total, last_id, snap = conn.execute(
                self.full_sql, (*self.params, writer)
            ).fetchone()
            self.db = float(total)
        else:
            total, last_id, snap = conn.execute(
                self.inc_sql, (self.last_id, *self.params, writer)
            ).fetchone()
            self.db += float(total)
        if last_id is not None:
            self.last_id = int(last_id)
        elif self.last_id is None:
            self.last_id = 0
        self.delta = 0.0
        self.delta_seq = int(snap or 0)
        self.fetched = now

    def add_own(self, newest_first: Iterable[tuple[int, LedgerRow]], newest: int) -> float:
        """Add own rows after ``delta_seq`` (``newest_first``: own rows, newest first)."""
        if newest > self.delta_seq:
            delta = 0.0
            match, stop = self.match, self.delta_seq
            for seq, row in newest_first:
                if seq <= stop:
                    break
                delta += match(row)
            self.delta += delta
            self.delta_seq = newest
        return self.db + self.delta


def spent_tally(since: float, provider: str | None, run_id: str | None) -> Tally:
    """USD recorded since ``since``, optionally of one provider or one run."""
    where = "time >= ?"
    params: list[Any] = [float(since)]
    if provider is not None:
        where += " AND provider = ?"
        params.append(provider)
    if run_id is not None:
        where += " AND run_id = ?"
        params.append(run_id)

    def match(r: LedgerRow) -> float:
        return r.cost if (
            r.time >= since
            and (provider is None or r.provider == provider)
            and (run_id is None or r.run_id == run_id)
        ) else 0.0  # fmt: skip

    return Tally("cost", where, tuple(params), match)


def requests_tally(model: str, since: float, sent_only: bool) -> Tally:
    """Attempts of ``model`` since ``since`` (only those sent, with ``sent_only``)."""
    where = "model = ? AND time >= ?" + (" AND sent = 1" if sent_only else "")

    def match(r: LedgerRow) -> float:
        return 1.0 if (
            r.model == model and r.time >= since and (r.sent or not sent_only)
        ) else 0.0  # fmt: skip

    return Tally("1", where, (model, float(since)), match)


def answered_tally(since: float, policy: str | None) -> Tally:
    """Calls answered since ``since`` (under policy mode ``policy``)."""
    where = f"outcome = '{OK}' AND time >= ?" + (" AND policy = ?" if policy else "")
    params = (float(since), policy) if policy else (float(since),)

    def match(r: LedgerRow) -> float:
        return 1.0 if (
            r.outcome == OK and r.time >= since and (policy is None or r.policy == policy)
        ) else 0.0  # fmt: skip

    return Tally("1", where, params, match)
