"""The simulator's own rate limits are exact: N+k requests to a model limited to N per
window get exactly k 429s whose Retry-After is the window's remainder.

A fake clock makes every figure exact and the tests free of timing assumptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import groq
import httpx
import ollama
import openai
import pytest
from google.genai import errors as genai_errors
from langchain_core.exceptions import ModelRateLimitError

from tierwise.catalog.specs import ModelSpec, Provider, Tier
from tierwise.providers.clients import ProviderFactory
from tierwise.testing import ModelLimiter, Reply, Simulator


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(simulator: Simulator, clock: FakeClock) -> Iterator[Simulator]:
    """The session simulator on a fake clock."""
    original = simulator.clock
    simulator.clock = clock
    yield simulator
    simulator.clock = original


_FACTORIES: dict[str, ProviderFactory] = {}


def chat_model(sim: Simulator, spec: ModelSpec) -> Any:
    if sim.url not in _FACTORIES:
        _FACTORIES[sim.url] = ProviderFactory(sim.settings())
    return _FACTORIES[sim.url].chat_model(spec)


SPECS = {
    "openai": ModelSpec(
        key="o", provider=Provider.OPENAI, model="gpt-4o-mini", tier=Tier.FREE, context_window=8192
    ),
    "groq": ModelSpec(
        key="g",
        provider=Provider.GROQ,
        model="llama-3.1-8b-instant",
        tier=Tier.FREE,
        context_window=8192,
    ),
    "gemini": ModelSpec(
        key="ge",
        provider=Provider.GEMINI,
        model="gemini-2.5-flash",
        tier=Tier.FREE,
        context_window=8192,
    ),
    "ollama": ModelSpec(
        key="ol",
        provider=Provider.OLLAMA,
        model="llama3.2:3b",
        tier=Tier.LOCAL,
        context_window=8192,
    ),
}


def retry_after_of(name: str, exc: BaseException) -> str | None:
    """The Retry-After a client surfaces: header (OpenAI, Groq) or RetryInfo (Gemini)."""
    from tierwise.providers.redaction import RedactedError

    assert isinstance(exc, RedactedError)  # what callbacks saw; the SDK's error is inside
    exc = exc.original
    if name in ("openai", "groq"):
        assert isinstance(exc, (openai.RateLimitError, groq.RateLimitError))
        return exc.response.headers.get("retry-after")
    if name == "gemini":
        assert isinstance(exc, ModelRateLimitError)
        cause = exc.__cause__
        assert isinstance(cause, genai_errors.ClientError) and cause.code == 429
        [info] = [d for d in cause.details["error"]["details"] if "RetryInfo" in d["@type"]]
        return str(info["retryDelay"]).removesuffix("s")
    assert isinstance(exc, ollama.ResponseError) and exc.status_code == 429
    return None  # the ollama client exposes no headers


@pytest.mark.parametrize("name", list(SPECS))
def test_rpm_window_exact_with_real_clients(sim: Simulator, clock: FakeClock, name: str) -> None:
    spec = SPECS[name]
    sim.limit(spec, rpm=3)
    model = chat_model(sim, spec)
    limit, extra = 3, 2

    outcomes: list[str] = []
    for _ in range(limit + extra):
        try:
            model.invoke("hi")
            outcomes.append("ok")
        except Exception as exc:
            retry = retry_after_of(name, exc)
            assert retry in (None, "60")
            outcomes.append("429")
    assert outcomes == ["ok"] * limit + ["429"] * extra

    clock.advance(15)  # the window's remainder shrinks with the clock
    with pytest.raises(Exception) as info:
        model.invoke("hi")
    assert retry_after_of(name, info.value) in (None, "45")

    clock.advance(45)  # the first three requests leave the window
    assert model.invoke("hi").content
    assert [r.outcome for r in sim.requests_for(spec)] == [
        "ok",
        "ok",
        "ok",
        "limit:rpm",
        "limit:rpm",
        "limit:rpm",
        "ok",
    ]
    assert len(sim.requests_for(spec)) == limit + extra + 2


_CLIENT = httpx.Client(timeout=5)


def _post(sim: Simulator, model: str = "m", content: str = "hi") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return _CLIENT.post(sim.url + "/v1/chat/completions", json=body)


def test_retry_after_headers_and_error_body(sim: Simulator, clock: FakeClock) -> None:
    sim.limit("m", rpm=2)
    assert [_post(sim).status_code for _ in range(2)] == [200, 200]
    clock.advance(12.5)
    refused = _post(sim)

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "48"  # whole seconds, rounded up
    assert refused.headers["retry-after-ms"] == "47500"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_success_carries_remaining_quota(sim: Simulator) -> None:
    sim.limit("m", rpm=5, tpm=1000)
    first, second = _post(sim), _post(sim)
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert second.headers["x-ratelimit-remaining-requests"] == "3"
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < 1000


def test_tpm_counts_answered_tokens(sim: Simulator, clock: FakeClock) -> None:
    sim.limit("m", tpm=100)
    sim.script("m", Reply.text("x", usage=(10, 40)))
    assert [_post(sim).status_code for _ in range(3)] == [200, 200, 429]
    [refused] = sim.requests_for("m", outcome="limit:tpm")
    assert refused.status == 429
    clock.advance(60)
    assert _post(sim).status_code == 200


def test_rpd_with_window_scale(sim: Simulator, clock: FakeClock) -> None:
    sim.limit("m", rpd=2, window_scale=1 / 86_400)  # a "day" lasts one second
    statuses = [_post(sim).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    clock.advance(0.25)
    refused = _post(sim)
    assert refused.headers["retry-after-ms"] == "750"
    clock.advance(0.75)
    assert _post(sim).status_code == 200


def test_limits_are_per_model_and_provider(sim: Simulator) -> None:
    sim.limit("m", rpm=1, provider=Provider.OPENAI)
    assert _post(sim).status_code == 200
    assert _post(sim).status_code == 429
    assert _post(sim, model="other").status_code == 200
    groq_body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert _CLIENT.post(sim.url + "/openai/v1/chat/completions", json=groq_body).status_code == 200


def test_limit_catalog_uses_published_limits(sim: Simulator) -> None:
    sim.limit_catalog()  # gemini-2.5-flash (free) allows 10 RPM in the packaged catalog
    url = sim.url + "/v1beta/models/gemini-2.5-flash:generateContent"
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    statuses = [_CLIENT.post(url, json=body).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]


def test_real_clock_with_scaled_window(isolated_env: None) -> None:
    with Simulator() as sim:
        sim.limit("m", rpm=3, window_scale=10 / 60)  # a 10 s "minute"
        statuses = [_post(sim).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        wait_ms = int(_post(sim).headers["retry-after-ms"])
        assert 0 < wait_ms <= 10_000


# ---------------------------------------------------------------------------- window unit tests


def test_sliding_window_retry_after_tracks_oldest_request() -> None:
    limiter = ModelLimiter(rpm=3)
    for t in (0.0, 10.0, 20.0):
        assert limiter.admit(t, 1) is None
    refused = limiter.admit(30.0, 1)
    assert refused is not None and (refused.limit, refused.retry_after) == ("rpm", 30.0)
    assert limiter.admit(60.0, 1) is None  # t=0 expired
    refused = limiter.admit(60.0, 1)
    assert refused is not None and refused.retry_after == 10.0  # t=10 expires at 70


def test_fixed_window_opens_at_first_request() -> None:
    limiter = ModelLimiter(rpm=3, window="fixed")
    for t in (0.0, 10.0, 20.0):
        assert limiter.admit(t, 1) is None
    refused = limiter.admit(30.0, 1)
    assert refused is not None and refused.retry_after == 30.0
    assert [limiter.admit(60.0, 1) for _ in range(3)] == [None, None, None]
    refused = limiter.admit(60.0, 1)
    assert refused is not None and refused.retry_after == 60.0


def test_tpm_sliding_wait_until_enough_tokens_expire() -> None:
    limiter = ModelLimiter(tpm=100)
    for t in (0.0, 20.0, 40.0):
        assert limiter.admit(t, 5) is None
        limiter.consume_tokens(t, 30)
    refused = limiter.admit(45.0, 20)  # 90 used + 20 > 100: t=0's 30 must expire
    assert refused is not None and refused.limit == "tpm" and refused.retry_after == 15.0
    assert json.loads(json.dumps(refused.headers))["retry-after"] == "15"


def test_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ModelLimiter()
    with pytest.raises(ValueError):
        ModelLimiter(rpm=1, window_scale=0)


# ---------------------------------------------------- headers of successful responses


class Watcher:
    """A bound method to watch a factory's headers with (held weakly by the factory)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def observe(self, key: str, headers: Any) -> None:
        self.seen.append((key, dict(headers)))


@pytest.mark.parametrize("name", ["openai", "groq"])
@pytest.mark.parametrize("driver", ["invoke", "ainvoke", "stream"])
def test_success_headers_reach_the_watchers(
    sim: Simulator, clock: FakeClock, name: str, driver: str
) -> None:
    import asyncio

    spec = SPECS[name]
    sim.limit(spec, rpm=5)
    factory = ProviderFactory(sim.settings())
    watcher = Watcher()
    factory.watch_headers(watcher.observe)

    async def ask() -> Any:
        return await factory.chat_model(spec).ainvoke("hi")

    if driver == "ainvoke":
        message = asyncio.run(ask())
    elif driver == "stream":
        message = None
        for chunk in factory.chat_model(spec).stream("hi"):
            message = chunk if message is None else message + chunk
    else:
        message = factory.chat_model(spec).invoke("hi")
    assert message is not None
    [(key, headers)] = watcher.seen
    assert key == spec.key
    assert headers["x-ratelimit-remaining-requests"] == "4"
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert all(k.startswith(("x-ratelimit-", "retry-after")) for k in headers)
    # the headers are read off the wire, never added to what the model returned
    assert "headers" not in message.response_metadata


def test_router_limiter_learns_from_successful_responses(sim: Simulator, clock: FakeClock) -> None:
    """The catalog knows no limit; the provider's headers on a 200 teach it (issue 13)."""
    from tierwise.catalog.specs import Catalog, TaskType
    from tierwise.guards.limits import RateLimiter
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.selector import Snapshot

    spec = SPECS["groq"]
    catalog = Catalog.from_mapping(
        {
            "models": {
                spec.key: {"provider": "groq", "model": spec.model, "tier": "free",
                           "context_window": 8192},
            },
            "chains": {op.value: {"free": [spec.key]} for op in TaskType},
        }
    )
    settings = sim.settings()
    import dataclasses

    settings = sim.settings(dataclasses.replace(settings, catalog=catalog))
    sim.limit(spec, rpm=2, tpm=100_000)
    limiter = RateLimiter(clock=clock)
    router = ModelRouter(
        settings, snapshot=Snapshot.everything(catalog), limiter=limiter, ledger=None
    )
    assert limiter.usage(spec.key).limits.rpm is None
    router.invoke("rewriting", "make this clearer: do the thing")
    learned = limiter.usage(spec.key).limits
    assert (learned.rpm, learned.tpm) == (2, 100_000)
    router.invoke("rewriting", "make this clearer: do the thing")
    # remaining-requests 0 on the second 200: the third call is refused locally, not sent
    assert limiter.wait_time(spec.key) > 0
    assert len(sim.requests_for(spec)) == 2
