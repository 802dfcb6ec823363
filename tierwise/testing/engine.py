"""The simulator's decisions: route, parse, enforce limits, pick the scripted behaviour, record.

The engine turns one :class:`~tierwise.testing.http.HttpRequest` into one response and
keeps the state scripts and tests touch — rules, limiters and the request log — behind a
single lock, because the server runs in its own thread while tests script and inspect it
from theirs. It never does I/O itself, so it costs microseconds per request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.catalog.specs import Provider
from tierwise.testing.chat import Answer, ChatRequest
from tierwise.testing.http import (
    DropConnection,
    FullResponse,
    HoldConnection,
    HttpRequest,
    HttpResponse,
    StreamResponse,
)
from tierwise.testing.limits import LimitRejection, ModelLimiter, WindowKind, retry_headers
from tierwise.testing.protocols import Route, WireProtocol, resolve_route, tags_body
from tierwise.testing.protocols.base import dumps, loads
from tierwise.testing.script import Behaviour, Fault, FaultKind, Rule, default_answer, resolve

__all__ = ["Engine", "RecordedRequest"]

#: Header names never recorded: they carry credentials.
SECRET_HEADERS = frozenset(
    {"authorization", "x-goog-api-key", "api-key", "x-api-key", "proxy-authorization", "cookie"}
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request that reached the simulator, and what it was answered.

    Attributes:
        seq: Arrival order, from 1.
        time: The simulator clock (``time.monotonic`` by default) at arrival.
        provider: The provider whose route was called (``None``: not a provider route).
        model: The model id from the body or path ("" when none).
        method: HTTP method.
        path: URL path without the query string.
        query: Query parameters.
        headers: Request headers minus credentials (authorization, x-goog-api-key, ...).
        body: The parsed JSON body (``None`` when there was none or it did not parse).
        stream: The client asked for a streamed answer.
        status: HTTP status sent; ``None`` when the connection was dropped or held.
        outcome: ``ok``, a :class:`FaultKind` value, ``limit:rpm|tpm|rpd``,
            ``bad_request``, ``script_error`` or ``not_found``.
    """

    seq: int
    time: float
    provider: Provider | None
    model: str
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    stream: bool
    status: int | None
    outcome: str


@dataclass
class _Limit:
    provider: Provider | None
    limiter: ModelLimiter


class Engine:
    """Everything the simulator decides; thread-safe; one per simulator."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        ollama_models: Iterable[str] = (),
        max_records: int | None = 100_000,
    ) -> None:
        """Use ``clock`` for limit windows and record times (inject a fake one in tests).

        Only the newest ``max_records`` requests are kept (``None``: all), so a simulator
        serving a long benchmark or a standalone session does not grow without bound.
        """
        self.clock = clock
        self.ollama_models: set[str] = set(ollama_models)
        self._lock = threading.RLock()
        self._rules: dict[str, list[Rule]] = {}
        self._limits: dict[str, list[_Limit]] = {}
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._seq = 0
        self._served = 0
        #: Called with every new record on the server thread (``tierwise simulate -v``).
        self.listener: Callable[[RecordedRequest], None] | None = None

    # ------------------------------------------------------------------ scripting API

    def add_rule(self, rule: Rule) -> Rule:
        """Add ``rule``; newer rules take precedence over older ones for the same model."""
        with self._lock:
            self._rules.setdefault(rule.model, []).append(rule)
        return rule

    def set_limit(
        self,
        model: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        window_scale: float = 1.0,
        window: WindowKind = "sliding",
        provider: Provider | None = None,
    ) -> ModelLimiter:
        """Enforce limits on ``model`` (replacing earlier ones for the same provider)."""
        limiter = ModelLimiter(rpm=rpm, tpm=tpm, rpd=rpd, window_scale=window_scale, window=window)
        with self._lock:
            entries = [e for e in self._limits.get(model, []) if e.provider is not provider]
            self._limits[model] = [*entries, _Limit(provider, limiter)]
        return limiter

    def add_ollama_models(self, names: Iterable[str]) -> None:
        """List more tags in ``/api/tags``."""
        with self._lock:
            self.ollama_models.update(names)

    def records(self) -> list[RecordedRequest]:
        """A snapshot of the request log."""
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        """Forget rules, limits and recorded requests."""
        with self._lock:
            self._rules.clear()
            self._limits.clear()
            self._records.clear()

    def stats(self) -> dict[str, float]:
        """Requests served and the process CPU time (for ``/_sim/stats`` and benchmarks)."""
        return {"requests": self._served, "cpu_seconds": time.process_time()}

    # ------------------------------------------------------------------ request handling

    def handle(self, http: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (called on the server thread)."""
        self._served += 1
        if http.method == "POST":
            route = resolve_route(http.path)
            if route is not None:
                return self._chat(http, route)
            if http.path == "/_sim/reset":
                self.reset()
                return FullResponse(200, b'{"reset":true}')
        elif http.method == "GET":
            if http.path == "/api/tags":
                with self._lock:
                    self._record(http, Provider.OLLAMA, "", None, False, 200, "ok")
                    return FullResponse(200, tags_body(self._ollama_tags()))
            if http.path == "/api/version":
                return FullResponse(200, b'{"version":"0.0.0-tierwise-sim"}')
            if http.path == "/_sim/stats":
                return FullResponse(200, dumps(self.stats()))
            if http.path == "/_sim/requests":
                return FullResponse(200, dumps([_summary(r) for r in self.records()]))
            if http.path in ("/", "/_sim/health"):
                return FullResponse(200, b"tierwise provider simulator is running", "text/plain")
        message = f"the simulator has no endpoint {http.method} {http.path}"
        return FullResponse(404, dumps({"error": {"message": message, "code": 404}}))

    def _chat(self, http: HttpRequest, route: Route) -> HttpResponse:
        protocol = route.protocol
        with self._lock:
            self._seq += 1
            seq = self._seq
        body: Any = None
        try:
            body = loads(http.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
            request = protocol.parse(route, body, seq)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            with self._lock:
                self._record(
                    http, route.provider, route.model or "", body, False, 400, "bad_request", seq
                )
            return FullResponse(400, protocol.error_body(400, f"bad request: {exc}", None))
        with self._lock:
            now = self.clock()
            limiter = self._limiter(request)
            rejection = limiter.admit(now, request.prompt_tokens) if limiter else None
            if rejection is not None:
                response: HttpResponse = _limited(protocol, request, rejection)
                outcome = f"limit:{rejection.limit}"
            else:
                rule: Rule | None = None
                try:
                    behaviour, rule = self._pick(request)
                    result = resolve(behaviour, request)
                    outcome = result.kind.value if isinstance(result, Fault) else "ok"
                    if isinstance(behaviour, Fault) and behaviour.kind in (
                        FaultKind.EMPTY,
                        FaultKind.SCHEMA_VIOLATION,
                    ):
                        outcome = behaviour.kind.value
                except Exception as exc:  # a failing Reply.function or `when`: 500, say why
                    result = Fault.http_error(500, f"the script raised {exc!r}")
                    outcome = "script_error"
                if limiter is not None and isinstance(result, Answer):
                    limiter.consume_tokens(now, result.total_tokens)
                headers = {"x-request-id": f"req_sim_{seq}"}
                if limiter is not None:
                    headers.update(limiter.headers(now))
                response = _render(
                    protocol,
                    request,
                    result,
                    headers,
                    rule.first_byte if rule else 0.0,
                    rule.per_chunk if rule else 0.0,
                )
            status = (
                response.status if isinstance(response, (FullResponse, StreamResponse)) else None
            )
            self._record(
                http,
                request.provider,
                request.model,
                body,
                request.stream,
                status,
                outcome,
                seq,
                now,
            )
        return response

    def _pick(self, request: ChatRequest) -> tuple[Behaviour | None, Rule | None]:
        for key in (request.model, "*"):
            for rule in reversed(self._rules.get(key, ())):
                behaviour = rule.take(request)
                if behaviour is not None:
                    return behaviour, rule
        return None, None

    def _limiter(self, request: ChatRequest) -> ModelLimiter | None:
        entries = self._limits.get(request.model)
        if not entries:
            return None
        exact = [e for e in entries if e.provider is request.provider]
        generic = [e for e in entries if e.provider is None]
        chosen = exact or generic
        return chosen[0].limiter if chosen else None

    def _ollama_tags(self) -> set[str]:
        scripted = {
            model
            for model, rules in self._rules.items()
            if any(r.provider is Provider.OLLAMA for r in rules)
        }
        limited = {
            model
            for model, entries in self._limits.items()
            if any(e.provider is Provider.OLLAMA for e in entries)
        }
        return self.ollama_models | scripted | limited

    def _record(
        self,
        http: HttpRequest,
        provider: Provider | None,
        model: str,
        body: Any,
        stream: bool,
        status: int | None,
        outcome: str,
        seq: int | None = None,
        now: float | None = None,
    ) -> None:
        if seq is None:
            self._seq += 1
            seq = self._seq
        record = RecordedRequest(
            seq=seq,
            time=self.clock() if now is None else now,
            provider=provider,
            model=model,
            method=http.method,
            path=http.path,
            query=http.query,
            headers={k: v for k, v in http.headers.items() if k not in SECRET_HEADERS},
            body=body,
            stream=stream,
            status=status,
            outcome=outcome,
        )
        self._records.append(record)
        if self.listener is not None:
            self.listener(record)


def _summary(record: RecordedRequest) -> dict[str, Any]:
    """A record as JSON for ``GET /_sim/requests`` (without headers and body)."""
    return {
        "seq": record.seq,
        "time": record.time,
        "provider": record.provider.value if record.provider else None,
        "model": record.model,
        "path": record.path,
        "stream": record.stream,
        "status": record.status,
        "outcome": record.outcome,
    }


def _limited(
    protocol: WireProtocol, request: ChatRequest, rejection: LimitRejection
) -> FullResponse:
    limit = rejection.limit.upper()
    message = (
        f"Rate limit reached for model {request.model} ({limit}). "
        f"Please try again in {rejection.retry_after:.3f}s."
    )
    return FullResponse(
        429,
        protocol.error_body(429, message, rejection.retry_after),
        headers=rejection.headers,
    )


def _render(
    protocol: WireProtocol,
    request: ChatRequest,
    result: Answer | Fault,
    headers: dict[str, str],
    first_byte: float,
    per_chunk: float,
) -> HttpResponse:
    """The HTTP response for an answer or a fault, in ``protocol``'s format."""
    stream_type = protocol.stream_content_type
    if isinstance(result, Answer):
        if request.stream:
            frames = protocol.frames(request, result)
            return StreamResponse(
                200, frames.content + frames.closing, stream_type, headers, first_byte, per_chunk
            )
        return FullResponse(
            200, protocol.body(request, result), headers=headers, first_byte=first_byte
        )
    fault = result
    kind = fault.kind
    if kind is FaultKind.RATE_LIMITED:
        if fault.retry_after is not None:
            headers.update(retry_headers(fault.retry_after))
        if fault.headers and "x-ratelimit-limit-requests" not in headers:
            reset = f"{fault.retry_after or 1.0:g}s"
            headers.update(
                {
                    "x-ratelimit-limit-requests": "1",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": reset,
                }
            )
        elif not fault.headers:
            headers = {k: v for k, v in headers.items() if not k.startswith("x-ratelimit-")}
        body = protocol.error_body(429, fault.message, fault.retry_after)
        return FullResponse(429, body, headers=headers, first_byte=first_byte)
    if kind is FaultKind.HTTP_ERROR:
        body = protocol.error_body(fault.status, fault.message, None)
        return FullResponse(fault.status, body, headers=headers, first_byte=first_byte)
    if kind is FaultKind.TIMEOUT:
        return HoldConnection(fault.seconds)
    if kind is FaultKind.DROP:
        return DropConnection(first_byte)
    answer = default_answer(request)
    if kind is FaultKind.TRUNCATED_STREAM:
        answer = Answer(
            text=answer.text,
            tool_calls=answer.tool_calls,
            finish_reason=None,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
        )
    if not request.stream:
        if kind is FaultKind.MIDSTREAM_ERROR:
            body = protocol.error_body(fault.status, fault.message, None)
            return FullResponse(fault.status, body, headers=headers, first_byte=first_byte)
        if kind is FaultKind.TRUNCATED_STREAM:
            return FullResponse(
                200, protocol.body(request, answer), headers=headers, first_byte=first_byte
            )
        return FullResponse(
            200, protocol.malformed_body(request, answer), headers=headers, first_byte=first_byte
        )
    frames = protocol.frames(request, answer)
    content = frames.content
    if kind is FaultKind.TRUNCATED_STREAM:
        sent = content
    elif kind is FaultKind.MIDSTREAM_ERROR:
        sent = content[: max(1, len(content) // 2)] + [
            protocol.error_frame(fault.status, fault.message)
        ]
    elif kind is FaultKind.MALFORMED_CHUNK:
        sent = content[:1] + [protocol.malformed_frame()]
    else:  # MALFORMED_JSON on a stream: the very first frame is broken
        sent = [protocol.malformed_frame()]
    return StreamResponse(200, sent, stream_type, headers, first_byte, per_chunk)
