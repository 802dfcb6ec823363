"""Candidate selection: (operation, complexity, policy, snapshot) → ordered model chain.

Selection is a pure function of the catalog, the policy and a :class:`Snapshot` of what is
usable right now; it does no I/O, so the router can call it on every request (results are
memoised, a call costs about a microsecond). :meth:`Selector.explain` gives the same
answer with the reason for every position and for every model left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from tierwise.routing.catalog import Catalog, Complexity, ModelSpec, Provider, TaskType, Tier
from tierwise.routing.policy import Policy

__all__ = ["Exclusion", "Explanation", "Placement", "Selector", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What can be called now: usable models, and those cooling down after failures.

    ``reasons`` says, per model key, why it is unusable or cooling; it is for
    explanations only and not part of equality, so it never defeats the cache.
    """

    available: frozenset[str]
    cooling: frozenset[str] = frozenset()
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def everything(cls, catalog: Catalog) -> Snapshot:
        """A snapshot in which every catalog model is usable (tests, planning)."""
        return cls(available=frozenset(catalog.models))

    def cooled(self, keys: frozenset[str], reasons: Mapping[str, str]) -> Snapshot:
        """This snapshot with ``keys`` cooling down for ``reasons``."""
        return Snapshot(self.available, keys, {**self.reasons, **reasons})


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
        >>> from tierwise.routing.catalog import load_default_catalog
        >>> from tierwise.routing.policy import Policy
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

        def consider(spec: ModelSpec, why: str) -> None:
            if spec.key in seen:
                return
            seen.add(spec.key)
            problem = _unusable(
                spec, snapshot, policy, needs_tools, prompt_tokens, max_output_tokens
            )
            if problem:
                excluded.append(Exclusion(spec, problem))
            else:
                chosen.append(Placement(spec, why))

        override = policy.override(operation)
        if override is not None and override.pin is not None:
            spec = self.catalog.spec(override.pin)
            if spec.tier in tiers:
                consider(spec, f"pinned for {operation} by the policy")
            else:
                excluded.append(Exclusion(spec, f"pinned, but {spec.tier} tier is not allowed"))
            return Explanation(operation, complexity, policy, tiers, tuple(chosen), tuple(excluded))

        for rank, tier in enumerate(tiers):
            for position, spec in enumerate(self.catalog.chain(operation, tier)):
                consider(spec, _reason(operation, complexity, policy, tier, rank, position, spec))
        embedded = self.catalog.embedded
        if embedded is not None and Tier.LOCAL in tiers:
            consider(
                self.catalog.models[embedded],
                "last resort: the in-process model answers when nothing else can",
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


def _reason(
    operation: TaskType,
    complexity: Complexity,
    policy: Policy,
    tier: Tier,
    tier_rank: int,
    position: int,
    spec: ModelSpec,
) -> str:
    role = "primary tier" if tier_rank == 0 else f"fallback tier {tier_rank + 1}"
    where = "first" if position == 0 else f"choice {position + 1}"
    score = spec.score(operation)
    quality = f"rubric {score:g}/10" if score is not None else "rubric not rated"
    cost = "no cost" if spec.tier is not Tier.PAID else (
        f"${spec.price.input_per_mtok:g}/${spec.price.output_per_mtok:g} per 1M tokens"
    )
    local = " in-process" if spec.provider is Provider.EMBEDDED else ""
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
