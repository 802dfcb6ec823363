"""The Ollama API on the wire: ``/api/chat`` as NDJSON (ChatOllama always streams), ``/api/tags``.

Every streamed line carries ``message.role`` (the client requires it); the last line has
``done: true`` with ``done_reason`` and the token counts ``prompt_eval_count`` /
``eval_count``. Tool calls carry ``arguments`` as an object and no id. Structured output
arrives as ``format: <schema>`` (or ``"json"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tierwise.testing.chat import Answer, ChatRequest, Message, Tool, ToolCall
from tierwise.testing.protocols.base import Frames, Route, WireProtocol, dumps, split_text, text_of

__all__ = ["OllamaAPI", "tags_body"]

_CREATED_AT = "2026-01-01T00:00:00Z"


class OllamaAPI(WireProtocol):
    """``POST /api/chat``: NDJSON lines, or one JSON object when ``stream`` is false."""

    stream_content_type = "application/x-ndjson"

    def parse(self, route: Route, body: Mapping[str, Any], seq: int) -> ChatRequest:
        """Messages, tools and ``format``; Ollama streams unless ``stream`` is false."""
        messages = tuple(
            Message(
                str(m.get("role") or "user"),
                text_of(m.get("content")),
                tuple(
                    ToolCall(
                        str((c.get("function") or {}).get("name") or ""),
                        (c.get("function") or {}).get("arguments") or {},
                    )
                    for c in m.get("tool_calls") or ()
                ),
            )
            for m in body.get("messages") or ()
        )
        tools = tuple(
            Tool(f["name"], f.get("description") or "", f.get("parameters") or {})
            for t in body.get("tools") or ()
            if isinstance(f := t.get("function"), Mapping)
        )
        fmt = body.get("format")
        return ChatRequest(
            provider=route.provider,
            model=str(body.get("model") or ""),
            messages=messages,
            tools=tools,
            schema=fmt if isinstance(fmt, Mapping) else None,
            json_mode=fmt == "json",
            stream=body.get("stream", True) is not False,
            include_usage=True,
            seq=seq,
            body=body,
        )

    def body(self, request: ChatRequest, answer: Answer) -> bytes:
        """One chat response object with ``done: true`` (``stream: false`` requests)."""
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.tool_calls:
            message["tool_calls"] = _tool_calls(answer.tool_calls)
        return dumps(self._done(request, answer, message))

    def frames(self, request: ChatRequest, answer: Answer) -> Frames:
        """One line per text piece or tool call, then the ``done`` line with counts."""
        content = [
            self._line(request, {"role": "assistant", "content": piece})
            for piece in (split_text(answer.text) if answer.text else [])
        ]
        if answer.tool_calls:
            content.append(
                self._line(
                    request,
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": _tool_calls(answer.tool_calls),
                    },
                )
            )
        if not content:
            content.append(self._line(request, {"role": "assistant", "content": ""}))
        done = self._done(request, answer, {"role": "assistant", "content": ""})
        return Frames(content, [dumps(done) + b"\n"])

    def _line(self, request: ChatRequest, message: Mapping[str, Any]) -> bytes:
        line = {"model": request.model, "created_at": _CREATED_AT, "message": message}
        return dumps({**line, "done": False}) + b"\n"

    def _done(
        self, request: ChatRequest, answer: Answer, message: Mapping[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": request.model,
            "created_at": _CREATED_AT,
            "message": message,
            "done": answer.finish_reason is not None,
        }
        if answer.finish_reason is not None:
            out["done_reason"] = "length" if answer.finish_reason == "length" else "stop"
        out.update(
            total_duration=0,
            load_duration=0,
            prompt_eval_count=answer.prompt_tokens,
            prompt_eval_duration=0,
            eval_count=answer.completion_tokens,
            eval_duration=0,
        )
        return out

    def error_body(self, status: int, message: str, retry_after: float | None) -> bytes:
        """``{"error": "..."}``."""
        return dumps({"error": message})

    def error_frame(self, status: int, message: str) -> bytes:
        """An NDJSON line ``{"error": "..."}`` (the client raises ``ResponseError``)."""
        return dumps({"error": message}) + b"\n"

    def malformed_frame(self) -> bytes:
        """A line whose JSON is cut off."""
        return b'{"model":"sim","message":{"role":"assistant","content":\n'


def _tool_calls(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    return [{"function": {"name": c.name, "arguments": dict(c.args)}} for c in calls]


def tags_body(models: Iterable[str]) -> bytes:
    """The ``/api/tags`` listing for ``models``."""
    entries = [
        {
            "name": name,
            "model": name,
            "modified_at": _CREATED_AT,
            "size": 0,
            "digest": "0" * 64,
            "details": {
                "format": "gguf",
                "family": "sim",
                "families": ["sim"],
                "parameter_size": "",
                "quantization_level": "",
            },
        }
        for name in sorted(set(models))
    ]
    return dumps({"models": entries})
