"""Per-operation metrics: how right one answer is, as a score in [0, 1].

The score becomes :attr:`tierwise.ledger.evidence.Outcome.score`, so every metric is
per item and bounded; a data set's quality is their mean.

* ``classification`` — 1 when the label equals the gold label, compared case- and
  space-insensitively (``Card_Arrival`` = ``card arrival``), else 0.
* ``parameter_extraction`` — F1 of the predicted (slot, value) pairs against the gold
  spans (values normalised: case, spaces, edge punctuation); 1 when both are empty.
  F1 rather than exact match: one missed slot out of four is a better answer than
  none found, and the router should see that.
* ``tool_use_formatting`` — BFCL's AST check, 1 or 0: the function name matches and
  every argument's value is among the gold's accepted values (strings compared as BFCL
  does: lower case without spaces and ``,./-_*^``; ints accepted for floats); a gold
  argument whose accepted values include ``""`` is optional, and an argument the gold
  does not list fails. No partial credit: a call with one wrong argument does the
  wrong thing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel

from tierwise.catalog.specs import TaskType

__all__ = [
    "Score",
    "normalise",
    "score",
    "score_classification",
    "score_extraction",
    "score_tool_call",
    "slot_pairs",
]


class Score(NamedTuple):
    """A score in [0, 1] and what was compared, in a few words (no prompt text)."""

    value: float
    detail: str


def normalise(text: str) -> str:
    """Lower case, ``_``/``-`` as spaces, runs of spaces collapsed, edge punctuation off.

    Example:
        >>> normalise("  Card_Arrival. ")
        'card arrival'
    """
    spaced = text.casefold().replace("_", " ").replace("-", " ")
    return " ".join(spaced.split()).strip(" .,;:!?\"'")


def score_classification(predicted: Any, gold: str) -> Score:
    """1 when the predicted label (a string or an object with ``label``) is the gold one.

    Example:
        >>> score_classification("Card_Arrival", "card_arrival").value
        1.0
    """
    label = str(getattr(predicted, "label", predicted))
    if normalise(label) == normalise(gold):
        return Score(1.0, f"label {label!r}")
    return Score(0.0, f"label {label!r}, gold {gold!r}")


def slot_pairs(predicted: Any) -> list[tuple[str, str]]:
    """(slot, value) pairs from an extraction: a slots model, ``Parameters`` or a mapping."""
    if predicted is None:
        return []
    if isinstance(predicted, BaseModel):
        params = getattr(predicted, "parameters", None)
        if isinstance(params, list):
            return [(str(p.name), str(p.value)) for p in params]
        predicted = predicted.model_dump(exclude_none=True)
    pairs: list[tuple[str, str]] = []
    for name, value in dict(predicted).items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs.extend((str(name), str(v)) for v in values if v not in (None, ""))
    return pairs


def score_extraction(predicted: Any, gold: Iterable[Sequence[str]]) -> Score:
    """F1 of the predicted (slot, value) pairs against the gold pairs.

    Example:
        >>> gold = [("city", "Paris"), ("date", "tomorrow")]
        >>> round(score_extraction({"city": "paris", "date": "today"}, gold).value, 2)
        0.5
    """
    found = Counter((normalise(s), normalise(v)) for s, v in slot_pairs(predicted))
    want = Counter((normalise(s), normalise(v)) for s, v in gold)
    if not found and not want:
        return Score(1.0, "no slots, none predicted")
    hits = sum((found & want).values())
    precision = hits / sum(found.values()) if found else 0.0
    recall = hits / sum(want.values()) if want else 0.0
    f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
    return Score(f1, f"{hits} of {sum(want.values())} gold slots, "
                     f"{sum(found.values())} predicted")  # fmt: skip


_BFCL_STRIP = re.compile(r"[ ,./\-_*^]")


def _bfcl_string(text: str) -> str:
    return _BFCL_STRIP.sub("", text).lower()


def _equal(value: Any, accepted: Any) -> bool:
    """``value`` equals one accepted value, BFCL-style."""
    if isinstance(accepted, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(accepted, bool) and value == accepted
    if isinstance(accepted, int | float):
        return isinstance(value, int | float) and float(value) == float(accepted)
    if isinstance(accepted, str):
        return isinstance(value, str) and _bfcl_string(value) == _bfcl_string(accepted)
    if isinstance(accepted, list | tuple):
        return (isinstance(value, list | tuple) and len(value) == len(accepted)
                and all(_equal(v, a) for v, a in zip(value, accepted, strict=True)))
    if isinstance(accepted, Mapping):
        if not isinstance(value, Mapping):
            return False
        return _arguments(value, accepted) is None
    return bool(value == accepted)


def _matches(value: Any, accepted: Any) -> bool:
    options = accepted if isinstance(accepted, list) else [accepted]
    return any(_equal(value, a) for a in options if a != "")


def _arguments(args: Mapping[str, Any], gold: Mapping[str, Any]) -> str | None:
    """Why ``args`` do not fit ``gold`` (argument → accepted values), or ``None``."""
    for name in args:
        if name not in gold:
            return f"unexpected argument {name!r}"
    for name, accepted in gold.items():
        options = accepted if isinstance(accepted, list) else [accepted]
        if name not in args:
            if "" not in options:
                return f"missing argument {name!r}"
            continue
        if not _matches(args[name], options):
            return f"argument {name!r} = {args[name]!r} not accepted"
    return None


def score_tool_call(
    call: Any, gold: Sequence[Mapping[str, Mapping[str, Any]]],
    names: Mapping[str, str] | None = None,
) -> Score:
    """BFCL AST match of one call (``name`` and ``args``) against the gold calls.

    ``names`` maps the tool name the model saw to the data set's function name.

    Example:
        >>> gold = [{"math.hypot": {"x": [4], "y": [5], "z": ["", 0]}}]
        >>> call = {"name": "math_hypot", "args": {"x": 4, "y": 5.0}}
        >>> score_tool_call(call, gold, {"math_hypot": "math.hypot"}).value
        1.0
    """
    if call is None:
        return Score(0.0, "no tool call")
    name = call["name"] if isinstance(call, Mapping) else call.name
    args = call["args"] if isinstance(call, Mapping) else call.args
    name = (names or {}).get(name, name)
    reasons = []
    for expected in gold:
        for function, arguments in expected.items():
            if function != name:
                reasons.append(f"called {name!r}, gold {function!r}")
                continue
            problem = _arguments(args or {}, arguments)
            if problem is None:
                return Score(1.0, f"{name} with accepted arguments")
            reasons.append(problem)
    return Score(0.0, reasons[0] if reasons else "no gold call")


def score(operation: TaskType, predicted: Any, gold: Any,
          setup: Mapping[str, Any] | None = None) -> Score:
    """The operation's metric for one answer (see the module doc)."""
    if operation is TaskType.CLASSIFICATION:
        return score_classification(predicted, gold)
    if operation is TaskType.PARAMETER_EXTRACTION:
        return score_extraction(predicted, gold)
    if operation is TaskType.TOOL_USE_FORMATTING:
        return score_tool_call(predicted, gold, (setup or {}).get("names"))
    raise ValueError(f"no gold-label metric for {operation.value}")
