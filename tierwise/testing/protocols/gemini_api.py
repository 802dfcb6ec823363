"""The Gemini API on the wire: ``models/{m}:generateContent`` and ``:streamGenerateContent``.

Served under both ``/v1`` and ``/v1beta``. Streams are SSE events that each hold a whole
``GenerateContentResponse`` and no ``[DONE]``; function-call ``args`` are objects; a 429
carries a ``google.rpc.RetryInfo`` detail with ``retryDelay``, which google-genai exposes
on the exception's ``__cause__``. Both camelCase and snake_case request keys are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierwise.testing.chat import Answer, ChatRequest, Message, Tool, ToolCall
from tierwise.testing.protocols.base import Frames, Route, WireProtocol, dumps, split_text, sse

__all__ = ["GeminiAPI"]

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS"}


def _get(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    return mapping.get(camel, mapping.get(snake))


class GeminiAPI(WireProtocol):
    """``generateContent`` (JSON) and ``streamGenerateContent?alt=sse`` (SSE)."""

    def parse(self, route: Route, body: Mapping[str, Any], seq: int) -> ChatRequest:
        """Contents, system instruction, function declarations, tool config, JSON schema."""
        messages: list[Message] = []
        system = _get(body, "systemInstruction", "system_instruction")
        if isinstance(system, Mapping):
            messages.append(Message("system", _text(system.get("parts"))))
        for content in body.get("contents") or ():
            parts = content.get("parts") or ()
            calls = tuple(
                ToolCall(str(fc.get("name") or ""), fc.get("args") or {}, str(fc.get("id") or ""))
                for p in parts
                if isinstance(fc := _get(p, "functionCall", "function_call"), Mapping)
            )
            if any(_get(p, "functionResponse", "function_response") for p in parts):
                responses = [_get(p, "functionResponse", "function_response") for p in parts]
                messages.append(Message("tool", str([r for r in responses if r])))
                continue
            role = "assistant" if content.get("role") == "model" else "user"
            messages.append(Message(role, _text(parts), calls))
        tools = tuple(
            Tool(
                str(fd["name"]),
                fd.get("description") or "",
                _get(fd, "parametersJsonSchema", "parameters_json_schema")
                or fd.get("parameters")
                or {},
            )
            for t in body.get("tools") or ()
            for fd in _get(t, "functionDeclarations", "function_declarations") or ()
        )
        tool_config = _get(body, "toolConfig", "tool_config") or {}
        calling = _get(tool_config, "functionCallingConfig", "function_calling_config") or {}
        forced: str | None = None
        if str(calling.get("mode") or "").upper() == "ANY" and tools:
            allowed = _get(calling, "allowedFunctionNames", "allowed_function_names") or []
            forced = str(allowed[0]) if allowed else tools[0].name
        config = _get(body, "generationConfig", "generation_config") or {}
        schema = (
            _get(config, "responseJsonSchema", "response_json_schema")
            or _get(config, "responseSchema", "response_schema")
            or None
        )
        mime = _get(config, "responseMimeType", "response_mime_type")
        return ChatRequest(
            provider=route.provider,
            model=route.model or "",
            messages=tuple(messages),
            tools=tools,
            forced_tool=forced,
            schema=schema,
            json_mode=schema is None and mime == "application/json",
            stream=route.stream,
            include_usage=True,
            seq=seq,
            body=body,
        )

    def body(self, request: ChatRequest, answer: Answer) -> bytes:
        """One ``GenerateContentResponse`` with ``usageMetadata``."""
        parts: list[dict[str, Any]] = []
        if answer.text or not answer.tool_calls:
            parts.append({"text": answer.text})
        parts += [{"functionCall": {"name": c.name, "args": c.args}} for c in answer.tool_calls]
        return dumps(self._response(request, parts, answer, final=True))

    def frames(self, request: ChatRequest, answer: Answer) -> Frames:
        """Text pieces and function calls, then a final event with finish reason and usage."""
        content = [
            sse(self._response(request, [{"text": piece}], answer, final=False))
            for piece in (split_text(answer.text) if answer.text else [])
        ]
        content += [
            sse(
                self._response(
                    request,
                    [{"functionCall": {"name": c.name, "args": c.args}}],
                    answer,
                    final=False,
                )
            )
            for c in answer.tool_calls
        ]
        closing = [sse(self._response(request, [{"text": ""}], answer, final=True))]
        return Frames(content, closing)

    def _response(
        self, request: ChatRequest, parts: list[dict[str, Any]], answer: Answer, *, final: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        out: dict[str, Any] = {"candidates": [candidate]}
        if final and answer.finish_reason is not None:
            candidate["finishReason"] = _FINISH[answer.finish_reason]
        if final:
            out["usageMetadata"] = {
                "promptTokenCount": answer.prompt_tokens,
                "candidatesTokenCount": answer.completion_tokens,
                "totalTokenCount": answer.total_tokens,
            }
        out["modelVersion"] = request.model
        out["responseId"] = f"sim-{request.seq}"
        return out

    def error_body(self, status: int, message: str, retry_after: float | None) -> bytes:
        """``{"error": {"code", "message", "status", "details"}}`` with RetryInfo on 429."""
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
        if status == 429 and retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": _duration(retry_after),
                }
            ]
        return dumps({"error": error})

    def error_frame(self, status: int, message: str) -> bytes:
        """An SSE event holding an ``error`` object instead of a response."""
        return sse(
            {
                "error": {
                    "code": status,
                    "message": message,
                    "status": _STATUS_NAMES.get(status, "UNKNOWN"),
                }
            }
        )

    def malformed_frame(self) -> bytes:
        """An SSE event whose JSON is cut off."""
        return b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":\n\n'


def _text(parts: Any) -> str:
    return "".join(str(p.get("text") or "") for p in parts or () if isinstance(p, Mapping))


def _duration(seconds: float) -> str:
    """A protobuf ``Duration`` in JSON: ``"2s"``, ``"0.5s"``."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
