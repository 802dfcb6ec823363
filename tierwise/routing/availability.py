"""What is usable now: the one place a :class:`~.snapshot.Snapshot` is built.

The router, ``tierwise route`` and ``tierwise doctor`` all ask an :class:`Availability`,
so they cannot disagree. It layers, in this order:

1. the availability probe (keys present, Ollama reachable, embedded installed), redone at
   most every ``probe_ttl`` seconds (:class:`~tierwise.providers.clients.ProbeCache`), or
   a fixed snapshot given by the caller;
2. the circuit breakers and disabled providers of a :class:`~tierwise.guards.limits.HealthBoard`;
3. with a ledger: the standings of models failing or slow on an operation (judged by a
   :class:`~.demotion.DemotionRule`) and the measured quality of models with enough
   evidence, both re-read at most every ``standings_ttl`` seconds.

This module does the I/O (probe, ledger reads) so that the selector does none. While
nothing changed it hands back the very same snapshot object, so the selector's memo keeps
hitting.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import Catalog, ModelSpec
from tierwise.guards.health import HealthBoard
from tierwise.ledger import Ledger, LedgerError
from tierwise.ledger.evidence import Measured
from tierwise.providers.clients import Availability as Probe
from tierwise.providers.clients import ProbeCache
from tierwise.routing.demotion import DemotionRule, Evidence, judged_pairs
from tierwise.routing.snapshot import Snapshot, Standing

__all__ = [
    "DEFAULT_DEMOTION",
    "Availability",
    "RecordSource",
    "probed_snapshot",
    "read_standings",
]

logger = logging.getLogger(__name__)

#: The rule a router with a ledger demotes failing or slow models by, within their tier.
DEFAULT_DEMOTION = DemotionRule()


class RecordSource(Protocol):
    """The record :func:`read_standings` reads: a :class:`tierwise.ledger.store.Ledger`."""

    def performance(
        self,
        pairs: Iterable[tuple[str, str]] | None = ...,
        *,
        last_n: int = ...,
        since: float | None = ...,
        operation: str | None = ...,
    ) -> Mapping[tuple[str, str], Evidence]:
        """Per (operation, model) of ``pairs``: its last ``last_n`` sent calls since ``since``."""


def probed_snapshot(probed: Probe, specs: Mapping[str, ModelSpec]) -> Snapshot:
    """A probe as a snapshot: every ready model available, the others with reasons."""
    available: set[str] = set()
    reasons: dict[str, str] = {}
    for key, spec in specs.items():
        ready, why = probed.model_ready(spec)
        if ready:
            available.add(key)
        else:
            reasons[key] = why
    return Snapshot(available=frozenset(available), reasons=reasons)


def read_standings(
    rule: DemotionRule, source: RecordSource, catalog: Catalog, now: float
) -> frozenset[Standing]:
    """``rule``'s standings from ``source``'s record as of Unix time ``now``.

    Asks only for the (operation, model) pairs that can be judged, the latest
    ``rule.window`` sent calls of each within ``rule.horizon``: from a ledger, one indexed
    query per pair, whatever its size.
    """
    record = source.performance(
        judged_pairs(catalog), last_n=rule.window, since=now - rule.horizon
    )
    return rule.standings(catalog, record)


def _on_loop() -> bool:
    """Whether this thread runs an event loop (where the ledger is never read)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Availability:
    """Builds the :class:`Snapshot` of what is usable now, for the router and the CLI.

    Example:
        >>> from tierwise.testing import Simulator
        >>> with Simulator() as sim:
        ...     snapshot = Availability(sim.settings(), ledger=None).snapshot()
        >>> "groq-llama-3.1-8b" in snapshot.available
        True
    """

    def __init__(
        self,
        settings: Settings,
        *,
        health: HealthBoard | None = None,
        ledger: Ledger | None = None,
        fixed: Snapshot | None = None,
        probe_ttl: float = 60.0,
        demotion: DemotionRule | None = DEFAULT_DEMOTION,
        standings_ttl: float = 2.0,
        evidence_min_n: int | None = 20,
    ) -> None:
        """Configure the layers (see the module docstring).

        Args:
            settings: catalog, endpoints, credentials.
            health: circuit breakers (default: a fresh board, nothing cooling).
            ledger: where standings and measured quality are read; ``None``: neither.
            fixed: a snapshot used in place of probing (tests, planning).
            probe_ttl: seconds an availability probe stays valid.
            demotion: how the ledger's record demotes models; ``None``: never.
            standings_ttl: seconds the ledger's record is reused before it is read again
                (one indexed query per judged (operation, model); the calls in between
                read no SQLite).
            evidence_min_n: verdicts a model needs on an operation before its measured
                quality reorders it within its tier; ``None``: rubric and catalog order.
        """
        self.settings = settings
        self.health = health if health is not None else HealthBoard()
        self.ledger = ledger
        self.demotion = demotion
        self.evidence_min_n = evidence_min_n
        self._fixed = fixed
        #: The availability probe, refreshed off the event loop by async callers.
        self.probes = ProbeCache(settings, ttl=probe_ttl)
        self._probed: tuple[Probe, Snapshot] | None = None
        self._provider_of = {k: s.provider.value for k, s in settings.catalog.models.items()}
        self._standings_ttl = standings_ttl
        self._standings: tuple[float, frozenset[Standing]] | None = None
        self._quality: frozenset[Measured] = frozenset()
        self._ranked: tuple[Snapshot, frozenset[Standing], frozenset[Measured], Snapshot] | None
        self._ranked = None

    def snapshot(self) -> Snapshot:
        """What is usable now, and in which order within a tier.

        Standings are per (operation, model), as the ledger's record is; only demoted
        models are listed, so the snapshot stays small. They are read from every
        process's committed rows: this process's last ``flush_interval`` of rows may be
        missing (the circuit breaker reacts at once).
        """
        base = self._fixed
        if base is None:
            probed = self.probes.get()
            if self._probed is None or self._probed[0] is not probed:
                self._probed = (probed, probed_snapshot(probed, self.settings.catalog.models))
            base = self._probed[1]
        snap = self.health.snapshot(base, self._provider_of)
        standings = self._current_standings()
        quality = self._quality
        if not standings and not quality:
            return snap
        ranked = self._ranked
        if (ranked is not None and ranked[0] is snap and ranked[1] is standings
                and ranked[2] is quality):  # fmt: skip
            return ranked[3]
        result = snap.ranked(standings) if standings else snap
        if quality:
            result = result.measured(quality)
        self._ranked = (snap, standings, quality, result)
        return result

    async def aready(self) -> None:
        """Have an availability probe before routing, probed without blocking the loop."""
        if self._fixed is None:
            await self.probes.aget()

    def refresh(self) -> None:
        """Forget the availability probe, so the next snapshot probes again."""
        self.probes.invalidate()

    def stale(self) -> bool:
        """Whether the next snapshot reads the ledger (its record is older than the ttl)."""
        if self.ledger is None or (self.demotion is None and self.evidence_min_n is None):
            return False
        cached = self._standings
        return cached is None or time.monotonic() - cached[0] >= self._standings_ttl

    def read_record(self) -> None:
        """Read the ledger's record now; async routers run it in a worker thread."""
        self._current_standings()

    def _current_standings(self) -> frozenset[Standing]:
        """The ledger's demotions (and measured quality), read at most every ``standings_ttl`` s.

        Hands back the previous object while the standings are equal, so the snapshot
        built from them is the same object too. A ledger that cannot be read keeps the
        last standings (logged): routing must not fail over its monitoring.
        """
        rule, ledger = self.demotion, self.ledger
        if ledger is None or (rule is None and self.evidence_min_n is None):
            return frozenset()
        now = time.monotonic()
        cached = self._standings
        if cached is not None and (now - cached[0] < self._standings_ttl or _on_loop()):
            return cached[1]  # on an event loop the router reads it off the loop first
        previous = cached[1] if cached is not None else frozenset()
        try:
            found = (
                read_standings(rule, ledger, self.settings.catalog, time.time())
                if rule is not None else frozenset()
            )
        except (sqlite3.Error, LedgerError) as exc:
            logger.warning("ledger %s: cannot read the models' record (%s)", ledger.label, exc)
            found = previous
        if found == previous:
            found = previous
        self._standings = (now, found)
        self._read_quality(ledger)
        return found

    def _read_quality(self, ledger: Ledger) -> None:
        """Refresh the measured quality from the ledger's evidence (with the standings)."""
        if self.evidence_min_n is None:
            return
        try:
            found = frozenset(ledger.evidence.quality(min_n=self.evidence_min_n).values())
        except (sqlite3.Error, LedgerError) as exc:
            logger.warning("ledger %s: cannot read quality evidence (%s)", ledger.label, exc)
            return
        if found != self._quality:
            self._quality = found
