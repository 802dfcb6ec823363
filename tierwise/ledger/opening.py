"""Opening a ledger by where it is, and the one shared ledger per place in a process.

A target is a file (the SQLite :class:`~tierwise.ledger.store.Ledger`) or a
``postgresql://`` URL (:class:`~tierwise.ledger.postgres.PostgresLedger`, imported only
then: psycopg is the ``scale`` extra).
"""

from __future__ import annotations

import threading
from pathlib import Path

from tierwise.ledger.schema import LedgerUnavailable
from tierwise.ledger.store import Ledger, default_ledger_path

__all__ = ["close_shared_ledgers", "is_postgres_url", "open_ledger", "shared_ledger"]


def is_postgres_url(target: object) -> bool:
    """Whether a ledger target names a PostgreSQL database (a URL), not a file."""
    return str(target).startswith(("postgresql://", "postgres://"))


def open_ledger(target: str | Path | None = None) -> Ledger:
    """The ledger at ``target``: a ``postgresql://`` URL, a file, or the default file.

    A URL opens a :class:`~tierwise.ledger.postgres.PostgresLedger` (psycopg, the
    ``scale`` extra, is imported only then).

    Raises:
        LedgerError: the file is not a ledger, or PostgreSQL cannot be reached
            (:class:`~tierwise.ledger.schema.LedgerUnavailable`; also when psycopg is
            not installed).
    """
    if target is not None and is_postgres_url(target):
        try:
            from tierwise.ledger.postgres import PostgresLedger
        except ImportError as exc:
            raise LedgerUnavailable(f"a PostgreSQL ledger needs psycopg: {exc} "
                                    '(pip install "tierwise[scale]")') from exc  # fmt: skip
        return PostgresLedger(str(target))
    return Ledger(target)


_SHARED: dict[str | Path, Ledger] = {}
_SHARED_LOCK = threading.Lock()


def shared_ledger(target: str | Path | None = None) -> Ledger:
    """The process's one open ledger on ``target`` (:func:`open_ledger`'s argument).

    Routers built without an explicit ledger share it, so a process has one writer
    thread and one connection (pool) per ledger however many routers it builds.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite3"
        >>> shared_ledger(path) is shared_ledger(path)
        True
        >>> close_shared_ledgers()
    """
    key: str | Path
    if target is not None and is_postgres_url(target):
        key = str(target)
    else:
        key = (Path(target).expanduser() if target is not None else default_ledger_path()).resolve()
    with _SHARED_LOCK:
        ledger = _SHARED.get(key)
        if ledger is None or ledger.closed:
            ledger = _SHARED[key] = open_ledger(key)
        return ledger


def close_shared_ledgers() -> None:
    """Close every ledger :func:`shared_ledger` opened (their rows are committed first)."""
    with _SHARED_LOCK:
        ledgers = list(_SHARED.values())
        _SHARED.clear()
    for ledger in ledgers:
        ledger.close()
