"""What every ``build_*`` factory does the same way: one router for all nodes."""

from __future__ import annotations

from tierwise.nodes.base import ModelLike
from tierwise.routing.router import ModelRouter

__all__ = ["shared_router"]


def shared_router(model: ModelLike | None) -> ModelLike:
    """The model every node of a graph shares; ``None``: a router over the loaded settings.

    Nodes must share one router: its rate-limit windows, circuit breakers and budget
    reservations only protect calls that go through it.
    """
    return ModelRouter() if model is None else model
