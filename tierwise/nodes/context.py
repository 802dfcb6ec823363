"""The per-run knobs a caller sets through LangGraph's ``context=``.

A run's context is JSON: LangGraph Server and Studio send it as a JSON object, and
LangGraph turns a dict into this model before the first node runs. Everything a caller
may want to change for one run without rebuilding the graph lives here; the live router
does not (the ``build_*`` factory binds it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tierwise.catalog.policy import Policy

__all__ = ["RunContext"]


class RunContext(BaseModel):
    """Policy and quality gate for one graph run.

    Example:
        >>> ctx = RunContext.model_validate(
        ...     {"policy": {"mode": "balanced", "max_cost_per_run": 0.05},
        ...      "quality_threshold": 7}
        ... )
        >>> ctx.policy.max_tier.value, ctx.quality_threshold, ctx.max_escalations
        ('paid', 7.0, 1)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Policy | None = Field(
        None,
        description="Routing policy for this run (mode, tier cap, per-operation overrides, "
        "cost caps); None: the router's policy, which defaults to the settings'.",
    )
    quality_threshold: float = Field(
        6.0, ge=0, le=10,
        description="A quality score below this (0-10 rubric) escalates the scored step.",
    )
    max_escalations: int = Field(
        1, ge=0, le=3,
        description="How many times one step may be rerun on a higher tier.",
    )
    max_wait: float = Field(
        0.0, ge=0, le=300,
        description="Seconds a call may wait for a rate-limit permit before the router "
        "moves on to the next candidate (0: never wait). Batch runs such as evals "
        "prefer waiting to falling back.",
    )
