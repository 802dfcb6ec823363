"""State values as prompt text: what a node shows its model of the graph's state."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["render", "render_keys"]


def render(value: Any) -> str:
    """A state value as prompt text: pydantic models and containers as compact JSON."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=True)
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def render_keys(state: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``key: value`` lines for the ``keys`` present in ``state``."""
    return "\n".join(f"{k}: {render(state[k])}" for k in keys if state.get(k) is not None)
