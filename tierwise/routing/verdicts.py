"""Verdicts: a model's outcome judged — the attempt record, and a failure or the answer.

Every call the router makes, sent or refused before leaving the process, becomes an
:class:`~.results.Attempt` here; :func:`judge` decides whether an answer counts (see
:mod:`.answers`) and classifies failures (see :mod:`tierwise.providers.failures`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage

from tierwise.catalog.specs import ModelSpec
from tierwise.ledger import Attempt
from tierwise.providers.failures import Failure, FailureKind, InvalidOutput, classify
from tierwise.routing.answers import SchemaViolation, accept, answer_text
from tierwise.routing.drivers import Outcome
from tierwise.routing.request import RouteRequest

__all__ = ["Verdict", "judge", "refused", "repairable", "retries"]


@dataclass(slots=True)
class Verdict:
    """An outcome judged: the attempt record, and either a failure or the answer."""

    attempt: Attempt
    failure: Failure | None
    value: Any = None
    message: AIMessage | None = None
    repairable: bool = False


def judge(
request: RouteRequest,
    spec: ModelSpec,
    outcome: Outcome,
    latency: float,
    repair: bool,
    tool_schemas: Mapping[str, Mapping[str, Any]] | None,
    redact: Callable[[str], str],
) -> Verdict:
    """Turn a call's outcome into an attempt record and a failure or an answer."""
    value: Any = None
    message: AIMessage | None = None
    error = outcome.error
    if error is None:
        try:
            value, message = accept(
                outcome.output,
                structured=request.schema is not None,
                tools_bound=bool(request.tools),
                tool_choice=request.tool_choice,
                tools=tool_schemas,
            )
        except InvalidOutput as exc:
            error = exc
            message = exc.message
    failure = classify(error, redact=redact) if error is not None else None
    input_tokens, output_tokens = _usage(message)
    attempt = Attempt(
        spec.key, spec.provider, spec.tier,
        failure.kind if failure is not None else None,
        latency,
        detail=failure.message if failure is not None else "",
        retry_after=failure.retry_after if failure is not None else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=spec.price.cost(input_tokens, output_tokens),
        time_to_first_token=outcome.time_to_first_token,
        repair=repair,
    )
    return Verdict(
        attempt, failure, value, message, repairable=isinstance(error, SchemaViolation)
    )


def repairable(request: RouteRequest, verdict: Verdict) -> bool:
    """Whether a schema failure may be repaired: one more request to the same model."""
    return (
        request.schema is not None
        and verdict.repairable
        and verdict.message is not None
        and bool(answer_text(verdict.message).strip())
    )


def retries(sent: list[Attempt]) -> list[str]:
    """Models to send once more after the chain, most recent failure first.

    Each model that answered a 5xx, but only the last timeout: a second wait on every
    slow model would turn a failover of seconds into minutes.
    """
    keys: list[str] = []
    for i, attempt in enumerate(reversed(sent)):
        transient = attempt.failure is FailureKind.UNAVAILABLE or (
            i == 0 and attempt.failure is FailureKind.TIMEOUT
        )
        if transient and attempt.model not in keys:
            keys.append(attempt.model)
    return keys


def _usage(message: AIMessage | None) -> tuple[int, int]:
    usage = message.usage_metadata if message is not None else None
    if not usage:
        return 0, 0
    return usage.get("input_tokens", 0), usage.get("output_tokens", 0)


def refused(
    spec: ModelSpec, kind: FailureKind, detail: str, *, retry_after: float | None = None
) -> Attempt:
    """An attempt that never left the process."""
    return Attempt(
        spec.key, spec.provider, spec.tier, kind, 0.0,
        detail=detail, sent=False, retry_after=retry_after,
    )
