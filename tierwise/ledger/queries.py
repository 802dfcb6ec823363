"""Reading the ledger for monitoring: per-model stats, rolling health and performance, rows.

Functions over a read connection, so the ledger that owns the connection stays about
writing; ``tierwise stats`` / ``report``, the router's dynamic model selection and the
insights read through its thin methods. The SQL is written once for SQLite and PostgreSQL
(``?`` parameters, which the PostgreSQL connection translates; no SQLite-only syntax but
the index hints ``NOT INDEXED`` and ``+column``, which it drops).
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from tierwise.ledger.rows import DAY, OK, SELECT_ROW, LedgerRow, from_values

__all__ = [
    "Connection",
    "Cursor",
    "Health",
    "ModelStats",
    "Performance",
    "WriteConnection",
    "health",
    "health_window",
    "percentile",
    "performance",
    "rows",
    "stats",
]


class Cursor(Protocol):
    """The rows of one statement."""

    def fetchone(self) -> Any:
        """The next row, ``None`` at the end."""
        ...

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        ...


class Connection(Protocol):
    """What queries need of a connection: ``sqlite3``'s, or the PostgreSQL adapter."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor:
        """Run one statement with ``?`` parameters."""
        ...


class WriteConnection(Connection, Protocol):
    """A connection the evidence and reservation stores also write and close through."""

    @property
    def in_transaction(self) -> bool:
        """Whether a ``BEGIN`` is open."""
        ...

    def executemany(self, sql: str, parameters: Any, /) -> Cursor:
        """Run one statement per parameter set."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


# Performance by pairs starts from the first row recorded this long before ``since``.
_EDGE: Final = 5.0


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ascending ``sorted_values``, interpolated linearly.

    Linear interpolation between closest ranks is numpy's default, so figures match
    what people compute from an export. ``None`` for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
        2.5
        >>> percentile([float(x) for x in range(11)], 0.95)
        9.5
    """
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class ModelStats:
    """How one model did on one operation over the selected rows.

    Attributes:
        operation: ``TaskType`` value.
        model: Catalog key.
        provider: Provider of the model's most recent row.
        tier: Tier of the model's most recent row.
        attempts: Every row, including candidates refused before sending.
        calls: Attempts sent to the provider.
        skipped: Attempts refused locally (rate limit, budget, open circuit).
        successes: Attempts that produced the answer.
        success_rate: ``successes / calls``; ``None`` without calls.
        fallbacks_caused: Failed attempts after which the router moved on to another
            candidate (or gave up) — every failure except one followed by the one
            schema-repair retry of the same model. Locally refused candidates count.
        repairs: Schema-repair retries.
        escalations: Attempts made for a graph escalation to a higher tier.
        p50_latency: Median seconds of successful calls; ``None`` without any.
        p95_latency: 95th percentile seconds of successful calls.
        input_tokens: Prompt tokens over all attempts.
        output_tokens: Completion tokens over all attempts.
        spend: USD over all attempts, failed ones included.
        cost_per_success: ``spend / successes`` — what one good answer really costs.
    """

    operation: str
    model: str
    provider: str
    tier: str
    attempts: int
    calls: int
    skipped: int
    successes: int
    success_rate: float | None
    fallbacks_caused: int
    repairs: int
    escalations: int
    p50_latency: float | None
    p95_latency: float | None
    input_tokens: int
    output_tokens: int
    spend: float
    cost_per_success: float | None


class Health(NamedTuple):
    """A model's recent record on one operation, for ordering same-tier candidates.

    Computed over the last ``n`` attempts that were sent to the provider (local refusals
    say nothing about the model). ``success_rate`` and ``p50_latency`` are ``None`` when
    there is no evidence (``n == 0``; no success for the latency).
    """

    success_rate: float | None
    p50_latency: float | None
    n: int


class Performance(NamedTuple):
    """A model's rolling record on one operation: what dynamic model selection reads.

    Like :class:`Health`, over the last ``n`` attempts sent to the provider; latencies are
    those of the successful ones (``None`` without a success), ``cost_per_success`` is the
    window's spend (failed attempts included) per successful call.
    """

    success_rate: float | None
    p50_latency: float | None
    p95_latency: float | None
    cost_per_success: float | None
    n: int


def _performance(outcomes: Iterable[tuple[str, float, float]]) -> Performance:
    n = 0
    spend = 0.0
    latencies: list[float] = []
    for outcome, latency, cost in outcomes:
        n += 1
        spend += cost
        if outcome == OK:
            latencies.append(latency)
    if n == 0:
        return Performance(None, None, None, None, 0)
    latencies.sort()
    ok = len(latencies)
    return Performance(
        ok / n,
        percentile(latencies, 0.5),
        percentile(latencies, 0.95),
        spend / ok if ok else None,
        n,
    )


def _health(outcomes: Iterable[tuple[str, float]]) -> Health:
    n = 0
    latencies: list[float] = []
    for outcome, latency in outcomes:
        n += 1
        if outcome == OK:
            latencies.append(latency)
    if n == 0:
        return Health(None, None, 0)
    latencies.sort()
    return Health(len(latencies) / n, percentile(latencies, 0.5), n)


def _filters(
    since: float | None, operation: str | None, tier: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("time", ">=", since),
        ("operation", "=", operation),
        ("tier", "=", tier),
    ):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(float(value) if column == "time" else str(value))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def rows(
    conn: Connection,
    *,
    since: float | None = None,
    operation: str | None = None,
    tier: str | None = None,
    limit: int | None = None,
) -> list[LedgerRow]:
    """Rows in time order.

    With ``limit``, the most recent ``limit`` rows, still oldest first.
    """
    where, params = _filters(since, operation, tier)
    sql = f"SELECT {SELECT_ROW}, id FROM attempts{where}"
    if limit is not None:
        sql = (f"SELECT * FROM ({sql} ORDER BY time DESC, id DESC LIMIT ?) AS recent "
               "ORDER BY time, id")  # fmt: skip
        params.append(int(limit))
    else:
        sql += " ORDER BY time, id"
    found = conn.execute(sql, params).fetchall()
    return [from_values(values[:-1]) for values in found]


def stats(
    conn: Connection,
    *,
    since: float | None = None,
    operation: str | None = None,
    tier: str | None = None,
) -> list[ModelStats]:
    """Per (operation, model): calls, success rate, fallbacks, latency, tokens, spend.

    Sorted by operation, then model.
    """
    where, params = _filters(since, operation, tier)
    # provider and tier come from each group's most recent row (max(id)).
    totals_sql = f"""
        SELECT g.*, a.provider, a.tier FROM (
            SELECT operation, model, max(id) AS last,
                   count(*), sum(sent), sum(CASE WHEN outcome = '{OK}' THEN 1 ELSE 0 END),
                   sum(CASE WHEN outcome = '{OK}' THEN 0 ELSE 1 END), sum(repair),
                   sum(escalation), sum(input_tokens), sum(output_tokens), total(cost)
            FROM attempts{where} GROUP BY operation, model) AS g
        JOIN attempts a ON a.id = g.last ORDER BY g.operation, g.model"""
    ok_where = f"{where} AND outcome = '{OK}'" if where else f" WHERE outcome = '{OK}'"
    latency_sql = (f"SELECT operation, model, latency FROM attempts{ok_where} "
                   "ORDER BY operation, model, latency")  # fmt: skip
    conn.execute("BEGIN")  # one snapshot for both statements
    try:
        groups = conn.execute(totals_sql, params).fetchall()
        latency_rows = conn.execute(latency_sql, params).fetchall()
    finally:
        conn.execute("COMMIT")
    latencies: dict[tuple[str, str], list[float]] = {}
    for op, model, latency in latency_rows:
        latencies.setdefault((op, model), []).append(latency)
    result: list[ModelStats] = []
    for (op, model, _, attempts, calls, successes, failures, repairs, escalations,
         input_tokens, output_tokens, spend, provider, tier_) in (
            (*g[:3], *map(int, g[3:11]), float(g[11]), *g[12:]) for g in groups
        ):  # fmt: skip
        ok = latencies.get((op, model), [])
        result.append(ModelStats(
            operation=op,
            model=model,
            provider=provider,
            tier=tier_,
            attempts=attempts,
            calls=calls,
            skipped=attempts - calls,
            successes=successes,
            success_rate=successes / calls if calls else None,
            fallbacks_caused=max(0, failures - repairs),
            repairs=repairs,
            escalations=escalations,
            p50_latency=percentile(ok, 0.5),
            p95_latency=percentile(ok, 0.95),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            spend=spend,
            cost_per_success=spend / successes if successes else None,
        ))
    return result


def health_window(conn: Connection, operation: str, model: str, last_n: int = 50) -> Health:
    """Success rate and median latency of the last ``last_n`` sent calls of one model.

    Reads committed rows only: this process's last ``flush_interval`` may be missing,
    which a rolling window does not notice (the circuit breaker reacts at once anyway).
    """
    found = conn.execute(
        "SELECT outcome, latency FROM attempts WHERE operation = ? AND model = ? "
        "AND sent = 1 ORDER BY id DESC LIMIT ?",
        (str(operation), str(model), int(last_n)),
    ).fetchall()
    return _health(found)


def health(
    conn: Connection,
    *,
    last_n: int = 50,
    since: float | None = None,
    operation: str | None = None,
) -> dict[tuple[str, str], Health]:
    """:func:`health_window` for every (operation, model) with sent calls since ``since``.

    ``since`` defaults to 24 hours ago. One query; meant for a selector snapshot that
    is refreshed every few seconds, not for every request.
    """
    start = _time.time() - DAY if since is None else since
    where = "sent = 1 AND time >= ?"
    params: list[Any] = [float(start)]
    if operation is not None:
        where += " AND operation = ?"
        params.append(str(operation))
    sql = f"""
        SELECT operation, model, outcome, latency FROM (
            SELECT operation, model, outcome, latency, row_number() OVER (
                PARTITION BY operation, model ORDER BY id DESC) AS recent
            FROM attempts WHERE {where}) AS windowed
        WHERE recent <= ? ORDER BY operation, model"""
    found = conn.execute(sql, (*params, int(last_n))).fetchall()
    grouped: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for op, model, outcome, latency in found:
        grouped.setdefault((op, model), []).append((outcome, latency))
    return {key: _health(values) for key, values in grouped.items()}


def performance(
    conn: Connection,
    pairs: Iterable[tuple[str, str]] | None = None,
    *,
    last_n: int = 20,
    since: float | None = None,
    operation: str | None = None,
) -> dict[tuple[str, str], Performance]:
    """Per (operation, model) with sent calls since ``since``: its last ``last_n`` of them.

    Success rate, p50 / p95 latency of the successful calls and cost per successful
    call; ``since`` defaults to 24 hours ago. Committed rows only, as :func:`health`.

    Without ``pairs``, one query over every row since ``since`` finds every pair. With
    ``pairs`` — (operation, model) tuples, what the router's dynamic model selection
    reads every couple of seconds — each pair is one indexed query that reads about
    ``last_n`` rows, so the cost does not grow with the traffic or the ledger. (Rows
    are found from the first row recorded at ``since - 5 s``: a row committed more
    than 5 s after it was recorded, right at the ``since`` edge, can be missed.)
    """
    start = _time.time() - DAY if since is None else float(since)
    if pairs is None:
        return _performance_scan(conn, start, last_n, operation)
    wanted = sorted({(str(op), str(model)) for op, model in pairs
                     if operation is None or str(op) == str(operation)})  # fmt: skip
    result: dict[tuple[str, str], Performance] = {}
    if not wanted:
        return result
    # ``+time``: never the time index here; walk (operation, model, id) backwards.
    sql = ("SELECT outcome, latency, cost FROM attempts WHERE operation = ? AND model = ? "
           "AND id >= ? AND sent = 1 AND +time >= ? ORDER BY id DESC LIMIT ?")  # fmt: skip
    conn.execute("BEGIN")  # one snapshot for every pair
    try:
        first = conn.execute(
            "SELECT id FROM attempts WHERE time >= ? ORDER BY time LIMIT 1",
            (start - _EDGE,),
        ).fetchone()
        if first is None:
            return result
        for op, model in wanted:
            found = conn.execute(sql, (op, model, first[0], start, int(last_n)))
            window = _performance(found.fetchall())
            if window.n:
                result[(op, model)] = window
    finally:
        conn.execute("COMMIT")
    return result


def _performance_scan(
    conn: Connection, start: float, last_n: int, operation: str | None
) -> dict[tuple[str, str], Performance]:
    """:func:`performance` for every pair, in one query over the rows since ``start``."""
    where = "sent = 1 AND time >= ?"
    params: list[Any] = [start]
    if operation is not None:
        where += " AND operation = ?"
        params.append(str(operation))
    sql = f"""
        SELECT operation, model, outcome, latency, cost FROM (
            SELECT operation, model, outcome, latency, cost, row_number() OVER (
                PARTITION BY operation, model ORDER BY id DESC) AS recent
            FROM attempts WHERE {where}) AS windowed
        WHERE recent <= ? ORDER BY operation, model"""
    found = conn.execute(sql, (*params, int(last_n))).fetchall()
    grouped: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    for op, model, outcome, latency, cost in found:
        grouped.setdefault((op, model), []).append((outcome, latency, cost))
    return {key: _performance(values) for key, values in grouped.items()}
