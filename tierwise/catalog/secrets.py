"""What looks like a credential, and the text without it: the one secret scrubber.

Provider error messages quote keys ("Incorrect API key provided: sk-..."), a key pasted in
the wrong place of ``tierwise.toml`` would be quoted by the config error, and all of it
may reach logs, the ledger, exceptions and tracers. Everything shown goes through
:func:`redact_secrets`. It lives in ``catalog`` (the bottom layer) because settings need it
as much as the provider clients do.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["REDACTED", "redact_credential_like", "redact_secrets"]

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


_MIXED_RUN_RE: Final = re.compile(r"[A-Za-z0-9]{16,}")


def _redact_mixed_run(match: re.Match[str]) -> str:
    token = match.group(0)
    if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
        return REDACTED
    return token


def redact_credential_like(text: str) -> str:
    """:func:`redact_secrets`, plus any unbroken run of 16+ letters *and* digits.

    For text that should hold no random tokens at all (configuration values, names):
    a hex or base64 key of an unknown provider is such a run, while model names and
    settings break into short segments (``llama-4-scout-17b-16e-instruct``).

    Example:
        >>> redact_credential_like("policy.mode: 'tw-9f2c41d0a7be33e8' is not a mode")
        "policy.mode: 'tw-[REDACTED]' is not a mode"
        >>> redact_credential_like("unknown model 'llama-4-scout-17b-16e-instruct'")
        "unknown model 'llama-4-scout-17b-16e-instruct'"
    """
    return _MIXED_RUN_RE.sub(_redact_mixed_run, redact_secrets(text))
