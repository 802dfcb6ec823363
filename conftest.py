"""Every test and doctest of this repository gets its own ledger file.

Routers record into the process's shared ledger by default (``$TIERWISE_LEDGER``, else the
user data dir); pointing it at a per-test file keeps test runs out of the user's ledger and
keeps free models' daily request counts from leaking from one test into the next.
Subprocesses the tests start inherit the variable.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from tierwise.ledger import LEDGER_ENV, close_shared_ledgers

    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "ledger.sqlite3"))
    yield
    close_shared_ledgers()
