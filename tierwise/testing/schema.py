"""Smallest JSON values that satisfy (or deliberately break) a JSON schema.

The simulator answers every structured-output request out of the box: without a script it
returns the smallest object that validates against the requested schema, so any
``with_structured_output`` call succeeds offline. Gemini's OpenAPI-style schemas (upper-case
``type`` names, ``nullable``) are accepted as well as standard JSON schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["minimal_instance", "stated_schema", "violating_instance"]

_MAX_DEPTH = 32

_FORMAT_SAMPLES: Mapping[str, str] = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00",
    "email": "sim@example.invalid",
    "uri": "http://example.invalid/",
    "url": "http://example.invalid/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def minimal_instance(schema: Mapping[str, Any] | bool | None) -> Any:
    """The smallest value valid under ``schema``.

    Strings are ``"sim"`` (padded to ``minLength``, format samples for date/uri/...),
    numbers 0 moved inside their bounds, enums their first value, arrays as short as
    ``minItems`` allows, objects with their required properties only.

    Example:
        >>> minimal_instance({"type": "object", "required": ["n", "tags"],
        ...                   "properties": {"n": {"type": "integer", "minimum": 1},
        ...                                  "tags": {"type": "array"},
        ...                                  "note": {"type": "string"}}})
        {'n': 1, 'tags': []}
    """
    root = schema if isinstance(schema, Mapping) else {}
    return _instance(root, root, 0)


def stated_schema(texts: Iterable[str]) -> Mapping[str, Any] | None:
    """The last JSON schema written out in ``texts`` (an object with ``properties``), if any.

    JSON mode (``response_format: json_object``, Ollama's ``format: json``) carries no
    schema: a client that wants particular keys states the schema in the prompt, and an
    instruction-following model answers to it. The simulator does the same, so a client
    that forgets to state it gets ``{}``, as it would from a real model guessing.

    Example:
        >>> stated_schema(['Answer as JSON: {"type": "object", "properties": {}} thanks'])
        {'type': 'object', 'properties': {}}
    """
    decoder = json.JSONDecoder()
    found: Mapping[str, Any] | None = None
    for text in texts:
        start = text.find("{")
        while start != -1:
            try:
                value, end = decoder.raw_decode(text, start)
            except ValueError:
                start = text.find("{", start + 1)
                continue
            if isinstance(value, Mapping) and isinstance(value.get("properties"), Mapping):
                found = value
            start = text.find("{", end)
    return found


def violating_instance(schema: Mapping[str, Any] | None) -> Any:
    """A JSON value that does *not* validate against ``schema`` (for the schema fault).

    Objects lose their required properties, or get a wrongly typed first property;
    anything else becomes a value of the wrong type.

    Example:
        >>> violating_instance({"type": "object", "required": ["a"],
        ...                     "properties": {"a": {"type": "string"}}})
        {}
    """
    root = schema if isinstance(schema, Mapping) else {}
    resolved = _resolve(root, root)
    kind = _type(resolved)
    if kind == "object":
        properties: Mapping[str, Any] = resolved.get("properties") or {}
        if resolved.get("required"):
            return {}
        if properties:
            name, sub = next(iter(properties.items()))
            return {name: _wrong_value(_resolve(sub, root))}
        return ["not", "an", "object"]
    return _wrong_value(resolved)


def _wrong_value(schema: Mapping[str, Any]) -> Any:
    kind = _type(schema)
    if "enum" in schema or "const" in schema or kind == "string":
        return {"unexpected": True}
    if kind in ("integer", "number", "boolean", "array", "null"):
        return "not a " + kind
    return "not an object"


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref`` pointers and take the first branch of allOf/anyOf/oneOf."""
    for _ in range(_MAX_DEPTH):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for segment in ref[2:].split("/"):
                target = target.get(segment.replace("~1", "/").replace("~0", "~"), {})
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        if "allOf" in schema and schema["allOf"]:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for raw in schema["allOf"]:
                part = _resolve(raw, root)
                merged.setdefault("properties", {}).update(part.get("properties") or {})
                merged["required"] = [*merged.get("required", []), *part.get("required", [])]
                for key, value in part.items():
                    merged.setdefault(key, value)
            schema = merged
            continue
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options:
                non_null = [o for o in options if _type(o) != "null"] or list(options)
                rest = {k: v for k, v in schema.items() if k != key}
                schema = {**rest, **non_null[0]}
                break
        else:
            return schema
    return schema


def _type(schema: Mapping[str, Any]) -> str:
    """The schema's type, lower-case; the first non-null one of a type list; inferred if absent."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return ""


def _instance(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if enum:
        return enum[0]
    kind = _type(schema)
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        return {name: _instance(properties.get(name, {}), root, depth + 1) for name in required}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        items = schema.get("items")
        prefix = schema.get("prefixItems") or []
        values = [_instance(p, root, depth + 1) for p in prefix[:count]]
        item_schema = items if isinstance(items, Mapping) else {}
        values += [_instance(item_schema, root, depth + 1) for _ in range(count - len(values))]
        return values
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(schema)


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 0
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool) and value <= ex_low:
        value = ex_low + step
    if isinstance(low, (int, float)) and value < low:
        value = low
    if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool) and value >= ex_high:
        value = ex_high - step
    if isinstance(high, (int, float)) and value > high:
        value = high
    if integer:
        return int(value)
    return value


def _string(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    value = _FORMAT_SAMPLES.get(fmt, "sim") if isinstance(fmt, str) else "sim"
    min_length = int(schema.get("minLength") or 0)
    if len(value) < min_length:
        value = (value * (min_length // len(value) + 1))[:min_length]
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(value) > max_length:
        value = value[:max_length]
    return value
