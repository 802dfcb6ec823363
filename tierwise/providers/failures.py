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
HTTP 413                            ``context_overflow``; ``rate_limited`` when the text
                                    names a rate window (Groq's 413 "Request too large
                                    ... tokens per minute (TPM)")
HTTP 408                            ``timeout``
HTTP 400 / 404 / 422 / other 4xx    ``bad_request``, or ``context_overflow`` for a
                                    prompt-too-long message, or ``auth`` for an invalid
                                    API key (Gemini answers those with 400);
                                    ``capability_mismatch`` (another model may answer) for
                                    "does not support tools / json_schema / images ...",
                                    every 404 and model-level rejections: a retired model
                                    (Groq ``model_decommissioned``), an upstream refusal
                                    (OpenRouter "Provider returned error", also on 403),
                                    a parameter or value unsupported *by this model*
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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final

from tierwise.catalog.secrets import redact_secrets
from tierwise.providers.error_facts import Evidence, attr, chain, gather, status_of, text_of
from tierwise.providers.headers import RateLimitHeaders, parse_duration, read_rate_limits

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage

__all__ = [
    "Failure",
    "FailureKind",
    "InvalidOutput",
    "classify",
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
    # Model-level rejections: the model is retired, its upstream provider refused, or a
    # parameter or value is not accepted *by this model*. Another model may well answer.
    r"|decommissioned|no longer (?:supported|available)|model[^\n]{0,40}?deprecated"
    r"|provider returned error|upstream provider"
    r"|unsupported[ _](?:parameter|value)|(?:with|for|by) this model"
    r"|not a valid model|invalid[ _]model|model_not_supported|not a chat model|unknown model"
    r"|not supported by (?:any|the) provider"
)
_RATE_WINDOW_RE: Final = re.compile(
    r"rate[ _]limit[ _](?:exceeded|reached)|per[ _-]?(?:min(?:ute)?|day)\b|\b[tr]p[md]\b"
)
"""A rejection that is about a rate window, whatever its status (Groq's 413 TPM)."""
_RATE_WINDOW_NEEDLES: Final = ("rate", "per", "tpm", "rpm", "tpd", "rpd")
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

_MESSAGE_CAP: Final = 300


# --------------------------------------------------------------------------- decision


def _own_kind(exc: BaseException) -> FailureKind | None:
    """The ``failure_kind`` an exception declares for itself (tierwise's opt-in)."""
    declared = attr(exc, "failure_kind")
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
    number = attr(exc, "errno")
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


def _decide(exceptions: list[BaseException]) -> tuple[FailureKind, str]:
    """The kind, and where it came from: declared, evidence, or the hint/unknown fallback."""
    hint: FailureKind | None = None
    for exc in exceptions:
        own = _own_kind(exc)
        if own is not None:
            return own, _DECLARED
        definitive, class_hint = _class_verdict(type(exc))
        if definitive is _CO and status_of(exc) == 429:
            # langchain-google-genai files any message mentioning a "token limit" as a
            # context overflow, a per-minute token quota included; the 429 is the truth.
            return _RL, _EVIDENCE
        if definitive is not None:
            return definitive, _EVIDENCE
        by_errno = _errno_kind(exc)
        if by_errno is not None:
            return by_errno, _EVIDENCE
        status = status_of(exc)
        if status is not None and (status >= 400 or status == -1):
            return _status_kind(status), _EVIDENCE
        if hint is None:
            hint = class_hint
    return (hint if hint is not None else _UN), _FALLBACK


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _message(
    exc: BaseException, exceptions: list[BaseException], redact: Callable[[str], str] | None
) -> str:
    """A short, single-line, redacted description: ``ClassName: text``."""
    text = text_of(exc)
    if not text.strip():
        text = next((t for t in map(text_of, exceptions[1:]) if t.strip()), "")
    text = _one_line(text)
    if redact is not None:
        try:
            text = text_of(redact(text))
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


def _is_daily(evidence: Evidence, text: str) -> bool:
    if evidence.daily_quota:
        return True
    if not _has(text, _DAILY_NEEDLES):
        return False
    return _DAILY_RE.search(text) is not None or (
        "quota" in text and _DAY_RE.search(text) is not None
    )


def _says_context_overflow(text: str) -> bool:
    return _has(text, _CONTEXT_NEEDLES) and _CONTEXT_RE.search(text) is not None


def _says_rate_window(text: str) -> bool:
    return _has(text, _RATE_WINDOW_NEEDLES) and _RATE_WINDOW_RE.search(text) is not None


def _says_bad_key(text: str) -> bool:
    return _has(text, _AUTH_NEEDLES) and _AUTH_TEXT_RE.search(text) is not None


def _refine(kind: FailureKind, source: str, evidence: Evidence, text: str) -> FailureKind:
    """Sharpen a kind with what the message and body say; a declared kind stays as is."""
    if source == _DECLARED:
        return kind
    if kind in (_CO, _BR) and _says_rate_window(text):
        # Groq answers a request larger than the tokens-per-minute window with 413
        # "Request too large ... on tokens per minute (TPM)", code rate_limit_exceeded:
        # a model with a larger window (or the same one later) can take it.
        kind = _RL
    if kind is _AU and "provider returned error" in text:
        # OpenRouter relays an upstream provider's 401/403 (a region it refuses): the
        # key is fine, this model's upstream is not.
        kind = _BR
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


def _retry_after_from_text(text: str) -> float | None:
    match = _RETRY_TEXT_RE.search(text)
    if match is None:
        return None
    if match.group(1) is not None:
        return parse_duration(match.group(1))
    return float(match.group(2))


def _retry_after(evidence: Evidence, limits: RateLimitHeaders, text: str) -> float | None:
    for candidate in (
        evidence.declared_retry_after,
        limits.retry_after,
        evidence.retry_delay,
        limits.exhausted_wait,
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
        exceptions = chain(exc)
        if not exceptions:
            return Failure(_UN, message=_one_line(text_of(type(exc).__name__))[:_MESSAGE_CAP])
        evidence = gather(exceptions)
        text = "\n".join(evidence.texts).lower()
        kind, source = _decide(exceptions)
        kind = _refine(kind, source, evidence, text)
        headers = {**evidence.body_headers, **evidence.headers}
        capability = kind is _BR and (
            evidence.status == 404 or _CAPABILITY_RE.search(text) is not None
        )
        return Failure(
            kind=kind,
            retry_after=(
                _retry_after(evidence, read_rate_limits(headers), text)
                if kind in _WAITABLE
                else None
            ),
            status=evidence.status if evidence.status != -1 else None,
            headers=MappingProxyType(headers),
            message=_message(exceptions[0], exceptions, redact),
            capability_mismatch=capability,
        )
    except Exception:  # never let classification turn one failure into another
        return Failure(_UN, message="unclassifiable error (tierwise could not inspect it)")
