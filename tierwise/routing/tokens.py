"""Token estimates: the one place prompts and tool/schema definitions are counted.

The router's context-window and cost checks, the rate limiter's TPM permits and the
budget's reservations all start from these estimates, so they must agree. They come from
LangChain's :func:`~langchain_core.messages.utils.count_tokens_approximately` (about four
characters a token, plus a few per message), which counts what a provider bills as input:
message text, roles and names, an assistant's tool calls, tool-call ids, images, and the
definitions of the bound tools and response schema. They are budgets, not counts: the
ledger records the provider's real usage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

__all__ = ["Schema", "definition_tokens", "estimate_tokens"]

#: A schema is a pydantic class, a TypedDict or a JSON-schema dict.
Schema = type[BaseModel] | type | Mapping[str, Any]

_DEFINITIONS: OrderedDict[tuple[int, ...], tuple[int, Any]] = OrderedDict()
_DEFINITIONS_SIZE = 512


def estimate_tokens(messages: Iterable[BaseMessage]) -> int:
    """Estimated input tokens of ``messages``, tool calls included (a budget, not a count)."""
    return count_tokens_approximately(messages)


def definition_tokens(schema: Schema | None, tools: tuple[Any, ...]) -> int:
    """Estimated prompt tokens of the tool definitions and response schema of a call.

    Providers send them to the model as part of the prompt and bill them as input
    tokens, so a cost estimate that left them out could let a call cross a cap. Memoised
    per (schema, tools) identity; each entry keeps its objects alive, so an identity
    cannot be reused while its entry exists.
    """
    if schema is None and not tools:
        return 0
    key = (id(schema), *map(id, tools))
    entry = _DEFINITIONS.get(key)
    if entry is not None:
        _DEFINITIONS.move_to_end(key)
        return entry[0]
    definitions = (*tools, schema) if schema is not None else tools
    tokens = count_tokens_approximately([], tools=[_definition(d) for d in definitions])
    _DEFINITIONS[key] = (tokens, (schema, tools))
    if len(_DEFINITIONS) > _DEFINITIONS_SIZE:
        _DEFINITIONS.popitem(last=False)
    return tokens


def _definition(definition: Any) -> dict[str, Any]:
    """A tool or schema as the JSON a provider receives (name, description, parameters)."""
    try:
        return dict(convert_to_openai_tool(definition))
    except Exception:  # noqa: BLE001 - a provider's built-in tool, a bare JSON schema...
        if isinstance(definition, Mapping):
            return dict(definition)
        return {"definition": str(definition)}
