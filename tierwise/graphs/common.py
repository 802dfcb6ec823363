"""What every ``build_*`` factory does the same way: one router for all nodes, its policy."""

from __future__ import annotations

from tierwise.nodes.base import ModelLike
from tierwise.routing.policy import Policy
from tierwise.routing.router import ModelRouter

__all__ = ["default_policy", "shared_router"]


def shared_router(model: ModelLike | None) -> ModelLike:
    """The model every node of a graph shares; ``None``: a router over the loaded settings.

    Nodes must share one router: its rate-limit windows, circuit breakers and budget
    reservations only protect calls that go through it.
    """
    return ModelRouter() if model is None else model


def default_policy(model: ModelLike) -> Policy:
    """The policy a run uses when its context names none (the router's)."""
    return model.policy if isinstance(model, ModelRouter) else Policy()
