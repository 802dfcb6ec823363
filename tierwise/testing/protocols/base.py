"""The contract every wire protocol implements, and helpers they share (text chunks, SSE).

A protocol only translates: its JSON into a :class:`~tierwise.testing.chat.ChatRequest`,
an :class:`~tierwise.testing.chat.Answer` into its JSON body or stream frames, and errors
into its error format. Deciding what to answer is the engine's job.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierwise.catalog.specs import Provider
from tierwise.testing.chat import Answer, ChatRequest

__all__ = ["Frames", "Route", "WireProtocol", "dumps", "loads", "split_text", "sse", "text_of"]

CREATED = 1_767_225_600  # a fixed "created" timestamp keeps bodies deterministic


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request path leads: protocol, provider, model from the path, streaming."""

    protocol: WireProtocol
    provider: Provider
    model: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Frames:
    """A streamed answer: the content frames, then the frames that finish the stream.

    Faults cut here: a truncated stream sends ``content`` only, a mid-stream error half of
    it followed by an error frame.
    """

    content: list[bytes] = field(default_factory=list)
    closing: list[bytes] = field(default_factory=list)


class WireProtocol(ABC):
    """Translation between one provider API's JSON and the simulator's neutral types."""

    #: Content type of a streamed answer.
    stream_content_type = "text/event-stream"

    @abstractmethod
    def parse(self, route: Route, body: Mapping[str, Any], seq: int) -> ChatRequest:
        """The neutral request; raises KeyError/TypeError/ValueError on a bad body."""

    @abstractmethod
    def body(self, request: ChatRequest, answer: Answer) -> bytes:
        """The non-streamed JSON answer."""

    @abstractmethod
    def frames(self, request: ChatRequest, answer: Answer) -> Frames:
        """The streamed answer."""

    @abstractmethod
    def error_body(self, status: int, message: str, retry_after: float | None) -> bytes:
        """The provider's error JSON for an HTTP error ``status``."""

    @abstractmethod
    def error_frame(self, status: int, message: str) -> bytes:
        """An error event in the middle of a stream."""

    @abstractmethod
    def malformed_frame(self) -> bytes:
        """A stream frame whose JSON does not parse."""

    def malformed_body(self, request: ChatRequest, answer: Answer) -> bytes:
        """A 200 body cut in the middle of its JSON."""
        body = self.body(request, answer)
        return body[: max(1, len(body) // 2)]


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json_dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _json_loads(data: bytes) -> Any:
    return json.loads(data)


try:  # orjson comes with langsmith (a langchain-core dependency); 10x faster, same JSON
    import orjson
except ImportError:  # pragma: no cover - pure-python fallback
    dumps: Callable[[Any], bytes] = _json_dumps
    loads: Callable[[bytes], Any] = _json_loads
else:
    dumps = orjson.dumps
    loads = orjson.loads


def sse(value: Any) -> bytes:
    """One server-sent event carrying ``value`` as JSON."""
    return b"data: " + dumps(value) + b"\n\n"


def split_text(text: str, pieces: int = 4) -> list[str]:
    """``text`` in up to ``pieces`` chunks cut at word boundaries (at least one chunk).

    Example:
        >>> split_text("simulated answer from m")
        ['simulated ', 'answer ', 'from ', 'm']
    """
    words = text.split(" ")
    if len(words) <= 1:
        return [text]
    tokens = [w + " " for w in words[:-1]] + [words[-1]]
    per = -(-len(tokens) // pieces)
    chunks = ["".join(tokens[i : i + per]) for i in range(0, len(tokens), per)]
    return [c for c in chunks if c] or [text]


def text_of(content: Any) -> str:
    """Plain text of a message content: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(text_of(p.get("text") if isinstance(p, Mapping) else p) for p in content)
    return str(content)
