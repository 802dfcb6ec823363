"""Which backend holds each kind of guard state, chosen by the settings' ``[state]`` table.

Nothing set: everything stays in this process (and the SQLite ledger), as on one machine.
A Redis URL moves the rate-limit windows into Redis so every process routing on the same
account shares them; a PostgreSQL URL moves the ledger, quality evidence and budget holds
there (:mod:`tierwise.ledger.postgres`), and LangGraph's checkpoints if asked. redis-py and
psycopg are imported only then (the ``scale`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

from tierwise.catalog.settings import Settings
from tierwise.catalog.state import redact_url
from tierwise.guards.limits import RateLimiter

__all__ = ["StateBackend", "shared_limiter", "state_backends"]


def shared_limiter(settings: Settings, *, time_scale: float = 1.0) -> RateLimiter:
    """The rate limiter the settings call for: in Redis if ``redis_url`` is set, else local.

    Raises:
        ImportError: a Redis URL is set but redis-py is not installed (``tierwise[scale]``).
    """
    url = settings.state.redis_url
    if url is None:
        return RateLimiter(time_scale=time_scale)
    from tierwise.guards.redis_limits import RedisLimitBackend

    return RateLimiter(RedisLimitBackend(url, time_scale=time_scale), time_scale=time_scale)


@dataclass(frozen=True, slots=True)
class StateBackend:
    """One kind of state, where it lives and whether that place answers (for ``doctor``)."""

    kind: str
    backend: str
    problem: str | None = None
    """Why the backend cannot be used now, redacted; ``None``: reachable (or local)."""
    consequence: str = ""
    """What tierwise does meanwhile."""


def state_backends(settings: Settings) -> list[StateBackend]:
    """Where rate limits, breakers, budgets and the ledger live for these settings."""
    rows = []
    url = settings.state.redis_url
    if url is None:
        rows.append(StateBackend("rate limits", "in-process (set [state] redis_url to share)"))
    else:
        rows.append(_redis_row(url))
    rows.append(StateBackend("circuit breakers", "in-process"))
    pg = settings.state.postgres_url
    if pg is None or settings.ledger is not None:
        rows.append(StateBackend("budgets, ledger", "SQLite ledger file"))
    else:
        rows.append(_postgres_row(pg, "budgets, ledger, evidence",
                                  "no ledger: calls are not recorded, day caps not enforced"))
    if pg is not None:
        rows.append(_postgres_row(pg, "graph checkpoints (postgres_checkpointer)",
                                  "checkpointed graphs cannot start"))
    return rows


def _postgres_row(url: str, kind: str, consequence: str) -> StateBackend:
    shown = f"PostgreSQL {redact_url(url)}"
    try:
        import psycopg
    except ImportError:
        return StateBackend(kind, shown, "psycopg is not installed",
                            'pip install "tierwise[scale]"')
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error as exc:
        return StateBackend(kind, shown, redact_url(f"{type(exc).__name__}: {exc}".strip()),
                            consequence)
    return StateBackend(kind, shown)


def _redis_row(url: str) -> StateBackend:
    shown = f"Redis {redact_url(url)}"
    try:
        from tierwise.guards.redis_limits import RedisLimitBackend
    except ImportError:
        return StateBackend(
            "rate limits", shown, "redis-py is not installed",
            'in-process limits; pip install "tierwise[scale]"',
        )
    problem = RedisLimitBackend(url).ping()
    return StateBackend(
        "rate limits", shown, problem and redact_url(problem),
        "in-process limits (fail open) until Redis answers" if problem else "",
    )
