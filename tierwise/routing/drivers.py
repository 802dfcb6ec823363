"""The two drivers of the sans-I/O route: one synchronous, one asynchronous.

:meth:`tierwise.routing.router.ModelRouter._route` is a generator that decides and never
waits: it yields steps — call this runnable, sleep this long, tell the consumer this — and
receives their outcomes. A driver performs the steps. Each driver streams (every answer
chunk becomes a :class:`~.results.StreamChunk`) or not (one ``invoke`` per call), and ends
with :class:`~.results.StreamEnd`; ``invoke`` and ``ainvoke`` keep only that last event.
So the four ways to call the router share one loop per concurrency model, and the
routing rules exist once.

The route's own bookkeeping I/O — ledger rows, budget holds, the ledger reads behind the
snapshot — is a :class:`Blocking` step: the sync driver runs it in place, the async
driver in a worker thread, so nothing on the async path blocks the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from tierwise.catalog.specs import ModelSpec
from tierwise.guards.backend import Denied, Permit
from tierwise.guards.limits import RateLimiter
from tierwise.routing.answers import content_text
from tierwise.routing.results import RoutedResult, StreamChunk, StreamEnd, StreamEvent

__all__ = [
    "Acquire", "Blocking", "Call", "Notice", "Outcome", "Route", "Sleep", "Step",
    "adrive", "alast", "drive", "last",
]


@dataclass(slots=True)
class Call:
    """Step: call ``runnable`` with ``messages`` and send back an :class:`Outcome`."""

    spec: ModelSpec
    runnable: Runnable[Any, Any]
    messages: list[BaseMessage]
    config: RunnableConfig


@dataclass(slots=True)
class Sleep:
    """Step: wait ``seconds`` for a rate-limit permit, then send back ``None``."""

    seconds: float


@dataclass(slots=True)
class Acquire:
    """Step: take a permit from ``limiter`` into :attr:`permit`, then send back ``None``.

    A step rather than a call because a shared limiter (Redis) crosses the network: the
    async driver awaits it so the event loop never blocks on a permit.
    """

    limiter: RateLimiter
    key: str
    tokens: int
    permit: Permit | Denied | None = None


@dataclass(slots=True)
class Notice:
    """Step: pass ``event`` to the stream's consumer, then send back ``None``."""

    event: StreamEvent


@dataclass(slots=True)
class Blocking:
    """Step: run ``work`` (file or database I/O) and send back what it returns.

    What it raises is thrown into the route at the ``yield``, as a direct call would.
    """

    work: Callable[[], Any]


Step = Call | Sleep | Notice | Acquire | Blocking
Route = Generator[Step, Any, RoutedResult]


@dataclass(slots=True)
class Outcome:
    """What a driver hands back for a :class:`Call`."""

    output: Any = None
    error: BaseException | None = None
    emitted: str = ""
    shown: bool = False  # a stream passed chunks of this answer to its consumer
    time_to_first_token: float | None = None


def drive(route: Route, *, streaming: bool) -> Iterator[StreamEvent]:
    """Run ``route`` in this thread; yields stream events, ends with :class:`StreamEnd`.

    Not streaming, it yields only the :class:`StreamEnd`. The route is closed however the
    caller leaves, so it releases what it holds (permits, budget reservations).
    """
    outcome: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = route.send(outcome) if error is None else route.throw(error)
            except StopIteration as done:
                yield StreamEnd(done.value)
                return
            outcome, error = None, None
            if isinstance(step, Blocking):
                try:
                    outcome = step.work()
                except Exception as exc:  # noqa: BLE001 - the route decides
                    error = exc
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            elif isinstance(step, Acquire):
                step.permit = step.limiter.try_acquire(step.key, step.tokens)
            elif isinstance(step, Notice):
                yield step.event
            elif not streaming:
                try:
                    outcome = Outcome(step.runnable.invoke(step.messages, step.config))
                except Exception as exc:  # noqa: BLE001 - every failure is classified
                    outcome = Outcome(error=exc)
            else:
                outcome = Outcome()
                started = time.perf_counter()
                held: list[StreamChunk] = []
                try:
                    for chunk in step.runnable.stream(step.messages, step.config):
                        _collect(outcome, chunk, started)
                        held.append(StreamChunk(chunk, step.spec))
                        if outcome.shown or _carries_answer(chunk):
                            outcome.shown = True
                            yield from held
                            held.clear()
                except Exception as exc:  # noqa: BLE001 - every failure is classified
                    outcome.error = exc
    finally:
        route.close()


async def adrive(route: Route, *, streaming: bool) -> AsyncIterator[StreamEvent]:
    """:func:`drive` on the event loop: waiting for a permit never blocks the loop."""
    outcome: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = route.send(outcome) if error is None else route.throw(error)
            except StopIteration as done:
                yield StreamEnd(done.value)
                return
            outcome, error = None, None
            if isinstance(step, Blocking):
                try:
                    outcome = await asyncio.to_thread(step.work)
                except Exception as exc:  # noqa: BLE001 - the route decides
                    error = exc
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Acquire):
                step.permit = await step.limiter.atry_acquire(step.key, step.tokens)
            elif isinstance(step, Notice):
                yield step.event
            elif not streaming:
                try:
                    outcome = Outcome(await step.runnable.ainvoke(step.messages, step.config))
                except Exception as exc:  # noqa: BLE001 - every failure is classified
                    outcome = Outcome(error=exc)
            else:
                outcome = Outcome()
                started = time.perf_counter()
                held: list[StreamChunk] = []
                try:
                    async for chunk in step.runnable.astream(step.messages, step.config):
                        _collect(outcome, chunk, started)
                        held.append(StreamChunk(chunk, step.spec))
                        if outcome.shown or _carries_answer(chunk):
                            outcome.shown = True
                            for event in held:
                                yield event
                            held.clear()
                except Exception as exc:  # noqa: BLE001 - every failure is classified
                    outcome.error = exc
    finally:
        # Closing releases what the route holds (budget holds: ledger I/O), off the loop;
        # shielded, so a cancelled caller still has it closed.
        await asyncio.shield(asyncio.to_thread(route.close))


def last(events: Iterator[StreamEvent]) -> RoutedResult:
    """The result a non-streaming :func:`drive` ends with."""
    end = None
    for event in events:  # to the end, so the driver finishes (and closes the route)
        end = event
    assert isinstance(end, StreamEnd), "a route always ends with StreamEnd"
    return end.result


async def alast(events: AsyncIterator[StreamEvent]) -> RoutedResult:
    """The result a non-streaming :func:`adrive` ends with."""
    end = None
    async for event in events:  # to the end, so the driver finishes (and closes the route)
        end = event
    assert isinstance(end, StreamEnd), "a route always ends with StreamEnd"
    return end.result


def _carries_answer(chunk: AIMessageChunk) -> bool:
    """Whether a streamed chunk holds part of the answer (text or a tool call)."""
    return bool(content_text(chunk.content) or chunk.tool_call_chunks)


def _collect(outcome: Outcome, chunk: AIMessageChunk, started: float) -> None:
    """Add a streamed chunk to the outcome being assembled."""
    if outcome.time_to_first_token is None:
        outcome.time_to_first_token = time.perf_counter() - started
    outcome.output = chunk if outcome.output is None else outcome.output + chunk
    outcome.emitted += content_text(chunk.content)
