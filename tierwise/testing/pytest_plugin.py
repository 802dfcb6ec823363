"""Pytest fixtures for testing tierwise workflows against the provider simulator.

Enable with ``pytest_plugins = ["tierwise.testing.pytest_plugin"]`` in a ``conftest.py``
(or through the ``pytest11`` entry point of an installed tierwise). One simulator serves
the whole session — starting one per test would cost a thread and a socket each — and is
reset before every test that uses it.

Fixtures:
    isolated_env: clears provider endpoints, keys, proxies and tracing from the
        environment, sets ``NO_PROXY`` and points the default ledger at a file in the
        test's tmp dir (not autouse: request it where it matters).
    simulator_server: the session's running :class:`Simulator`, never reset.
    simulator: the session's simulator, reset for this test, with ``isolated_env``.
    sim_settings: tierwise :class:`~tierwise.catalog.settings.Settings` pointing at ``simulator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tierwise.catalog.settings import Settings
from tierwise.testing.env import NO_PROXY, variables_to_clear
from tierwise.testing.simulator import Simulator

__all__ = ["isolated_env", "sim_settings", "simulator", "simulator_server"]


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clear what would send a client elsewhere than 127.0.0.1; set ``NO_PROXY``.

    Routers record into the default ledger unless told otherwise: it is this test's own
    file, so a test run never writes into the user's ledger or inherits its quotas.
    """
    import os

    from tierwise.ledger import LEDGER_ENV

    for name in variables_to_clear(os.environ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", NO_PROXY)
    monkeypatch.setenv("no_proxy", NO_PROXY)
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "ledger.sqlite3"))


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[Simulator]:
    """One simulator for the whole session (use ``simulator`` for a reset one)."""
    with Simulator() as sim:
        yield sim


@pytest.fixture
def simulator(simulator_server: Simulator, isolated_env: None) -> Iterator[Simulator]:
    """The session simulator with no scripts, limits or records, in an isolated env."""
    simulator_server.reset()
    yield simulator_server
    simulator_server.reset()


@pytest.fixture
def sim_settings(simulator: Simulator) -> Settings:
    """Tierwise settings with every hosted provider and Ollama pointed at ``simulator``."""
    return simulator.settings()
