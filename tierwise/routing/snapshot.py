"""The selector's view of what can be called now: a :class:`Snapshot`, and the demotions in it.

A snapshot is plain, immutable data (built by :mod:`tierwise.routing.availability`, read
by the pure :mod:`tierwise.routing.selector`); equal snapshots make the selector's memo
hit, so everything in it is coarse on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tierwise.catalog.specs import Catalog
from tierwise.ledger.evidence import Measured

__all__ = ["FAILING", "SLOW", "Snapshot", "Standing"]

SLOW: Final = 1
"""Demotion level of a model much slower than its fastest same-tier peer."""
FAILING: Final = 2
"""Demotion level of a model whose recent success rate is too low (below slow ones)."""


@dataclass(frozen=True, slots=True)
class Standing:
    """A model demoted within its tier for one operation, with the evidence in a few words.

    Attributes:
        operation: ``TaskType`` value the record is about.
        model: Catalog key.
        level: :data:`SLOW` or :data:`FAILING`; same-tier candidates are ordered by level
            (0 for models without a standing), catalog order breaking ties.
        why: The evidence, e.g. ``"40% success over last 20 calls"`` or
            ``"p95 4 s vs groq-llama-3.1-8b 0.6 s"``; figures are rounded so that a
            standing, and so the snapshot, stays equal while the record barely moves.
    """

    operation: str
    model: str
    level: int
    why: str



@dataclass(frozen=True, slots=True)
class Snapshot:
    """What can be called now: usable models, those cooling down, and those demoted.

    ``reasons`` says, per model key, why it is unusable or cooling; it is for
    explanations only and not part of equality, so it never defeats the cache.
    """

    available: frozenset[str]
    cooling: frozenset[str] = frozenset()
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    #: Models demoted within their tier per operation (see :class:`DemotionRule`).
    standings: frozenset[Standing] = frozenset()
    #: Measured quality per (operation, model), where there is enough evidence.
    quality: frozenset[Measured] = frozenset()

    @classmethod
    def everything(cls, catalog: Catalog) -> Snapshot:
        """A snapshot in which every catalog model is usable (tests, planning)."""
        return cls(available=frozenset(catalog.models))

    def cooled(self, keys: frozenset[str], reasons: Mapping[str, str]) -> Snapshot:
        """This snapshot with ``keys`` cooling down for ``reasons``."""
        return Snapshot(
            self.available, keys, {**self.reasons, **reasons}, self.standings, self.quality
        )

    def ranked(self, standings: Iterable[Standing]) -> Snapshot:
        """This snapshot with ``standings`` (they replace this one's for the same model)."""
        merged = {(s.operation, s.model): s for s in self.standings}
        merged.update({(s.operation, s.model): s for s in standings})
        return Snapshot(
            self.available, self.cooling, self.reasons, frozenset(merged.values()), self.quality
        )

    def measured(self, quality: Iterable[Measured]) -> Snapshot:
        """This snapshot with ``quality`` as the measured quality (replacing any before)."""
        return Snapshot(
            self.available, self.cooling, self.reasons, self.standings, frozenset(quality)
        )
