"""The ledger: one SQLite row per model attempt, and the spend, quota and health read from it.

Every attempt the router makes — answered, failed, or refused before it was sent — becomes
one :class:`LedgerRow`. Budgets (:mod:`tierwise.guards.budget`) read today's spend and a
free model's requests today from here, so caps and daily quotas hold across processes and
restarts; ``tierwise stats`` / ``report`` and the selector's health ordering read the same
rows.

Why it is built this way:

* **SQLite in WAL mode** (``synchronous=NORMAL``, a ``busy_timeout``): readers never wait
  for writers, several processes can append to one file, and a commit is a write to the
  WAL file without an ``fsync``. It needs nothing beyond the standard library.
* **Off the call path.** :meth:`Ledger.record` appends the row to an in-memory queue and
  one line to the writer's journal (JSON, one ``write()``; no SQLite), and returns in
  several µs; a background thread commits queued rows in batches, one transaction per
  batch, at most ``flush_interval`` after the first row of a batch was recorded. A busy
  database makes only that thread wait.
* **Own writes are visible at once.** Budgets must see a call's cost before the next call
  is checked, not after the next batch. :meth:`Ledger.spent` and :meth:`Ledger.requests`
  add this process's not-yet-committed rows to the committed totals. Every batch commits,
  in the same transaction, the sequence number of the last row it holds (table
  ``writers``), and a total is read in one statement together with that number, so each
  own row is counted exactly once — from the database or from memory, never both.
* **Cheap repeated reads.** A total is cached per query for ``refresh_interval`` seconds;
  refreshing it scans only rows appended since the previous read (``id >`` the last id
  seen), and own rows recorded meanwhile are added from memory. Other processes' spend is
  therefore seen within ``flush_interval + refresh_interval`` (0.6 s by default); this
  process's own spend at once.

Durability — what a recorded row survives:

* **Normal exit** (:meth:`Ledger.close`, leaving a ``with`` block, interpreter exit through
  ``atexit`` — a finished script, ``sys.exit``, an uncaught exception): every row is
  committed before the process ends.
* **A hard kill** (``SIGKILL``, ``os._exit``, a crash, the OOM killer — and ``SIGTERM``
  when the application installs no handler, since Python then runs no ``atexit`` hooks):
  no row whose :meth:`Ledger.record` returned is lost. Each ledger (writer) appends every
  row, in the same ``record()`` call, as one line to its own journal
  ``<ledger>.journal/<writer id>.jsonl`` with a single ``write()``; the data is then in the
  OS page cache, which outlives the process. The writer holds an exclusive ``flock`` on
  its journal for its life, empties it whenever every row is committed, and deletes it on
  :meth:`Ledger.close`. Opening a ledger imports the journals whose lock is free (their
  writer died): the rows after that writer's committed sequence number (``writers``
  table), in one transaction that advances it — so importing twice adds nothing. A line
  cut short by the kill is ignored (that ``record()`` had not returned). Without
  ``fcntl`` (Windows) there is no journal: rows recorded in the last ``flush_interval``
  may be lost; ``record(row, durable=True)`` commits before returning (tens of µs).
* **Power loss / OS crash**: ``synchronous=NORMAL`` may roll back the last transactions,
  and the journal (never fsynced) may lose its last lines; the file stays consistent.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import operator
import os
import sqlite3
import threading
import time as _time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import platformdirs

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: no journal (see the module doc)
    _fcntl = None  # type: ignore[assignment]

from tierwise.ledger.evidence import EvidenceStore

if TYPE_CHECKING:  # kept out of the import: `tierwise stats` reads the ledger without LangChain
    from tierwise.catalog.policy import Policy
    from tierwise.routing.results import Attempt

__all__ = [
    "DAY",
    "LEDGER_ENV",
    "OK",
    "SCHEMA_VERSION",
    "Health",
    "Ledger",
    "LedgerError",
    "LedgerRow",
    "ModelStats",
    "Performance",
    "day_start",
    "close_shared_ledgers",
    "default_ledger_path",
    "shared_ledger",
    "percentile",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
"""``PRAGMA user_version`` of the ledger file this code reads and writes."""
OK: Final = "ok"
"""The ``outcome`` of an attempt that produced the answer (otherwise a ``FailureKind``)."""
DAY: Final = 86_400.0
"""Seconds in a UTC day (UTC has no leap seconds in Unix time)."""
LEDGER_ENV: Final = "TIERWISE_LEDGER"
"""Environment variable that overrides the default ledger file."""

# Commits whose rows can no longer be needed by a cached total are older than
# 2 * refresh_interval + this; the rows are then dropped from memory.
_KEEP_MARGIN: Final = 1.0
_MAX_TALLIES: Final = 256
_RETRY_LOG_EVERY: Final = 20
# Performance by pairs starts from the first row recorded this long before ``since``.
_EDGE: Final = 5.0
# A journal longer than this, with rows still pending after a commit, is rewritten to
# hold only those rows (otherwise it is emptied whenever every row is committed).
_JOURNAL_LIMIT: Final = 1 << 20
_JOURNAL_SUFFIX: Final = ".jsonl"


def default_ledger_path() -> Path:
    """``$TIERWISE_LEDGER``, else ``ledger.sqlite3`` in the user data dir (per platformdirs)."""
    explicit = os.environ.get(LEDGER_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_data_dir("tierwise")) / "ledger.sqlite3"


def day_start(now: float | None = None) -> float:
    """Unix time of the UTC midnight that began the day of ``now`` (default: the current time).

    Example:
        >>> day_start(86_400 * 3 + 5.5)
        259200.0
    """
    t = _time.time() if now is None else now
    return float(t - t % DAY)


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


class LedgerError(RuntimeError):
    """The ledger file cannot be used (written by a newer tierwise, or not a ledger)."""


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One attempt of one candidate model, as stored.

    Enum-valued fields (operation, complexity, tier, provider, outcome) hold their string
    values, so a row compares equal whether it was built from enums or read back.

    Attributes:
        time: Unix time (seconds) at which the attempt ended and was recorded.
        run_id: The graph run (or any caller-chosen id) the per-run cap is counted on.
        thread_id: LangGraph thread, when there is one.
        node: Graph node that made the call.
        operation: ``TaskType`` value.
        complexity: ``Complexity`` value.
        policy: The policy's mode.
        provider: ``Provider`` value.
        model: Catalog key of the model.
        tier: ``Tier`` value.
        outcome: ``"ok"`` or the ``FailureKind`` value.
        sent: False when the candidate was refused locally (rate limit, budget, circuit)
            and the provider never saw the request.
        latency: Seconds the attempt took.
        time_to_first_token: Seconds to the first streamed token, for streams.
        input_tokens: Prompt tokens the provider reported.
        output_tokens: Completion tokens the provider reported.
        cost: USD, as computed by the router from the (configured) catalog price.
        escalation: The call was an escalation to a higher tier by the graph.
        repair: The attempt was the schema-repair retry of the same model.
        detail: Failure message, already scrubbed of secrets by the router.
        call_id: The routed call the attempt belongs to: every attempt of one call
            (fallbacks, repairs, an ensemble's members) carries the same id. Quality
            evidence about the answer (:mod:`tierwise.ledger.evidence`) names it too.
        arm: ``"<test>:<arm>"`` when the call was part of an A/B test
            (:class:`~tierwise.catalog.policy.ABTest`), else ``None``.
    """

    time: float
    run_id: str | None
    thread_id: str | None
    node: str | None
    operation: str
    complexity: str
    policy: str
    provider: str
    model: str
    tier: str
    outcome: str
    sent: bool
    latency: float
    time_to_first_token: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    escalation: bool
    repair: bool
    detail: str
    call_id: str | None = None
    arm: str | None = None

    @property
    def ok(self) -> bool:
        """True when this attempt produced the answer."""
        return self.outcome == OK

    @classmethod
    def from_attempt(
        cls,
        attempt: Attempt,
        *,
        operation: str,
        complexity: str,
        policy: Policy | str,
        run_id: str | None = None,
        thread_id: str | None = None,
        node: str | None = None,
        escalation: bool = False,
        time: float | None = None,
        call_id: str | None = None,
        arm: str | None = None,
    ) -> LedgerRow:
        """The row for ``attempt``; ``time`` defaults to now (the attempt has just ended).

        ``policy`` may be the :class:`Policy` itself (its mode is stored) or a mode.
        """
        mode = str(policy) if isinstance(policy, str) else policy.mode.value
        return cls(
            time=_time.time() if time is None else time,
            run_id=run_id,
            thread_id=thread_id,
            node=node,
            operation=str(operation),
            complexity=str(complexity),
            policy=mode,
            provider=attempt.provider.value,
            model=attempt.model,
            tier=attempt.tier.value,
            outcome=OK if attempt.failure is None else attempt.failure.value,
            sent=attempt.sent,
            latency=attempt.latency,
            time_to_first_token=attempt.time_to_first_token,
            input_tokens=attempt.input_tokens,
            output_tokens=attempt.output_tokens,
            cost=attempt.cost,
            escalation=escalation,
            repair=attempt.repair,
            detail=attempt.detail,
            call_id=call_id,
            arm=arm,
        )


_COLUMNS: Final = (
    "time", "run_id", "thread_id", "node", "operation", "complexity", "policy", "provider",
    "model", "tier", "outcome", "sent", "latency", "time_to_first_token", "input_tokens",
    "output_tokens", "cost", "escalation", "repair", "detail", "call_id", "arm",
)  # fmt: skip
# Journals written by schema version 1 (before call_id and arm) hold this many fields.
_V1_FIELDS: Final = 20
_SELECT_ROW: Final = ", ".join(_COLUMNS)
_INSERT: Final = (
    f"INSERT INTO attempts ({_SELECT_ROW}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)
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


def _params(row: LedgerRow) -> tuple[Any, ...]:
    """The INSERT parameters of ``row`` (enum members stored as their plain values)."""
    return (
        float(row.time), _opt_text(row.run_id), _opt_text(row.thread_id), _opt_text(row.node),
        str(row.operation), str(row.complexity), str(row.policy), str(row.provider),
        str(row.model), str(row.tier), str(row.outcome), int(bool(row.sent)),
        float(row.latency),
        None if row.time_to_first_token is None else float(row.time_to_first_token),
        int(row.input_tokens), int(row.output_tokens), float(row.cost),
        int(bool(row.escalation)), int(bool(row.repair)), str(row.detail),
        _opt_text(row.call_id), _opt_text(row.arm),
    )  # fmt: skip


def _opt_text(value: str | None) -> str | None:
    return None if value is None else str(value)


_FIELDS: Final = operator.attrgetter(*_COLUMNS)


def _make_dumps() -> Callable[[Any], str]:
    """The journal's JSON serializer: compact, ASCII-only (no raw newline or tab in a line).

    Odd values become their str(), as _params would store them. record() calls it, so the
    C encoder is built once here rather than per call as json.dumps does.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return json.JSONEncoder(separators=(",", ":"), check_circular=False, default=str).encode
    encode = make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",",
                  False, False, True)  # fmt: skip

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps: Final = _make_dumps()


def _journal_body(row: LedgerRow) -> bytes | None:
    """The JSON array of ``row``'s fields, or None if it cannot be serialized."""
    try:
        return _dumps(_FIELDS(row)).encode()
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


def _read_journal(data: bytes, name: object) -> list[tuple[int, LedgerRow]]:
    """The (seq, row) lines of a journal file, in sequence order; bad lines are skipped.

    A line is the sequence number, a tab, the JSON array of the fields and a newline.
    The last line lacks its newline when the kill cut its write short.
    """
    found: dict[int, LedgerRow] = {}
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            seq_text, body = line.split(b"\t", 1)
            values = json.loads(body)
            if not isinstance(values, list) or len(values) not in (_V1_FIELDS, len(_COLUMNS)):
                raise ValueError("not a row")
            found[int(seq_text)] = _row(values)
        except (ValueError, TypeError) as exc:  # JSON, UTF-8 and int() errors included
            cut = " (a write cut short)" if number == len(lines) else ""
            logger.warning("ledger journal %s: ignoring malformed line %d%s: %s",
                           name, number, cut, exc)  # fmt: skip
    return sorted(found.items())


def _row(values: Sequence[Any]) -> LedgerRow:
    (t, run_id, thread_id, node, operation, complexity, policy, provider, model, tier,
     outcome, sent, latency, ttft, input_tokens, output_tokens, cost, escalation, repair,
     detail, call_id, arm) = (*values, None, None)[:len(_COLUMNS)]  # fmt: skip
    return LedgerRow(
        time=t, run_id=run_id, thread_id=thread_id, node=node, operation=operation,
        complexity=complexity, policy=policy, provider=provider, model=model, tier=tier,
        outcome=outcome, sent=bool(sent), latency=latency, time_to_first_token=ttft,
        input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
        escalation=bool(escalation), repair=bool(repair), detail=detail,
        call_id=call_id, arm=arm,
    )  # fmt: skip


# --------------------------------------------------------------------------- monitoring


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


# --------------------------------------------------------------------------- totals


class _Tally:
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


# --------------------------------------------------------------------------- the ledger

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
        >>> from tierwise.routing.results import Attempt
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
        self._journal_dir = Path(f"{self.path}.journal")
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._evidence: EvidenceStore | None = None
        self._closed = False
        self._reset_state()
        try:
            self._reader = self._connect(init=True)
        except sqlite3.DatabaseError as exc:  # not a database, unreadable, locked for good
            raise LedgerError(f"{self.path}: cannot open the ledger: {exc}") from exc
        if _fcntl is not None:
            self._recover_journals()
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
        self._tallies: OrderedDict[tuple[Any, ...], _Tally] = OrderedDict()
        self._pending_since = 0.0  # monotonic time the oldest pending row was recorded
        self._urgent = False
        self._closing = False
        self._close_deadline = math.inf
        self._thread: threading.Thread | None = None
        self._failures = 0
        # This writer's journal (see the module doc), opened by the first record().
        self._journal_fd: int | None = None
        self._journal_size = 0  # bytes written to it since it was last emptied
        self._journaling = _fcntl is not None  # False once the journal failed

    @property
    def evidence(self) -> EvidenceStore:
        """Quality evidence kept in the same file (:mod:`tierwise.ledger.evidence`)."""
        if self._evidence is None:
            self._evidence = EvidenceStore(self.path, busy_timeout=self.busy_timeout)
        return self._evidence

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
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # Changing the journal mode may answer SQLITE_BUSY without waiting.
            mode = _retry_busy(
                lambda: str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]),
                self.busy_timeout,
            )
            if init and mode.lower() != "wal":
                logger.warning("ledger %s: WAL mode unavailable (journal_mode=%s); "
                               "concurrent writers will wait for each other", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            if init:
                _retry_busy(lambda: self._ensure_schema(conn), self.busy_timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise LedgerError(f"{self.path}: ledger schema version {version} was written by a "
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
                    raise LedgerError(f"{self.path} is a SQLite file but not a tierwise ledger")
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

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = self._connect()
        return self._reader

    # ------------------------------------------------------------------ writing
    def record(self, row: LedgerRow, *, durable: bool = False) -> None:
        """Queue ``row`` for the background writer; its cost counts in queries at once.

        Args:
            row: The attempt.
            durable: Return only once the row (and every row before it) is committed,
                so that even a hard kill right after cannot lose it.
        """
        body = _journal_body(row) if self._journaling else None  # outside the lock
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
                self._journal_write(b"%d\t%s\n" % (self._seq, body))
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
                _commit(self._writer, batch, self._writer_id)
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
                self._trim_journal()
                self._forget_committed(_time.monotonic())
                self._done.notify_all()
            return True

    # ------------------------------------------------------------------ journal
    def _journal_file(self, suffix: str = _JOURNAL_SUFFIX) -> Path:
        return self._journal_dir / (self._writer_id + suffix)

    def _journal_write(self, line: bytes) -> None:
        """Append one line to the journal, opening it first (caller holds ``_lock``)."""
        fd = self._journal_fd
        if fd is None:
            try:
                fd = self._journal_fd = self._new_journal(b"")
            except OSError as exc:
                self._journal_failed(exc)
                return
            self._journal_size = 0
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._journal_failed(exc)
            return
        self._journal_size += written

    def _new_journal(self, data: bytes) -> int:
        """Open, lock and fill this writer's journal file; return its descriptor.

        It is written under a temporary name and renamed into place already locked, so a
        recovering process never sees (and takes for a dead writer's) an unlocked journal.
        Replacing the previous file this way is atomic: a kill leaves one or the other.
        """
        self._journal_dir.mkdir(exist_ok=True)
        tmp = self._journal_file(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            if data and os.write(fd, data) != len(data):
                raise OSError("short write to the journal")
            os.replace(tmp, self._journal_file())
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _trim_journal(self) -> None:
        """After a commit (caller holds ``_lock``): drop the journal's committed lines."""
        fd = self._journal_fd
        if fd is None or not self._journaling or self._journal_size == 0:
            return
        try:
            if self._committed >= self._seq:
                os.ftruncate(fd, 0)  # O_APPEND: the next line goes to offset 0
                self._journal_size = 0
            elif self._journal_size > _JOURNAL_LIMIT:
                # Rows keep coming: rewrite the journal with the pending rows only (every
                # row after the last committed one is in _pending here).
                data = b"".join(
                    b"%d\t%s\n" % (seq, body)
                    for seq, row in self._pending
                    if (body := _journal_body(row)) is not None
                )
                self._journal_fd = self._new_journal(data)
                self._journal_size = len(data)
                os.close(fd)
        except OSError as exc:
            self._journal_failed(exc)

    def _journal_failed(self, exc: OSError) -> None:
        """Stop journaling (caller holds ``_lock``); rows are still batched as before.

        An open journal stays open and locked, so no other process imports rows this
        one is still going to commit.
        """
        self._journaling = False
        logger.warning("ledger %s: journal unavailable (%s); a hard kill may lose the rows "
                       "recorded in the last flush_interval", self.path, exc)  # fmt: skip

    def _finish_journal(self) -> None:
        """Once closed with every row committed: delete the journal and release it."""
        with self._lock:
            fd = self._journal_fd
            if fd is None or self._committed < self._seq:
                return  # uncommitted rows: locked until exit, then recovered by the next opener
            self._journal_fd = None
        try:
            self._journal_file().unlink(missing_ok=True)  # while still locked
        except OSError as exc:
            logger.warning("ledger %s: cannot delete journal: %s", self.path, exc)
        finally:
            os.close(fd)

    def _recover_journals(self) -> None:
        """Commit the journaled rows of writers that died before committing them."""
        try:
            files = sorted(self._journal_dir.glob("*" + _JOURNAL_SUFFIX))
        except OSError:
            return
        for file in files:
            try:
                self._recover_journal(file)
            except (OSError, sqlite3.Error) as exc:
                logger.warning("ledger %s: cannot recover journal %s yet: %s",
                               self.path, file.name, exc)  # fmt: skip

    def _recover_journal(self, file: Path) -> None:
        """Import ``file`` if its writer is dead (its lock is free), then delete it."""
        writer = file.name[: -len(_JOURNAL_SUFFIX)]
        if writer == self._writer_id:
            return
        try:
            fd = os.open(file, os.O_RDONLY)
        except FileNotFoundError:
            return  # its writer closed, or another process recovered it
        try:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its writer is alive
            try:
                if not os.path.samestat(os.fstat(fd), os.stat(file)):
                    return  # replaced by its (live) writer after we opened it
            except FileNotFoundError:
                return  # deleted after we opened it
            chunks: list[bytes] = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            rows = _read_journal(b"".join(chunks), file)
            if rows:
                imported = _commit(self._read_conn(), rows, writer, recovered=True)
                if imported:
                    logger.info("ledger %s: recovered %d row(s) of a writer that died "
                                "before committing them", self.path, imported)  # fmt: skip
            file.unlink()
        finally:
            os.close(fd)

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

    # ------------------------------------------------------------------ budgets' queries
    def spent(
        self, *, since: float, provider: str | None = None, run_id: str | None = None
    ) -> float:
        """USD recorded since ``since`` by every process, optionally for one provider or run.

        This process's rows count at once (even before they are committed); other
        processes' within ``flush_interval + refresh_interval``. Each distinct ``since``
        is its own cached total, so pass a fixed boundary (:func:`day_start`, ``0.0`` for
        a run), not a sliding ``now - window``.
        """
        provider = None if provider is None else str(provider)
        key = ("spent", since, provider, run_id)
        tally = self._tallies.get(key)
        if tally is None:
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

            tally = _Tally("cost", where, tuple(params), match)
        return self._total(key, tally)

    def requests(self, model: str, *, since: float, sent_only: bool = True) -> int:
        """Attempts of catalog model ``model`` since ``since``, by every process.

        With ``sent_only`` (the default) only requests that reached the provider count —
        what a provider's requests-per-day quota counts. Own rows count at once.
        """
        model = str(model)
        key = ("requests", since, model, sent_only)
        tally = self._tallies.get(key)
        if tally is None:
            where = "model = ? AND time >= ?" + (" AND sent = 1" if sent_only else "")

            def match(r: LedgerRow) -> float:
                return 1.0 if (
                    r.model == model and r.time >= since and (r.sent or not sent_only)
                ) else 0.0  # fmt: skip

            tally = _Tally("1", where, (model, float(since)), match)
        return round(self._total(key, tally))

    def answered(self, *, since: float, policy: str | None = None) -> int:
        """Calls answered since ``since`` (under policy mode ``policy``), by every process.

        One row per answered call: the attempt that produced the answer. Own rows count
        at once. The learned mode's budget calibration reads the day's call volume here.
        """
        key = ("answered", since, policy)
        tally = self._tallies.get(key)
        if tally is None:
            where = f"outcome = '{OK}' AND time >= ?" + (" AND policy = ?" if policy else "")
            params = (float(since), policy) if policy else (float(since),)

            def match(r: LedgerRow) -> float:
                return 1.0 if (
                    r.outcome == OK and r.time >= since and (policy is None or r.policy == policy)
                ) else 0.0  # fmt: skip

            tally = _Tally("1", where, params, match)
        return round(self._total(key, tally))

    def _total(self, key: tuple[Any, ...], fresh: _Tally) -> float:
        """Committed total (cached, refreshed incrementally) plus own uncommitted rows."""
        with self._read_lock:
            tally = self._tallies.get(key)
            if tally is None:
                tally = fresh
                self._tallies[key] = tally
                if len(self._tallies) > _MAX_TALLIES:
                    self._tallies.popitem(last=False)
            else:
                self._tallies.move_to_end(key)
            if _time.monotonic() - tally.fetched > self.refresh_interval:
                self._fetch(tally)
            while True:
                with self._lock:
                    if tally.delta_seq >= self._trimmed:
                        newest = self._seq
                        if newest > tally.delta_seq:
                            delta = 0.0
                            match, stop = tally.match, tally.delta_seq
                            for seq, row in reversed(self._own):
                                if seq <= stop:
                                    break
                                delta += match(row)
                            tally.delta += delta
                            tally.delta_seq = newest
                        return tally.db + tally.delta
                # Rows this total still needed were dropped from memory (a reader stalled
                # for longer than the keep window): they are committed, so read again.
                self._fetch(tally)

    def _fetch(self, tally: _Tally) -> None:
        """Read the rows committed since the last fetch (caller holds ``_read_lock``)."""
        now = _time.monotonic()
        conn = self._read_conn()
        if tally.last_id is None:
            total, last_id, snap = conn.execute(
                tally.full_sql, (*tally.params, self._writer_id)
            ).fetchone()
            tally.db = float(total)
        else:
            total, last_id, snap = conn.execute(
                tally.inc_sql, (tally.last_id, *tally.params, self._writer_id)
            ).fetchone()
            tally.db += float(total)
        if last_id is not None:
            tally.last_id = int(last_id)
        elif tally.last_id is None:
            tally.last_id = 0
        tally.delta = 0.0
        tally.delta_seq = int(snap or 0)
        tally.fetched = now

    # ------------------------------------------------------------------ monitoring
    def rows(
        self,
        *,
        since: float | None = None,
        operation: str | None = None,
        tier: str | None = None,
        limit: int | None = None,
    ) -> list[LedgerRow]:
        """Rows in time order (this process's pending rows are committed first).

        With ``limit``, the most recent ``limit`` rows, still oldest first.
        """
        self.flush()
        where, params = _filters(since, operation, tier)
        sql = f"SELECT {_SELECT_ROW}, id FROM attempts{where}"
        if limit is not None:
            sql = (f"SELECT * FROM ({sql} ORDER BY time DESC, id DESC LIMIT ?) "
                   "ORDER BY time, id")  # fmt: skip
            params.append(int(limit))
        else:
            sql += " ORDER BY time, id"
        with self._read_lock:
            found = self._read_conn().execute(sql, params).fetchall()
        return [_row(values[:-1]) for values in found]

    def stats(
        self,
        *,
        since: float | None = None,
        operation: str | None = None,
        tier: str | None = None,
    ) -> list[ModelStats]:
        """Per (operation, model): calls, success rate, fallbacks, latency, tokens, spend.

        Sorted by operation, then model. This process's pending rows are committed first.
        """
        self.flush()
        where, params = _filters(since, operation, tier)
        # max(id) makes the bare provider/tier columns come from the most recent row.
        totals_sql = f"""
            SELECT operation, model, provider, tier, max(id),
                   count(*), sum(sent), sum(outcome = '{OK}'), sum(outcome != '{OK}'),
                   sum(repair), sum(escalation), sum(input_tokens), sum(output_tokens),
                   total(cost)
            FROM attempts{where} GROUP BY operation, model ORDER BY operation, model"""
        ok_where = f"{where} AND outcome = '{OK}'" if where else f" WHERE outcome = '{OK}'"
        latency_sql = (f"SELECT operation, model, latency FROM attempts{ok_where} "
                       "ORDER BY operation, model, latency")  # fmt: skip
        with self._read_lock:
            conn = self._read_conn()
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
        for (op, model, provider, tier_, _, attempts, calls, successes, failures, repairs,
             escalations, input_tokens, output_tokens, spend) in groups:  # fmt: skip
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

    def health_window(self, operation: str, model: str, last_n: int = 50) -> Health:
        """Success rate and median latency of the last ``last_n`` sent calls of one model.

        Reads committed rows only: this process's last ``flush_interval`` may be missing,
        which a rolling window does not notice (the circuit breaker reacts at once anyway).
        """
        with self._read_lock:
            found = self._read_conn().execute(
                "SELECT outcome, latency FROM attempts WHERE operation = ? AND model = ? "
                "AND sent = 1 ORDER BY id DESC LIMIT ?",
                (str(operation), str(model), int(last_n)),
            ).fetchall()
        return _health(found)

    def health(
        self, *, last_n: int = 50, since: float | None = None, operation: str | None = None
    ) -> dict[tuple[str, str], Health]:
        """:meth:`health_window` for every (operation, model) with sent calls since ``since``.

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
                FROM attempts WHERE {where})
            WHERE recent <= ? ORDER BY operation, model"""
        with self._read_lock:
            found = self._read_conn().execute(sql, (*params, int(last_n))).fetchall()
        grouped: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for op, model, outcome, latency in found:
            grouped.setdefault((op, model), []).append((outcome, latency))
        return {key: _health(values) for key, values in grouped.items()}

    def performance(
        self,
        pairs: Iterable[tuple[str, str]] | None = None,
        *,
        last_n: int = 20,
        since: float | None = None,
        operation: str | None = None,
    ) -> dict[tuple[str, str], Performance]:
        """Per (operation, model) with sent calls since ``since``: its last ``last_n`` of them.

        Success rate, p50 / p95 latency of the successful calls and cost per successful
        call; ``since`` defaults to 24 hours ago. Committed rows only, as :meth:`health`.

        Without ``pairs``, one query over every row since ``since`` finds every pair. With
        ``pairs`` — (operation, model) tuples, what the router's dynamic model selection
        reads every couple of seconds — each pair is one indexed query that reads about
        ``last_n`` rows, so the cost does not grow with the traffic or the ledger. (Rows
        are found from the first row recorded at ``since - 5 s``: a row committed more
        than 5 s after it was recorded, right at the ``since`` edge, can be missed.)
        """
        start = _time.time() - DAY if since is None else float(since)
        if pairs is None:
            return self._performance_scan(start, last_n, operation)
        wanted = sorted({(str(op), str(model)) for op, model in pairs
                         if operation is None or str(op) == str(operation)})  # fmt: skip
        result: dict[tuple[str, str], Performance] = {}
        if not wanted:
            return result
        # ``+time``: never the time index here; walk (operation, model, id) backwards.
        sql = ("SELECT outcome, latency, cost FROM attempts WHERE operation = ? AND model = ? "
               "AND id >= ? AND sent = 1 AND +time >= ? ORDER BY id DESC LIMIT ?")  # fmt: skip
        with self._read_lock:
            conn = self._read_conn()
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
        self, start: float, last_n: int, operation: str | None
    ) -> dict[tuple[str, str], Performance]:
        """:meth:`performance` for every pair, in one query over the rows since ``start``."""
        where = "sent = 1 AND time >= ?"
        params: list[Any] = [start]
        if operation is not None:
            where += " AND operation = ?"
            params.append(str(operation))
        sql = f"""
            SELECT operation, model, outcome, latency, cost FROM (
                SELECT operation, model, outcome, latency, cost, row_number() OVER (
                    PARTITION BY operation, model ORDER BY id DESC) AS recent
                FROM attempts WHERE {where})
            WHERE recent <= ? ORDER BY operation, model"""
        with self._read_lock:
            found = self._read_conn().execute(sql, (*params, int(last_n))).fetchall()
        grouped: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
        for op, model, outcome, latency, cost in found:
            grouped.setdefault((op, model), []).append((outcome, latency, cost))
        return {key: _performance(values) for key, values in grouped.items()}

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
        if self._journal_fd is not None:
            # Only this copy: the lock belongs to the parent's open file and stays held.
            try:
                os.close(self._journal_fd)
            except OSError:  # pragma: no cover
                pass
        self._reset_state()


def _commit(
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
            good.append((seq, _params(row)))
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


def _retry_busy(action: Callable[[], Any], timeout: float) -> Any:
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
