"""The caller's side of the embedded model's worker process: start, talk, notice a crash.

llama.cpp is native code: a build for the wrong CPU dies with SIGILL, a bug with SIGSEGV,
and either would take the whole caller down (a CLI run, a server, a test session) with no
message. So the model runs in worker processes (`tierwise.providers.embedded_worker`): a
`WorkerPool` per load configuration, shared by every `EmbeddedChatModel` of that
configuration. A worker that dies is a provider failure (`EmbeddedModelCrashed`,
classified ``unavailable``) and the configuration is marked unusable for the rest of the
process, with the reason (`crash_reason`), so the availability probe and ``tierwise
doctor`` can say why and how to fix it.

Each worker serves one call at a time (a llama.cpp context is not thread-safe); a stream
holds its worker until it is exhausted or closed. Concurrent calls — the pipeline's
sub-tasks run in parallel — go to a pool of up to ``LoadKey.workers`` workers, each with
its own ``n_threads`` threads, so they use the cores instead of queuing for one model;
the second worker starts only when two calls overlap. The calling thread only waits on a
pipe, so async callers wait in a thread and their event loop stays free.
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
from contextlib import contextmanager
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
    "WorkerPool",
    "crash_reason",
    "pool_for",
    "shutdown_workers",
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
    """What a pool's workers load (GGUF file, context size, CPU threads) and how many run."""

    path: str
    n_ctx: int
    n_threads: int
    workers: int = 1
    fast_copy: str | None = None  # where the worker keeps a faster copy of ``path``


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
        if self.key.fast_copy is not None:
            args.append(self.key.fast_copy)
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


class WorkerPool:
    """Up to ``key.workers`` workers of one configuration, each lent to one call at a time.

    Idle workers are lent most recently used first, so one call at a time keeps using one
    warm worker (its KV cache of system turns) and a further worker starts only when
    calls overlap.
    """

    def __init__(self, key: LoadKey) -> None:
        """An empty pool: no process starts before the first call."""
        self.key = key
        self.workers = [Worker(key) for _ in range(max(1, key.workers))]
        self._idle = list(reversed(self.workers))  # the first worker is lent first
        self._returned = threading.Condition()

    @contextmanager
    def _lent(self) -> Iterator[Worker]:
        """Lend an idle worker (waiting for one) and take it back afterwards."""
        with self._returned:
            self._returned.wait_for(lambda: bool(self._idle))
            worker = self._idle.pop()
        try:
            crash = _UNUSABLE.get(self.key)  # another worker of this pool died
            if crash is not None:
                raise EmbeddedModelCrashed(str(crash))
            yield worker
        finally:
            with self._returned:
                self._idle.append(worker)
                self._returned.notify()

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one chat completion on an idle worker (see `Worker.chat`)."""
        with self._lent() as worker:
            return worker.chat(request)

    def stream(self, request: dict[str, Any]) -> Iterator[str | dict[str, Any]]:
        """Stream from an idle worker, held until the stream ends (see `Worker.stream`)."""
        with self._lent() as worker:
            yield from worker.stream(request)

    def close(self) -> None:
        """Stop every worker of the pool."""
        for worker in self.workers:
            worker.close()  # without its lock: an abandoned stream may still hold it


_POOLS: dict[LoadKey, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(key: LoadKey) -> WorkerPool:
    """The worker pool for ``key`` (workers start on demand), shared process-wide."""
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = WorkerPool(key)
        return pool


@atexit.register
def shutdown_workers() -> None:
    """Stop every worker and forget crash marks (at exit; tests call it between cases)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
        _UNUSABLE.clear()
    for pool in pools:
        pool.close()


def default_threads() -> int:
    """Half the CPUs, at most 4, for both prompt evaluation and generation.

    llama.cpp's threads spin-wait on each other, so when other work keeps a core busy a
    multi-threaded evaluation slows down sharply (on 2 loaded cores, 2 threads generated
    8× slower than 1); one worker leaves at least half the machine to everything else.
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def default_workers(n_threads: int) -> int:
    """Workers per pool: as many as the CPUs hold at ``n_threads`` each, at most 2.

    Two workers let parallel calls use both halves of the machine (on 2 cores: one
    thread each); more would take cores from everything else for little gain.
    """
    return max(1, min(2, (os.cpu_count() or 2) // n_threads))
