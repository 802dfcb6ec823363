"""Scripted behaviour: what a simulated model answers (Reply), how it fails (Fault), and when.

A :class:`Rule` binds replies or faults to a model: for the next N requests, for a seeded
fraction of them, or for ever, with latency before the first byte and between stream chunks.
Rules are written against the protocol-neutral :class:`~tierwise.testing.chat.ChatRequest`,
so one script drives OpenAI, Groq, Gemini and Ollama clients alike.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from tierwise.catalog.specs import Provider
from tierwise.testing.chat import Answer, ChatRequest, ToolCall, estimate_tokens
from tierwise.testing.schema import minimal_instance, stated_schema, violating_instance

__all__ = [
    "Behaviour",
    "Fault",
    "FaultKind",
    "Reply",
    "ReplyFunction",
    "Rule",
    "default_answer",
    "resolve",
]


class FaultKind(StrEnum):
    """Every way the simulator can misbehave."""

    RATE_LIMITED = "rate_limited"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    DROP = "drop"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_CHUNK = "malformed_chunk"
    MIDSTREAM_ERROR = "midstream_error"
    TRUNCATED_STREAM = "truncated_stream"
    EMPTY = "empty"
    SCHEMA_VIOLATION = "schema_violation"


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure the simulator produces instead of a good answer. Build with the factories."""

    kind: FaultKind
    status: int = 200
    retry_after: float | None = None
    headers: bool = True
    seconds: float = 0.0
    message: str = ""

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1.0, *, headers: bool = True) -> Fault:
        """HTTP 429; ``retry_after=None`` omits ``Retry-After`` (and Gemini's RetryInfo).

        ``headers`` adds ``x-ratelimit-*`` headers as the real providers send them.
        """
        return cls(FaultKind.RATE_LIMITED, 429, retry_after, headers, message="Rate limit exceeded")

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx answer in the provider's error format (500 internal, 503 overloaded...)."""
        if not 500 <= status <= 599:
            raise ValueError(f"server_error needs a 5xx status, got {status}")
        return cls.http_error(status)

    @classmethod
    def http_error(cls, status: int, message: str = "") -> Fault:
        """Any error status (400, 401, 404, 5xx...) in the provider's error format."""
        if not 400 <= status <= 599:
            raise ValueError(f"http_error needs a 4xx or 5xx status, got {status}")
        return cls(FaultKind.HTTP_ERROR, status, message=message or f"simulated {status} error")

    @classmethod
    def timeout(cls, seconds: float = 60.0) -> Fault:
        """Say nothing for ``seconds`` (or until the client hangs up), then close.

        Give the client a shorter timeout than ``seconds`` to see its read timeout.
        """
        return cls(FaultKind.TIMEOUT, 0, seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without any reply."""
        return cls(FaultKind.DROP, 0)

    @classmethod
    def malformed_json(cls) -> Fault:
        """HTTP 200 whose JSON body is cut in half (a streamed request gets a bad chunk)."""
        return cls(FaultKind.MALFORMED_JSON)

    @classmethod
    def malformed_chunk(cls) -> Fault:
        """A stream whose second event is not valid JSON (non-streamed: a malformed body)."""
        return cls(FaultKind.MALFORMED_CHUNK)

    @classmethod
    def midstream_error(cls, status: int = 500) -> Fault:
        """Half of the stream, then an error event (non-streamed: an HTTP ``status`` error)."""
        return cls(FaultKind.MIDSTREAM_ERROR, status, message="simulated mid-stream error")

    @classmethod
    def truncated_stream(cls) -> Fault:
        """The stream ends cleanly but before its finish event: partial text, no reason."""
        return cls(FaultKind.TRUNCATED_STREAM)

    @classmethod
    def empty(cls) -> Fault:
        """A well-formed answer with no content and no tool call."""
        return cls(FaultKind.EMPTY)

    @classmethod
    def schema_violation(cls) -> Fault:
        """Well-formed JSON that does not validate against the requested schema or tool."""
        return cls(FaultKind.SCHEMA_VIOLATION)


#: What ``Reply.function`` may return: any behaviour, text, a JSON value or an Answer.
ReplyFunction: TypeAlias = Callable[
    [ChatRequest], "Reply | Fault | Answer | str | Mapping[str, Any] | list[Any]"
]

ReplyKind = Literal["default", "text", "json", "tool_call", "function"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A good answer from the simulated model. Build with the factories."""

    kind: ReplyKind
    content: str = ""
    value: Any = None
    name: str | None = None
    args: Mapping[str, Any] | None = None
    fn: ReplyFunction | None = None
    usage: tuple[int, int] | None = None

    @classmethod
    def default(cls) -> Reply:
        """What the simulator says unscripted: schema-valid JSON, forced tool call or text."""
        return cls("default")

    @classmethod
    def text(cls, content: str, *, usage: tuple[int, int] | None = None) -> Reply:
        """Answer ``content``; ``usage=(prompt, completion)`` overrides the token estimate."""
        return cls("text", content=content, usage=usage)

    @classmethod
    def json(cls, value: Any, *, usage: tuple[int, int] | None = None) -> Reply:
        """Answer the JSON ``value`` — as text, or as the forced tool's arguments (Groq)."""
        return cls("json", value=value, usage=usage)

    @classmethod
    def tool_call(
        cls,
        name: str | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        usage: tuple[int, int] | None = None,
    ) -> Reply:
        """Call tool ``name`` (default: the forced or first tool) with ``args``.

        Without ``args`` the smallest arguments valid for the tool's schema are sent. The
        model answers in text instead when the request offers no tools or its last message
        is a tool result, so agent loops terminate.
        """
        return cls("tool_call", name=name, args=args, usage=usage)

    @classmethod
    def function(cls, fn: ReplyFunction) -> Reply:
        """Compute the answer from the request (it may also return a Fault)."""
        return cls("function", fn=fn)


Behaviour: TypeAlias = Reply | Fault


@dataclass(eq=False)
class Rule:
    """Behaviours bound to a model: which requests they apply to and how fast they come.

    A rule serves ``times`` requests (default: for ever with one behaviour, once through a
    sequence of several); request *i* it serves gets ``behaviours[i % len]``. With
    ``fraction`` each candidate request is served with that probability (seeded RNG), the
    others fall through to older rules and finally to the default answer.
    """

    model: str
    behaviours: tuple[Behaviour, ...]
    times: int | None = None
    fraction: float | None = None
    seed: int = 0
    first_byte: float = 0.0
    per_chunk: float = 0.0
    provider: Provider | None = None
    when: Callable[[ChatRequest], bool] | None = None
    served: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Validate arguments and seed the RNG (once per rule, so runs repeat exactly)."""
        if not self.behaviours:
            raise ValueError("a rule needs at least one Reply or Fault")
        for b in self.behaviours:
            if not isinstance(b, (Reply, Fault)):
                raise TypeError(f"expected Reply or Fault, got {b!r}")
        if self.times is None and len(self.behaviours) > 1:
            self.times = len(self.behaviours)
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError("fraction must be within 0..1")
        if self.first_byte < 0 or self.per_chunk < 0:
            raise ValueError("latencies must be >= 0")
        self._rng = random.Random(self.seed)

    @property
    def exhausted(self) -> bool:
        """The rule has served all the requests it was given."""
        return self.times is not None and self.served >= self.times

    def matches(self, request: ChatRequest) -> bool:
        """Same model (or ``*``), provider and predicate — before the fraction draw."""
        if self.model != "*" and self.model != request.model:
            return False
        if self.provider is not None and self.provider is not request.provider:
            return False
        return self.when is None or self.when(request)

    def take(self, request: ChatRequest) -> Behaviour | None:
        """The behaviour for ``request``, or ``None`` when this rule lets it pass."""
        if self.exhausted or not self.matches(request):
            return None
        if self.fraction is not None and self._rng.random() >= self.fraction:
            return None
        behaviour = self.behaviours[self.served % len(self.behaviours)]
        self.served += 1
        return behaviour


def default_answer(request: ChatRequest) -> Answer:
    """The unscripted answer: text after a tool result, the forced tool call, schema JSON, text."""
    if not request.last_is_tool_result:
        if request.forced_tool is not None:
            tool = request.tool()
            if tool is not None:
                return _tool_answer(request, tool.name, minimal_instance(tool.parameters))
        if request.schema is not None:
            return _text_answer(request, json.dumps(minimal_instance(request.schema)))
        if request.json_mode:
            stated = _stated(request)
            return _text_answer(request, json.dumps(minimal_instance(stated)) if stated else "{}")
    return _text_answer(request, f"simulated answer from {request.model}")


def resolve(behaviour: Behaviour | None, request: ChatRequest, depth: int = 0) -> Answer | Fault:
    """Turn a behaviour into the concrete answer for ``request`` (or the fault to produce)."""
    if behaviour is None:
        return default_answer(request)
    if isinstance(behaviour, Fault):
        if behaviour.kind is FaultKind.EMPTY:
            return Answer(prompt_tokens=request.prompt_tokens, completion_tokens=0)
        if behaviour.kind is FaultKind.SCHEMA_VIOLATION:
            return _violation(request)
        return behaviour
    answer = _reply_answer(behaviour, request, depth)
    if isinstance(answer, Answer) and behaviour.usage is not None:
        prompt, completion = behaviour.usage
        answer = replace(answer, prompt_tokens=prompt, completion_tokens=completion)
    limit = request.max_output_tokens
    if isinstance(answer, Answer) and limit is not None and answer.completion_tokens > limit:
        # As a provider does: the answer stops at the limit, finish reason "length".
        answer = replace(answer, text=answer.text[: limit * 4], completion_tokens=limit,
                         finish_reason="length")  # fmt: skip
    return answer


def _reply_answer(reply: Reply, request: ChatRequest, depth: int) -> Answer | Fault:
    if reply.kind == "text":
        return _text_answer(request, reply.content)
    if reply.kind == "json":
        if request.forced_tool is not None and isinstance(reply.value, Mapping):
            return _tool_answer(request, request.forced_tool, reply.value)
        return _text_answer(request, json.dumps(reply.value))
    if reply.kind == "tool_call":
        tool = request.tool(reply.name)
        if request.last_is_tool_result or not request.tools:
            return default_answer(request)
        name = reply.name or (tool.name if tool else "tool")
        args = (
            reply.args
            if reply.args is not None
            else minimal_instance(tool.parameters if tool else {"type": "object"})
        )
        return _tool_answer(request, name, args)
    if reply.kind == "function" and reply.fn is not None:
        if depth > 8:
            raise RecursionError("Reply.function returned Reply.function too often")
        result = reply.fn(request)
        if isinstance(result, (Reply, Fault)):
            return resolve(result, request, depth + 1)
        if isinstance(result, Answer):
            return result
        if isinstance(result, str):
            return _text_answer(request, result)
        return _reply_answer(Reply.json(result), request, depth)
    return default_answer(request)


def _text_answer(request: ChatRequest, text: str) -> Answer:
    return Answer(
        text=text,
        prompt_tokens=request.prompt_tokens,
        completion_tokens=estimate_tokens(text),
    )


def _tool_answer(request: ChatRequest, name: str, args: Mapping[str, Any]) -> Answer:
    call = ToolCall(name=name, args=dict(args), id=f"call_sim_{request.seq}_0")
    return Answer(
        tool_calls=(call,),
        finish_reason="tool_calls",
        prompt_tokens=request.prompt_tokens,
        completion_tokens=estimate_tokens(json.dumps(call.args)),
    )


def _violation(request: ChatRequest) -> Answer:
    """Valid JSON that breaks the forced tool's or the response schema."""
    if request.forced_tool is not None and not request.last_is_tool_result:
        tool = request.tool()
        bad = violating_instance(tool.parameters if tool else None)
        args = bad if isinstance(bad, Mapping) else {"unexpected": bad}
        return _tool_answer(request, request.forced_tool, args)
    if request.schema is not None:
        return _text_answer(request, json.dumps(violating_instance(request.schema)))
    if request.json_mode:
        stated = _stated(request)
        return _text_answer(request, json.dumps(violating_instance(stated) if stated else []))
    return _text_answer(request, "{not json")


def _stated(request: ChatRequest) -> Mapping[str, Any] | None:
    """The schema a JSON-mode request states in its system or user turns."""
    return stated_schema(m.text for m in request.messages if m.role in ("system", "user"))
