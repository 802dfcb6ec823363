"""Judging a model's answer: finished, not withheld, parsable, tool calls that fit their tools.

The router treats a bad answer exactly like an HTTP 500 — a failure of that model — so
these checks decide whether a call succeeded. They only read messages; they know nothing
about candidates, limits or ledgers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import Runnable

from tierwise.providers.failures import InvalidOutput

__all__ = [
    "SchemaViolation",
    "accept",
    "answer_text",
    "as_ai_message",
    "check_finished",
    "content_text",
    "json_problem",
    "parse_raw",
    "tool_call_problem",
]

#: Finish reasons that mean the provider cut the answer short or withheld it.
_BAD_FINISH = frozenset({"content_filter", "safety", "recitation", "blocklist", "refusal"})


class SchemaViolation(InvalidOutput):
    """A finished answer that does not parse into the schema: what one repair may fix."""


def accept(
    output: Any,
    *,
    structured: bool,
    tools_bound: bool,
    tool_choice: str | None,
    tools: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[Any, AIMessage]:
    """The value and message of a good answer; :class:`InvalidOutput` for a bad one.

    Args:
        output: what the call returned (for ``structured``: the raw/parsed/parsing_error
            mapping of :func:`parse_raw`).
        structured: a schema was requested.
        tools_bound: tools were bound to the call.
        tool_choice: the forced tool choice, if any.
        tools: name → argument schema of the bound tools (``None``: cannot be checked).
    """
    if structured:
        raw = output.get("raw") if isinstance(output, Mapping) else None
        message = as_ai_message(raw)
        check_finished(message)  # a truncated or withheld answer is not worth a repair
        error = output.get("parsing_error") if isinstance(output, Mapping) else None
        parsed = output.get("parsed") if isinstance(output, Mapping) else None
        if error is not None or parsed is None:
            reason = f"schema violation: {error}" if error is not None else "no parsable answer"
            raise SchemaViolation(reason, message=message)
        return parsed, message
    message = as_ai_message(output)
    check_finished(message)
    if tools_bound:
        if message.invalid_tool_calls:
            raise InvalidOutput("malformed tool call arguments", message=message)
        if tool_choice not in (None, "auto", "none") and not message.tool_calls:
            raise InvalidOutput("a tool call was required but none was made", message=message)
        problem = tool_call_problem(message, tools) if tools is not None else ""
        if problem:
            raise InvalidOutput(f"invalid tool call: {problem}", message=message)
    if not message.tool_calls and not answer_text(message).strip():
        raise InvalidOutput("empty answer", message=message)
    return message, message


def parse_raw(parse: Runnable[Any, Any], raw: Any) -> dict[str, Any]:
    """``raw`` and its parse, shaped like ``with_structured_output(include_raw=True)``."""
    try:
        return {"raw": raw, "parsed": parse.invoke(raw), "parsing_error": None}
    except Exception as exc:  # noqa: BLE001 - a parse failure is the model's invalid output
        return {"raw": raw, "parsed": None, "parsing_error": exc}


def check_finished(message: AIMessage) -> None:
    """A truncated stream or a refusal is not an answer."""
    meta = message.response_metadata
    finish = meta.get("finish_reason") or meta.get("done_reason")
    if finish is None and not meta.get("done"):
        raise InvalidOutput("truncated: the answer has no finish reason", message=message)
    if isinstance(finish, str) and finish.lower() in _BAD_FINISH:
        raise InvalidOutput(f"withheld by the provider ({finish})", message=message)
    if message.additional_kwargs.get("refusal"):
        raise InvalidOutput("the model refused", message=message)


def tool_call_problem(message: AIMessage, tools: Mapping[str, Mapping[str, Any]]) -> str:
    """Why a tool call does not fit the bound tools (unknown name, bad arguments), or ``""``."""
    for call in message.tool_calls:
        schema = tools.get(call["name"])
        if schema is None:
            return f"no bound tool is called {call['name']!r}"
        problem = json_problem(call["args"], schema, "")
        if problem:
            return f"{call['name']}: {problem}"
    return ""


_JSON_TYPES: Mapping[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int, float),  # some clients turn every JSON number into a float
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def json_problem(value: Any, schema: Mapping[str, Any], path: str) -> str:
    """What makes ``value`` break ``schema`` (types, required, enums, extras), or ``""``.

    A deliberately small subset of JSON Schema, enough to tell a tool call that fits its
    tool from one that does not; what it does not know (``$ref``, ``anyOf``...) passes.
    """
    where = path or "arguments"
    expected = schema.get("type")
    if isinstance(expected, str) and expected in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[expected]) and not (
            isinstance(value, bool) and expected in ("integer", "number")
        )
        if ok and expected == "integer" and isinstance(value, float):
            ok = value.is_integer()
        if not ok:
            return f"{where} should be {expected}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} should be one of {schema['enum']}"
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        missing = [name for name in schema.get("required") or () if name not in value]
        if missing:
            return f"{where} lack required {', '.join(map(repr, missing))}"
        if schema.get("additionalProperties") is False:
            extra = [name for name in value if name not in properties]
            if extra:
                return f"{where} have unexpected {', '.join(map(repr, extra))}"
        for name, item in value.items():
            sub = properties.get(name)
            if isinstance(sub, Mapping):
                problem = json_problem(item, sub, f"{path}.{name}" if path else name)
                if problem:
                    return problem
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            problem = json_problem(item, schema["items"], f"{where}[{index}]")
            if problem:
                return problem
    return ""


def as_ai_message(output: Any) -> AIMessage:
    """A call's output as one :class:`AIMessage` (a streamed aggregate is converted)."""
    if isinstance(output, AIMessageChunk):
        return AIMessage(
            content=output.content,
            additional_kwargs=output.additional_kwargs,
            response_metadata=output.response_metadata,
            tool_calls=output.tool_calls,
            invalid_tool_calls=output.invalid_tool_calls,
            usage_metadata=output.usage_metadata,
            id=output.id,
        )
    if isinstance(output, AIMessage):
        return output
    raise InvalidOutput("no answer", message=None)


def content_text(content: str | list[str | dict[Any, Any]]) -> str:
    """A message content as text: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    return "".join(
        part if isinstance(part, str) else str(part.get("text", "")) for part in content
    )


def answer_text(message: AIMessage) -> str:
    """The answer as text: content, or the first tool call's arguments as JSON."""
    content = content_text(message.content)
    if not content and message.tool_calls:
        return json.dumps(message.tool_calls[0]["args"])
    return content
