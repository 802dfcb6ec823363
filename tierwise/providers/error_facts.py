"""What a raised exception carries: its cause chain, status, headers and error body.

LangChain wrappers often keep the HTTP status, the response headers and Gemini's
``RetryInfo`` only on the SDK exception they were raised from, and properties on
exceptions may themselves raise. These readers walk the chain defensively (bounded, no
cycles, never raising) and gather the evidence :func:`~tierwise.providers.failures.classify`
decides on. Headers are read through :func:`~tierwise.providers.redaction.clean_headers`,
so credentials never get this far.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tierwise.providers.headers import parse_duration
from tierwise.providers.redaction import RedactedError, clean_headers

__all__ = ["Evidence", "attr", "chain", "gather", "status_of", "text_of"]

_MAX_CHAIN: Final = 8
TEXT_CAP: Final = 4000
"""The longest text read from one exception or body."""


def _seconds(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def attr(obj: object, name: str) -> Any:
    """``getattr`` that never raises: properties on exceptions can."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def text_of(obj: object) -> str:
    """``str`` that never raises and never returns an unbounded string."""
    try:
        text = obj if isinstance(obj, str) else str(obj)
    except Exception:
        return ""
    return text[:TEXT_CAP]


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: causes before contexts; no cycles."""
    out: list[BaseException] = []
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack and len(out) < _MAX_CHAIN:
        item = stack.pop()
        if isinstance(item, RedactedError):
            item = item.original  # what a tierwise client raised in place of the original
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        out.append(item)
        following: list[object] = [attr(item, "__cause__"), attr(item, "__context__")]
        members = attr(item, "exceptions") if isinstance(item, BaseExceptionGroup) else None
        if isinstance(members, tuple):
            following.extend(members[:4])
        stack.extend(reversed(following))
    return out


def _as_status(value: object) -> int | None:
    """An HTTP status (or Ollama's ``-1``) from an attribute, if it is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value == -1 or 100 <= value <= 599 else None
    if isinstance(value, str) and len(value) == 3 and value.isdigit():
        number = int(value)
        return number if 400 <= number <= 599 else None
    return None


def status_of(exc: BaseException) -> int | None:
    """The status an exception carries: its own attributes first, then its response's."""
    for name in ("status_code", "code", "status"):
        status = _as_status(attr(exc, name))
        if status is not None:
            return status
    response = attr(exc, "response")
    if response is not None:
        for name in ("status_code", "status"):
            status = _as_status(attr(response, name))
            if status is not None:
                return status
    return None


def _headers_of(exc: BaseException) -> dict[str, str]:
    response = attr(exc, "response")
    if response is not None:
        headers = clean_headers(attr(response, "headers"))
        if headers:
            return headers
    return clean_headers(attr(exc, "headers"))


def _error_mapping(value: object) -> Mapping[str, Any] | None:
    """The ``{"message", "code", "details", ...}`` part of an error body."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Mapping):
        return None
    inner = value.get("error")
    return inner if isinstance(inner, Mapping) else value


def _body_headers(body: Mapping[str, Any]) -> dict[str, str]:
    """OpenRouter puts the limiter's headers in ``error.metadata.headers``."""
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        return clean_headers(metadata.get("headers"))
    return {}


@dataclass(slots=True)
class Evidence:
    """What the walk over an exception chain found (one instance per classification)."""

    status: int | None = None
    declared_retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_headers: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    daily_quota: bool = False
    texts: list[str] = field(default_factory=list)


def _read_body(body: object, evidence: Evidence) -> None:
    """Gemini ``RetryInfo`` / ``QuotaFailure`` details and OpenRouter metadata headers."""
    error = _error_mapping(body)
    if error is None:
        return
    if not evidence.body_headers:
        evidence.body_headers = _body_headers(error)
    details = error.get("details")
    if not isinstance(details, list):
        return
    for detail in details[:16]:
        if not isinstance(detail, Mapping):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("RetryInfo") and evidence.retry_delay is None:
            delay = detail.get("retryDelay")
            if isinstance(delay, str):
                evidence.retry_delay = parse_duration(delay)
            elif isinstance(delay, Mapping):
                try:
                    evidence.retry_delay = _seconds(
                        float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
                    )
                except (TypeError, ValueError):
                    pass
        elif kind.endswith("QuotaFailure"):
            violations = detail.get("violations")
            for violation in violations[:16] if isinstance(violations, list) else ():
                if isinstance(violation, Mapping):
                    ids = f"{violation.get('quotaId', '')} {violation.get('quotaMetric', '')}"
                    if "perday" in ids.lower().replace("_", "").replace("-", ""):
                        evidence.daily_quota = True


def _add_text(evidence: Evidence, text: str) -> None:
    """Keep a text unless an earlier one already contains it (wrappers quote causes)."""
    if text and not any(text in seen for seen in evidence.texts):
        evidence.texts.append(text)


def gather(exceptions: list[BaseException]) -> Evidence:
    """Status, headers, declared retry-after, Gemini details and texts of ``exceptions``."""
    evidence = Evidence()
    for exc in exceptions:
        _add_text(evidence, text_of(exc))
        if evidence.status is None:
            status = status_of(exc)
            if status is not None and (status >= 400 or status == -1):
                evidence.status = status
        if not evidence.headers:
            evidence.headers = _headers_of(exc)
        if evidence.declared_retry_after is None:
            declared = attr(exc, "retry_after")
            if isinstance(declared, int | float) and not isinstance(declared, bool):
                evidence.declared_retry_after = _seconds(float(declared))
        code = attr(exc, "code")
        if isinstance(code, str):
            _add_text(evidence, code[:200])
        for name in ("body", "details"):
            body = attr(exc, name)
            if isinstance(body, Mapping | list):
                _add_text(evidence, text_of(body))
                _read_body(body, evidence)
            elif isinstance(body, str):
                _add_text(evidence, body[:TEXT_CAP])
    return evidence

