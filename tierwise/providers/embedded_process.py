"""The caller's side of the embedded model's worker process: start, talk, notice a crash.

llama.cpp is native code: a build for the wrong CPU dies with SIGILL, a bug with SIGSEGV,
and either would take the whole caller down (a CLI run, a server, a test session) with no
message. So the model runs in a worker process (`tierwise.providers.embedded_worker`),
one per load configuration, started on first use and shared by every
`EmbeddedChatModel` of that configuration. A worker that dies is a provider failure
(`EmbeddedModelCrashed`, classified ``unavailable``) and the configuration is marked
unusable for the rest of the process, with the reason (`crash_reason`), so the
availability probe and ``tierwise doctor`` can say why and how to fix it.

Calls are served one at a time per worker (a llama.cpp context is not thread-safe); a
stream holds its worker until it is exhausted or closed. The calling thread only waits on
a pipe, so async callers wait in a thread and their event loop stays free.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from tierwise.providers.failures import FailureKind
from tierwise.providers.llama_build import REINSTALL_COMMAND

__all__ = [
    "Crash",
    "EmbeddedModelCrashed",
    "LoadKey",
    "Worker",
    "crash_reason",
    "shutdown_workers",
    "worker_for",
]

_ERRORS: Final[dict[str, type[Exception]]] = {
    "FileNotFoundError": FileNotFoundError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "ImportError": ImportError,
    "ModuleNotFoundError": ImportError,
}


class EmbeddedModelCrashed(RuntimeError):
    """The embedded model's worker process died (a native crash, or it was killed).

    The router treats it like a provider that is down and falls back; the configuration
    stays unusable for the rest of the process.
    """

    failure_kind = FailureKind.UNAVAILABLE


@dataclass(frozen=True)
class LoadKey:
    """What a worker loads: the GGUF file, its context size and its CPU threads."""

    path: str
    n_ctx: int
    n_threads: int


@dataclass(frozen=True)
class Crash:
    """Why a worker died (``what``) and how to fix it (``fix``, may be empty)."""

    what: str
    fix: str = ""

    def __str__(self) -> str:
        """The one line an error message shows: what happened — how to fix it."""
        return f"{self.what} — {self.fix}" if self.fix else self.what


def _describe_exit(status: int) -> Crash:
    """Say why a worker ended, and for a CPU mismatch how to fix it."""
    if status == -signal.SIGILL:
        return Crash(
            "crashed: illegal instruction (SIGILL)",
            f"a build for another CPU; rebuild: {REINSTALL_COMMAND}",
        )
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return Crash(f"crashed: killed by {name}", "see the worker's stderr above")
    return Crash(f"crashed: the worker process exited with status {status}")


_UNUSABLE: dict[LoadKey, Crash] = {}


def crash_reason(key: LoadKey | None = None) -> Crash | None:
    """Why the embedded model is unusable in this process (``key``'s, or any), else ``None``."""
    if key is not None:
        return _UNUSABLE.get(key)
    return next(iter(_UNUSABLE.values()), None)


@dataclass
class Worker:
    """One worker process and the lock that gives it one request at a time."""

    key: LoadKey
    lock: threading.Lock = field(default_factory=threading.Lock)
    _proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        """Start the worker and wait until the model is loaded. Call with `lock` held."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        crash = _UNUSABLE.get(self.key)
        if crash is not None:
            raise EmbeddedModelCrashed(str(crash))
        if not Path(self.key.path).is_file():
            raise FileNotFoundError(f"GGUF model file not found: {self.key.path}")
        args = [self.key.path, str(self.key.n_ctx), str(self.key.n_threads)]
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tierwise.providers.embedded_worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        proc = self._proc
        try:
            self._read(proc)  # {"ready": true}, or the load error raised
        except BaseException:
            self.close()
            raise
        return proc

    def _read(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        """Read one answer line; a closed pipe means the worker died."""
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            status = proc.wait()
            self._proc = None
            crash = _UNUSABLE[self.key] = _describe_exit(status)
            raise EmbeddedModelCrashed(str(crash))
        message: dict[str, Any] = json.loads(line)
        error = message.get("error")
        if error is not None:
            cls = _ERRORS.get(error["type"])
            if cls is None:
                raise RuntimeError(f"{error['type']}: {error['message']}")
            raise cls(error["message"])
        return message

    @staticmethod
    def _send(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
        stdin: IO[str] | None = proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message) + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker died; reading its answer says how

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one chat completion; return ``{"content", "finish_reason", "usage"}``."""
        with self.lock:
            proc = self._start()
            self._send(proc, {"op": "chat", "request": request, "stream": False})
            done: dict[str, Any] = self._read(proc)["done"]
            return done

    def stream(self, request: dict[str, Any]) -> Iterator[str | dict[str, Any]]:
        """Yield text chunks, then the final ``done`` dict. Closing early cancels the rest."""
        with self.lock:
            proc = self._start()
            self._send(proc, {"op": "chat", "request": request, "stream": True})
            finished = False
            try:
                while True:
                    message = self._read(proc)
                    if "chunk" in message:
                        yield str(message["chunk"])
                        continue
                    finished = True
                    yield message["done"]
                    return
            finally:
                if not finished and self._proc is proc:
                    self._cancel(proc)

    def _cancel(self, proc: subprocess.Popen[str]) -> None:
        """Stop a stream the consumer left early and drain it, keeping the worker in step."""
        self._send(proc, {"op": "cancel"})
        try:
            while "done" not in self._read(proc):
                pass
        except Exception:  # noqa: BLE001, S110 - an error ends the stream too
            pass

    def close(self) -> None:
        """Close the worker's stdin (it exits) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


_WORKERS: dict[LoadKey, Worker] = {}
_WORKERS_LOCK = threading.Lock()


def worker_for(key: LoadKey) -> Worker:
    """The worker for ``key`` (started on its first request), shared process-wide."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(key)
        if worker is None:
            worker = _WORKERS[key] = Worker(key)
        return worker


@atexit.register
def shutdown_workers() -> None:
    """Stop every worker and forget crash marks (at exit; tests call it between cases)."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
        _WORKERS.clear()
        _UNUSABLE.clear()
    for worker in workers:
        worker.close()  # without its lock: an abandoned stream may still hold it


def default_threads() -> int:
    """Half the CPUs, at most 4, for both prompt evaluation and generation.

    llama.cpp's threads spin-wait on each other, so when other work keeps a core busy a
    multi-threaded evaluation slows down sharply; the worker leaves at least half the
    machine to the caller's process and everything else.
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))
