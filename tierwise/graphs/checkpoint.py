"""Checkpoints for tierwise graphs (SQLite or PostgreSQL), with tierwise's state types.

LangGraph's serializer warns (and will refuse, in strict mode) when a checkpoint holds a
pydantic type nobody registered. The graphs keep typed results in their state, so the
savers built here register every result type of ``tierwise.nodes`` and ``tierwise.graphs``,
plus any the caller adds (a custom parameter schema, say). :func:`open_checkpointer` picks
the store from one string, a file path or a ``postgresql://`` URL, as ``tierwise run
--checkpoints`` takes it; a store that cannot be opened raises :class:`CheckpointStoreError`
with a message safe to show (no password).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from tierwise.catalog.state import redact_url

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

__all__ = [
    "TIERWISE_TYPES",
    "CheckpointStoreError",
    "is_postgres_url",
    "is_store_failure",
    "open_checkpointer",
    "postgres_checkpointer",
    "serializer",
    "sqlite_checkpointer",
]

#: (module, class) of every type a tierwise graph state may hold.
TIERWISE_TYPES: tuple[tuple[str, str], ...] = (
    ("tierwise.nodes.classification", "Classification"),
    ("tierwise.nodes.instruction_routing", "RouteDecision"),
    ("tierwise.nodes.rewriting", "Rewrite"),
    ("tierwise.nodes.decomposition", "Plan"),
    ("tierwise.nodes.parameter_extraction", "Parameter"),
    ("tierwise.nodes.parameter_extraction", "Parameters"),
    ("tierwise.nodes.tool_use_formatting", "ToolCall"),
    ("tierwise.nodes.tool_use_formatting", "ToolResult"),
    ("tierwise.nodes.structure_assessment", "StructureAssessment"),
    ("tierwise.nodes.quality_scoring", "QualityScore"),
    ("tierwise.nodes.rationale_generation", "Rationale"),
    ("tierwise.catalog.specs", "Complexity"),
    ("tierwise.graphs.state", "Escalation"),
    ("tierwise.graphs.state", "StepOutcome"),
    ("tierwise.graphs.state", "RoutingReport"),
    ("tierwise.graphs.state", "PipelineResult"),
)


def serializer(extra: Iterable[type] = ()) -> JsonPlusSerializer:
    """A checkpoint serializer that loads tierwise's state types and ``extra``."""
    allowed = [*TIERWISE_TYPES, *((t.__module__, t.__qualname__) for t in extra)]
    for module, name in TIERWISE_TYPES:  # a typo here would only show on resume
        getattr(importlib.import_module(module), name)
    return JsonPlusSerializer(allowed_msgpack_modules=allowed)


@asynccontextmanager
async def sqlite_checkpointer(
    path: str | Path, *, extra_types: Iterable[type] = ()
) -> AsyncIterator[AsyncSqliteSaver]:
    """An ``AsyncSqliteSaver`` on the file ``path`` (created with its folder).

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> async def main():
        ...     folder = pathlib.Path(tempfile.mkdtemp())
        ...     async with sqlite_checkpointer(folder / "runs.sqlite") as saver:
        ...         return type(saver).__name__
        >>> asyncio.run(main())
        'AsyncSqliteSaver'
    """
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    target = Path(path).expanduser()
    # Off the loop: the async path must not block it (LangGraph Server would fail the run).
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    async with aiosqlite.connect(str(target)) as conn:
        saver = AsyncSqliteSaver(conn, serde=serializer(extra_types))
        await saver.setup()
        yield saver


class CheckpointStoreError(Exception):
    """The checkpoint store cannot be opened; the message names no password.

    ``invalid``: the URL or the installation is wrong (fix the input); otherwise the store
    did not answer or refused (a runtime failure: try again once it is up).
    """

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        """A one-line ``message`` safe to show; ``invalid`` as the class says."""
        super().__init__(message)
        self.invalid = invalid

    @classmethod
    def of(cls, url: str, exc: BaseException) -> CheckpointStoreError:
        """``exc`` (a driver's error on ``url``) as one line without the password."""
        return cls(_safe(url, exc))


def is_postgres_url(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and urlsplit(target).scheme in ("postgres", "postgresql")


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the PostgreSQL store failing mid-run (connection lost, pool empty).

    The graph raises psycopg's own errors then; a caller that shows one line per failure
    tells them apart by their package, without importing the optional driver.
    """
    return type(exc).__module__.split(".")[0] in ("psycopg", "psycopg_pool")


@asynccontextmanager
async def open_checkpointer(
    target: str | Path, *, extra_types: Iterable[type] = ()
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The saver ``target`` names: a ``postgresql://`` URL, else a SQLite file path.

    Raises:
        CheckpointStoreError: a PostgreSQL store that cannot be used (SQLite raises its own
            ``OSError`` / ``sqlite3.Error``, whose messages hold no secret).
    """
    if is_postgres_url(target):
        async with postgres_checkpointer(str(target), extra_types=extra_types) as saver:
            yield saver
    else:
        async with sqlite_checkpointer(target, extra_types=extra_types) as saver:
            yield saver


@asynccontextmanager
async def postgres_checkpointer(
    url: str, *, extra_types: Iterable[type] = (), max_size: int = 4
) -> AsyncIterator[AsyncPostgresSaver]:
    """LangGraph's ``AsyncPostgresSaver`` on a psycopg 3 pool, with tierwise's serializer.

    Several processes (app workers, LangGraph Server replicas) resume each other's threads
    from one database; the pool's connections are async, so the loop never blocks. The
    tables are created on first use (``setup()``, idempotent). Connections use the settings
    LangGraph's saver needs: autocommit, no prepared statements, rows as dicts. One plain
    connection is made first: a pool that cannot connect only times out (and logs each
    retry), while the connection says why (refused, unknown database, bad password).

    Raises:
        CheckpointStoreError: the URL is invalid, the ``scale`` extra is missing, or the
            database cannot be reached or set up.
    """
    try:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool, PoolTimeout
    except ImportError:
        raise CheckpointStoreError('PostgreSQL checkpoints need pip install "tierwise[scale]"',
                                   invalid=True) from None
    _check_url(url, psycopg)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, max_size=max_size, open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    try:
        probe = await psycopg.AsyncConnection.connect(url, connect_timeout=5)
        await probe.close()
        await pool.open(wait=True, timeout=10.0)
        saver = AsyncPostgresSaver(pool, serde=serializer(extra_types))
        await saver.setup()
    except (psycopg.Error, PoolTimeout) as exc:
        await pool.close()
        raise CheckpointStoreError.of(url, exc) from None
    try:
        yield saver
    finally:
        await pool.close()


def _check_url(url: str, psycopg: Any) -> None:
    """Raise :class:`CheckpointStoreError` (invalid) for a URL libpq would not accept."""
    try:
        urlsplit(url).port  # noqa: B018 - raises on a port that is not a number
        psycopg.conninfo.conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        raise CheckpointStoreError(f"invalid PostgreSQL URL: {_safe(url, exc)}",
                                   invalid=True) from None


def _safe(url: str, exc: BaseException) -> str:
    r"""The first line of ``exc``'s message without the URL's password.

    Example:
        >>> _safe("postgresql://u:s3cret@h/db", ValueError("bad 's3cret'\nmore"))
        "bad '***'"
    """
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    password = urlsplit(url).password
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return redact_url(text) if "://" in text else text
