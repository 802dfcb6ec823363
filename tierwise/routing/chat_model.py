"""RoutedChatModel: a LangChain chat model for one operation, answered through the router.

Drop it wherever LangChain takes a ``BaseChatModel`` — an LCEL chain, ``create_agent``, a
hand-written graph — and every call is routed: candidate chain, rate limits, fallback,
output validation. ``bind_tools`` and ``with_structured_output`` route too: tools are bound
on each candidate the router tries, and structured output uses each candidate's own
method and is validated like any routed schema call.

Streaming: a failure before the first token falls back invisibly. LangChain consumers add
chunks together, so a failure *after* tokens were emitted cannot be restarted inside the
same stream without gluing two models' text; it raises :class:`StreamInterrupted` (use
:meth:`ModelRouter.stream` to receive restart events instead).

Tracing: the provider call is a run of its own, tagged ``nostream`` (LangGraph then streams
this model's tokens, not the provider's too) and carrying ``tierwise_*`` metadata. On
``invoke`` it is a child of this model's run; LangChain's ``stream()`` does not hand its run
to the model, so a streamed provider call hangs off the enclosing runnable instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Complexity, TaskType
from tierwise.routing.results import RoutedResult, StreamChunk, StreamEnd, StreamRestart
from tierwise.routing.router import ModelRouter
from tierwise.routing.tokens import Schema

__all__ = ["RoutedChatModel", "StreamInterrupted"]

#: LangGraph's tag for runs whose tokens it must not stream (``langgraph.constants``).
_NOSTREAM = "nostream"


class StreamInterrupted(RuntimeError):
    """The streaming model failed after emitting tokens; the partial answer is void."""


class RoutedChatModel(BaseChatModel):
    """A chat model whose every call is routed for one cognitive operation.

    Per call, ``model=`` (a catalog key, or a provider's model id) pins that one model;
    ``stop`` sequences are applied to the answer here, whichever model gave it.
    ``max_tokens`` is the answer size the router budgets for (cost, TPM, context window);
    it does not cap the candidate. Sampling and client settings (temperature, timeout,
    retries, keys) are not fields: the router's settings configure each candidate's client.

    Example:
        >>> from tierwise.testing import Simulator
        >>> with Simulator() as sim:
        ...     model = RoutedChatModel(router=ModelRouter(sim.settings()), operation="rewriting")
        ...     reply = model.invoke("say it better: the thing is done")
        >>> reply.response_metadata["tierwise"]["tier"]
        'free'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: ModelRouter = Field(exclude=True)
    operation: TaskType
    complexity: Complexity = Complexity.MODERATE
    policy: Policy | None = None
    max_wait: float = 0.0
    max_tokens: int | None = Field(
        None, description="Expected answer size: the router's cost, TPM and window estimate."
    )
    stop: list[str] | None = Field(None, description="Cut every answer at these sequences.")
    streaming: bool = Field(False, description="Let invoke() stream (LangChain convention).")

    @property
    def _llm_type(self) -> str:
        return "tierwise-routed"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        policy = self.policy or self.router.policy
        return {
            "operation": self.operation.value,
            "complexity": self.complexity.value,
            "policy": policy.mode.value,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing params: the model is the routed operation unless a call pins one."""
        params = LangSmithParams(
            ls_provider="tierwise",
            ls_model_name=str(kwargs.get("model") or f"tierwise:{self.operation.value}"),
            ls_model_type="chat",
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if stops := stop or self.stop:
            params["ls_stop"] = stops
        return params

    # ------------------------------------------------------------------ calls
    def _call(
        self,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: Mapping[str, Any],
    ) -> dict[str, Any]:
        return {"config": _child_config(run_manager), **self._route_kwargs(kwargs)}

    def _route_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        tools, choice = kwargs.get("tools") or (), kwargs.get("tool_choice")
        if choice == "none":  # no tool may be called: offer none (and need no tool model)
            tools, choice = (), None
        return {
            "tools": tools,
            "tool_choice": _tool_choice(choice),
            "complexity": self.complexity,
            "policy": self._policy(kwargs.get("model")),
            "max_wait": self.max_wait,
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
        }

    def _policy(self, model: str | None) -> Policy | None:
        """This call's policy; with ``model``, the operation is pinned to that model."""
        if model is None:
            return self.policy
        catalog = self.router.settings.catalog
        key = model if model in catalog.models else next(
            (spec.key for spec in catalog if spec.model == model), None
        )
        if key is None:
            raise ValueError(f"model {model!r} is neither a catalog key nor a catalog model id")
        return (self.policy or self.router.policy).pinned(self.operation, key)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = self.router.invoke(self.operation, messages, **self._call(run_manager, kwargs))
        return _chat_result(result, stop or self.stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await self.router.ainvoke(
            self.operation, messages, **self._call(run_manager, kwargs)
        )
        return _chat_result(result, stop or self.stop)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks = _Chunks(stop or self.stop)
        for event in self.router.stream(
            self.operation, messages, **self._call(run_manager, kwargs)
        ):
            chunk = chunks(event)
            if run_manager:  # only LangChain's v3 events pass one; stream() reports itself
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = _Chunks(stop or self.stop)
        async for event in self.router.astream(
            self.operation, messages, **self._call(run_manager, kwargs)
        ):
            chunk = chunks(event)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # ------------------------------------------------------------------ binding
    def bind_tools(
        self,
        tools: Sequence[Mapping[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; each candidate the router tries gets them in its own format.

        ``tool_choice``: ``"any"``/``"required"``/``True`` force a call, a tool name forces
        that tool, ``"none"`` offers no tool; ``"auto"`` or ``None`` let the model decide.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: Schema,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Routed structured output: each candidate uses its own method; output validated.

        ``method`` (and ``strict``) are accepted for compatibility and ignored: the catalog
        knows each candidate's best method. An answer that fails the schema is a failure of
        that model and falls back, so ``parsing_error`` is always ``None`` with
        ``include_raw``; when no model can answer, :class:`NoModelAvailable` is raised.
        """
        router, operation = self.router, self.operation
        route_kwargs = self._route_kwargs({})

        def shape(result: RoutedResult) -> Any:
            if include_raw:
                return {"raw": _with_provenance(result), "parsed": result.value,
                        "parsing_error": None}
            return result.value

        def invoke(messages: LanguageModelInput, config: RunnableConfig) -> Any:
            return shape(router.invoke(
                operation, messages, schema=schema, config=_tagged(config), **route_kwargs
            ))

        async def ainvoke(messages: LanguageModelInput, config: RunnableConfig) -> Any:
            return shape(await router.ainvoke(
                operation, messages, schema=schema, config=_tagged(config), **route_kwargs
            ))

        return RunnableLambda(invoke, afunc=ainvoke, name="RoutedStructuredOutput")


def _child_config(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> RunnableConfig:
    """Run config whose callbacks nest the routed model call under this model's run.

    LLM run managers have no ``get_child`` (only chain runs do), so build the same
    child manager by hand: inheritable handlers, tags and metadata, this run as parent.
    Without a run manager the provider call inherits the ambient runnable context.
    """
    if run_manager is None:
        return _tagged({})
    child: CallbackManager | AsyncCallbackManager
    if isinstance(run_manager, AsyncCallbackManagerForLLMRun):
        child = AsyncCallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    else:
        child = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    child.set_handlers(run_manager.inheritable_handlers)
    child.add_tags(run_manager.inheritable_tags)
    child.add_metadata(run_manager.inheritable_metadata)
    return _tagged({"callbacks": child})


def _tagged(config: RunnableConfig) -> RunnableConfig:
    """``config`` with the ``nostream`` tag: the answer is streamed by this model's run."""
    return {**config, "tags": [*config.get("tags", ()), _NOSTREAM]}


def _tool_choice(choice: Any) -> str | None:
    """LangChain's tool_choice forms → the router's (``"any"``, a tool name or None)."""
    if choice is None or choice is False or choice == "auto":
        return None
    if choice is True or choice == "required":
        return "any"
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and "name" in function:
            return str(function["name"])  # OpenAI: {"type": "function", "function": {...}}
        if "name" in choice:
            return str(choice["name"])  # Anthropic: {"type": "tool", "name": ...}
        return None if choice.get("type") == "auto" else "any"
    return str(choice)


def _with_provenance(result: RoutedResult, stop: Sequence[str] | None = None) -> AIMessage:
    """The answer, cut at ``stop``, with the routing provenance in its metadata."""
    message = result.message
    update: dict[str, Any] = {
        "response_metadata": {**message.response_metadata, "tierwise": result.provenance()},
    }
    if stop and isinstance(message.content, str):
        cut = _first_stop(message.content, stop)
        if cut is not None:
            update["content"] = message.content[:cut]
    return message.model_copy(update=update)


def _chat_result(result: RoutedResult, stop: Sequence[str] | None) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=_with_provenance(result, stop))])


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for stop in stops if stop and (i := text.find(stop)) >= 0]
    return min(hits) if hits else None


class _Chunks:
    """Turns one routed stream's events into LangChain chunks.

    Every chunk keeps one message id (the last chunk, which carries the provenance, takes
    the answer's id), since streaming consumers group chunks by id. Text is cut at the
    first stop sequence, which may span chunks: text that could begin one is held back
    until the next chunk shows whether it does.
    """

    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [s for s in stops or () if s]
        self.held = ""
        self.stopped = False
        self.message_id: str | None = None

    def __call__(self, event: object) -> ChatGenerationChunk:
        if isinstance(event, StreamChunk):
            chunk = event.chunk
            self.message_id = chunk.id or self.message_id
            if isinstance(chunk.content, str) and self.stops:
                chunk = chunk.model_copy(update={"content": self._cut(chunk.content)})
            return ChatGenerationChunk(message=chunk)
        if isinstance(event, StreamRestart):
            raise StreamInterrupted(
                f"{event.failed.model} failed after emitting tokens "
                f"({event.failed.describe()}); the partial answer is void"
            )
        assert isinstance(event, StreamEnd), event
        held, self.held = self.held, ""
        return ChatGenerationChunk(message=AIMessageChunk(
            content=held,
            id=self.message_id,
            response_metadata={"tierwise": event.result.provenance()},
            chunk_position="last",
        ))

    def _cut(self, text: str) -> str:
        if self.stopped:
            return ""
        text = self.held + text
        cut = _first_stop(text, self.stops)
        if cut is not None:
            self.stopped, self.held = True, ""
            return text[:cut]
        keep = max(
            (n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0
        )
        self.held = text[len(text) - keep:]
        return text[: len(text) - keep]
