"""Secret scrubbing: what looks like a credential never leaves tierwise in text or headers.

Provider error messages quote keys ("Incorrect API key provided: sk-..."), responses carry
``authorization`` and cookie headers, and failure messages end up in logs, the ledger,
exceptions shown to users and callbacks handed to tracers. Everything that crosses that
boundary goes through :func:`redact_secrets` (text) or :func:`clean_headers` (headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["REDACTED", "clean_headers", "redact_secrets"]

REDACTED: Final = "[REDACTED]"
# (cheap lower-case substrings that must occur, pattern, replacement): the substring test
# runs at C speed and skips almost every pattern for almost every message.
_SECRET_RULES: Final[tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...]] = (
    (("bearer",), re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+"), f"Bearer {REDACTED}"),
    (("sk-", "pk-", "rk-"), re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}"), REDACTED),
    (("gsk_",), re.compile(r"\bgsk_[A-Za-z0-9]{6,}"), REDACTED),
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_\-]{10,}"), REDACTED),
    (("hf_",), re.compile(r"\bhf_[A-Za-z0-9]{6,}"), REDACTED),
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{6,}"),
        REDACTED,
    ),
    (
        ("key=", "token=", "sig=", "signature="),
        re.compile(r"(?i)(\b(?:key|api[_-]?key|access_token|token|sig|signature)=)[^&\s'\"#]+"),
        rf"\1{REDACTED}",
    ),
    (
        ("key", "authorization", "token", "secret", "password"),
        re.compile(
            r"(?i)((?:x-goog-api-key|x-api-key|api[_-]?key|authorization|access[_-]?token"
            r"|client[_-]?secret|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"
        ),
        rf"\1{REDACTED}",
    ),
)
_LONG_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_\-]{32,}")


def _redact_long_token(match: re.Match[str]) -> str:
    """Redact a long run mixing upper, lower and digits: the shape of an unprefixed key."""
    token = match.group(0)
    if (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
    ):
        return REDACTED
    return token


def redact_secrets(text: str) -> str:
    """Remove what looks like a credential from ``text``.

    Provider error messages quote keys ("Incorrect API key provided: sk-..."), and
    failure messages end up in logs, the ledger and exceptions shown to users. This
    strips API keys of the known shapes (``sk-``, ``gsk_``, ``AIza``, ``hf_``, ...),
    ``Bearer`` tokens, ``key=`` query parameters, ``api_key: ...`` pairs and long
    mixed-case alphanumeric runs (unprefixed keys such as Mistral's).

    Example:
        >>> redact_secrets("Incorrect API key provided: sk-abc123def456")
        'Incorrect API key provided: [REDACTED]'
    """
    lower = text.lower()
    for needles, pattern, replacement in _SECRET_RULES:
        if any(needle in lower for needle in needles):
            text = pattern.sub(replacement, text)
    return _LONG_TOKEN_RE.sub(_redact_long_token, text)



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

