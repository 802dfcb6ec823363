"""What happened: every attempt, its tokens, cost and latency, and the quality evidence.

* :mod:`~tierwise.ledger.rows` — :class:`Attempt` (one try of one model) and
  :class:`LedgerRow` (as stored), with their encodings;
* :mod:`~tierwise.ledger.batching` — what every ledger does: batched writes, own-row totals;
* :mod:`~tierwise.ledger.store` — the SQLite :class:`Ledger`;
* :mod:`~tierwise.ledger.opening` — :func:`open_ledger` (file or URL), shared ledgers;
* :mod:`~tierwise.ledger.postgres` — the ledger and budget holds in PostgreSQL (``scale``
  extra; :mod:`~tierwise.ledger.pg`: its pool, tables and SQL translation);
* :mod:`~tierwise.ledger.schema` — the file's tables, migrations and the append transaction;
* :mod:`~tierwise.ledger.journal` — each writer's journal, what survives a hard kill;
* :mod:`~tierwise.ledger.totals` — the cross-process totals budgets read per call;
* :mod:`~tierwise.ledger.queries` — stats, health and performance for people and the router;
* :mod:`~tierwise.ledger.evidence` — quality evidence (evals, judges, escalations).
"""

from tierwise.ledger.evidence import EvidenceStore, Measured, Outcome
from tierwise.ledger.opening import (
    close_shared_ledgers,
    is_postgres_url,
    open_ledger,
    shared_ledger,
)
from tierwise.ledger.queries import Health, ModelStats, Performance, percentile
from tierwise.ledger.rows import DAY, OK, Attempt, LedgerRow, day_start
from tierwise.ledger.schema import SCHEMA_VERSION, LedgerError, LedgerUnavailable
from tierwise.ledger.store import LEDGER_ENV, Ledger, default_ledger_path

__all__ = [
    "DAY",
    "LEDGER_ENV",
    "OK",
    "SCHEMA_VERSION",
    "Attempt",
    "EvidenceStore",
    "Health",
    "Ledger",
    "LedgerError",
    "LedgerRow",
    "LedgerUnavailable",
    "Measured",
    "ModelStats",
    "Outcome",
    "Performance",
    "close_shared_ledgers",
    "day_start",
    "default_ledger_path",
    "is_postgres_url",
    "open_ledger",
    "percentile",
    "shared_ledger",
]
