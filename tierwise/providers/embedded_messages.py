"""What the embedded model reads and writes: LangChain messages <-> llama.cpp chat turns.

SmolLM2-135M has no tool-calling training and its chat template knows no ``tool`` role,
so tool calling is built from two things the model does have: the conversation (tool
definitions described in the system turn, tool results as labelled user turns) and
constrained decoding. `tool_call_schema` turns the bound tools and ``tool_choice`` into
one JSON schema — ``{"name": <a tool>, "arguments": <its parameters>}`` for each allowed
tool, plus ``{"answer": "..."}`` when the model may answer in text — and llama.cpp decodes
with the grammar built from it, so every call names a bound tool with arguments of its
shape. `parse_tool_answer` turns that JSON into an `AIMessage` with ``tool_calls``; the
router then validates the arguments against the tool schemas as it does for any provider.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call

__all__ = [
    "forced_tool",
    "parse_tool_answer",
    "to_llama_messages",
    "tool_call_schema",
    "tool_prompt",
    "usage",
]

# Content blocks this text-only model cannot read: reject them rather than drop them.
_MEDIA_BLOCK_TYPES: Final = frozenset(
    {"image", "image_url", "audio", "input_audio", "video", "file", "pdf", "document"}
)


def _text_of(message: BaseMessage) -> str:
    """Return the text of ``message``; reject media this text-only model cannot read."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        block_type = block.get("type")
        if block_type == "text":
            parts.append(str(block.get("text", "")))
        elif block_type in _MEDIA_BLOCK_TYPES:
            msg = f"The embedded model reads text only; got a {block_type!r} content block."
            raise ValueError(msg)
        # Other blocks (reasoning, tool_use, ...) carry nothing this model can use.
    return "".join(parts)


def to_llama_message(message: BaseMessage) -> dict[str, str]:
    """Map one LangChain message to a llama.cpp chat message.

    System, human and AI messages become ``system``, ``user`` and ``assistant``. Tool and
    function results become ``user`` turns labelled with the tool name: SmolLM2's chat
    template and training know no ``tool`` role. Tool calls on an AI message are rendered
    as text so the conversation stays readable to the model.
    """
    text = _text_of(message)
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": text}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": text}
    if isinstance(message, AIMessage):
        calls = [
            f"Called tool {call['name']} with {json.dumps(call['args'], ensure_ascii=False)}"
            for call in message.tool_calls
        ]
        return {"role": "assistant", "content": "\n".join([text, *calls] if text else calls)}
    if isinstance(message, ToolMessage):
        label = message.name or message.tool_call_id
        return {"role": "user", "content": f"Result of tool {label}:\n{text}"}
    if isinstance(message, FunctionMessage):
        return {"role": "user", "content": f"Result of tool {message.name}:\n{text}"}
    if isinstance(message, ChatMessage):
        role = {"human": "user", "ai": "assistant"}.get(message.role, message.role)
        if role not in {"system", "user", "assistant"}:
            role = "user"
        return {"role": role, "content": text}
    msg = f"The embedded model cannot take a {type(message).__name__}."
    raise TypeError(msg)


def to_llama_messages(
    messages: Sequence[BaseMessage], system_extra: str = ""
) -> list[dict[str, str]]:
    """Map a conversation, adding ``system_extra`` to its (first) system turn."""
    turns = [to_llama_message(m) for m in messages]
    if system_extra:
        if turns and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{turns[0]['content']}\n\n{system_extra}"}
        else:
            turns.insert(0, {"role": "system", "content": system_extra})
    return turns


def usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    """LangChain's usage record from llama.cpp's token counts."""
    return UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


# ------------------------------------------------------------------------- tool calling


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``function`` part of an OpenAI-format tool (what `bind_tools` stores)."""
    function = tool.get("function", tool)
    if not isinstance(function, Mapping) or "name" not in function:
        msg = f"The embedded model takes function tools only; got {dict(tool)!r}."
        raise ValueError(msg)
    return function


def forced_tool(tool_choice: Any) -> str | None:
    """The tool name ``tool_choice`` forces, ``"any"`` for any tool, ``"none"``, or ``None``.

    Accepts LangChain's forms: ``"auto"``/``None``, ``"any"``/``"required"``/``True``,
    ``"none"``/``False``, a tool name, or an OpenAI/Anthropic choice dict.
    """
    if tool_choice is None or tool_choice == "auto":
        return None
    if tool_choice is False or tool_choice == "none":
        return "none"
    if tool_choice is True or tool_choice in ("any", "required"):
        return "any"
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        if isinstance(function, Mapping) and "name" in function:
            return str(function["name"])
        if "name" in tool_choice:
            return str(tool_choice["name"])
        kind = tool_choice.get("type")
        return None if kind == "auto" else "none" if kind == "none" else "any"
    return str(tool_choice)


def tool_call_schema(tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> dict[str, Any]:
    """The JSON schema constraining the answer to a call of an allowed tool (or text).

    Raises:
        ValueError: ``tool_choice`` names a tool that is not bound.
    """
    functions = [_function(t) for t in tools]
    forced = forced_tool(tool_choice)
    if forced not in (None, "any", "none"):
        functions = [f for f in functions if f["name"] == forced]
        if not functions:
            msg = f"tool_choice names {forced!r}, which is not among the bound tools."
            raise ValueError(msg)
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": dict(f.get("parameters") or {"type": "object", "properties": {}}),
            },
            "required": ["name", "arguments"],
        }
        for f in functions
    ]
    if forced is None:  # "auto": the model may answer in text instead
        options.append(
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_prompt(tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> str:
    """The system text describing the tools and the answer format to the model."""
    lines = ["You can call these tools:"]
    for tool in tools:
        function = _function(tool)
        parameters = json.dumps(function.get("parameters") or {}, ensure_ascii=False)
        description = function.get("description") or ""
        lines.append(f"- {function['name']}: {description} Parameters: {parameters}")
    forced = forced_tool(tool_choice)
    if forced is None:
        lines.append(
            'Answer with JSON: {"name": <tool>, "arguments": {...}} to call a tool, or '
            '{"answer": <text>} when no tool is needed.'
        )
    else:
        target = "one of the tools" if forced == "any" else f"the tool {forced}"
        lines.append(f'Call {target}. Answer with JSON: {{"name": <tool>, "arguments": {{...}}}}.')
    return "\n".join(lines)


def parse_tool_answer(text: str) -> tuple[str, list[Any], list[Any]]:
    """Split a constrained answer into (text content, tool calls, invalid tool calls).

    A cut-off or otherwise unparsable answer becomes an invalid tool call carrying the
    raw text, as LangChain providers report malformed calls.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        bad = invalid_tool_call(
            name=None, args=text, id=f"call_{uuid.uuid4().hex[:24]}", error=str(exc)
        )
        return "", [], [bad]
    if isinstance(data, dict) and isinstance(data.get("answer"), str) and "name" not in data:
        return data["answer"], [], []
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        args = data.get("arguments")
        if isinstance(args, dict):
            call = tool_call(name=data["name"], args=args, id=f"call_{uuid.uuid4().hex[:24]}")
            return "", [call], []
    bad = invalid_tool_call(
        name=None, args=text, id=f"call_{uuid.uuid4().hex[:24]}", error="not a tool call"
    )
    return "", [], [bad]
