"""Which backend holds each kind of guard state, chosen by the settings' ``[state]`` table.

Nothing set: everything stays in this process (and the SQLite ledger), as on one machine.
A Redis URL moves the rate-limit windows, the circuit breakers and the budget holds into
Redis so every process routing on the same account shares them; a PostgreSQL URL moves the
ledger, quality evidence and budget holds there (:mod:`tierwise.ledger.postgres`), and
LangGraph's checkpoints if asked — with both, holds stay with the PostgreSQL ledger, where
spend and holds are read in one transaction. redis-py and psycopg are imported only then
(the ``scale`` extra). When Redis does not answer, limits and breakers fail open (this
process's own state, one warning) and budgets fail closed (paid calls under a cost cap are
refused): a 429 or a wasted call costs little, overspending money is what caps exist to
prevent.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierwise.catalog.settings import Settings
from tierwise.catalog.state import redact_url
from tierwise.guards.health import HealthBoard
from tierwise.guards.limits import RateLimiter
from tierwise.ledger import Ledger
from tierwise.ledger.opening import is_postgres_url
from tierwise.ledger.reservations import HoldStore

__all__ = ["StateBackend", "shared_health", "shared_holds", "shared_limiter", "state_backends"]


def shared_limiter(settings: Settings, *, time_scale: float = 1.0) -> RateLimiter:
    """The rate limiter the settings call for: in Redis if ``redis_url`` is set, else local.

    Raises:
        ImportError: a Redis URL is set but redis-py is not installed (``tierwise[scale]``).
    """
    url = settings.state.redis_url
    if url is None:
        return RateLimiter(time_scale=time_scale)
    from tierwise.guards.redis_limits import RedisLimitBackend

    backend = RedisLimitBackend(url, prefix=settings.state.redis_prefix, time_scale=time_scale)
    return RateLimiter(backend, time_scale=time_scale)


def shared_health(settings: Settings) -> HealthBoard:
    """Circuit breakers shared through Redis if ``redis_url`` is set, else this process's."""
    url = settings.state.redis_url
    if url is None:
        return HealthBoard()
    from tierwise.guards.redis_health import RedisHealthShare

    return HealthBoard(share=RedisHealthShare(url, prefix=settings.state.redis_prefix))


def shared_holds(settings: Settings, ledger: Ledger | None) -> HoldStore | None:
    """Budget holds in Redis if ``redis_url`` is set (seeded from ``ledger``), else ``None``.

    ``None`` lets :class:`~tierwise.guards.budget.BudgetGuard` hold in the ledger itself:
    always for a PostgreSQL ledger, which every process shares and where spend and holds
    are read in one transaction (Redis is for processes with a ledger file each).
    """
    url = settings.state.redis_url
    if url is None or ledger is None or is_postgres_url(getattr(ledger, "url", "")):
        return None
    from tierwise.guards.redis_budget import RedisReservations

    def seed(since: float, provider: str | None, run_id: str | None) -> float:
        ledger.flush()
        return ledger.spent(since=since, provider=provider, run_id=run_id)

    return RedisReservations(url, seed, prefix=settings.state.redis_prefix)


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
    pg = settings.state.postgres_url
    pg_ledger = pg is not None and settings.ledger is None
    if url is None:
        rows.append(StateBackend("rate limits", "in-process (set [state] redis_url to share)"))
        rows.append(StateBackend("circuit breakers", "in-process"))
    else:
        rows += _redis_rows(url, holds=not pg_ledger)
    if pg_ledger:
        assert pg is not None
        rows.append(_postgres_row(pg, "budgets, ledger, evidence",
                                  "no ledger: calls are not recorded, day caps not enforced"))
    else:
        rows.append(StateBackend("budgets, ledger" if url is None else "ledger",
                                 "SQLite ledger file"))
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


#: What each kind of state does while Redis does not answer.
_MEANWHILE = (
    ("rate limits", "in-process limits (fail open) until Redis answers"),
    ("circuit breakers", "in-process breakers (fail open) until Redis answers"),
    ("budget holds", "paid calls under a cost cap refused (fail closed) until Redis answers"),
)


def _redis_rows(url: str, *, holds: bool) -> list[StateBackend]:
    """Rate limits, breakers and (unless a PostgreSQL ledger keeps them) budget holds."""
    shown = f"Redis {redact_url(url)}"
    kinds = [(kind, meanwhile) for kind, meanwhile in _MEANWHILE
             if holds or kind != "budget holds"]  # fmt: skip
    try:
        from tierwise.guards.redis_connection import problem as unreachable
    except ImportError:
        return [StateBackend(kind, shown, "redis-py is not installed",
                             f'{meanwhile}; pip install "tierwise[scale]"')
                for kind, meanwhile in kinds]  # fmt: skip
    problem = unreachable(url)
    return [StateBackend(kind, shown, problem and redact_url(problem),
                         meanwhile if problem else "")
            for kind, meanwhile in kinds]  # fmt: skip
