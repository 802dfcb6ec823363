"""The protocol-neutral shape of a chat call: what was asked (ChatRequest) and answered (Answer).

Each wire protocol parses its own JSON into a :class:`ChatRequest` and renders an
:class:`Answer` back into its own JSON, so scripts, default answers, faults and rate limits
are written once for all providers instead of once per wire format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tierwise.catalog.specs import Provider

__all__ = [
    "Answer",
    "ChatRequest",
    "FinishReason",
    "Message",
    "Tool",
    "ToolCall",
    "estimate_tokens",
]

#: Why an answer ended; ``None`` means it never said (a truncated answer).
FinishReason = Literal["stop", "tool_calls", "length"] | None


def estimate_tokens(text: str) -> int:
    """About one token per four characters, at least one: close enough for limits and costs."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model makes (``args`` is always an object, never a string)."""

    name: str
    args: Mapping[str, Any]
    id: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation; ``role`` is system, user, assistant or tool."""

    role: str
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the caller offers the model, with its JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat call as every protocol sees it; what scripts and ``Reply.function`` receive.

    Attributes:
        provider: The provider the route belongs to (``/openai/v1/...`` is Groq, ...).
        model: The provider's model id as the client sent it.
        messages: The conversation, system instruction first when there is one.
        tools: The functions offered (``bind_tools`` / structured output by function call).
        forced_tool: The tool the caller forces (``tool_choice`` / Gemini mode ANY), if any.
        schema: The JSON schema the answer must follow (structured output), if any.
        json_mode: JSON requested without a schema.
        stream: The client asked for a streamed answer.
        include_usage: An OpenAI-style stream asked for a final usage chunk.
        seq: The simulator's sequence number of this request (ids are derived from it).
        body: The parsed JSON body exactly as received.
    """

    provider: Provider
    model: str
    messages: tuple[Message, ...] = ()
    tools: tuple[Tool, ...] = ()
    forced_tool: str | None = None
    schema: Mapping[str, Any] | None = None
    json_mode: bool = False
    stream: bool = False
    include_usage: bool = False
    seq: int = 0
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def last_is_tool_result(self) -> bool:
        """The last turn returns a tool result: the model should now answer in text."""
        return bool(self.messages) and self.messages[-1].role == "tool"

    @property
    def prompt_tokens(self) -> int:
        """Estimated prompt size: messages, tool calls and tool schemas (chars / 4)."""
        chars = sum(len(m.text) for m in self.messages)
        for message in self.messages:
            chars += sum(len(json.dumps(c.args)) for c in message.tool_calls)
        chars += sum(len(json.dumps(t.parameters)) for t in self.tools)
        return max(1, (chars + 3) // 4)

    @property
    def max_output_tokens(self) -> int | None:
        """The answer limit the client sent, in any protocol's spelling (``None``: none)."""
        body = self.body
        options = body.get("options")
        config = body.get("generationConfig")
        for value in (
            body.get("max_completion_tokens"),
            body.get("max_tokens"),
            config.get("maxOutputTokens") if isinstance(config, Mapping) else None,
            options.get("num_predict") if isinstance(options, Mapping) else None,
        ):
            if isinstance(value, int) and value > 0:
                return value
        return None

    def tool(self, name: str | None = None) -> Tool | None:
        """The tool called ``name``; without a name the forced tool, else the first one."""
        wanted = name or self.forced_tool
        if wanted is None:
            return self.tools[0] if self.tools else None
        return next((t for t in self.tools if t.name == wanted), None)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the simulated model says; each protocol renders it in its own JSON."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 1
    completion_tokens: int = 1

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens
