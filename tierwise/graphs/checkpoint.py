"""SQLite checkpoints for tierwise graphs, with tierwise's state types allowed to load.

LangGraph's serializer warns (and will refuse, in strict mode) when a checkpoint holds a
pydantic type nobody registered. The graphs keep typed results in their state, so the
saver built here registers every result type of ``tierwise.nodes`` and ``tierwise.graphs``,
plus any the caller adds (a custom parameter schema, say).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

__all__ = ["TIERWISE_TYPES", "postgres_checkpointer", "serializer", "sqlite_checkpointer"]

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


@asynccontextmanager
async def postgres_checkpointer(
    url: str, *, extra_types: Iterable[type] = (), max_size: int = 4
) -> AsyncIterator[AsyncPostgresSaver]:
    """LangGraph's ``AsyncPostgresSaver`` on a psycopg 3 pool, with tierwise's serializer.

    Several processes (app workers, LangGraph Server replicas) resume each other's threads
    from one database; the pool's connections are async, so the loop never blocks. The
    tables are created on first use (``setup()``, idempotent). Connections use the settings
    LangGraph's saver needs: autocommit, no prepared statements, rows as dicts.
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, max_size=max_size, open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await pool.open(wait=True, timeout=10.0)
    try:
        saver = AsyncPostgresSaver(pool, serde=serializer(extra_types))
        await saver.setup()
        yield saver
    finally:
        await pool.close()
