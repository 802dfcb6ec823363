"""What every ``build_*`` factory does the same way: one router for all nodes; serving them.

``langgraph.json`` names each graph module's ``graph``: an async graph factory (LangGraph
Server calls it with the run's ``RunnableConfig`` and awaits it), because a module-level
compiled graph would have to load settings and open the ledger at import time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel

from tierwise.nodes.base import ModelLike
from tierwise.routing.default import default_router
from tierwise.routing.router import ModelRouter

__all__ = ["SERVED", "ServedGraphs", "shared_router"]

G = TypeVar("G", bound=Pregel[Any, Any, Any, Any])


def shared_router(model: ModelLike | None) -> ModelLike:
    """The model every node of a graph shares; ``None``: the process's default router.

    Nodes must share one router: its rate-limit windows, circuit breakers and budget
    reservations only protect calls that go through it (see :func:`default_router`).
    """
    return default_router() if model is None else model


class ServedGraphs:
    """The graphs a server process serves: each built once, all over one router.

    The router is built on the first request, in a worker thread (loading settings and
    opening the ledger read files; the event loop must not), over the settings of the
    process's environment (``TIERWISE_CONFIG``, ``TIERWISE_LEDGER``, the keys from the
    ``.env`` that ``langgraph.json`` names). Every graph shares it, so rate limits,
    breakers and budgets hold across graphs; the per-run knobs travel in ``context``.
    """

    def __init__(self) -> None:
        """Nothing built yet."""
        self._lock = threading.Lock()
        self._router: ModelRouter | None = None
        self._graphs: dict[Callable[..., Any], Any] = {}

    def factory(self, build: Callable[..., G]) -> Callable[[RunnableConfig], Awaitable[G]]:
        """A LangGraph graph factory serving ``build(router=...)``, for a module's ``graph``."""

        async def graph(config: RunnableConfig) -> G:
            """The served graph (LangGraph Server awaits this per run; it is built once)."""
            built: G | None = self._graphs.get(build)
            return built if built is not None else await asyncio.to_thread(self.build, build)

        graph.__qualname__ = graph.__name__ = "graph"
        return graph

    def build(self, build: Callable[..., G]) -> G:
        """``build(router=...)`` over the served router, once (blocking: call off the loop)."""
        with self._lock:
            graph: G | None = self._graphs.get(build)
            if graph is None:
                if self._router is None:
                    self._router = ModelRouter()
                graph = self._graphs[build] = build(router=self._router)
            return graph

    @property
    def router(self) -> ModelRouter | None:
        """The router the served graphs share, once one was built."""
        return self._router

    def clear(self) -> None:
        """Forget the router and graphs: the next request builds them from the environment."""
        with self._lock:
            self._router = None
            self._graphs.clear()


#: The process's served graphs (``langgraph.json``'s entries).
SERVED = ServedGraphs()
