"""Where shared state lives: the ``[state]`` table of ``tierwise.toml`` and its env overrides.

One machine needs nothing here: rate limits and breakers live in the process, the ledger
and budgets in a SQLite file. Several processes (web workers, LangGraph Server replicas,
parallel batch jobs) share one account's free quotas and money, so they must share that
state too: ``redis_url`` moves the rate-limit windows, circuit breakers and budget holds
into Redis (under the hash tag ``redis_prefix``, one per deployment); ``postgres_url`` moves
the ledger, quality evidence and budget holds into PostgreSQL (holds then stay with the
ledger they are checked against) and names the database for LangGraph checkpoints (pass it to
:func:`tierwise.graphs.checkpoint.postgres_checkpointer`; ``tierwise doctor`` checks it).
``TIERWISE_REDIS_URL`` and ``TIERWISE_POSTGRES_URL`` override the file, as credentials do,
because a URL may carry a password and deployments inject those through the environment.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["StateConfig", "redact_url"]

_SCHEMES = {
    "redis_url": ("redis", "rediss", "unix"),
    "postgres_url": ("postgres", "postgresql"),
}


class StateConfig(BaseModel):
    """Which external services hold the state processes must share (``None``: local)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = Field(
        None,
        description="Redis for shared rate limits, breakers and budget holds, e.g. "
        "redis://127.0.0.1:6379/0.",
    )
    redis_prefix: str = Field(
        "tierwise",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Hash tag of every tierwise key in Redis: deployments sharing one "
        "Redis keep apart by giving each its own.",
    )
    postgres_url: str | None = Field(
        None, description="PostgreSQL for the ledger, budgets and LangGraph checkpoints, "
        "e.g. postgresql://host/db."
    )

    @field_validator("redis_url", "postgres_url")
    @classmethod
    def _scheme(cls, value: str | None, info: object) -> str | None:
        name = getattr(info, "field_name", "")
        if value is None or not value.strip():
            return None
        scheme = urlsplit(value.strip()).scheme
        allowed = _SCHEMES[name]
        if scheme not in allowed:
            raise ValueError(
                f"{redact_url(value)!r} is not a {' / '.join(s + '://' for s in allowed)} URL"
            )
        return value.strip()

    def merged(self, redis_url: str | None, postgres_url: str | None) -> StateConfig:
        """This config with the environment's URLs (set ones win) applied and checked."""
        return StateConfig(
            redis_url=redis_url or self.redis_url,
            redis_prefix=self.redis_prefix,
            postgres_url=postgres_url or self.postgres_url,
        )


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:***@host``), for output, logs and errors.

    The host and port are kept as written (a port that is not a number is shown, not parsed).

    Example:
        >>> redact_url("postgresql://app:s3cret@[::1]:port/db")
        'postgresql://app:***@[::1]:port/db'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
