"""Shared test setup: the simulator's pytest fixtures.

An installed tierwise registers ``tierwise.testing.pytest_plugin`` through its ``pytest11``
entry point; listing it in ``pytest_plugins`` as well would register it twice (pluggy
refuses), so it is registered here only when the entry point did not load it.
"""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if manager.is_blocked("tierwise"):  # -p no:tierwise
        return
    if not manager.has_plugin("tierwise") and not manager.has_plugin(
        "tierwise.testing.pytest_plugin"
    ):
        import tierwise.testing.pytest_plugin as plugin

        manager.register(plugin, "tierwise.testing.pytest_plugin")
