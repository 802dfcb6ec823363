"""LangGraph's Postgres checkpointer with tierwise's serializer, on the real PostgreSQL.

Each test works in its own schema (``search_path``), dropped afterwards. A triage run
checkpointed through one pool is read back through another pool, in another event loop,
with tierwise's state types loaded (the serializer allows them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is the scale extra")
pytest.importorskip("langgraph.checkpoint.postgres", reason="langgraph-checkpoint-postgres")

from tierwise.graphs import build_triage  # noqa: E402
from tierwise.graphs.checkpoint import postgres_checkpointer  # noqa: E402
from tierwise.routing.router import ModelRouter  # noqa: E402
from tierwise.testing import Simulator  # noqa: E402

BASE = "postgresql://postgres@127.0.0.1:5432/test"


def _unreachable() -> str | None:
    try:
        psycopg.connect(BASE, connect_timeout=2).close()
    except Exception as exc:  # noqa: BLE001 - the reason is the skip message
        return f"PostgreSQL at {BASE} is not reachable ({exc})"
    return None


pytestmark = pytest.mark.skipif(bool(_unreachable()), reason=_unreachable() or "")


@pytest.fixture
def url() -> Iterator[str]:
    schema = f"tw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{BASE}?options=-csearch_path%3D{schema}"
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_run_checkpointed_in_postgres_is_read_back_by_another_pool(
    simulator: Simulator, url: str
) -> None:
    router = ModelRouter(simulator.settings(), ledger=None)
    config = {"configurable": {"thread_id": "t1"}}

    async def run() -> dict[str, object]:
        async with postgres_checkpointer(url) as saver:
            graph = build_triage(router=router, checkpointer=saver)
            return await graph.ainvoke({"instruction": "The export button crashes"}, config)

    async def read() -> object:
        async with postgres_checkpointer(url) as saver:
            graph = build_triage(router=router, checkpointer=saver)
            return await graph.aget_state(config)

    result = asyncio.run(run())
    calls = len(simulator.requests)
    state = asyncio.run(read())
    values = state.values  # type: ignore[attr-defined]
    assert result and all(values[key] == value for key, value in result.items())
    assert not state.next  # type: ignore[attr-defined]  # finished: nothing to resume
    assert len(simulator.requests) == calls  # reading a thread calls no model
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = "
            "current_schema()")}
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes"} <= tables
