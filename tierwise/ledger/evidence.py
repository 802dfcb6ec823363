"""Quality evidence: how good answers were, from evals, judges and escalations.

The ledger (:mod:`tierwise.ledger.store`) says whether a model *answered*; this module
keeps whether the answer was *good*. Each :class:`Outcome` scores one answer of one model
for one operation in [0, 1] and names where the verdict came from:

* ``eval`` — ``tierwise eval`` compared the answer with a gold label (1 = right);
* ``judge`` — a graph's judge scored it (quality score / 10, structure assessment 1 or 0);
* ``escalation`` — the graph found it not good enough and asked a higher tier (0).

The selector reads the aggregate (:class:`Measured`, an interval around the mean) in
place of the catalog's static rubric score once there is enough of it; the learned
router (:mod:`tierwise.learning.learned_router`) trains on the outcomes joined with the hashed
prompt features stored per call — never the prompt text, so no secret or user data a
prompt carried lands in the file.

The tables live in the ledger's SQLite file beside ``attempts`` and are created on first
use (``CREATE TABLE IF NOT EXISTS``), so an older ledger gains them without a migration.
Writes are synchronous single transactions: outcomes arrive once per judged answer or
eval item, far from the per-call hot path the ledger's background writer serves.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from tierwise.ledger.queries import WriteConnection

__all__ = [
    "EVAL",
    "ESCALATION",
    "JUDGE",
    "EvidenceStore",
    "Measured",
    "Outcome",
    "TrainingRow",
    "interval",
]

EVAL: Final = "eval"
JUDGE: Final = "judge"
ESCALATION: Final = "escalation"
_SOURCES: Final = (EVAL, JUDGE, ESCALATION)
# The ledger's outcome of an answer that failed validation (FailureKind.INVALID_OUTPUT).
_INVALID: Final = "invalid_output"

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS outcomes (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        operation TEXT NOT NULL,
        model TEXT NOT NULL,
        score REAL NOT NULL,
        source TEXT NOT NULL,
        call_id TEXT,
        run_id TEXT,
        thread_id TEXT,
        dataset TEXT,
        item TEXT,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    # Covering for quality(), which the router reads every couple of seconds.
    "CREATE INDEX IF NOT EXISTS outcomes_quality ON outcomes (operation, model, source, score)",
    "CREATE INDEX IF NOT EXISTS outcomes_item ON outcomes (dataset, operation, model, item)",
    "CREATE INDEX IF NOT EXISTS outcomes_call ON outcomes (call_id)",
    """CREATE TABLE IF NOT EXISTS features (
        call_id TEXT PRIMARY KEY,
        operation TEXT NOT NULL,
        ids TEXT NOT NULL
    ) WITHOUT ROWID""",
)
_COLUMNS: Final = (
    "time, operation, model, score, source, call_id, run_id, thread_id, dataset, item, detail"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One verdict on one answer: ``score`` in [0, 1], 1 being a good answer.

    Attributes:
        operation: ``TaskType`` value.
        model: Catalog key of the model that answered.
        score: 1 = right / excellent, 0 = wrong / unusable; judges' scores scaled to [0, 1].
        source: :data:`EVAL`, :data:`JUDGE` or :data:`ESCALATION`.
        call_id: The routed call that produced the answer (ledger ``attempts.call_id``).
        dataset: For evals: the data set's name; with ``item`` it makes an eval resumable.
        item: For evals: the item's id within the data set.
        detail: What was compared, for people (no prompt text).
    """

    operation: str
    model: str
    score: float
    source: str
    time: float = 0.0
    call_id: str | None = None
    run_id: str | None = None
    thread_id: str | None = None
    dataset: str | None = None
    item: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        """Reject scores outside [0, 1] and unknown sources: they would skew every mean."""
        if not 0.0 <= self.score <= 1.0 or math.isnan(self.score):
            raise ValueError(f"outcome score must be in [0, 1], got {self.score!r}")
        if self.source not in _SOURCES:
            raise ValueError(f"outcome source {self.source!r}; allowed: {', '.join(_SOURCES)}")


class Measured(NamedTuple):
    """The measured quality of one model on one operation: mean score and a 95 % interval."""

    operation: str
    model: str
    n: int
    mean: float
    low: float
    high: float

    def describe(self) -> str:
        """``"measured 0.92 (0.85-0.96, n=60)"``."""
        return f"measured {self.mean:.2f} ({self.low:.2f}-{self.high:.2f}, n={self.n})"


class TrainingRow(NamedTuple):
    """A prompt's hashed features, the model that answered it and how good the answer was."""

    call_id: str
    operation: str
    model: str
    ids: tuple[int, ...]
    score: float


def interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (scores in [0, 1] count fractionally).

    Wilson rather than mean ± z·se: it stays inside [0, 1] and is honest for small n and
    for rates near 0 or 1, which is where model comparisons live.

    Example:
        >>> [round(x, 3) for x in interval(45, 50)]
        [0.786, 0.957]
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class EvidenceStore:
    """Outcomes and prompt features in a ledger file (see the module doc).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     store = EvidenceStore(pathlib.Path(tmp) / "ledger.sqlite3")
        ...     store.record([Outcome("classification", "m", s, EVAL) for s in (1, 1, 0, 1)])
        ...     store.quality(min_n=1)[("classification", "m")].mean
        4
        0.75
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 10.0, conn: WriteConnection | None = None
    ) -> None:
        """Open ``path`` (the ledger file), creating the evidence tables if needed.

        ``conn``: a connection to a ledger database whose tables exist (PostgreSQL);
        ``path`` then only names it.
        """
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._seen_id = 0  # outcomes up to this id are in _totals
        self._in_ledger = conn is not None  # the database surely holds ``attempts``
        if conn is not None:
            self._conn: WriteConnection = conn
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def __repr__(self) -> str:
        """``EvidenceStore('/path/ledger.sqlite3')``."""
        return f"EvidenceStore({str(self.path)!r})"

    def close(self) -> None:
        """Release the file."""
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ writing
    def record(self, outcomes: Iterable[Outcome]) -> int:
        """Store ``outcomes`` in one transaction; returns how many were stored."""
        now = _time.time()
        values = [
            (o.time or now, str(o.operation), o.model, float(o.score), o.source, o.call_id,
             o.run_id, o.thread_id, o.dataset, o.item, o.detail)
            for o in outcomes
        ]  # fmt: skip
        if not values:
            return 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    f"INSERT INTO outcomes ({_COLUMNS}) VALUES ({', '.join('?' * 11)})", values
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return len(values)

    def record_features(self, call_id: str, operation: str, ids: Sequence[int]) -> None:
        """Keep the hashed feature ids of ``call_id``'s prompt (for retraining the router)."""
        text = " ".join(map(str, ids))
        with self._lock:
            self._conn.execute(
                "INSERT INTO features (call_id, operation, ids) VALUES (?, ?, ?) ON CONFLICT "
                "(call_id) DO UPDATE SET operation = excluded.operation, ids = excluded.ids",
                (call_id, str(operation), text),
            )

    # ------------------------------------------------------------------ reading
    def done(self, dataset: str, operation: str, model: str) -> set[str]:
        """Ids of the items of ``dataset`` already evaluated for ``model`` (to resume)."""
        with self._lock:
            found = self._conn.execute(
                "SELECT item FROM outcomes WHERE source = ? AND dataset = ? AND operation = ? "
                "AND model = ?",
                (EVAL, dataset, str(operation), model),
            ).fetchall()
        return {item for (item,) in found}

    def outcomes(
        self,
        *,
        operation: str | None = None,
        model: str | None = None,
        source: str | None = None,
        dataset: str | None = None,
        since: float | None = None,
    ) -> list[Outcome]:
        """Stored outcomes matching every filter given, oldest first."""
        where, params = _where(operation=operation, model=model, source=source,
                               dataset=dataset, since=since)  # fmt: skip
        with self._lock:
            found = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outcomes{where} ORDER BY time, id", params
            ).fetchall()
        return [
            Outcome(operation=op, model=m, score=score, source=src, time=t, call_id=call,
                    run_id=run, thread_id=thread, dataset=ds, item=item, detail=detail)
            for (t, op, m, score, src, call, run, thread, ds, item, detail) in found
        ]  # fmt: skip

    def quality(
        self,
        *,
        operation: str | None = None,
        sources: Sequence[str] = _SOURCES,
        since: float | None = None,
        min_n: int = 20,
    ) -> dict[tuple[str, str], Measured]:
        """Per (operation, model) with at least ``min_n`` outcomes: mean score and interval.

        Over all time (no ``since``), the totals are kept in memory and each call reads only
        the outcomes stored since the previous one (outcomes are only ever appended): the
        router asks every couple of seconds, and a full scan of a large table would be a
        latency spike on the call that asks.
        """
        if since is None:
            totals = self._all_time_totals()
            found = [
                (op, model, sum(totals.get((op, model, s), (0, 0.0))[0] for s in sources),
                 math.fsum(totals.get((op, model, s), (0, 0.0))[1] for s in sources))
                for op, model in {(op, model) for op, model, _ in totals}
                if operation is None or op == str(operation)
            ]  # fmt: skip
        else:
            where, params = _where(operation=operation, since=since)
            marks = ", ".join("?" * len(sources))
            clause = f"{where} {'AND' if where else 'WHERE'} source IN ({marks})"
            with self._lock:
                found = self._conn.execute(
                    f"SELECT operation, model, count(*), sum(score) FROM outcomes{clause} "
                    "GROUP BY operation, model",
                    [*params, *sources],
                ).fetchall()
        measured: dict[tuple[str, str], Measured] = {}
        for op, model, n, total in found:
            if n >= min_n:
                low, high = interval(total, n)
                measured[(op, model)] = Measured(op, model, n, total / n, low, high)
        return measured

    def _all_time_totals(self) -> dict[tuple[str, str, str], tuple[int, float]]:
        """(operation, model, source) -> (count, score sum), brought up to date by id."""
        # First read: the covering index; then only the new rows, by rowid.
        table = "outcomes NOT INDEXED" if self._seen_id else "outcomes"
        with self._lock:
            found = self._conn.execute(
                f"SELECT operation, model, source, count(*), sum(score), max(id) FROM {table} "
                "WHERE id > ? GROUP BY operation, model, source",
                (self._seen_id,),
            ).fetchall()
            for op, model, source, n, total, last in found:
                count, score = self._totals.get((op, model, source), (0, 0.0))
                self._totals[(op, model, source)] = (count + n, score + total)
                self._seen_id = max(self._seen_id, int(last))
            return dict(self._totals)

    def training_rows(
        self, *, operation: str | None = None, since: float | None = None
    ) -> list[TrainingRow]:
        """Each answer whose prompt features were kept, with its mean verdict, oldest first.

        A call whose answer has several verdicts (a judge, then an escalation) is scored by
        their mean. A model whose answer to such a call failed validation (the ledger's
        ``invalid_output`` attempts, in the same file) scores 0 on it: that is a verdict
        too, and the one a fallback chain produces most (unless the model's repair retry
        answered, or the call has a verdict on that model already). A call with features
        but no verdict is left out (no label).
        """
        where, params = _where(operation=operation, since=since, table="o")
        sql = (
            "SELECT o.call_id, o.operation, o.model, f.ids, avg(o.score), min(o.time) "
            f"FROM outcomes o JOIN features f ON f.call_id = o.call_id{where} "
            "GROUP BY o.call_id, o.model, o.operation, f.ids"
        )
        if self._has_attempts():
            where_a, params_a = _where(operation=operation, since=since, table="a")
            clause = (
                f"{where_a} {'AND' if where_a else 'WHERE'} a.outcome = '{_INVALID}' "
                # not when the model's repair retry answered, nor when a verdict exists
                "AND NOT EXISTS (SELECT 1 FROM attempts b WHERE b.call_id = a.call_id "
                "AND b.model = a.model AND b.outcome = 'ok') "
                "AND NOT EXISTS (SELECT 1 FROM outcomes c WHERE c.call_id = a.call_id "
                "AND c.model = a.model)"
            )
            sql += (
                " UNION ALL SELECT a.call_id, a.operation, a.model, f.ids, 0.0, min(a.time) "
                f"FROM attempts a JOIN features f ON f.call_id = a.call_id{clause} "
                "GROUP BY a.call_id, a.model, a.operation, f.ids"
            )
            params += params_a
        with self._lock:
            found = self._conn.execute(
                f"SELECT * FROM ({sql}) AS labelled ORDER BY 6", params
            ).fetchall()
        return [
            TrainingRow(call, op, model, tuple(int(i) for i in ids.split()), float(score))
            for call, op, model, ids, score, _ in found
        ]

    def _has_attempts(self) -> bool:
        """Whether the file is a ledger (holds the ``attempts`` table) and not only evidence."""
        if self._in_ledger:
            return True
        with self._lock:
            return bool(self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'attempts'"
            ).fetchone())


def _where(
    *,
    operation: str | None = None,
    model: str | None = None,
    source: str | None = None,
    dataset: str | None = None,
    since: float | None = None,
    table: str = "",
) -> tuple[str, list[object]]:
    prefix = f"{table}." if table else ""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("operation", operation), ("model", model), ("source", source),
                          ("dataset", dataset)):  # fmt: skip
        if value is not None:
            clauses.append(f"{prefix}{column} = ?")
            params.append(str(value))
    if since is not None:
        clauses.append(f"{prefix}time >= ?")
        params.append(float(since))
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params
