"""LangGraph's Postgres checkpointer with tierwise's serializer, on the real PostgreSQL.

Each test works in its own schema (the ``postgres_url`` fixture), dropped afterwards. A
triage run checkpointed through one pool is read back through another pool, in another
event loop, with tierwise's state types loaded (the serializer allows them). A store that
cannot be used raises one line that names no password, telling bad input from an outage.
"""

from __future__ import annotations

import asyncio

import pytest

from tierwise.graphs import build_triage
from tierwise.graphs.checkpoint import (
    CheckpointStoreError,
    open_checkpointer,
    postgres_checkpointer,
)
from tierwise.routing.router import ModelRouter
from tierwise.testing import Simulator


def test_a_run_checkpointed_in_postgres_is_read_back_by_another_pool(
    simulator: Simulator, postgres_url: str
) -> None:
    import psycopg

    url = postgres_url
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


@pytest.mark.parametrize(("url", "invalid", "needle"), [
    ("postgresql://postgres:pw-not-real@127.0.0.1:1/test", False, "Connection refused"),
    ("postgresql://postgres:pw-not-real@127.0.0.1:port/test", True, "invalid PostgreSQL URL"),
    ("postgresql://postgres:pw-not-real@127.0.0.1/test?bogus=1", True, "bogus"),
])
def test_a_store_that_cannot_be_used_says_why_in_one_line_without_the_password(
    url: str, invalid: bool, needle: str
) -> None:
    pytest.importorskip("langgraph.checkpoint.postgres", reason="the scale extra")

    async def open_it() -> None:
        async with open_checkpointer(url):
            raise AssertionError("opened")

    with pytest.raises(CheckpointStoreError) as caught:
        asyncio.run(open_it())
    message = str(caught.value)
    assert caught.value.invalid is invalid and needle in message, message
    assert "pw-not-real" not in message and "\n" not in message
