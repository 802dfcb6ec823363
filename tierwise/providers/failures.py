"""Error taxonomy: any exception a model call can raise -> one :class:`FailureKind`.

The router reacts to *kinds* of failure, never to provider exception classes: a 429 from
Groq, a ``GoogleRateLimitError`` wrapping a Gemini ``ClientError`` and an Ollama
``ResponseError(status_code=429)`` all mean "this model is rate-limited now, try the next
one". :func:`classify` does that translation for ChatOpenAI (OpenAI, OpenRouter, Mistral,
Hugging Face), ChatGroq, ChatGoogleGenerativeAI, ChatOllama and the embedded llama.cpp
model, reading what PROVIDERS.md documents: the status code and headers may sit on a
wrapper or on its ``__cause__`` / ``__context__``, so the whole chain is walked.

No provider SDK is imported here. Classes are recognised by walking the exception's MRO
and matching ``(package, class name)`` pairs — ``isinstance`` semantics without importing
anything, so tierwise works with any subset of SDKs installed and classification never
pays an import.

Mapping (per exception, outermost first; the first exception that gives evidence decides):

==================================  ===================================================
evidence                            kind
==================================  ===================================================
``failure_kind`` attribute          that kind, as is (tierwise's own exceptions opt in:
                                    :class:`InvalidOutput`, ``BudgetExceeded``; a numeric
                                    ``retry_after`` attribute is honoured too)
``ContextOverflowError`` class      ``context_overflow`` (but ``rate_limited`` if that
                                    exception's own status is 429)
JSON / pydantic / output-parser,    ``invalid_output``
refusal, length / content-filter
finish, response-validation class
timeout class (httpx, httpx2,       ``timeout``
``APITimeoutError``, builtin)
connection class (httpx transport   ``unavailable``
errors, ``APIConnectionError``,
``ConnectionError``, ``OSError``
with a connection errno)
HTTP 429                            ``rate_limited``; ``quota_exhausted`` when the body
                                    says the quota is daily (RPD/TPD, "per day", Gemini
                                    ``QuotaFailure`` ``...PerDay...``, OpenRouter
                                    ``free-models-per-day``) or ``insufficient_quota``
HTTP 402                            ``quota_exhausted`` (no credit left)
HTTP 401 / 403                      ``auth``
HTTP 413                            ``context_overflow``
HTTP 408                            ``timeout``
HTTP 400 / 404 / 422 / other 4xx    ``bad_request``, or ``context_overflow`` for a
                                    prompt-too-long message, or ``auth`` for an invalid
                                    API key (Gemini answers those with 400);
                                    ``capability_mismatch`` for "does not support
                                    tools / json_schema / images ..." and for every 404
HTTP 5xx; Ollama ``status_code=-1`` ``unavailable``
LangChain ``Model*Error`` or SDK    its meaning: rate-limited, auth, bad request, or
``APIError`` with no status in the  ``unavailable`` for a mid-stream error event
whole chain
anything else                       ``unavailable``; ``context_overflow`` if the text
                                    says so (llama.cpp's ``ValueError``), ``auth`` if
                                    it says an API key is missing or invalid
==================================  ===================================================

Unknown errors are ``unavailable`` on purpose: moving on to another model is the right
reaction to an error nobody anticipated, and the circuit breaker stops a model that keeps
raising it. ``retry_after`` is reported only for ``rate_limited``, ``quota_exhausted``
and ``unavailable``, the kinds where waiting can help.
"""

from __future__ import annotations

import errno
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage

__all__ = [
    "Failure",
    "FailureKind",
    "InvalidOutput",
    "classify",
    "redact_secrets",
]


class FailureKind(StrEnum):
    """What went wrong with one model call, in the terms the router acts on."""

    RATE_LIMITED = "rate_limited"
    """Too many requests right now (RPM/TPM); the model comes back within seconds."""
    QUOTA_EXHAUSTED = "quota_exhausted"
    """A daily (RPD/TPD) quota or the account's credit is used up: skip until reset."""
    UNAVAILABLE = "unavailable"
    """5xx, connection refused or dropped, mid-stream error, or an unknown error."""
    TIMEOUT = "timeout"
    """No answer in time (connect, read, write or pool timeout)."""
    AUTH = "auth"
    """401/403 or a rejected key: disable the provider until its config changes."""
    BAD_REQUEST = "bad_request"
    """The request was rejected; see :attr:`Failure.capability_mismatch`."""
    CONTEXT_OVERFLOW = "context_overflow"
    """The prompt is too long for this model: a model with a larger window may work."""
    INVALID_OUTPUT = "invalid_output"
    """The model answered, but the answer is unusable (malformed, empty, truncated...)."""
    BUDGET_EXCEEDED = "budget_exceeded"
    """The call would exceed a cost cap of the policy."""


def _empty_headers() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: what the router, limiter and breaker need, and nothing secret.

    Attributes:
        kind: What went wrong.
        retry_after: Seconds until the provider said it would accept a request again,
            when it said so (``Retry-After``, ``retry-after-ms``, Gemini ``RetryInfo``,
            an exhausted ``x-ratelimit-*`` window, or "try again in 7.5s" in the text),
            or the ``retry_after`` attribute of an exception of tierwise's own.
        status: The HTTP status, when there was one.
        headers: Response headers, lower-cased, without credentials or cookies; the
            limiter reads ``x-ratelimit-*`` from them. Excluded from hashing.
        message: One line of at most 300 characters, with secrets redacted.
        capability_mismatch: The request was rejected because of what *this* model
            cannot do (tools, JSON schema, images, ...) or because the model does not
            exist at that endpoint (404) — so another model may well succeed.
    """

    kind: FailureKind
    retry_after: float | None = None
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=_empty_headers, hash=False)
    message: str = ""
    capability_mismatch: bool = False


class InvalidOutput(Exception):
    """The model answered, but the answer cannot be used; raised by the router.

    Empty answers, streams that stopped without a finish reason, schema violations and
    refusals are failures of that model just like an HTTP 500: :func:`classify` maps
    this to ``invalid_output`` and the next candidate runs.

    Args:
        reason: Why the answer was rejected, for the attempt log
            (e.g. ``"empty answer"``, ``"truncated: the answer has no finish reason"``).
        message: The rejected answer, kept so a repair prompt can quote it.
    """

    failure_kind: ClassVar[FailureKind] = FailureKind.INVALID_OUTPUT

    def __init__(self, reason: str, *, message: AIMessage | None = None) -> None:
        """Record ``reason`` and the rejected ``message``."""
        super().__init__(reason)
        self.reason = reason
        self.message = message


# --------------------------------------------------------------------------- class table

_RL = FailureKind.RATE_LIMITED
_UN = FailureKind.UNAVAILABLE
_TO = FailureKind.TIMEOUT
_AU = FailureKind.AUTH
_BR = FailureKind.BAD_REQUEST
_CO = FailureKind.CONTEXT_OVERFLOW
_IO = FailureKind.INVALID_OUTPUT

# A *definitive* class decides the kind whatever the status; a *hint* only says what a
# wrapper means when no exception in the chain carries a status. Among several
# definitive classes in one MRO the earlier entry of _PRIORITY wins, so that an
# ``APITimeoutError`` (which is also an ``APIConnectionError``) is a timeout.
_PRIORITY: Final = (_CO, _IO, _TO, _UN)

_DEFINITIVE: Final[Mapping[tuple[str, str], FailureKind]] = {
    ("langchain_core", "ContextOverflowError"): _CO,
    ("langchain_core", "OutputParserException"): _IO,
    ("langchain_core", "ModelRefusalError"): _IO,
    ("langchain_core", "ModelTimeoutError"): _TO,
    ("langchain_core", "ModelConnectionError"): _UN,
    ("json", "JSONDecodeError"): _IO,
    ("pydantic_core", "ValidationError"): _IO,
    ("pydantic", "ValidationError"): _IO,
    ("builtins", "TimeoutError"): _TO,
    ("asyncio", "TimeoutError"): _TO,
    ("concurrent", "TimeoutError"): _TO,
    ("builtins", "ConnectionError"): _UN,
    ("google.genai", "UnknownApiResponseError"): _IO,  # a stream chunk that is not JSON
    ("openai", "LengthFinishReasonError"): _IO,
    ("openai", "ContentFilterFinishReasonError"): _IO,
    **{(sdk, "APIResponseValidationError"): _IO for sdk in ("openai", "groq")},
    **{(sdk, "APITimeoutError"): _TO for sdk in ("openai", "groq")},
    **{(sdk, "APIConnectionError"): _UN for sdk in ("openai", "groq")},
    **{(http, "TimeoutException"): _TO for http in ("httpx", "httpx2", "httpcore", "httpcore2")},
    **{(http, "TransportError"): _UN for http in ("httpx", "httpx2")},
    **{(http, "RequestError"): _UN for http in ("httpx", "httpx2")},
    **{(http, "NetworkError"): _UN for http in ("httpcore", "httpcore2")},
    **{(http, "ProtocolError"): _UN for http in ("httpcore", "httpcore2")},
    ("aiohttp", "ServerTimeoutError"): _TO,
    ("aiohttp", "ConnectionTimeoutError"): _TO,
    ("aiohttp", "SocketTimeoutError"): _TO,
    ("aiohttp", "ClientConnectionError"): _UN,
    ("aiohttp", "ClientPayloadError"): _UN,
    ("requests", "Timeout"): _TO,
    ("requests", "ConnectionError"): _UN,
    ("urllib3", "TimeoutError"): _TO,
    ("urllib3", "ProtocolError"): _UN,
}

_HINTS: Final[Mapping[tuple[str, str], FailureKind]] = {
    ("langchain_core", "ModelRateLimitError"): _RL,
    ("langchain_core", "ModelAPIError"): _UN,
    ("langchain_core", "ModelAuthenticationError"): _AU,
    ("langchain_core", "ModelPermissionDeniedError"): _AU,
    ("langchain_core", "ModelInvalidRequestError"): _BR,
    ("langchain_core", "ModelNotFoundError"): _BR,
    # An SSE ``error`` event in the middle of a stream: an APIError with no status.
    ("openai", "APIError"): _UN,
    ("groq", "APIError"): _UN,
    ("google.genai", "APIError"): _UN,
    ("ollama", "ResponseError"): _UN,
    ("ollama", "RequestError"): _BR,
}

_CONNECTION_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "EPIPE",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "ENETDOWN",
        "EHOSTDOWN",
        "ENOTCONN",
        "ESHUTDOWN",
    )
    if hasattr(errno, name)
)

_ClassVerdict = tuple[FailureKind | None, FailureKind | None]
_class_cache: dict[type, _ClassVerdict] = {}


def _package(module: str) -> str:
    """``google.genai.errors`` -> ``google.genai``; ``openai._exceptions`` -> ``openai``."""
    parts = module.split(".", 2)
    if parts[0] == "google" and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _class_verdict(cls: type) -> _ClassVerdict:
    """The (definitive, hint) kinds a class implies, from its MRO; cached per class."""
    cached = _class_cache.get(cls)
    if cached is not None:
        return cached
    definitive: list[FailureKind] = []
    hint: FailureKind | None = None
    for klass in cls.__mro__:
        key = (_package(str(getattr(klass, "__module__", ""))), klass.__name__)
        found = _DEFINITIVE.get(key)
        if found is not None:
            definitive.append(found)
        elif hint is None:
            hint = _HINTS.get(key)
    best = min(definitive, key=_PRIORITY.index) if definitive else None
    verdict = (best, hint)
    if len(_class_cache) < 4096:  # bounded: classes are finite, but be defensive
        _class_cache[cls] = verdict
    return verdict


# --------------------------------------------------------------------------- text rules

_CONTEXT_RE: Final = re.compile(
    r"context_length_exceeded|contextwindowexceeded|maximum context length"
    r"|exceed(?:s|ed)?\s+(?:the\s+|its\s+|your\s+)?(?:model'?s?\s+)?(?:maximum\s+|available\s+)?"
    r"context\s*(?:window|length|size)"
    r"|too many tokens|(?:prompt|input|request) is too (?:long|large)|request too large"
    r"|input token count|exceeds the maximum number of tokens|reduce the length"
    r"|token limit|input tokens exceed"
)
_CAPABILITY_WORDS: Final = (
    r"(?:tools?\b|tool[ _-]?(?:use|calls?|calling|choice)|function[ _-]?call(?:ing|s)?"
    r"|functions\b|json[ _-]?schema|json[ _-]?mode|json_object|response_format"
    r"|response[ _-]?(?:mime[ _-]?type|schema)|structured[ _-]?outputs?|images?\b"
    r"|image[ _-]?input|vision|multi-?modal|audio|thinking|reasoning"
    r"|(?:system|developer)[ _-]?(?:instructions?|prompts?|role|messages?))"
)
_NOT_SUPPORTED: Final = (
    r"(?:not[ _-]?(?:supported|enabled|available|allowed)|(?:does|do)\s*n[o']t\s+support"
    r"|unsupported|cannot\s+(?:use|accept)|no\s+support)"
)
_CAPABILITY_RE: Final = re.compile(
    rf"{_CAPABILITY_WORDS}[^\n]{{0,80}}?{_NOT_SUPPORTED}"
    rf"|{_NOT_SUPPORTED}[^\n]{{0,80}}?{_CAPABILITY_WORDS}"
    r"|no endpoints found that support"
    # The model (or route) does not exist there, or the provider refuses this caller:
    # the request itself is fine, so another model may answer it.
    r"|model[^\n]{0,80}?(?:not found|does not exist|is not supported for)|model_not_found"
    r"|user location is not supported"
)
_AUTH_TEXT_RE: Final = re.compile(
    r"api[ _-]?key[^\n]{0,40}?(?:not valid|invalid|expired|must be set|not set|missing"
    r"|not provided|not found)|(?:invalid|incorrect|missing)[ _-]api[ _-]?key|api_key_invalid"
)
_DAILY_RE: Final = re.compile(r"per[ _-]?day|\b[rt]pd\b|\bdaily\b|insufficient_quota")
_DAY_RE: Final = re.compile(r"\bdays?\b")
_DAILY_NEEDLES: Final = ("day", "rpd", "tpd", "daily", "insufficient_quota")
_CONTEXT_NEEDLES: Final = ("context", "token", "too long", "too large", "reduce the length")
_AUTH_NEEDLES: Final = ("api key", "api_key", "api-key", "apikey")
_RETRY_TEXT_RE: Final = re.compile(
    r"(?:try again|retry)\s+(?:in|after)\s+"
    r"(?:((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)(?![a-z])|(\d+(?:\.\d+)?)\s*sec(?:ond)?s?\b)"
)
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS: Final = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}

# --------------------------------------------------------------------------- redaction

_REDACTED: Final = "[REDACTED]"
# (cheap lower-case substrings that must occur, pattern, replacement): the substring test
# runs at C speed and skips almost every pattern for almost every message.
_SECRET_RULES: Final[tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...]] = (
    (("bearer",), re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+"), f"Bearer {_REDACTED}"),
    (("sk-", "pk-", "rk-"), re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}"), _REDACTED),
    (("gsk_",), re.compile(r"\bgsk_[A-Za-z0-9]{6,}"), _REDACTED),
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_\-]{10,}"), _REDACTED),
    (("hf_",), re.compile(r"\bhf_[A-Za-z0-9]{6,}"), _REDACTED),
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{6,}"),
        _REDACTED,
    ),
    (
        ("key=", "token=", "sig=", "signature="),
        re.compile(r"(?i)(\b(?:key|api[_-]?key|access_token|token|sig|signature)=)[^&\s'\"#]+"),
        rf"\1{_REDACTED}",
    ),
    (
        ("key", "authorization", "token", "secret", "password"),
        re.compile(
            r"(?i)((?:x-goog-api-key|x-api-key|api[_-]?key|authorization|access[_-]?token"
            r"|client[_-]?secret|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"
        ),
        rf"\1{_REDACTED}",
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
        return _REDACTED
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


# --------------------------------------------------------------------------- safe access

_MAX_CHAIN: Final = 8
_TEXT_CAP: Final = 4000
_MESSAGE_CAP: Final = 300
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


def _text(obj: object) -> str:
    """``str`` that never raises and never returns an unbounded string."""
    try:
        text = obj if isinstance(obj, str) else str(obj)
    except Exception:
        return ""
    return text[:_TEXT_CAP]


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: causes before contexts; no cycles."""
    out: list[BaseException] = []
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack and len(out) < _MAX_CHAIN:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        out.append(item)
        following: list[object] = [_attr(item, "__cause__"), _attr(item, "__context__")]
        members = _attr(item, "exceptions") if isinstance(item, BaseExceptionGroup) else None
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


def _status_of(exc: BaseException) -> int | None:
    """The status an exception carries: its own attributes first, then its response's."""
    for name in ("status_code", "code", "status"):
        status = _as_status(_attr(exc, name))
        if status is not None:
            return status
    response = _attr(exc, "response")
    if response is not None:
        for name in ("status_code", "status"):
            status = _as_status(_attr(response, name))
            if status is not None:
                return status
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


def _clean_headers(raw: object) -> dict[str, str]:
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


def _headers_of(exc: BaseException) -> dict[str, str]:
    response = _attr(exc, "response")
    if response is not None:
        headers = _clean_headers(_attr(response, "headers"))
        if headers:
            return headers
    return _clean_headers(_attr(exc, "headers"))


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
        return _clean_headers(metadata.get("headers"))
    return {}


# --------------------------------------------------------------------------- retry-after


def _seconds(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def _parse_duration(text: str) -> float | None:
    """``"2s"``, ``"1.5s"``, ``"6m0s"``, ``"20ms"``, ``"2m59.56s"`` or ``"7"`` -> seconds."""
    text = text.strip().lower().replace(" ", "")
    if not text:
        return None
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _DURATION_RE.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return _seconds(total) if position == len(text) else None


def _parse_retry_after(value: str) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date."""
    try:
        return _seconds(float(value.strip()))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _seconds(when.timestamp() - time.time())


def _parse_reset(value: str) -> float | None:
    """``x-ratelimit-reset*``: a duration, delta seconds, or epoch seconds / milliseconds."""
    try:
        number = float(value.strip())
    except ValueError:
        return _parse_duration(value)
    if number > 1e11:  # epoch milliseconds (OpenRouter)
        return _seconds(number / 1000.0 - time.time())
    if number > 1e9:  # epoch seconds
        return _seconds(number - time.time())
    return _seconds(number)


def _exhausted(value: str | None) -> bool:
    if value is None:
        return False
    try:
        return float(value.strip()) <= 0
    except ValueError:
        return False


def _retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = _seconds(float(value.strip()) / 1000.0)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if value is not None:
        seconds = _parse_retry_after(value)
        if seconds is not None:
            return seconds
    return None


def _retry_after_from_windows(headers: Mapping[str, str]) -> float | None:
    """The longest reset among the ``x-ratelimit-*`` windows whose remaining is 0."""
    waits: list[float] = []
    for suffix in ("-requests", "-tokens", ""):
        if _exhausted(headers.get(f"x-ratelimit-remaining{suffix}")):
            reset = headers.get(f"x-ratelimit-reset{suffix}")
            seconds = _parse_reset(reset) if reset is not None else None
            if seconds is not None:
                waits.append(seconds)
    return max(waits) if waits else None


def _retry_after_from_text(text: str) -> float | None:
    match = _RETRY_TEXT_RE.search(text)
    if match is None:
        return None
    if match.group(1) is not None:
        return _parse_duration(match.group(1))
    return _seconds(float(match.group(2)))


# --------------------------------------------------------------------------- Gemini details


@dataclass(slots=True)
class _Evidence:
    """What the walk over the chain found; one instance per :func:`classify` call."""

    status: int | None = None
    declared_retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_headers: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    daily_quota: bool = False
    texts: list[str] = field(default_factory=list)


def _read_body(body: object, evidence: _Evidence) -> None:
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
                evidence.retry_delay = _parse_duration(delay)
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


def _add_text(evidence: _Evidence, text: str) -> None:
    """Keep a text unless an earlier one already contains it (wrappers quote causes)."""
    if text and not any(text in seen for seen in evidence.texts):
        evidence.texts.append(text)


def _gather(chain: list[BaseException]) -> _Evidence:
    evidence = _Evidence()
    for exc in chain:
        _add_text(evidence, _text(exc))
        if evidence.status is None:
            status = _status_of(exc)
            if status is not None and (status >= 400 or status == -1):
                evidence.status = status
        if not evidence.headers:
            evidence.headers = _headers_of(exc)
        if evidence.declared_retry_after is None:
            declared = _attr(exc, "retry_after")
            if isinstance(declared, int | float) and not isinstance(declared, bool):
                evidence.declared_retry_after = _seconds(float(declared))
        code = _attr(exc, "code")
        if isinstance(code, str):
            _add_text(evidence, code[:200])
        for name in ("body", "details"):
            body = _attr(exc, name)
            if isinstance(body, Mapping | list):
                _add_text(evidence, _text(body))
                _read_body(body, evidence)
            elif isinstance(body, str):
                _add_text(evidence, body[:_TEXT_CAP])
    return evidence


# --------------------------------------------------------------------------- decision


def _own_kind(exc: BaseException) -> FailureKind | None:
    """The ``failure_kind`` an exception declares for itself (tierwise's opt-in)."""
    declared = _attr(exc, "failure_kind")
    if isinstance(declared, FailureKind):
        return declared
    if isinstance(declared, str):
        try:
            return FailureKind(declared)
        except ValueError:
            return None
    return None


def _errno_kind(exc: BaseException) -> FailureKind | None:
    if not isinstance(exc, OSError):
        return None
    number = _attr(exc, "errno")
    if number == errno.ETIMEDOUT:
        return _TO
    if number in _CONNECTION_ERRNOS:
        return _UN
    return None


def _status_kind(status: int) -> FailureKind:
    if status == 429:
        return _RL
    if status == 402:
        return FailureKind.QUOTA_EXHAUSTED
    if status in (401, 403):
        return _AU
    if status == 413:
        return _CO
    if status == 408:
        return _TO
    if 400 <= status < 500:
        return _BR
    return _UN  # 5xx, and -1: Ollama's error line in the middle of a stream


_DECLARED: Final = "declared"
_EVIDENCE: Final = "evidence"
_FALLBACK: Final = "fallback"


def _decide(chain: list[BaseException]) -> tuple[FailureKind, str]:
    """The kind, and where it came from: declared, evidence, or the hint/unknown fallback."""
    hint: FailureKind | None = None
    for exc in chain:
        own = _own_kind(exc)
        if own is not None:
            return own, _DECLARED
        definitive, class_hint = _class_verdict(type(exc))
        if definitive is _CO and _status_of(exc) == 429:
            # langchain-google-genai files any message mentioning a "token limit" as a
            # context overflow, a per-minute token quota included; the 429 is the truth.
            return _RL, _EVIDENCE
        if definitive is not None:
            return definitive, _EVIDENCE
        by_errno = _errno_kind(exc)
        if by_errno is not None:
            return by_errno, _EVIDENCE
        status = _status_of(exc)
        if status is not None and (status >= 400 or status == -1):
            return _status_kind(status), _EVIDENCE
        if hint is None:
            hint = class_hint
    return (hint if hint is not None else _UN), _FALLBACK


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _message(
    exc: BaseException, chain: list[BaseException], redact: Callable[[str], str] | None
) -> str:
    """A short, single-line, redacted description: ``ClassName: text``."""
    text = _text(exc)
    if not text.strip():
        text = next((t for t in map(_text, chain[1:]) if t.strip()), "")
    text = _one_line(text)
    if redact is not None:
        try:
            text = _text(redact(text))
        except Exception:
            text = "(message withheld: the redact callback failed)"
    text = redact_secrets(_one_line(text))
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(line) > _MESSAGE_CAP:
        line = line[: _MESSAGE_CAP - 1] + "…"
    return line


def _has(text: str, needles: tuple[str, ...]) -> bool:
    """Cheap substring pre-check, so that a regex runs only when it may match."""
    return any(needle in text for needle in needles)


def _is_daily(evidence: _Evidence, text: str) -> bool:
    if evidence.daily_quota:
        return True
    if not _has(text, _DAILY_NEEDLES):
        return False
    return _DAILY_RE.search(text) is not None or (
        "quota" in text and _DAY_RE.search(text) is not None
    )


def _says_context_overflow(text: str) -> bool:
    return _has(text, _CONTEXT_NEEDLES) and _CONTEXT_RE.search(text) is not None


def _says_bad_key(text: str) -> bool:
    return _has(text, _AUTH_NEEDLES) and _AUTH_TEXT_RE.search(text) is not None


def _refine(kind: FailureKind, source: str, evidence: _Evidence, text: str) -> FailureKind:
    """Sharpen a kind with what the message and body say; a declared kind stays as is."""
    if source == _DECLARED:
        return kind
    if kind is _RL:
        return FailureKind.QUOTA_EXHAUSTED if _is_daily(evidence, text) else kind
    if kind is _BR:
        if _says_context_overflow(text):
            return _CO
        if _says_bad_key(text):
            return _AU
        return kind
    if kind is _UN and source == _FALLBACK:
        # No status and no telling class: llama.cpp's ValueError, a mid-stream error
        # event, an SDK complaining that its key is missing.
        if _says_context_overflow(text):
            return _CO
        if _says_bad_key(text):
            return _AU
    return kind


# Only these kinds have a "come back later": a Retry-After on a 400 or a timeout means nothing.
_WAITABLE: Final = frozenset({_RL, FailureKind.QUOTA_EXHAUSTED, _UN})


def _retry_after(evidence: _Evidence, headers: Mapping[str, str], text: str) -> float | None:
    for candidate in (
        evidence.declared_retry_after,
        _retry_after_from_headers(headers),
        evidence.retry_delay,
        _retry_after_from_windows(headers),
    ):
        if candidate is not None:
            return candidate
    if _has(text, ("retry", "try again")):
        return _retry_after_from_text(text)
    return None


def classify(exc: BaseException, *, redact: Callable[[str], str] | None = None) -> Failure:
    """Map any exception from a model call to a :class:`Failure`; never raises.

    Walks ``exc`` and its ``__cause__`` / ``__context__`` chain (at most 8 exceptions,
    cycles ignored), because LangChain wrappers often keep the status, the headers and
    Gemini's ``RetryInfo`` only on the SDK exception they were raised from. The module
    docstring has the full mapping table.

    Args:
        exc: What the model call raised.
        redact: Applied to the message before tierwise's own secret redaction, e.g. to
            remove the exact configured keys.

    Returns:
        The failure, with ``retry_after``/``status``/``headers`` when the provider gave
        them. An exception that cannot even be inspected is ``unavailable``.

    Example:
        >>> classify(TimeoutError("read timed out")).kind.value
        'timeout'
        >>> classify(RuntimeError("boom")).kind.value
        'unavailable'
    """
    try:
        chain = _chain(exc)
        if not chain:
            return Failure(_UN, message=_one_line(_text(type(exc).__name__))[:_MESSAGE_CAP])
        evidence = _gather(chain)
        text = "\n".join(evidence.texts).lower()
        kind, source = _decide(chain)
        kind = _refine(kind, source, evidence, text)
        headers = {**evidence.body_headers, **evidence.headers}
        capability = kind is _BR and (
            evidence.status == 404 or _CAPABILITY_RE.search(text) is not None
        )
        return Failure(
            kind=kind,
            retry_after=_retry_after(evidence, headers, text) if kind in _WAITABLE else None,
            status=evidence.status if evidence.status != -1 else None,
            headers=MappingProxyType(headers),
            message=_message(chain[0], chain, redact),
            capability_mismatch=capability,
        )
    except Exception:  # never let classification turn one failure into another
        return Failure(_UN, message="unclassifiable error (tierwise could not inspect it)")
