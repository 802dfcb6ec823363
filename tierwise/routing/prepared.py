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
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableSequence
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool

from tierwise.catalog.specs import ModelSpec, StructuredMethod
from tierwise.routing.request import RouteRequest

__all__ = ["Prepared", "RunnableCache", "schema_instruction"]

#: What a JSON-mode model is told, before the schema itself.
SCHEMA_PREAMBLE = (
    "Answer with one JSON object and nothing else. It must validate against this JSON schema:"
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """How one model is called for one request.

    Attributes:
        runnable: What the messages are sent to (the model, bound to tools or a format).
        parse: For a schema, the parser to run on the answer message; else ``None``.
        schema: For a JSON-mode model, the JSON schema to state in the prompt
            (:meth:`messages`); else ``None``.
    """

    runnable: Runnable[Any, Any]
    parse: Runnable[Any, Any] | None = None
    schema: Mapping[str, Any] | None = None

    def messages(self, prompt: Sequence[BaseMessage]) -> list[BaseMessage]:
        """``prompt`` as this model must receive it."""
        if self.schema is None:
            return list(prompt)
        return schema_instruction(prompt, schema=self.schema)


@dataclass(slots=True)
class RunnableCache:
    """Structured / tool-bound runnables per (model, schema, tools), a bounded LRU.

    It also keeps the argument schemas of each tool set, for checking tool calls.

    Keys use object identities; each entry keeps its schema and tools alive, so an
    identity cannot be reused while its entry exists.
    """

    size: int = 512
    entries: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = field(default_factory=OrderedDict)

    def get(self, model: BaseChatModel, spec: ModelSpec, request: RouteRequest) -> Prepared:
        """The runnable to call, and for a schema the parser to run on its message.

        ``with_structured_output(include_raw=True)`` would keep the raw message too, but
        it is built from parallel steps that start two threads per sync call;
        splitting the plain ``model | parser`` sequence keeps the message at no cost.
        The runnable stays the bound model itself, so per-call arguments (the answer
        limit a budget hold sets) reach it.
        """
        if request.schema is None and not request.tools:
            return Prepared(model)
        key = (spec.key, id(request.schema), tuple(map(id, request.tools)), request.tool_choice)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            cached: Prepared = entry[0]
            return cached
        prepared: Prepared
        if request.schema is not None:
            schema = request.schema if isinstance(request.schema, type) else dict(request.schema)
            method = spec.structured_output.value
            structured = model.with_structured_output(schema, method=method)
            if isinstance(structured, RunnableSequence):
                rest = structured.steps[1:]
                stated = (convert_to_json_schema(schema)
                          if spec.structured_output is StructuredMethod.JSON_MODE else None)
                prepared = Prepared(
                    structured.first, rest[0] if len(rest) == 1 else RunnableSequence(*rest),
                    stated,
                )
            else:  # not a plain sequence: let LangChain keep the raw message
                prepared = Prepared(
                    model.with_structured_output(schema, method=method, include_raw=True)
                )
        else:
            prepared = Prepared(
                model.bind_tools(list(request.tools), tool_choice=request.tool_choice)
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


def schema_instruction(
    prompt: Sequence[BaseMessage], *, schema: Mapping[str, Any]
) -> list[BaseMessage]:
    """``prompt`` with ``schema`` stated in its system message.

    Added to the first system message when there is one (some providers take only one),
    else as a new system message in front.
    """
    told = f"{SCHEMA_PREAMBLE}\n{json.dumps(schema, separators=(',', ':'))}"
    first = prompt[0] if prompt else None
    if isinstance(first, SystemMessage) and isinstance(first.content, str):
        return [first.model_copy(update={"content": f"{first.content}\n\n{told}"}),
                *prompt[1:]]
    return [SystemMessage(told), *prompt]
