"""The runnable each model is called through for a request: plain, structured or tool-bound.

``with_structured_output`` and ``bind_tools`` build new runnables; building them per call
would cost more than routing, so they are kept per (model, schema, tools) in a bounded LRU.

A model whose structured output is ``json_mode`` (JSON guaranteed, schema not) is told the
schema in the prompt: its provider's ``response_format`` cannot carry one, and without it an
instruction-following model answers JSON with keys of its own choosing.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableLambda, RunnableSequence
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool

from tierwise.catalog.specs import ModelSpec, StructuredMethod
from tierwise.routing.request import RouteRequest

__all__ = ["RunnableCache", "schema_instruction"]

#: What a JSON-mode model is told, before the schema itself.
SCHEMA_PREAMBLE = (
    "Answer with one JSON object and nothing else. It must validate against this JSON schema:"
)


@dataclass(slots=True)
class RunnableCache:
    """Structured / tool-bound runnables per (model, schema, tools), a bounded LRU.

    It also keeps the argument schemas of each tool set, for checking tool calls.

    Keys use object identities; each entry keeps its schema and tools alive, so an
    identity cannot be reused while its entry exists.
    """

    size: int = 512
    entries: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = field(default_factory=OrderedDict)

    def get(
        self, model: BaseChatModel, spec: ModelSpec, request: RouteRequest
    ) -> tuple[Runnable[Any, Any], Runnable[Any, Any] | None]:
        """The runnable to call and, for a schema, the parser to run on its message.

        ``with_structured_output(include_raw=True)`` would keep the raw message too, but
        it is built from parallel steps that start two threads per sync call;
        splitting the plain ``model | parser`` sequence keeps the message at no cost.
        """
        if request.schema is None and not request.tools:
            return model, None
        key = (spec.key, id(request.schema), tuple(map(id, request.tools)), request.tool_choice)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            cached: tuple[Runnable[Any, Any], Runnable[Any, Any] | None] = entry[0]
            return cached
        prepared: tuple[Runnable[Any, Any], Runnable[Any, Any] | None]
        if request.schema is not None:
            schema = request.schema if isinstance(request.schema, type) else dict(request.schema)
            method = spec.structured_output.value
            structured = model.with_structured_output(schema, method=method)
            if isinstance(structured, RunnableSequence):
                rest = structured.steps[1:]
                parse = rest[0] if len(rest) == 1 else RunnableSequence(*rest)
                first: Runnable[Any, Any] = structured.first
                if spec.structured_output is StructuredMethod.JSON_MODE:
                    told = partial(schema_instruction, schema=convert_to_json_schema(schema))
                    first = RunnableLambda(told) | first
                prepared = (first, parse)
            else:  # not a plain sequence: let LangChain keep the raw message
                prepared = (
                    model.with_structured_output(schema, method=method, include_raw=True),
                    None,
                )
        else:
            prepared = (
                model.bind_tools(list(request.tools), tool_choice=request.tool_choice),
                None,
            )
        self._put(key, prepared, (request.schema, request.tools))
        return prepared

    def tool_schemas(self, tools: tuple[Any, ...]) -> Mapping[str, Mapping[str, Any]] | None:
        """Name -> JSON schema of the arguments of every bound tool.

        ``None`` when a tool has no function schema (a provider's built-in tool): then
        tool calls cannot be checked against the set.
        """
        key = ("tool schemas", *map(id, tools))
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            found: Mapping[str, Mapping[str, Any]] | None = entry[0]
            return found
        schemas: dict[str, Mapping[str, Any]] = {}
        try:
            for tool in tools:
                function = convert_to_openai_tool(tool)["function"]
                schemas[function["name"]] = function.get("parameters") or {}
        except Exception:  # noqa: BLE001 - not a function tool: nothing to check against
            self._put(key, None, tools)
            return None
        self._put(key, schemas, tools)
        return schemas


    def _put(self, key: tuple[Any, ...], value: Any, keep_alive: Any) -> None:
        self.entries[key] = (value, keep_alive)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


def schema_instruction(prompt: Any, *, schema: Mapping[str, Any]) -> list[BaseMessage]:
    """``prompt`` as messages with ``schema`` stated in its system message.

    Added to the first system message when there is one (some providers take only one),
    else as a new system message in front.
    """
    messages = _messages(prompt)
    told = f"{SCHEMA_PREAMBLE}\n{json.dumps(schema, separators=(',', ':'))}"
    if messages and isinstance(messages[0], SystemMessage) and isinstance(
        messages[0].content, str
    ):
        first = messages[0]
        return [first.model_copy(update={"content": f"{first.content}\n\n{told}"}),
                *messages[1:]]
    return [SystemMessage(told), *messages]


def _messages(prompt: Any) -> list[BaseMessage]:
    if isinstance(prompt, PromptValue):
        return prompt.to_messages()
    if isinstance(prompt, str):
        return [HumanMessage(prompt)]
    if isinstance(prompt, Sequence):
        return convert_to_messages(prompt)
    raise TypeError(f"not a prompt: {type(prompt).__name__}")
