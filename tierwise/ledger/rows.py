"""What the ledger stores: one attempt of one model, and its row with the row's encodings.

The router builds an :class:`Attempt` for every candidate it tries — answered, failed, or
refused before it was sent — and the ledger stores it as one :class:`LedgerRow`. Both live
here, below the router, so the ledger never imports the routing layer; the row's two
encodings (SQL parameters and the journal's JSON line) sit beside the row so that adding a
column is one edit in one module.
"""

from __future__ import annotations

import json
import operator
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tierwise.catalog.specs import Provider, Tier
from tierwise.providers.failures import FailureKind

if TYPE_CHECKING:  # only a type here: reading rows needs no policy
    from tierwise.catalog.policy import Policy

__all__ = ["DAY", "OK", "Attempt", "LedgerRow", "day_start"]

OK: Final = "ok"
"""The ``outcome`` of an attempt that produced the answer (otherwise a ``FailureKind``)."""
DAY: Final = 86_400.0
"""Seconds in a UTC day (UTC has no leap seconds in Unix time)."""


def day_start(now: float | None = None) -> float:
    """Unix time of the UTC midnight that began the day of ``now`` (default: the current time).

    Example:
        >>> day_start(86_400 * 3 + 5.5)
        259200.0
    """
    t = _time.time() if now is None else now
    return float(t - t % DAY)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one candidate: sent to the provider or refused locally, and how it ended."""

    model: str
    provider: Provider
    tier: Tier
    failure: FailureKind | None
    latency: float
    detail: str = ""
    sent: bool = True
    retry_after: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    time_to_first_token: float | None = None
    repair: bool = False

    @property
    def ok(self) -> bool:
        """True when this attempt produced the answer."""
        return self.failure is None

    def describe(self) -> str:
        """One line for people: ``model (tier): outcome — detail``."""
        outcome = "ok" if self.failure is None else self.failure.value
        where = "" if self.sent else ", not sent"
        detail = f" — {self.detail}" if self.detail else ""
        return f"{self.model} ({self.tier}{where}): {outcome}{detail}"


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

COLUMNS: Final = (
    "time", "run_id", "thread_id", "node", "operation", "complexity", "policy", "provider",
    "model", "tier", "outcome", "sent", "latency", "time_to_first_token", "input_tokens",
    "output_tokens", "cost", "escalation", "repair", "detail", "call_id", "arm",
)  # fmt: skip
"""The ``attempts`` columns, in the order of :func:`to_params` and :func:`from_values`."""
V1_FIELDS: Final = 20
"""Fields of a row journaled by schema version 1 (before ``call_id`` and ``arm``)."""
SELECT_ROW: Final = ", ".join(COLUMNS)


def to_params(row: LedgerRow) -> tuple[Any, ...]:
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


def from_values(values: Sequence[Any]) -> LedgerRow:
    """The row of column ``values`` in :data:`COLUMNS` order (a v1 row lacks the last two)."""
    (t, run_id, thread_id, node, operation, complexity, policy, provider, model, tier,
     outcome, sent, latency, ttft, input_tokens, output_tokens, cost, escalation, repair,
     detail, call_id, arm) = (*values, None, None)[:len(COLUMNS)]  # fmt: skip
    return LedgerRow(
        time=t, run_id=run_id, thread_id=thread_id, node=node, operation=operation,
        complexity=complexity, policy=policy, provider=provider, model=model, tier=tier,
        outcome=outcome, sent=bool(sent), latency=latency, time_to_first_token=ttft,
        input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
        escalation=bool(escalation), repair=bool(repair), detail=detail,
        call_id=call_id, arm=arm,
    )  # fmt: skip


def _opt_text(value: str | None) -> str | None:
    return None if value is None else str(value)


_FIELDS: Final = operator.attrgetter(*COLUMNS)


def _make_dumps() -> Callable[[Any], str]:
    """The journal's JSON serializer: compact, ASCII-only (no raw newline or tab in a line).

    Odd values become their str(), as to_params would store them. record() calls it, so the
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


def journal_body(row: LedgerRow) -> bytes | None:
    """The JSON array of ``row``'s fields, or None if it cannot be serialized."""
    try:
        return _dumps(_FIELDS(row)).encode()
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None
