"""What a graph's judges and escalations tell the router: quality outcomes in the ledger.

A judge node that judges a producer's latest answer (``JudgeNode.producer``) records a
``judge`` :class:`~tierwise.ledger.evidence.Outcome` for the producer's call — the
quality score / 10, or 1 / 0 for a structure assessment that passed / failed. A producer
that runs again in the same scope was sent back by an escalation edge: it records an
``escalation`` outcome of 0 for the answer it replaces. Producers a judge will judge
(``OperationNode.keep_features``) also keep their prompt's hashed features under their
call id, so the learned router can retrain on (features, model, verdict) — never the
prompt's text.

Recording is the node's own side effect, done once when it returns its update: LangGraph
does not run a node again on resume once its writes are checkpointed (pending writes of
an interrupted superstep included), so a resumed run does not repeat outcomes. Only a
crash between the record and the checkpoint can duplicate one. The ledger's file being
unwritable is logged, never raised: a run must not fail over its monitoring.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from tierwise.catalog.specs import TaskType
from tierwise.ledger import Ledger, LedgerError
from tierwise.ledger.evidence import ESCALATION, JUDGE, Outcome

__all__ = ["keep_features", "record_escalation", "record_judgement"]

logger = logging.getLogger(__name__)

#: The tier a report entry of a plain chat model carries (``nodes.base.UNROUTED``).
_UNROUTED = "unrouted"


def _judgeable(entry: Mapping[str, Any] | None) -> bool:
    """A routed answer with a call id: something evidence can be filed under."""
    return (
        entry is not None and entry.get("status") == "ok" and bool(entry.get("call_id"))
        and entry.get("tier") not in (None, _UNROUTED) and bool(entry.get("model"))
    )  # fmt: skip


def _record(ledger: Ledger, outcome: Outcome) -> None:
    try:
        ledger.evidence.record([outcome])
    except (sqlite3.Error, LedgerError) as exc:
        logger.warning("ledger %s: cannot record a %s outcome (%s)", ledger.label,
                       outcome.source, exc)  # fmt: skip


def record_judgement(
    ledger: Ledger | None,
    judged: Mapping[str, Any] | None,
    score: float,
    *,
    detail: str = "",
    run_id: str | None = None,
    thread_id: str | None = None,
) -> bool:
    """File a judge's ``score`` (in [0, 1]) for the answer of report entry ``judged``.

    Returns whether an outcome was recorded (not for a failed or unrouted answer, nor
    without a ledger).
    """
    if ledger is None or judged is None or not _judgeable(judged):
        return False
    _record(ledger, Outcome(
        operation=str(judged["operation"]), model=str(judged["model"]), score=score,
        source=JUDGE, call_id=str(judged["call_id"]), run_id=run_id, thread_id=thread_id,
        detail=detail,
    ))  # fmt: skip
    return True


def record_escalation(
    ledger: Ledger | None,
    replaced: Mapping[str, Any] | None,
    *,
    run_id: str | None = None,
    thread_id: str | None = None,
) -> bool:
    """File a score of 0 for the answer of ``replaced``: the graph asked a higher tier."""
    if ledger is None or replaced is None or not _judgeable(replaced):
        return False
    _record(ledger, Outcome(
        operation=str(replaced["operation"]), model=str(replaced["model"]), score=0.0,
        source=ESCALATION, call_id=str(replaced["call_id"]), run_id=run_id,
        thread_id=thread_id, detail=f"escalated from {replaced['tier']}",
    ))  # fmt: skip
    return True


def keep_features(
    ledger: Ledger | None, call_id: str, operation: TaskType, messages: Sequence[BaseMessage]
) -> bool:
    """Store the hashed features of a call's prompt (about 0.1-0.3 ms), for retraining.

    Skipped without a ledger or without a call id. (The learned router is imported here,
    not at module level: it brings numpy, which a graph without judges never needs.)
    """
    if ledger is None or not call_id:
        return False
    from tierwise.learning.learned_router import feature_ids
    from tierwise.routing.steering import prompt_text

    ids = feature_ids(prompt_text(messages, operation))
    try:
        ledger.evidence.record_features(call_id, operation.value, ids.tolist())
    except (sqlite3.Error, LedgerError) as exc:
        logger.warning("ledger %s: cannot keep prompt features (%s)", ledger.label, exc)
        return False
    return True
