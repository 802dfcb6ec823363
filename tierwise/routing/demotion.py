"""Dynamic model selection: when a model's recent record moves it down within its tier.

:class:`DemotionRule` judges a record (pure); :mod:`tierwise.routing.availability` reads
the record from the ledger and puts the resulting :class:`~.snapshot.Standing` entries
in the snapshot the selector orders by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from tierwise.catalog.specs import Catalog, ModelSpec, TaskType, Tier
from tierwise.routing.snapshot import FAILING, SLOW, Standing

__all__ = ["DemotionRule", "Evidence", "judged_pairs"]


class Evidence(Protocol):
    """A model's recent record on one operation (:class:`tierwise.ledger.queries.Performance`)."""

    @property
    def success_rate(self) -> float | None:
        """Successes / sent calls in the window; ``None`` without calls."""

    @property
    def p95_latency(self) -> float | None:
        """95th percentile seconds of the window's successful calls."""

    @property
    def cost_per_success(self) -> float | None:
        """USD spent in the window per successful call."""

    @property
    def n(self) -> int:
        """Sent calls in the window."""

@dataclass(frozen=True, slots=True)
class DemotionRule:
    """When a model's recent record moves it down within its tier (dynamic model selection).

    The record of a model on an operation is its last ``window`` calls that were sent to
    the provider (local refusals say nothing about the model) within the last ``horizon``
    seconds. With fewer than ``min_calls`` such calls there is no judgement, so one failure
    never reshuffles anything. Otherwise the model is

    * **failing** (:data:`FAILING`) when its success rate is below ``min_success``
      (default 75 %: two failures in five calls, six in twenty), and
    * **slow** (:data:`SLOW`) when the 95th percentile latency of its successful calls is
      more than ``slow_ratio`` times that of the fastest peer of the same tier in the
      operation's chain (a peer with at least ``min_calls`` calls and one success) *and*
      at least ``slow_margin`` seconds above it, so 40 ms against 10 ms is not "slow".

    A failing or slow model goes below its same-tier peers that are neither (failing below
    slow); models of equal level keep the catalog's order, and tiers never move. Cost per
    successful call is reported in a paid model's note but does not demote by itself.

    Recovery: the window holds only the latest calls, so successes push failures out (a
    demoted model still answers when its peers fail); and calls older than ``horizon``
    drop out, so a demoted model that gets no traffic loses its judgement — and is tried
    in its catalog place again — as its failures age out, ``horizon`` seconds after the
    last one at the latest. If it healed, its successes keep it there; if not, it is
    demoted again once its window holds ``min_calls`` calls.

    The defaults judge a model on its last 20 calls of the last 5 minutes.
    """

    window: int = 20
    min_calls: int = 5
    horizon: float = 300.0
    min_success: float = 0.75
    slow_ratio: float = 2.0
    slow_margin: float = 1.0

    def __post_init__(self) -> None:
        """Reject rules that cannot work."""
        if self.min_calls < 1 or self.window < self.min_calls:
            raise ValueError("need 1 <= min_calls <= window")
        if self.horizon <= 0 or self.slow_ratio < 1 or self.slow_margin < 0:
            raise ValueError("need horizon > 0, slow_ratio >= 1 and slow_margin >= 0")

    def standings(
        self, catalog: Catalog, record: Mapping[tuple[str, str], Evidence]
    ) -> frozenset[Standing]:
        """The demoted models per operation, judged from ``record`` (pure).

        ``record`` maps (operation value, model key) to that model's window, as
        :meth:`tierwise.ledger.store.Ledger.performance` returns it. Only tiers with at
        least two models in an operation's chain are judged: a lone model has no peer
        to move below.
        """
        found: set[Standing] = set()
        for operation, chain in _judged_chains(catalog):
            known = {
                spec.key: evidence
                for spec in chain
                if (evidence := record.get((operation, spec.key))) is not None
                and evidence.n >= self.min_calls
            }
            fastest = sorted(
                (evidence.p95_latency, key)
                for key, evidence in known.items()
                if evidence.p95_latency is not None
            )
            for key, evidence in known.items():
                standing = self._judge(operation, catalog.models[key], evidence, fastest)
                if standing is not None:
                    found.add(standing)
        return frozenset(found)

    def _judge(
        self,
        operation: str,
        spec: ModelSpec,
        evidence: Evidence,
        fastest: list[tuple[float, str]],
    ) -> Standing | None:
        level = 0
        notes: list[str] = []
        rate = evidence.success_rate
        if rate is not None and rate < self.min_success:
            level = FAILING
            notes.append(f"{rate:.0%} success over last {evidence.n} calls")
        p95 = evidence.p95_latency
        peer = next(((s, key) for s, key in fastest if key != spec.key), None)
        if p95 is not None and peer is not None:
            best, name = peer
            if p95 > best * self.slow_ratio and p95 - best >= self.slow_margin:
                level = max(level, SLOW)
                mine, theirs = _latencies(p95, best)
                notes.append(f"p95 {mine} vs {name} {theirs}")
        if not level:
            return None
        cost = evidence.cost_per_success
        if spec.tier is Tier.PAID and cost:
            notes.append(f"${cost:.2g} per successful call")
        return Standing(operation, spec.key, level, "; ".join(notes))


def judged_pairs(catalog: Catalog) -> list[tuple[str, str]]:
    """(operation value, model key) of every model a :class:`DemotionRule` can judge."""
    return [(op, spec.key) for op, chain in _judged_chains(catalog) for spec in chain]


def _judged_chains(catalog: Catalog) -> tuple[tuple[str, tuple[ModelSpec, ...]], ...]:
    """(operation value, same-tier chain) for every chain with a peer to move below."""
    return tuple(
        (operation.value, chain)
        for operation in TaskType
        for tier in Tier
        if len(chain := catalog.chain(operation, tier)) >= 2
    )


#: Latencies in notes are rounded to the nearest of these steps (x 10^k), ~25 % apart: the
#: healthy peer's p95 moves a little with every call, its note should not.
_STEPS: Final = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def _latencies(slow: float, fast: float) -> tuple[str, str]:
    """Two latencies, coarse on purpose, in the unit of the larger: ``("4 s", "0.6 s")``."""
    unit, scale = ("s", 1.0) if _coarse(max(slow, fast)) >= 1 else ("ms", 1000.0)
    return f"{_coarse(slow * scale):g} {unit}", f"{_coarse(fast * scale):g} {unit}"


def _coarse(value: float) -> float:
    """``value`` rounded (in log scale) to the nearest of :data:`_STEPS` x 10^k."""
    if value <= 0:
        return 0.0
    power = 10.0 ** math.floor(math.log10(value))
    step = min(_STEPS, key=lambda s: abs(math.log(value / (s * power))))
    return float(f"{step * power:.3g}")
