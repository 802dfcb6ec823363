"""Candidate selection: (operation, complexity, policy, snapshot) → ordered model chain.

Selection is a pure function of the catalog, the policy and a :class:`Snapshot` of what is
usable right now; it does no I/O, so the router can call it on every request (results are
memoised; ``benchmarks/selector.py`` measures a call). :meth:`Selector.explain` gives the same
answer with the reason for every position and for every model left out.

Dynamic model selection: a snapshot may carry :class:`Standing` entries — models that have
recently been failing or slow on an operation, as judged by a :class:`DemotionRule` from
the ledger's rolling record (the router refreshes them every couple of seconds). Such a
model moves down *within its tier*, below its healthier same-tier peers; the tier order
never changes because of it. Standings are coarse (a level and a short note, only for
demoted models), so snapshots stay equal — and the memo keeps hitting — while nothing
material changes.

Measured quality: a snapshot may also carry :class:`~tierwise.ledger.evidence.Measured`
quality per (operation, model) — the mean verdict of evals, judges and escalations, with
a 95 % interval, once there are enough of them. It takes the place of the catalog's
static rubric score (read as a share: 8/10 = 0.8): within a tier, a model moves above an
earlier peer only when its interval lies wholly above the peer's (the peer's interval,
or its rubric score when it has no evidence), and below a later one likewise. Without
such a clear difference the catalog's order — which also encodes price — stands. Health
demotions still come first: a failing model stays below a healthy one however good its
answers were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, Complexity, ModelSpec, Provider, TaskType, Tier
from tierwise.ledger.evidence import Measured
from tierwise.routing.snapshot import Snapshot, Standing

__all__ = ["Exclusion", "Explanation", "Placement", "Selector"]

@dataclass(frozen=True, slots=True)
class Placement:
    """A chosen candidate and why it stands where it does."""

    spec: ModelSpec
    reason: str


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A catalog model of the operation's chain that will not be tried, and why."""

    spec: ModelSpec
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """The full selection for one request: tiers tried, chosen chain, models left out."""

    operation: TaskType
    complexity: Complexity
    policy: Policy
    tiers: tuple[Tier, ...]
    chosen: tuple[Placement, ...]
    excluded: tuple[Exclusion, ...]
    #: The chosen specs, primary first; built once so memoised answers are the same object.
    candidates: tuple[ModelSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Derive :attr:`candidates` from :attr:`chosen`."""
        object.__setattr__(self, "candidates", tuple(p.spec for p in self.chosen))


class Selector:
    """Orders an operation's catalog chain under a policy.

    Example:
        >>> from tierwise.catalog.specs import load_default_catalog
        >>> from tierwise.catalog.policy import Policy
        >>> catalog = load_default_catalog()
        >>> selector = Selector(catalog)
        >>> chain = selector.candidates(
        ...     "classification", "simple", Policy(mode="free_first"), Snapshot.everything(catalog)
        ... )
        >>> [spec.tier.value for spec in chain]
        ['free', 'free', 'free', 'local', 'local']
    """

    def __init__(self, catalog: Catalog, *, cache_size: int = 4096) -> None:
        """Bind to ``catalog``; answers are memoised per distinct request."""
        self.catalog = catalog
        self._explain = lru_cache(maxsize=cache_size)(self._compute)

    def candidates(
        self,
        operation: TaskType | str,
        complexity: Complexity | str,
        policy: Policy,
        snapshot: Snapshot,
        *,
        needs_tools: bool = False,
        prompt_tokens: int = 0,
        max_output_tokens: int = 0,
    ) -> tuple[ModelSpec, ...]:
        """The ordered chain to try: primary first, never crossing ``policy``.

        ``prompt_tokens`` and ``max_output_tokens`` (estimates) let the selector drop
        models whose context window is too small or whose cost exceeds the per-call cap.
        """
        return self.explain(
            operation,
            complexity,
            policy,
            snapshot,
            needs_tools=needs_tools,
            prompt_tokens=prompt_tokens,
            max_output_tokens=max_output_tokens,
        ).candidates

    def explain(
        self,
        operation: TaskType | str,
        complexity: Complexity | str,
        policy: Policy,
        snapshot: Snapshot,
        *,
        needs_tools: bool = False,
        prompt_tokens: int = 0,
        max_output_tokens: int = 0,
    ) -> Explanation:
        """Like :meth:`candidates`, with the reason for every placement and exclusion."""
        return self._explain(
            TaskType(operation),
            Complexity(complexity),
            policy,
            snapshot,
            needs_tools,
            prompt_tokens,
            max_output_tokens,
        )

    def _compute(
        self,
        operation: TaskType,
        complexity: Complexity,
        policy: Policy,
        snapshot: Snapshot,
        needs_tools: bool,
        prompt_tokens: int,
        max_output_tokens: int,
    ) -> Explanation:
        tiers = policy.allowed_tiers(operation, complexity)
        chosen: list[Placement] = []
        excluded: list[Exclusion] = []
        seen: set[str] = set()

        def admit(spec: ModelSpec) -> bool:
            """True for a usable model not met before; records why one is unusable."""
            if spec.key in seen:
                return False
            seen.add(spec.key)
            problem = _unusable(
                spec, snapshot, policy, needs_tools, prompt_tokens, max_output_tokens
            )
            if problem:
                excluded.append(Exclusion(spec, problem))
            return problem is None

        def consider(spec: ModelSpec, why: str) -> None:
            if admit(spec):
                chosen.append(Placement(spec, why))

        override = policy.override(operation)
        if override is not None and override.pin is not None:
            spec = self.catalog.spec(override.pin)
            if spec.tier in tiers:
                consider(spec, f"pinned for {operation} by the policy")
            else:
                excluded.append(Exclusion(spec, f"pinned, but {spec.tier} tier is not allowed"))
            return Explanation(operation, complexity, policy, tiers, tuple(chosen), tuple(excluded))

        demoted = (
            {s.model: s for s in snapshot.standings if s.operation == operation}
            if snapshot.standings
            else {}
        )
        measured = (
            {m.model: m for m in snapshot.quality if m.operation == operation}
            if snapshot.quality
            else {}
        )
        for rank, tier in enumerate(tiers):
            usable = [
                (position, spec)
                for position, spec in enumerate(self.catalog.chain(operation, tier))
                if admit(spec)
            ]
            notes: dict[str, str] = {}
            if measured:
                usable = _by_quality(usable, measured, operation)
                notes = {spec.key: _moved_by_quality(usable, i) for i, (_, spec) in
                         enumerate(usable)}  # fmt: skip
            if demoted:  # stable: equal levels keep the order so far
                usable.sort(key=lambda item: _level(demoted, item[1].key))
            for index, (position, spec) in enumerate(usable):
                why = _reason(operation, complexity, policy, tier, rank, position, spec,
                              measured.get(spec.key))  # fmt: skip
                if notes:
                    why += notes[spec.key]
                if demoted:
                    why += _moved(demoted, usable, index)
                chosen.append(Placement(spec, why))
        embedded = self.catalog.embedded
        if embedded is not None and Tier.LOCAL in tiers:
            consider(
                self.catalog.models[embedded],
                "last resort: the embedded model answers when nothing else can",
            )
        for tier in Tier:
            if tier not in tiers:
                for spec in self.catalog.chain(operation, tier):
                    if spec.key not in seen:
                        seen.add(spec.key)
                        excluded.append(Exclusion(spec, _tier_refusal(policy, operation, tier)))
        return Explanation(operation, complexity, policy, tiers, tuple(chosen), tuple(excluded))


def _unusable(
    spec: ModelSpec,
    snapshot: Snapshot,
    policy: Policy,
    needs_tools: bool,
    prompt_tokens: int,
    max_output_tokens: int,
) -> str | None:
    """Why ``spec`` cannot take this request, or ``None`` when it can."""
    if spec.key not in snapshot.available:
        return snapshot.reasons.get(spec.key) or f"{spec.provider} is not available"
    if spec.key in snapshot.cooling:
        return snapshot.reasons.get(spec.key) or "cooling down after repeated failures"
    if needs_tools and not spec.tools:
        return "no tool calling"
    if prompt_tokens + max_output_tokens > spec.context_window:
        return (
            f"prompt of ~{prompt_tokens} + {max_output_tokens} tokens exceeds its "
            f"{spec.context_window}-token window"
        )
    cap = policy.max_cost_per_call
    if cap is not None:
        cost = spec.price.cost(prompt_tokens, max_output_tokens)
        if cost > cap:
            return f"estimated ${cost:.6f} per call exceeds the ${cap:g} cap"
    return None


def _span(
    spec: ModelSpec, measured: Mapping[str, Measured], operation: TaskType
) -> tuple[float, float] | None:
    """A model's quality as an interval in [0, 1]: measured, else its rubric score / 10."""
    m = measured.get(spec.key)
    if m is not None:
        return m.low, m.high
    rubric = spec.score(operation)
    return None if rubric is None else (rubric / 10, rubric / 10)


def _clearly_better(
    a: ModelSpec, b: ModelSpec, measured: Mapping[str, Measured], operation: TaskType
) -> bool:
    """``a``'s quality interval lies wholly above ``b``'s, and one of them is measured."""
    if a.key not in measured and b.key not in measured:
        return False
    span_a, span_b = _span(a, measured, operation), _span(b, measured, operation)
    return span_a is not None and span_b is not None and span_a[0] > span_b[1]


def _by_quality(
    usable: list[tuple[int, ModelSpec]], measured: Mapping[str, Measured], operation: TaskType
) -> list[tuple[int, ModelSpec]]:
    """``usable`` with each model moved above the earlier peers it is clearly better than.

    An insertion sort on a partial order: pairs without a clear difference keep the
    catalog's order (chains hold a few models, so the quadratic walk costs nothing).
    """
    ordered: list[tuple[int, ModelSpec]] = []
    for item in usable:
        at = len(ordered)
        while at and _clearly_better(item[1], ordered[at - 1][1], measured, operation):
            at -= 1
        ordered.insert(at, item)
    return ordered


def _moved_by_quality(usable: list[tuple[int, ModelSpec]], index: int) -> str:
    """The note for the ``index``-th model after :func:`_by_quality` reordered its tier."""
    position = usable[index][0]
    passed = [s.key for p, s in usable[index + 1:] if p < position]
    if passed:
        return f"; moved above {', '.join(passed)} by measured quality"
    overtaken = [s.key for p, s in usable[:index] if p > position]
    if overtaken:
        return f"; moved below {', '.join(overtaken)} by measured quality"
    return ""


def _level(demoted: Mapping[str, Standing], key: str) -> int:
    standing = demoted.get(key)
    return standing.level if standing is not None else 0


def _moved(
    demoted: Mapping[str, Standing], usable: list[tuple[int, ModelSpec]], index: int
) -> str:
    """Why the ``index``-th usable model of a tier stands where it does, given demotions."""
    position, spec = usable[index]
    standing = demoted.get(spec.key)
    if standing is not None:
        above = [s.key for p, s in usable[:index] if p > position]
        if above:
            return f"; moved below {', '.join(above)}: {standing.why}"
        if any(_level(demoted, s.key) < standing.level for _, s in usable[:index]):
            return f"; demoted (already below its healthier peers): {standing.why}"
        return f"; {standing.why} (no healthier {spec.tier} peer to move below)"
    below = [s.key for p, s in usable[index + 1:] if p < position]
    if below:
        return f"; moved above {', '.join(below)} ({_plural(below, 'is', 'are')} demoted)"
    return ""


def _plural(items: list[str], one: str, many: str) -> str:
    return one if len(items) == 1 else many


def _reason(
    operation: TaskType,
    complexity: Complexity,
    policy: Policy,
    tier: Tier,
    tier_rank: int,
    position: int,
    spec: ModelSpec,
    measured: Measured | None = None,
) -> str:
    role = "primary tier" if tier_rank == 0 else f"fallback tier {tier_rank + 1}"
    where = "first" if position == 0 else f"choice {position + 1}"
    score = spec.score(operation)
    quality = f"rubric {score:g}/10" if score is not None else "rubric not rated"
    if measured is not None:
        quality = f"quality {measured.describe()} in place of the {quality}"
    cost = "no cost" if spec.tier is not Tier.PAID else (
        f"${spec.price.input_per_mtok:g}/${spec.price.output_per_mtok:g} per 1M tokens"
    )
    local = " embedded" if spec.provider is Provider.EMBEDDED else ""
    return (
        f"{role} ({tier}) for {complexity} tasks under {policy.mode}; {where} of the "
        f"{operation} {tier}{local} chain; {quality}, speed {spec.speed:g}/10, {cost}"
    )


def _tier_refusal(policy: Policy, operation: TaskType, tier: Tier) -> str:
    override = policy.override(operation)
    if override is not None and tier in override.forbid_tiers:
        return f"{tier} tier forbidden for {operation}"
    if tier.rank > policy.cap.rank:
        return f"{tier} tier is above the policy's cap ({policy.cap})"
    if override is not None and override.max_tier is not None:
        return f"{tier} tier is above {operation}'s cap ({override.max_tier})"
    return f"{tier} tier is not used by {policy.mode}"
