"""The embedded model's worker process: llama.cpp runs here, never in the caller's process.

Started by `tierwise.providers.embedded_process` as ``python -m
tierwise.providers.embedded_worker PATH N_CTX N_THREADS [FAST_COPY]``. It imports the
standard library and ``llama_cpp`` only (no LangChain), loads the GGUF file once — its
faster copy at ``FAST_COPY`` when given (:mod:`.embedded_weights`, made here if missing) —
and serves one request at a time. A native crash in llama.cpp (SIGILL from a CPU-specific
build, SIGSEGV) kills this process only; the caller sees the pipe close and reads the
signal from the exit status.

The protocol is JSON lines. Requests arrive on stdin::

    {"op": "chat", "request": {...create_chat_completion kwargs...}, "stream": false}
    {"op": "cancel"}            # during a stream: stop after the current token

Answers leave on the original stdout (fd 1 is pointed at stderr at start, so anything
llama.cpp prints cannot corrupt the protocol)::

    {"ready": true}                                       # once, after loading
    {"chunk": "text"}                                     # streams only, per token
    {"done": {"content": ..., "finish_reason": ..., "usage": {...}}}
    {"error": {"type": "ValueError", "message": "..."}}  # the request failed; still alive

The worker exits when stdin closes (the caller exited or shut it down). It ignores SIGINT:
Ctrl-C in a terminal reaches the whole process group, and the caller decides what stops.

Test hook: with ``TIERWISE_EMBEDDED_CRASH=SIGILL`` (any signal name) in its environment the
worker raises that signal on itself when asked to generate, as a CPU-specific llama.cpp
build does on a machine that lacks the instruction.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
from collections import OrderedDict
from typing import IO, Any, cast

import llama_cpp

from tierwise.providers.embedded_sampling import GreedyGrammarLlama
from tierwise.providers.embedded_weights import convert

_MIN_PREFIX = 16  # a shorter system turn is cheaper to evaluate than to restore
_PREFIXES = 32  # system turns kept as saved KV state (each a few MB)

CRASH_ENV = "TIERWISE_EMBEDDED_CRASH"
"""Environment variable naming a signal the worker raises on itself when it generates."""


class _Session:
    """One loaded model and the protocol streams."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, out: IO[str]) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.out = out
        # A local file only: ``Llama.from_pretrained`` (the downloading constructor) is never used.
        self.llm = GreedyGrammarLlama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.kv_prefix: tuple[int, ...] = ()
        self.formatter: Jinja2ChatFormatter | None = None
        template = self.llm.metadata.get("tokenizer.chat_template")
        if template and self.llm.chat_handler is None:
            self.formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self.llm.token_eos()),
                bos_token=self._token_text(self.llm.token_bos()),
                stop_token_ids=[self.llm.token_eos()],
            )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt tokens llama.cpp's chat handler builds from ``messages``."""
        if self.formatter is not None:
            result = self.formatter(messages=cast(Any, messages))
            return self.llm.tokenize(
                result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
            )
        text = "\n".join(f"{m['role']}\n{m['content']}" for m in messages)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Count the prompt tokens llama.cpp's chat handler builds from ``messages``."""
        return len(self.prompt_tokens(messages))

    def prepare(self, messages: list[dict[str, str]]) -> None:
        """Leave exactly the prompt's system turn in the KV cache, or nothing.

        Operations send the same system turn (instructions, schema) with many inputs, and
        evaluating a prompt costs about as much as generating, so the system turn's KV
        cache is kept (the current one, and up to `_PREFIXES` more as saved sequence
        state) and only the rest of the prompt is evaluated. The system turn is always
        evaluated on its own, from an empty cache, so its cached state is bit-identical
        to a fresh evaluation and greedy answers do not depend on what ran before (reusing
        an arbitrary cached prefix would: a different batch split, different rounding).
        """
        llm = self.llm
        prefix: tuple[int, ...] = ()
        if self.formatter is not None and messages and messages[0]["role"] == "system":
            full = self.prompt_tokens(messages)
            head = self.prompt_tokens(messages[:1])
            length = 0
            for a, b in zip(full, head, strict=False):
                if a != b:
                    break
                length += 1
            if _MIN_PREFIX <= length < len(full) - 1:
                prefix = tuple(full[:length])
        if not prefix:
            llm.reset()  # type: ignore[no-untyped-call]
            self.kv_prefix = ()
            return
        if prefix == self.kv_prefix:  # the KV cache starts with it: drop the rest
            llm.n_tokens = len(prefix)
            return
        saved = self.prefixes.get(prefix)
        llm.reset()  # type: ignore[no-untyped-call]
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        if saved is None:
            llm.eval(list(prefix))
            size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
            buffer = (ctypes.c_uint8 * size)()
            llama_cpp.llama_state_seq_get_data(llm.ctx, buffer, size, 0)
            self.prefixes[prefix] = buffer
            while len(self.prefixes) > _PREFIXES:
                self.prefixes.popitem(last=False)
        else:
            self.prefixes.move_to_end(prefix)
            llama_cpp.llama_state_seq_set_data(llm.ctx, saved, len(saved), 0)
            llm.input_ids[: len(prefix)] = prefix
            llm.n_tokens = len(prefix)
        self.kv_prefix = prefix

    def count_text_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat(self, request: dict[str, Any], stream: bool) -> None:
        crash = os.environ.get(CRASH_ENV)
        if crash:
            os.kill(os.getpid(), getattr(signal, crash))
        self.prepare(request["messages"])
        if not stream:
            response = cast(dict[str, Any], self.llm.create_chat_completion(**request))
            choice = response["choices"][0]
            usage = response.get("usage") or {}
            self.send(
                {
                    "done": {
                        "content": choice["message"].get("content") or "",
                        "finish_reason": choice.get("finish_reason"),
                        "usage": [
                            int(usage.get("prompt_tokens", 0)),
                            int(usage.get("completion_tokens", 0)),
                        ],
                    }
                }
            )
            return
        events = self.llm.create_chat_completion(**request, stream=True)
        parts: list[str] = []
        finish_reason: str | None = None
        for event in cast(Any, events):
            choice = event["choices"][0]
            finish_reason = choice.get("finish_reason") or finish_reason
            text = choice.get("delta", {}).get("content")
            if text:
                parts.append(text)
                self.send({"chunk": text})
            if _cancelled():
                finish_reason = finish_reason or "cancelled"
                break
        # llama.cpp reports no usage on streams: count the tokens here.
        max_tokens = int(request.get("max_tokens") or 0)
        if finish_reason == "length" and max_tokens > 0:
            output_tokens = max_tokens
        else:
            output_tokens = self.count_text_tokens("".join(parts))
        usage = [self.count_prompt_tokens(request["messages"]), output_tokens]
        self.send({"done": {"content": "", "finish_reason": finish_reason, "usage": usage}})


def _cancelled() -> bool:
    """True when a ``cancel`` line is waiting on stdin (read without blocking)."""
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    if not readable:
        return False
    line = sys.stdin.readline()
    return not line or json.loads(line).get("op") == "cancel"


def main(argv: list[str]) -> int:
    """Serve requests until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep the real stdout for the protocol; send anything else written to fd 1 to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    path, n_ctx, n_threads = argv[0], int(argv[1]), int(argv[2])
    try:
        if len(argv) > 3:
            path = convert(path, argv[3])
        session = _Session(path, n_ctx, n_threads, out)
    except Exception as exc:  # reported to the caller, which raises it
        out.write(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}) + "\n")
        out.flush()
        return 1
    session.send({"ready": True})
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("op") != "chat":
            continue  # a cancel that arrived after its stream ended
        try:
            session.chat(message["request"], bool(message.get("stream")))
        except Exception as exc:  # the request failed; the worker stays up
            session.send({"error": {"type": type(exc).__name__, "message": str(exc)}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
