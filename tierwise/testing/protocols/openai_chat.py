"""OpenAI chat completions on the wire, as OpenAI, OpenRouter, Mistral, HF and Groq speak it.

Groq differs in two details the clients rely on: a streamed answer carries its usage in
``x_groq.usage`` on the last chunk that still has ``choices``, and the route is
``/openai/v1/chat/completions``. Tool-call arguments are a JSON *string*, as in the real API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tierwise.catalog.specs import Provider
from tierwise.testing.chat import Answer, ChatRequest, Message, Tool, ToolCall
from tierwise.testing.protocols.base import (
    CREATED,
    Frames,
    Route,
    WireProtocol,
    dumps,
    split_text,
    sse,
    text_of,
)

__all__ = ["OpenAIChat"]

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


class OpenAIChat(WireProtocol):
    """``POST .../chat/completions``: JSON answers, SSE streams ending in ``[DONE]``."""

    def parse(self, route: Route, body: Mapping[str, Any], seq: int) -> ChatRequest:
        """Messages, tools, ``tool_choice``, ``response_format`` and stream options."""
        messages = tuple(_message(m) for m in body.get("messages") or ())
        tools = tuple(
            Tool(f["name"], f.get("description") or "", f.get("parameters") or {})
            for t in body.get("tools") or ()
            if isinstance(f := t.get("function"), Mapping)
        ) + tuple(
            Tool(f["name"], f.get("description") or "", f.get("parameters") or {})
            for f in body.get("functions") or ()
        )
        choice = body.get("tool_choice", body.get("function_call"))
        forced: str | None = None
        if isinstance(choice, Mapping):
            forced = (choice.get("function") or {}).get("name") or choice.get("name")
        elif choice in ("required", "any") and tools:
            forced = tools[0].name
        response_format = body.get("response_format") or {}
        schema = None
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
        stream_options = body.get("stream_options") or {}
        return ChatRequest(
            provider=route.provider,
            model=str(body.get("model") or ""),
            messages=messages,
            tools=tools,
            forced_tool=forced,
            schema=schema,
            json_mode=response_format.get("type") == "json_object",
            stream=bool(body.get("stream")),
            include_usage=bool(stream_options.get("include_usage")),
            seq=seq,
            body=body,
        )

    def body(self, request: ChatRequest, answer: Answer) -> bytes:
        """A ``chat.completion`` object with ``usage``."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if answer.text or not answer.tool_calls else None,
        }
        if answer.tool_calls:
            message["tool_calls"] = [_tool_call(c) for c in answer.tool_calls]
        out: dict[str, Any] = {
            "id": f"chatcmpl-sim-{request.seq}",
            "object": "chat.completion",
            "created": CREATED,
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": _usage(answer),
            "system_fingerprint": "fp_sim",
        }
        if request.provider is Provider.GROQ:
            out["x_groq"] = {"id": f"req_sim_{request.seq}"}
        return dumps(out)

    def frames(self, request: ChatRequest, answer: Answer) -> Frames:
        """Role chunk, content / tool-call chunks, finish chunk, usage chunk, ``[DONE]``."""
        groq = request.provider is Provider.GROQ

        def chunk(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": f"chatcmpl-sim-{request.seq}",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": request.model,
                "system_fingerprint": "fp_sim",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        content = [sse(chunk({"role": "assistant", "content": ""}))]
        if answer.text or not answer.tool_calls:
            content += [sse(chunk({"content": piece})) for piece in split_text(answer.text)]
        for index, call in enumerate(answer.tool_calls):
            start = {
                "index": index,
                "id": call.id or f"call_sim_{request.seq}_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            args = {"index": index, "function": {"arguments": json.dumps(call.args)}}
            content += [sse(chunk({"tool_calls": [start]})), sse(chunk({"tool_calls": [args]}))]
        final = chunk({}, answer.finish_reason)
        if groq:
            final["x_groq"] = {"id": f"req_sim_{request.seq}", "usage": _usage(answer)}
        closing = [sse(final)]
        if request.include_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _usage(answer)
            closing.append(sse(usage_chunk))
        closing.append(b"data: [DONE]\n\n")
        return Frames(content, closing)

    def error_body(self, status: int, message: str, retry_after: float | None) -> bytes:
        """``{"error": {"message", "type", "code", "param"}}``."""
        kind, code = _ERROR_TYPES.get(status, ("server_error", "server_error"))
        return dumps({"error": {"message": message, "type": kind, "code": code, "param": None}})

    def error_frame(self, status: int, message: str) -> bytes:
        """An SSE event holding an ``error`` object (the SDK raises ``APIError``)."""
        kind, code = _ERROR_TYPES.get(status, ("server_error", "server_error"))
        return sse({"error": {"message": message, "type": kind, "code": code, "param": None}})

    def malformed_frame(self) -> bytes:
        """An SSE event whose JSON is cut off."""
        return b'data: {"id":"chatcmpl-sim","choices":[{"index":0,"delta":{"content":\n\n'


def _message(raw: Mapping[str, Any]) -> Message:
    role = str(raw.get("role") or "user")
    calls = tuple(
        ToolCall(
            name=str((c.get("function") or {}).get("name") or ""),
            args=_arguments((c.get("function") or {}).get("arguments")),
            id=str(c.get("id") or ""),
        )
        for c in raw.get("tool_calls") or ()
    )
    return Message("system" if role == "developer" else role, text_of(raw.get("content")), calls)


def _arguments(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, Mapping) else {}


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.args)},
    }


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.total_tokens,
    }
