"""Secrets at the provider boundary: response headers and the exceptions callbacks see.

Responses carry ``authorization`` and cookie headers, and provider error bodies quote
keys; failures end up in logs, the ledger, exceptions shown to users and callbacks handed
to tracers. Headers go through :func:`clean_headers`; a client's exception is replaced by
a :class:`RedactedError` (text scrubbed by :func:`~tierwise.catalog.secrets.redact_secrets`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

__all__ = ["RedactedError", "clean_headers"]

# --------------------------------------------------------------------------- headers

_MAX_HEADERS: Final = 200
_SENSITIVE_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "openai-organization",
        "openai-project",
        "x-goog-user-project",
        "www-authenticate",
        "proxy-authenticate",
    }
)
_SENSITIVE_PARTS: Final = ("auth", "secret", "cookie", "key", "token", "session", "password")


def _attr(obj: object, name: str) -> Any:
    """``getattr`` that never raises: properties on exceptions can."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _header_items(raw: object) -> Iterable[tuple[object, object]]:
    items = _attr(raw, "items")
    if not callable(items):
        return ()
    try:
        return list(items())[:_MAX_HEADERS]
    except Exception:
        return ()


def _str_of(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _sensitive(name: str) -> bool:
    if name in _SENSITIVE_HEADERS:
        return True
    if "ratelimit" in name or "rate-limit" in name:
        return False
    return any(part in name for part in _SENSITIVE_PARTS)


def clean_headers(raw: object) -> dict[str, str]:
    """Lower-cased, stringly-typed headers without credentials; ``{}`` when unusable."""
    out: dict[str, str] = {}
    for pair in _header_items(raw):
        if not isinstance(pair, tuple) or len(pair) != 2:
            continue
        name, value = _str_of(pair[0]), _str_of(pair[1])
        if name is None or value is None:
            continue
        name = name.strip().lower()
        if name and not _sensitive(name):
            out[name] = value[:1000]
    return out



# --------------------------------------------------------------------------- exceptions


class RedactedError(Exception):
    """A model call's failure as callbacks and tracers see it: its class name, redacted text.

    LangChain hands the exception a chat model raised to every callback handler
    (``on_llm_error``) before the caller sees it, and tracers record its text and
    traceback. Provider error bodies echo keys, so tierwise's clients raise this instead:
    one redacted line, no cause chain. The original stays reachable for
    :func:`~tierwise.providers.failures.classify` (``original``), never through ``str``,
    ``repr`` or a formatted traceback.
    """

    def __init__(self, message: str, original: BaseException) -> None:
        """Carry ``message`` (already redacted) and the ``original`` exception."""
        super().__init__(message)
        self.original = original
        self.original_type = type(original).__name__

    def __repr__(self) -> str:
        """``RedactedError('OpenAIRateLimitError: ...')``: never the original's repr."""
        return f"{type(self).__name__}({str(self)!r})"
