"""A PostgreSQL schema of its own for a test or benchmark run, dropped afterwards.

Tests and benchmarks share one server with other runs; each works in a fresh schema (the
URL's ``search_path``), so their tables, sequences and locks never meet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["LOCAL_URL", "scratch_schema", "unreachable"]

#: The server this machine kind runs (trust authentication, database ``test``).
LOCAL_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"


def unreachable(url: str = LOCAL_URL) -> str | None:
    """Why ``url`` cannot be used (for a skip reason), ``None`` when it answers."""
    try:
        import psycopg
    except ImportError:
        return 'psycopg is not installed (pip install "tierwise[scale]")'
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {url} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


@contextmanager
def scratch_schema(url: str = LOCAL_URL, prefix: str = "tierwise") -> Iterator[str]:
    """``url`` with a new, empty schema first in its ``search_path``; dropped on exit."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in url else "?"
    try:
        yield f"{url}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
