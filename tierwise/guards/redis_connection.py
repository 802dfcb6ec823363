"""How tierwise's Redis-backed state connects, and what counts as Redis being down.

Rate limits (:mod:`.redis_limits`), budget holds (:mod:`.redis_budget`) and breaker state
(:mod:`.redis_health`) each keep their own client, built the same way: short socket and
connect timeouts (a Redis that does not answer must cost a routed call about a second,
not a hang) and decoded replies. Each catches :data:`DOWN` to decide its fallback: fail
open for limits and breakers, fail closed for budgets.
"""

from __future__ import annotations

from typing import Final

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["DOWN", "aconnect", "connect", "problem"]

DOWN: Final = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors meaning Redis cannot be reached now (as opposed to a bad script or key)."""


def connect(url: str, timeout: float) -> redis.Redis:
    """A lazy client for ``url``: nothing is sent until the first command."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def aconnect(url: str, timeout: float) -> aioredis.Redis:
    """:func:`connect` for the event loop (an asyncio client belongs to one loop)."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )
    return client


def problem(url: str, timeout: float = 1.0) -> str | None:
    """``None`` when Redis at ``url`` answers a PING, else why not (for ``tierwise doctor``)."""
    try:
        connect(url, timeout).ping()
    except DOWN as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
