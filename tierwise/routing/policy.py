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
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tierwise.routing.catalog import Complexity, Provider, TaskType, Tier

__all__ = ["OperationOverride", "Policy", "PolicyMode", "tier_order"]


class PolicyMode(StrEnum):
    """How eager the router is to spend money for quality."""

    LOCAL_ONLY = "local_only"
    FREE_FIRST = "free_first"
    BALANCED = "balanced"
    QUALITY_FIRST = "quality_first"


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

#: A mode that names paid models allows them unless the user caps it; ``free_first``
#: never spends money unless the cap is raised explicitly.
_DEFAULT_CAP: dict[PolicyMode, Tier] = {
    PolicyMode.LOCAL_ONLY: _L,
    PolicyMode.FREE_FIRST: _F,
    PolicyMode.BALANCED: _P,
    PolicyMode.QUALITY_FIRST: _P,
}


def tier_order(mode: PolicyMode, complexity: Complexity) -> tuple[Tier, ...]:
    """The tiers ``mode`` tries for ``complexity``, primary tier first."""
    return _TIER_ORDER[mode][complexity]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OperationOverride(_Frozen):
    """Per-operation adjustments on top of the policy."""

    pin: str | None = Field(None, description="Use only this catalog model for the operation.")
    forbid_tiers: frozenset[Tier] = Field(
        frozenset(), description="Tiers never used for this operation."
    )
    max_tier: Tier | None = Field(None, description="A lower tier cap for this operation.")

    def __hash__(self) -> int:
        """Hash of the fields, so policies holding overrides can be cache keys."""
        return hash((self.pin, self.forbid_tiers, self.max_tier))


class Policy(_Frozen):
    """What the router may use for a call.

    Example:
        >>> from tierwise.routing.policy import Policy
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
    max_cost_per_provider_per_day: Mapping[Provider, float] = Field(
        default_factory=dict, description="USD per provider over the current UTC day (ledger)."
    )
    operations: Mapping[TaskType, OperationOverride] = Field(
        default_factory=dict, description="Per-operation pins and tier restrictions."
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
        ))

    @property
    def cap(self) -> Tier:
        """The effective tier cap (never ``None`` after validation)."""
        assert self.max_tier is not None
        return self.max_tier

    def override(self, operation: TaskType) -> OperationOverride | None:
        """The per-operation override for ``operation``, if any."""
        return self.operations.get(operation)

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
