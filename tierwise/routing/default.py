"""The process-wide default router, shared by everything built without one.

Rate-limit windows, circuit breakers and budget reservations protect only the calls that
go through them, so node factories, graphs and chat models given no router must share one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tierwise.catalog.settings import load_settings
from tierwise.ledger import default_ledger_path, is_postgres_url
from tierwise.routing.provenance import ledger_target
from tierwise.routing.router import ModelRouter

__all__ = ["default_router"]


_DEFAULT_LOCK = threading.Lock()
_DEFAULT: tuple[tuple[Any, ...], ModelRouter] | None = None


def default_router() -> ModelRouter:
    """The process's router for everything built without one (nodes, graphs, chat models).

    Rate-limit windows, circuit breakers and budget reservations protect only the calls
    that go through them, so node factories given no router share this one, as routers
    given no ledger share :func:`~tierwise.ledger.opening.shared_ledger`. A router passed
    explicitly always wins. It is built from :func:`load_settings` on first use, and
    built again when the settings, the ledger's path or its open state change (a new
    config file, new keys, ``$TIERWISE_LEDGER``, a closed ledger).

    Example:
        >>> import os, tempfile
        >>> from unittest import mock
        >>> ledger = os.path.join(tempfile.mkdtemp(), "ledger.sqlite3")
        >>> with mock.patch.dict(os.environ, TIERWISE_LEDGER=ledger):
        ...     default_router() is default_router()
        True
    """
    global _DEFAULT
    settings = load_settings()
    key = (
        settings.source, settings.policy, settings.credentials, settings.providers,
        settings.catalog.models, settings.catalog.chains,
        _ledger_key(ledger_target(settings)),
    )
    with _DEFAULT_LOCK:
        current = _DEFAULT
        if current is not None and current[0] == key:
            ledger = current[1].ledger
            if ledger is None or not ledger.closed:
                return current[1]
        router = ModelRouter(settings)
        _DEFAULT = (key, router)
        return router


def _ledger_key(target: str | Path | None) -> str | Path:
    """The default ledger's identity: its URL, or its file resolved."""
    if target is not None and is_postgres_url(target):
        return str(target)
    return Path(target or default_ledger_path()).expanduser().resolve()
