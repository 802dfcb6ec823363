"""Routing policy: which tiers may be used, in which order, and what a call may cost.

A policy is a frozen, JSON-serialisable value so it can travel in a LangGraph context
and be used as a cache key by the selector. The tier *order* comes from the mode and the
instruction's complexity (the seed's rule: local only → local; simple and free allowed →
free; otherwise paid); the tier *cap*, forbidden tiers, pins and cost caps only ever
remove candidates — they never add one the policy does not allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, model_validator

from tierwise.catalog.specs import Complexity, Provider, TaskType, Tier

__all__ = ["ABTest", "EnsembleSpec", "OperationOverride", "Policy", "PolicyMode", "tier_order"]


class PolicyMode(StrEnum):
    """How eager the router is to spend money for quality."""

    LOCAL_ONLY = "local_only"
    FREE_FIRST = "free_first"
    BALANCED = "balanced"
    QUALITY_FIRST = "quality_first"
    #: The learned router (:mod:`tierwise.learning.learned_router`) picks the primary model per
    #: prompt among the candidates ``balanced`` allows; the rest stay as fallbacks.
    LEARNED = "learned"


_L, _F, _P = Tier.LOCAL, Tier.FREE, Tier.PAID

#: Tier preference per mode and complexity: the first tier holds the primary candidate,
#: the others the fallbacks, in order.
_TIER_ORDER: dict[PolicyMode, dict[Complexity, tuple[Tier, ...]]] = {
    PolicyMode.LOCAL_ONLY: dict.fromkeys(Complexity, (_L,)),
    PolicyMode.FREE_FIRST: dict.fromkeys(Complexity, (_F, _L, _P)),
    PolicyMode.BALANCED: {
        Complexity.SIMPLE: (_F, _L, _P),
        Complexity.MODERATE: (_F, _P, _L),
        Complexity.COMPLEX: (_P, _F, _L),
    },
    PolicyMode.QUALITY_FIRST: dict.fromkeys(Complexity, (_P, _F, _L)),
}
_TIER_ORDER[PolicyMode.LEARNED] = _TIER_ORDER[PolicyMode.BALANCED]

#: A mode that names paid models allows them unless the user caps it; ``free_first``
#: never spends money unless the cap is raised explicitly.
_DEFAULT_CAP: dict[PolicyMode, Tier] = {
    PolicyMode.LOCAL_ONLY: _L,
    PolicyMode.FREE_FIRST: _F,
    PolicyMode.BALANCED: _P,
    PolicyMode.QUALITY_FIRST: _P,
    PolicyMode.LEARNED: _P,
}


def tier_order(mode: PolicyMode, complexity: Complexity) -> tuple[Tier, ...]:
    """The tiers ``mode`` tries for ``complexity``, primary tier first."""
    return _TIER_ORDER[mode][complexity]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_NAME = r"^[A-Za-z0-9_.-]+$"


class ABTest(_Frozen):
    """Split one operation's traffic between two models, sticky per thread.

    A thread (else a run) always lands on the same arm: the arm is a hash of the test's
    name and the thread id, so a conversation never flips models mid-way and a resumed
    run keeps its arm. The arm's model becomes the primary candidate; the rest of the
    chain stays behind it as fallbacks (an arm never costs the caller an answer). Every
    attempt of the call carries ``"<name>:a"`` or ``"<name>:b"`` in the ledger's ``arm``
    column; ``tierwise ab report`` compares the arms.
    """

    name: str = Field(pattern=_NAME, description="The test's name (ledger arm prefix).")
    a: str = Field(min_length=1, description="Catalog key of arm a's model.")
    b: str = Field(min_length=1, description="Catalog key of arm b's model.")
    share_b: float = Field(0.5, gt=0, lt=1, description="Fraction of threads sent to arm b.")

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.a == self.b:
            raise ValueError(f"ab test {self.name!r}: arms a and b are both {self.a!r}")
        return self


class EnsembleSpec(_Frozen):
    """Answer an operation with several models in parallel and combine their answers."""

    models: tuple[str, ...] = Field(min_length=2, description="Catalog keys of the members.")
    combiner: Literal["auto", "vote", "best_score"] = Field(
        "auto",
        description="vote: the most common answer (classification, routing); best_score: "
        "the answer a quality judge scores highest (free text); auto: vote for "
        "label-valued operations, best_score otherwise.",
    )


class OperationOverride(_Frozen):
    """Per-operation adjustments on top of the policy."""

    pin: str | None = Field(None, description="Use only this catalog model for the operation.")
    forbid_tiers: frozenset[Tier] = Field(
        frozenset(), description="Tiers never used for this operation."
    )
    max_tier: Tier | None = Field(None, description="A lower tier cap for this operation.")
    ab: ABTest | None = Field(None, description="Split this operation's traffic (A/B test).")
    ensemble: EnsembleSpec | None = Field(
        None, description="Answer with several models and combine (graph nodes)."
    )

    def __hash__(self) -> int:
        """Hash of the fields, so policies holding overrides can be cache keys."""
        return hash((self.pin, self.forbid_tiers, self.max_tier, self.ab, self.ensemble))


class Policy(_Frozen):
    """What the router may use for a call.

    Example:
        >>> from tierwise.catalog.policy import Policy
        >>> Policy(mode="balanced").max_tier
        <Tier.PAID: 'paid'>
        >>> Policy().max_tier  # free_first never pays unless told to
        <Tier.FREE: 'free'>
    """

    mode: PolicyMode = Field(PolicyMode.FREE_FIRST, description="Tier preference.")
    max_tier: Tier | None = Field(
        None,
        description="Highest tier allowed; defaults to free for free_first, local for "
        "local_only and paid otherwise.",
    )
    max_cost_per_call: float | None = Field(
        None, ge=0, description="USD; a candidate whose estimated call cost is higher is skipped."
    )
    max_cost_per_run: float | None = Field(
        None, ge=0, description="USD over one graph run / thread (read from the ledger)."
    )
    max_cost_per_day: float | None = Field(
        None, ge=0, description="USD over the current UTC day, all processes (ledger)."
    )
    max_cost_per_provider_per_day: Mapping[Provider, NonNegativeFloat] = Field(
        default_factory=dict, description="USD per provider over the current UTC day (ledger)."
    )
    operations: Mapping[TaskType, OperationOverride] = Field(
        default_factory=dict, description="Per-operation pins and tier restrictions."
    )
    router_model: str | None = Field(
        None,
        description="mode learned: the trained router file (default: router.npz in the "
        "user data dir; `tierwise router train` writes it).",
    )
    strong_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="mode learned: the share of calls the most expensive candidate should "
        "get; the router's cost weight is calibrated to it.",
    )
    cost_weight: float | None = Field(
        None,
        ge=0,
        description="mode learned: quality points (0-1) one USD per call must buy, when "
        "strong_share is not set (default: calibrated to a 50% strong share).",
    )

    @model_validator(mode="after")
    def _default_cap(self) -> Self:
        if self.max_tier is None:
            object.__setattr__(self, "max_tier", _DEFAULT_CAP[self.mode])
        elif self.mode is PolicyMode.LOCAL_ONLY and self.max_tier is not Tier.LOCAL:
            raise ValueError(
                f"mode local_only allows only max_tier = 'local', got {self.max_tier.value!r}"
            )
        return self

    def __hash__(self) -> int:
        """Hash of the fields: the selector memoises on the policy."""
        return hash((
            self.mode,
            self.max_tier,
            self.max_cost_per_call,
            self.max_cost_per_run,
            self.max_cost_per_day,
            frozenset(self.max_cost_per_provider_per_day.items()),
            frozenset(self.operations.items()),
            self.router_model,
            self.strong_share,
            self.cost_weight,
        ))

    @property
    def cap(self) -> Tier:
        """The effective tier cap (never ``None`` after validation)."""
        assert self.max_tier is not None
        return self.max_tier

    def override(self, operation: TaskType) -> OperationOverride | None:
        """The per-operation override for ``operation``, if any."""
        return self.operations.get(operation)

    def pinned(self, operation: TaskType | str, model: str) -> Policy:
        """This policy with ``operation`` answered by the catalog model ``model`` only.

        The one way tierwise pins a model (node factories given a catalog key, a
        ``RoutedChatModel`` call with ``model=``, ensemble members, evaluations). The
        operation's tier limits and every cost cap still hold; its A/B test and ensemble
        are dropped, since one model answers.

        Example:
            >>> policy = Policy(mode="free_first").pinned("rewriting", "groq-llama-3.1-8b")
            >>> policy.override(TaskType.REWRITING).pin
            'groq-llama-3.1-8b'
        """
        operation = TaskType(operation)
        override = self.override(operation) or OperationOverride()
        pin = override.model_copy(update={"pin": model, "ab": None, "ensemble": None})
        return self.model_copy(update={"operations": {**self.operations, operation: pin}})

    def allowed_tiers(self, operation: TaskType, complexity: Complexity) -> tuple[Tier, ...]:
        """Tiers this policy tries for ``operation`` at ``complexity``, in order."""
        cap = self.cap.rank
        forbidden: frozenset[Tier] = frozenset()
        override = self.operations.get(operation)
        if override is not None:
            forbidden = override.forbid_tiers
            if override.max_tier is not None:
                cap = min(cap, override.max_tier.rank)
        return tuple(
            t for t in tier_order(self.mode, complexity) if t.rank <= cap and t not in forbidden
        )
