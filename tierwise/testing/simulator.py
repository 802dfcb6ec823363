"""The provider simulator: lifecycle, scripting and request log, and settings that point at it.

A :class:`Simulator` is a real HTTP server on 127.0.0.1 that speaks the OpenAI (also
OpenRouter, Mistral, Hugging Face), Groq, Gemini and Ollama wire protocols, so the *real*
LangChain clients — and their HTTP stacks, which in-process mocks miss — are exercised
offline. It runs on its own event loop in a background thread, so sync and async code can
both use it, and :meth:`Simulator.settings` hands out tierwise settings whose every hosted
provider points at it with dummy keys.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import (
    CREDENTIAL_ENV,
    CREDENTIAL_FIELD,
    Credentials,
    ProviderConfig,
    Settings,
)
from tierwise.catalog.specs import Catalog, ModelSpec, Provider, load_default_catalog
from tierwise.testing.chat import ChatRequest
from tierwise.testing.engine import Engine, RecordedRequest
from tierwise.testing.env import NO_PROXY
from tierwise.testing.http import HttpServer
from tierwise.testing.limits import ModelLimiter, WindowKind
from tierwise.testing.protocols import BASE_PATHS
from tierwise.testing.script import Behaviour, Rule

__all__ = ["DEFAULT_TIMEOUT", "DUMMY_KEYS", "Simulator"]

#: Client timeout in simulator settings: short, so a timeout fault never stalls a test.
DEFAULT_TIMEOUT = 5.0

#: The keys simulator settings carry; deliberately nothing like a real key.
DUMMY_KEYS: Mapping[Provider, str] = {
    p: f"sim-{p.value}" for p in BASE_PATHS if p is not Provider.OLLAMA
}


@functools.cache
def _default_catalog() -> Catalog:
    return load_default_catalog()


_scratch: list[Path] = []  # the process's temporary directory for simulated ledgers
_scratch_lock = threading.Lock()


def _scratch_ledger() -> Path:
    """A new ledger path in a temporary directory removed when the process exits."""
    with _scratch_lock:
        if not _scratch:
            _scratch.append(Path(tempfile.mkdtemp(prefix="tierwise-sim-")))
            atexit.register(_remove_scratch, _scratch[0])
        return _scratch[0] / f"ledger-{uuid.uuid4().hex}.sqlite3"


def _remove_scratch(directory: Path) -> None:
    from tierwise.ledger.opening import close_shared_ledgers

    close_shared_ledgers()  # their rows are committed before the files go
    shutil.rmtree(directory, ignore_errors=True)


class Simulator:
    """A local stand-in for every hosted provider (and Ollama), scriptable per model.

    Example:
        >>> from tierwise.catalog.specs import Provider
        >>> from tierwise.testing import Fault, Reply, Simulator
        >>> with Simulator() as sim:
        ...     _ = sim.script("gemini-2.5-flash", Fault.rate_limited(2), Reply.text("hi"))
        ...     settings = sim.settings()  # hand these to ProviderFactory / your router
        ...     settings.base_url(Provider.OPENAI) == sim.url + "/v1"
        True
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] | None = None,
        ollama_models: Iterable[str] | None = None,
        max_records: int | None = 100_000,
    ) -> None:
        """Configure; nothing listens until :meth:`start` (or ``with``).

        Args:
            host: Interface to bind; keep the loopback default unless you mean otherwise.
            port: TCP port; 0 picks a free one.
            timeout: Client timeout written into :meth:`settings`.
            clock: Time source for limit windows and records (a fake makes them exact).
            ollama_models: Tags ``/api/tags`` lists; default: the catalog's Ollama models.
            max_records: Keep only the newest this many request records (None: all).
        """
        self.host = host
        self.timeout = timeout
        self._requested_port = port
        self._port = port
        if ollama_models is None:
            ollama_models = (s.model for s in _default_catalog() if s.provider is Provider.OLLAMA)
        self._engine = Engine(
            clock=clock or time.monotonic, ollama_models=ollama_models, max_records=max_records
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._lifecycle = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start serving on a background thread; returns once the port is bound."""
        with self._lifecycle:
            if self._thread is not None:
                return self
            ready = threading.Event()
            self._error = None
            thread = threading.Thread(
                target=self._run, args=(ready,), name="tierwise-simulator", daemon=True
            )
            thread.start()
            if not ready.wait(30):  # pragma: no cover - only if the thread wedges
                raise RuntimeError("the simulator did not start within 30 s")
            if self._error is not None:
                thread.join()
                raise self._error
            self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        with self._lifecycle:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = self._loop = None
            self._port = self._requested_port

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        server = HttpServer(self._engine.handle, self.host, self._port)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # reported to start() in the caller thread
            self._error = exc
            loop.close()
            ready.set()
            return
        self._port = server.port
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
            loop.run_until_complete(server.close())
        finally:
            loop.close()

    @property
    def running(self) -> bool:
        """The server is listening."""
        return self._thread is not None

    def __enter__(self) -> Self:
        """Start, for ``with Simulator() as sim:``."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()

    async def __aenter__(self) -> Self:
        """Start, for ``async with Simulator() as sim:`` (the server has its own loop)."""
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        await asyncio.to_thread(self.stop)

    @property
    def clock(self) -> Callable[[], float]:
        """Time source of limit windows and request records (``time.monotonic``)."""
        return self._engine.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._engine.clock = clock

    @property
    def port(self) -> int:
        """The bound TCP port (raises before :meth:`start`)."""
        if not self.running:
            raise RuntimeError("the simulator is not running; use start() or `with`")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running simulator."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ scripting

    def script(
        self,
        model: str | ModelSpec,
        *behaviours: Behaviour,
        times: int | None = None,
        fraction: float | None = None,
        seed: int = 0,
        first_byte: float = 0.0,
        per_chunk: float = 0.0,
        provider: Provider | str | None = None,
        when: Callable[[ChatRequest], bool] | None = None,
    ) -> Rule:
        """Decide how ``model`` answers (``"*"``: any model). Newer rules win.

        Args:
            model: The provider's model id, a catalog :class:`ModelSpec`, or ``"*"``.
            *behaviours: :class:`Reply` / :class:`Fault` values; several form a sequence.
            times: Serve this many requests, then expire (default: for ever with one
                behaviour, once through a sequence).
            fraction: Serve each request with this probability (seeded by ``seed``).
            seed: Seed of the ``fraction`` draw, so runs repeat exactly.
            first_byte: Seconds before the response starts.
            per_chunk: Seconds between streamed chunks.
            provider: Only requests on this provider's route (a ModelSpec implies it).
            when: Only requests for which this predicate is true.

        Returns:
            The rule; ``rule.served`` counts the requests it has answered.
        """
        if isinstance(model, ModelSpec):
            provider = provider or model.provider
            model = model.model
        rule = Rule(
            model=model,
            behaviours=behaviours or (),
            times=times,
            fraction=fraction,
            seed=seed,
            first_byte=first_byte,
            per_chunk=per_chunk,
            provider=Provider(provider) if provider is not None else None,
            when=when,
        )
        return self._engine.add_rule(rule)

    def limit(
        self,
        model: str | ModelSpec,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        window_scale: float = 1.0,
        window: WindowKind = "sliding",
        provider: Provider | str | None = None,
    ) -> ModelLimiter:
        """Enforce RPM / TPM / RPD on ``model``; excess requests get 429 + exact Retry-After.

        ``window_scale`` multiplies the window lengths (``0.5 / 60``: a 0.5 s "minute").
        ``window="fixed"`` opens a window at its first request instead of sliding.
        """
        if isinstance(model, ModelSpec):
            provider = provider or model.provider
            model = model.model
        return self._engine.set_limit(
            model,
            rpm=rpm,
            tpm=tpm,
            rpd=rpd,
            window_scale=window_scale,
            window=window,
            provider=Provider(provider) if provider is not None else None,
        )

    def limit_catalog(
        self,
        catalog: Catalog | None = None,
        *,
        window_scale: float = 1.0,
        window: WindowKind = "sliding",
    ) -> None:
        """Enforce every hosted model's published limits from ``catalog`` (default catalog)."""
        for spec in catalog or _default_catalog():
            limits = spec.limits
            if spec.provider is Provider.EMBEDDED or not (limits.rpm or limits.tpm or limits.rpd):
                continue
            self.limit(
                spec,
                rpm=limits.rpm,
                tpm=limits.tpm,
                rpd=limits.rpd,
                window_scale=window_scale,
                window=window,
            )

    def on_request(self, listener: Callable[[RecordedRequest], None] | None) -> None:
        """Call ``listener`` with every request record as it arrives (on the server thread).

        Keep it fast and thread-safe; ``None`` removes it.
        """
        self._engine.listener = listener

    def add_ollama_models(self, *names: str) -> None:
        """List more tags in ``/api/tags``."""
        self._engine.add_ollama_models(names)

    # ------------------------------------------------------------------ observability

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received since the last :meth:`reset` (newest ``max_records``)."""
        return self._engine.records()

    def requests_for(
        self,
        model: str | ModelSpec | None = None,
        provider: Provider | str | None = None,
        *,
        outcome: str | None = None,
    ) -> list[RecordedRequest]:
        """The recorded requests for ``model`` and/or ``provider`` (and ``outcome``)."""
        if isinstance(model, ModelSpec):
            provider = provider or model.provider
            model = model.model
        wanted = Provider(provider) if provider is not None else None
        return [
            r
            for r in self._engine.records()
            if (model is None or r.model == model)
            and (wanted is None or r.provider is wanted)
            and (outcome is None or r.outcome == outcome)
        ]

    def reset(self) -> None:
        """Forget scripts, limits and recorded requests (the server keeps running)."""
        self._engine.reset()

    # ------------------------------------------------------------------ pointing clients here

    def base_urls(self) -> dict[Provider, str]:
        """Base URL per provider, as each client expects it (OpenAI-style ones end in /v1)."""
        return {provider: self.url + path for provider, path in BASE_PATHS.items()}

    def credentials(self) -> Credentials:
        """Dummy keys (``sim-<provider>``) and ``ollama_host``; never reads env or ``~/.env``."""
        values: dict[str, Any] = {
            field: DUMMY_KEYS[provider] for provider, field in CREDENTIAL_FIELD.items()
        }
        return Credentials(**values, ollama_host=self.url, _env_file=None)

    def settings(self, base: Settings | None = None, *, timeout: float | None = None,
                 ledger: Path | None = None) -> Settings:
        """Tierwise settings with every hosted provider and Ollama pointed at the simulator.

        Simulated calls are not the user's: a router built on these settings without a
        ledger of its own records into ``ledger``, by default a new temporary file (removed
        at exit), never into the user's ledger that ``tierwise stats`` reads.

        Args:
            base: Settings to copy catalog and policy from (default: packaged catalog,
                default policy — no config file is read).
            timeout: Client timeout in seconds (default: the simulator's ``timeout``).
            ledger: The ledger file routers record into by default (default: temporary).
        """
        seconds = timeout if timeout is not None else self.timeout
        providers = {
            provider: ProviderConfig(base_url=url, timeout=seconds)
            for provider, url in self.base_urls().items()
        }
        credentials = self.credentials()
        if base is None:
            base = Settings(catalog=_default_catalog(), policy=Policy(), credentials=credentials)
        return replace(base.with_providers(providers, credentials),
                       ledger=ledger if ledger is not None else _scratch_ledger())

    def environment(self) -> dict[str, str]:
        """Environment variables that point tierwise (and plain SDKs) at the simulator."""
        env = {CREDENTIAL_ENV[p][0]: key for p, key in DUMMY_KEYS.items()}  # the primary name
        env.update(
            OLLAMA_HOST=self.url,
            OPENAI_BASE_URL=self.url + BASE_PATHS[Provider.OPENAI],
            GROQ_BASE_URL=self.url,
            NO_PROXY=NO_PROXY,
        )
        return env

    def toml_snippet(self, *, timeout: float | None = None) -> str:
        """The ``[providers.*]`` tables of a ``tierwise.toml`` pointing at the simulator."""
        seconds = timeout if timeout is not None else self.timeout
        return "\n".join(
            f'[providers.{p.value}]\nbase_url = "{url}"\ntimeout = {seconds}\n'
            for p, url in self.base_urls().items()
        )
