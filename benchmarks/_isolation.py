"""Run a benchmark on its own state: a fresh ledger, data and config dir, never the user's.

A router built without an explicit ledger records into, and takes its demotions, quotas
and learned routing from, the user's data dir. A benchmark that did so would measure
whatever the user's last runs left behind (a primary demoted by an earlier failover run is
never called) and would write its own faults into the user's record. :func:`scratch_state`
points every place tierwise keeps state at a temporary folder for the benchmark's process
and removes it afterwards.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["scratch_state"]


@contextmanager
def scratch_state() -> Iterator[Path]:
    """A temporary folder holding the ledger, learned router, checkpoints and config dir.

    Sets ``TIERWISE_LEDGER``, ``TIERWISE_ROUTER``, ``TIERWISE_CHECKPOINTS`` (they win over
    whatever the user exported), ``XDG_DATA_HOME`` and ``XDG_CONFIG_HOME`` (the user data
    and config dirs), clears ``TIERWISE_CONFIG``; restores them and closes the shared
    ledgers on exit.
    """
    names = ("TIERWISE_LEDGER", "TIERWISE_ROUTER", "TIERWISE_CHECKPOINTS", "TIERWISE_CONFIG",
             "XDG_DATA_HOME", "XDG_CONFIG_HOME")  # fmt: skip
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="tierwise-bench-") as tmp:
        root = Path(tmp)
        os.environ.pop("TIERWISE_CONFIG", None)
        os.environ.update({
            "TIERWISE_LEDGER": str(root / "ledger.sqlite3"),
            "TIERWISE_ROUTER": str(root / "router.npz"),
            "TIERWISE_CHECKPOINTS": str(root / "checkpoints.sqlite"),
            "XDG_DATA_HOME": str(root / "data"),
            "XDG_CONFIG_HOME": str(root / "config"),
        })  # fmt: skip
        try:
            yield root
        finally:
            from tierwise.ledger import close_shared_ledgers

            close_shared_ledgers()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
