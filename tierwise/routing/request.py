"""RouteRequest: one routed call's question, frozen, as the caller put it.

Everything the router needs to pick and call a model — the operation, the messages, the
schema or tools the answer must fit, the complexity, policy, wait and size limits, and
the LangChain run config — normalised once, with the prompt's token estimate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Complexity, TaskType, Tier
from tierwise.routing.tokens import Schema, definition_tokens, estimate_tokens

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "RouteOptions",
    "RouteRequest",
    "StreamOptions",
    "as_messages",
    "config_value",
]

#: Output tokens assumed when the caller sets no ``max_tokens`` (cost and TPM estimates).
DEFAULT_MAX_OUTPUT_TOKENS = 512


class StreamOptions(TypedDict, total=False):
    """The keyword arguments of ``ModelRouter.stream``/``astream`` (see :class:`RouteRequest`)."""

    tools: Sequence[Any]
    tool_choice: str | None
    complexity: Complexity | str
    policy: Policy | None
    max_wait: float
    max_tokens: int | None
    min_tier: Tier | str | None
    config: RunnableConfig | None


class RouteOptions(StreamOptions, total=False):
    """The keyword arguments of ``ModelRouter.invoke``/``ainvoke`` (see :class:`RouteRequest`)."""

    schema: Schema | None
    call_id: str | None


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One call to route, normalised (strings become enums, input becomes messages).

    Example:
        >>> request = RouteRequest("rewriting", "make this clearer: do the thing")
        >>> request.operation.value, request.complexity.value, request.prompt_tokens > 0
        ('rewriting', 'moderate', True)

    Attributes:
        operation: the cognitive operation (decides the catalog chain).
        messages: the prompt, as messages.
        schema: pydantic class, TypedDict or JSON schema the answer must validate against.
        tools: tools to bind; only models with tool calling are tried.
        tool_choice: force a tool call (``"any"`` or a tool name).
        complexity: how hard the instruction is (decides the tier order).
        policy: this call's policy; ``None``: the router's default.
        max_wait: seconds the caller accepts to wait for a rate-limit permit on a
            candidate before moving on (0: never wait).
        max_tokens: expected completion size, for cost and token-limit estimates.
        min_tier: skip candidates below this tier (used to escalate).
        config: LangChain run config (callbacks, tags, metadata) for the model call.
        call_id: the id the ledger files this call's attempts under (default: a new one);
            calls sharing an id are one routed result (ensemble members).
        prompt_tokens: estimated prompt tokens, tool and schema definitions included
            (computed when not given).
    """

    operation: TaskType
    messages: tuple[BaseMessage, ...]
    schema: Schema | None = None
    tools: tuple[Any, ...] = ()
    tool_choice: str | None = None
    complexity: Complexity = Complexity.MODERATE
    policy: Policy | None = None
    max_wait: float = 0.0
    max_tokens: int | None = None
    min_tier: Tier | None = None
    config: RunnableConfig | None = None
    call_id: str = ""
    prompt_tokens: int = -1
    #: The LangGraph/LangChain run id in ``config``, when there is one.
    run_id: str | None = field(init=False, default=None)

    def __init__(
        self,
        operation: TaskType | str,
        messages: LanguageModelInput | Sequence[BaseMessage],
        *,
        schema: Schema | None = None,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        complexity: Complexity | str = Complexity.MODERATE,
        policy: Policy | None = None,
        max_wait: float = 0.0,
        max_tokens: int | None = None,
        min_tier: Tier | str | None = None,
        config: RunnableConfig | None = None,
        call_id: str | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        """Normalise the arguments (see the class attributes)."""
        msgs = tuple(as_messages(messages))
        tools = tuple(tools)
        put = object.__setattr__
        put(self, "operation", TaskType(operation))
        put(self, "messages", msgs)
        put(self, "schema", schema)
        put(self, "tools", tools)
        put(self, "tool_choice", tool_choice)
        put(self, "complexity", Complexity(complexity))
        put(self, "policy", policy)
        put(self, "max_wait", max_wait)
        put(self, "max_tokens", max_tokens)
        put(self, "min_tier", Tier(min_tier) if min_tier is not None else None)
        put(self, "config", config)
        put(self, "call_id", call_id or uuid.uuid4().hex)
        put(self, "prompt_tokens", prompt_tokens if prompt_tokens is not None else (
            estimate_tokens(msgs) + definition_tokens(schema, tools)
        ))
        put(self, "run_id", config_value(config, "run_id"))

    def with_policy(self, policy: Policy) -> RouteRequest:
        """This request under ``policy`` (nothing is estimated again)."""
        return RouteRequest(
            self.operation, self.messages, schema=self.schema, tools=self.tools,
            tool_choice=self.tool_choice, complexity=self.complexity, policy=policy,
            max_wait=self.max_wait, max_tokens=self.max_tokens, min_tier=self.min_tier,
            config=self.config, call_id=self.call_id, prompt_tokens=self.prompt_tokens,
        )


def as_messages(messages: LanguageModelInput | Sequence[BaseMessage]) -> list[BaseMessage]:
    """A string, prompt value or message list as a list of messages."""
    if isinstance(messages, str):
        return [HumanMessage(messages)]
    if isinstance(messages, PromptValue):
        return messages.to_messages()
    return convert_to_messages(messages)


def config_value(config: RunnableConfig | None, name: str) -> str | None:
    """A run attribute LangGraph/LangChain put in ``configurable`` or ``metadata``.

    How the router reads a call's ``run_id`` / ``thread_id`` / ``langgraph_node`` for the
    ledger; whoever files more about the same call reads them the same way.
    """
    if not config:
        return None
    value = config.get("configurable", {}).get(name) or config.get("metadata", {}).get(name)
    return str(value) if value is not None else None
