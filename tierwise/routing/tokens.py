"""Token estimates: the one place prompts and tool/schema definitions are counted.

The router's cost caps, the rate limiter's TPM permits and the budget's reservations all
start from these estimates, so they must agree; they are budgets, not counts (the
ledger records the provider's real usage).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

__all__ = ["Schema", "definition_tokens", "estimate_tokens", "text_tokens"]

#: A schema is a pydantic class, a TypedDict or a JSON-schema dict.
Schema = type[BaseModel] | type | Mapping[str, Any]

_DEFINITIONS: OrderedDict[tuple[int, ...], tuple[int, Any]] = OrderedDict()
_DEFINITIONS_SIZE = 512


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """Roughly 4 characters per token plus a few per message: a budget, not a count."""
    chars = sum(len(m.content) if isinstance(m.content, str) else len(str(m.content))
                for m in messages)
    return chars // 4 + 4 * len(messages)


def text_tokens(text: str) -> int:
    """4 characters per token, rounded up (as :func:`estimate_tokens` counts text)."""
    return (len(text) + 3) // 4


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
    tokens = sum(text_tokens(_definition_text(d)) + 4 for d in definitions)
    _DEFINITIONS[key] = (tokens, (schema, tools))
    if len(_DEFINITIONS) > _DEFINITIONS_SIZE:
        _DEFINITIONS.popitem(last=False)
    return tokens


def _definition_text(definition: Any) -> str:
    """A tool or schema as the JSON a provider receives (name, description, parameters)."""
    try:
        return json.dumps(convert_to_openai_tool(definition))
    except Exception:  # noqa: BLE001 - a provider's built-in tool, a bare JSON schema...
        try:
            return json.dumps(definition, default=str)
        except (TypeError, ValueError):
            return str(definition)
