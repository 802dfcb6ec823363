"""What every ``build_*`` factory does the same way: one router for all nodes."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from tierwise.nodes.base import ModelLike
from tierwise.routing.router import ModelRouter

__all__ = ["module_graph", "shared_router"]


def shared_router(model: ModelLike | None) -> ModelLike:
    """The model every node of a graph shares; ``None``: a router over the loaded settings.

    Nodes must share one router: its rate-limit windows, circuit breakers and budget
    reservations only protect calls that go through it.
    """
    return ModelRouter() if model is None else model


def module_graph(build: Callable[[], Any], module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that gives the module a ``graph``: ``build()``, on first use.

    ``langgraph.json`` names module-level graphs; building one loads settings and makes
    a router, which importing the module must not do.
    """
    built = cache(build)

    def __getattr__(name: str) -> Any:
        if name == "graph":
            return built()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
