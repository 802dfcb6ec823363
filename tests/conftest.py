"""Shared test setup: the simulator's pytest fixtures.

An installed tierwise registers ``tierwise.testing.pytest_plugin`` through its ``pytest11``
entry point; listing it in ``pytest_plugins`` as well would register it twice (pluggy
refuses), so it is registered here only when the entry point did not load it.
"""

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: What LangGraph Server's own blockbuster leaves off (langgraph_runtime_inmem's
#: ``_enable_blockbuster``): file metadata and buffered file reads/writes (imports,
#: package metadata, logging) and lock waits (thread pools hand work over with them).
#: The suite enforces what the server enforces: sockets, sleeps, sqlite, os.read/write,
#: mkdir/rename/unlink, input.
SERVER_TOLERATES = (
    "os.stat", "os.listdir", "os.remove", "io.BufferedReader.read", "io.BufferedWriter.write",
    "io.TextIOWrapper.read", "io.TextIOWrapper.write", "threading.Lock.acquire",
)

#: Blocking calls still made on the loop from these packages, each until its fix lands
#: (then delete its line): path fragment → the work that moves them off the loop.
PENDING_OFF_LOOP: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_blocking(reason): the test may block an event loop (say why)"
    )
    manager = config.pluginmanager
    if manager.is_blocked("tierwise"):  # -p no:tierwise
        return
    if not manager.has_plugin("tierwise") and not manager.has_plugin(
        "tierwise.testing.pytest_plugin"
    ):
        import tierwise.testing.pytest_plugin as plugin

        manager.register(plugin, "tierwise.testing.pytest_plugin")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test runs under blockbuster unless marked ``allow_blocking(reason=...)``."""
    for item in items:
        if isinstance(item, pytest.Function) and item.get_closest_marker("allow_blocking") is None:
            item.fixturenames.insert(0, "no_blocking_on_the_event_loop")


@pytest.fixture
def no_blocking_on_the_event_loop() -> Iterator[None]:
    """Fail a test when tierwise makes a blocking call on a running event loop.

    blockbuster is the detector LangGraph Server runs (a served graph's blocking call
    fails its run there); it only acts on a thread whose event loop is running, so it
    checks the async tests and every sync test that drives a loop. Scanned: ``tierwise``
    frames; excluded: ``tierwise.testing``, the simulator, whose server runs its own
    loop on its own thread and is test equipment, not part of a served graph.
    """
    from blockbuster import BlockBuster

    detector = BlockBuster(["tierwise"], excluded_modules=["tierwise.testing"])
    for name in list(detector.functions):
        if name in SERVER_TOLERATES or name.startswith("os.path."):
            del detector.functions[name]
    for function in detector.functions.values():
        function.can_block_predicate = _or_pending(function.can_block_predicate)
    detector.activate()
    try:
        yield
    finally:
        detector.deactivate()


def _or_pending(allowed: Any) -> Any:
    def predicate(*args: Any, **kwargs: Any) -> bool:
        if allowed(*args, **kwargs):
            return True
        frame = sys._getframe(1)
        while frame is not None:
            if any(part in frame.f_code.co_filename for part in PENDING_OFF_LOOP):
                return True
            frame = frame.f_back  # type: ignore[assignment]
        return False

    return predicate


#: The Redis this machine kind runs; tests keep their keys under a prefix of their own.
REDIS = "redis://127.0.0.1:6379/0"


def postgres_unavailable() -> str | None:
    """Why PostgreSQL checkpoint tests cannot run here, or ``None``."""
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[scale]')"
    from tierwise.testing.postgres import unreachable

    return unreachable()


@pytest.fixture
def postgres_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A URL whose connections work in a schema of their own, dropped afterwards.

    Ledger writers' journals go under the test's directory, not the user data dir.
    """
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    from tierwise.testing.postgres import scratch_schema

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with scratch_schema(prefix="tw") as url:
        yield url


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix (hash tag) of the test's own; its keys are deleted afterwards."""
    import redis

    name = f"twtest-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=f"{{{name}}}:*"):
        client.delete(key)
