"""Failed attempts grouped for people: by failure kind and model, one example each.

A failure's detail text carries what changes from one attempt to the next — a countdown
("next permit in 58.59s"), a request id, an HTTP status, a byte count — so grouping by the
raw text turns one recurring failure into dozens of near-duplicate rows. Here each group is
one (outcome, model) pair; within it, details are compared after :func:`normalise_detail`
has replaced numbers, ids and durations with placeholders, and the most frequent form is
shown by one real example (its most recent occurrence) with a count of the other forms.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tierwise.ledger import LedgerRow

__all__ = ["FailureGroup", "failure_groups", "normalise_detail", "outcome_label"]

# Order matters: ids before durations before bare numbers, so "req_0a9f" is one id and
# "58.59s" one duration instead of a number followed by a stray "s".
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
     "<id>"),
    # a word with a digit in it, joined by - or _ (req_0a9f31, chatcmpl-8xYz...), or hex
    (re.compile(r"\b(?=[\w-]*\d)[A-Za-z]+[-_][\w-]{4,}\b"), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b(?=[a-f]*\d)(?=\d*[a-f])[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|secs|seconds?|min|minutes?|h|hours?)\b"),
     "<duration>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)  # fmt: skip


def normalise_detail(detail: str) -> str:
    """``detail`` with ids, durations and numbers replaced by placeholders.

    Example:
        >>> normalise_detail("local rpm limit: next permit in 58.59s")
        'local rpm limit: next permit in <duration>'
        >>> normalise_detail("upstream req_00a19f failed: Error code: 502")
        'upstream <id> failed: Error code: <n>'
    """
    for pattern, placeholder in _NORMALISERS:
        detail = pattern.sub(placeholder, detail)
    return detail.strip()


def outcome_label(row: LedgerRow) -> str:
    """The outcome, marked when the candidate was refused before being sent."""
    return row.outcome if row.sent else f"{row.outcome} (not sent)"


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """The failed attempts of one model with one outcome."""

    outcome: str
    """The failure kind, with " (not sent)" when refused locally (see :func:`outcome_label`)."""
    model: str
    tier: str
    attempts: int
    last_seen: float
    """Unix time of the most recent attempt in the group."""
    example: str
    """A real detail text (the latest) of the group's most frequent normalised form."""
    example_count: int
    """How many attempts share that form."""
    forms: int
    """How many different normalised details the group holds (1: all alike)."""


def failure_groups(rows: Iterable[LedgerRow]) -> list[FailureGroup]:
    """The failed attempts of ``rows`` grouped by (outcome, model), most frequent first."""
    groups: dict[tuple[str, str], list[LedgerRow]] = {}
    for row in rows:
        if not row.ok:
            groups.setdefault((outcome_label(row), row.model), []).append(row)
    found = []
    for (outcome, model), group in groups.items():
        group.sort(key=lambda r: r.time)
        forms = Counter(normalise_detail(r.detail) for r in group)
        form, count = forms.most_common(1)[0]
        example = next(r.detail for r in reversed(group) if normalise_detail(r.detail) == form)
        found.append(FailureGroup(
            outcome=outcome, model=model, tier=group[-1].tier, attempts=len(group),
            last_seen=group[-1].time, example=example, example_count=count, forms=len(forms),
        ))  # fmt: skip
    return sorted(found, key=lambda g: (-g.attempts, g.outcome, g.model))
