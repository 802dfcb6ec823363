"""``langgraph dev`` as test equipment: a project's graphs served on a free port, then stopped.

A served graph is only proven by the real server: LangGraph Server loads graphs from a
module's ``__dict__``, runs them on its event loop and (in ``langgraph dev``) fails any run
that makes a blocking call there. :func:`langgraph_dev` starts it the way a user does —
``langgraph dev --no-browser`` in the project directory, no ``--allow-blocking`` — in its
own process group, waits for ``/ok`` and stops the whole group by its PID on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tierwise.testing.env import variables_to_clear

__all__ = ["LangGraphDevError", "free_port", "langgraph_dev", "served_environment"]


class LangGraphDevError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_environment(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus whatever could point a client elsewhere.

    ``home`` replaces ``HOME`` (and the XDG dirs), so the user's ``~/.env`` and config
    are not read; tracing and the CLI's analytics are off (nothing leaves 127.0.0.1).
    """
    env = {k: v for k, v in os.environ.items() if k not in set(variables_to_clear(os.environ))}
    env.update(
        HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        LANGSMITH_TRACING="false", LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1", NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@contextmanager
def langgraph_dev(
    project: Path,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    startup_timeout: float = 180.0,
    log: Path | None = None,
) -> Iterator[str]:
    """Serve ``project``'s ``langgraph.json`` with ``langgraph dev``; yields its base URL.

    Args:
        project: the directory holding ``langgraph.json`` (and its ``.env``).
        env: the server's whole environment (see :func:`served_environment`).
        port: where to listen (default: a free port).
        startup_timeout: seconds to wait for ``/ok``.
        log: where the server's output goes (default: ``project/langgraph-dev.log``).

    Raises:
        LangGraphDevError: ``langgraph`` is not installed, or the server did not come up.
    """
    command = shutil.which("langgraph")
    if command is None:
        raise LangGraphDevError('langgraph is not installed: pip install "langgraph-cli[inmem]"')
    port = port or free_port()
    log = log or project / "langgraph-dev.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [command, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1",
             "--port", str(port), "--config", "langgraph.json"],
            cwd=project, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: its workers stop with it
        )
        try:
            _wait_until_up(process, url, time.monotonic() + startup_timeout, log)
            yield url
        finally:
            _stop(process)


def _wait_until_up(process: subprocess.Popen[bytes], url: str, deadline: float,
                   log: Path) -> None:  # fmt: skip
    while True:
        if process.poll() is not None:
            raise LangGraphDevError(f"langgraph dev exited with {process.returncode}:\n"
                                    + _tail(log))
        try:
            if httpx.get(f"{url}/ok", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise LangGraphDevError(f"langgraph dev did not answer {url}/ok:\n" + _tail(log))
        time.sleep(0.25)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""
