"""What happened: every attempt, its tokens, cost and latency, and the quality evidence.

* :mod:`~tierwise.ledger.rows` — :class:`Attempt` (one try of one model) and
  :class:`LedgerRow` (as stored), with their encodings;
* :mod:`~tierwise.ledger.store` — the SQLite :class:`Ledger`: record, totals, shared ledgers;
* :mod:`~tierwise.ledger.schema` — the file's tables, migrations and the append transaction;
* :mod:`~tierwise.ledger.journal` — each writer's journal, what survives a hard kill;
* :mod:`~tierwise.ledger.totals` — the cross-process totals budgets read per call;
* :mod:`~tierwise.ledger.queries` — stats, health and performance for people and the router;
* :mod:`~tierwise.ledger.evidence` — quality evidence (evals, judges, escalations).
"""

from tierwise.ledger.evidence import EvidenceStore, Measured, Outcome
from tierwise.ledger.queries import Health, ModelStats, Performance, percentile
from tierwise.ledger.rows import DAY, OK, Attempt, LedgerRow, day_start
from tierwise.ledger.schema import SCHEMA_VERSION, LedgerError
from tierwise.ledger.store import (
    LEDGER_ENV,
    Ledger,
    close_shared_ledgers,
    default_ledger_path,
    shared_ledger,
)

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
    "Measured",
    "ModelStats",
    "Outcome",
    "Performance",
    "close_shared_ledgers",
    "day_start",
    "default_ledger_path",
    "percentile",
    "shared_ledger",
]
