"""Running a ledger test on both databases: SQLite and PostgreSQL (``postgres_url``)."""

import pytest

#: Runs a test twice, its ``ledger`` fixture given ``"sqlite"`` then ``"postgres"``
#: (``request.param``); the PostgreSQL run skips when the server does not answer.
both_backends = pytest.mark.parametrize("ledger", ["sqlite", "postgres"], indirect=True)
