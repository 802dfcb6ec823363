"""ModelRouter against the provider simulator: fallback, limits, health, validation, streams.

Every test builds a tiny catalog whose chain (the same for every operation) names the
models under test, points the real LangChain clients at the session's simulator and
checks two things: what the caller gets (answer, attempts, events) and what reached the
simulator (its request log). Clocks are injected wherever a test reasons about time, so
nothing here depends on how fast the machine is — except the one "well under a second"
check issue 4 asks for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Credentials, ProviderConfig, Settings
from tierwise.catalog.specs import Catalog, ModelSpec, Provider, TaskType
from tierwise.guards.health import HealthBoard
from tierwise.guards.limits import RateLimiter
from tierwise.providers.clients import ProviderFactory
from tierwise.providers.failures import FailureKind
from tierwise.routing.results import (
    NoModelAvailable,
    RoutedResult,
    StreamChunk,
    StreamEnd,
    StreamEvent,
    StreamRestart,
)
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Fault, FaultKind, RecordedRequest, Reply, Simulator

# --------------------------------------------------------------------------- test rig

#: Every model the tests use. Keys are unique per (provider, model), so one client
#: factory can serve every test catalog (building a client costs ~40 ms).
MODELS: dict[str, dict[str, Any]] = {
    "or-free": {"provider": "openrouter", "model": "vendor/primary:free"},
    "groq-free": {"provider": "groq", "model": "primary-groq"},
    "gemini-free": {"provider": "gemini", "model": "gemini-primary"},
    "ollama-local": {"provider": "ollama", "model": "primary-ollama:1b", "tier": "local"},
    "or-fallback": {"provider": "openrouter", "model": "vendor/fallback:free"},
    "groq-fallback": {"provider": "groq", "model": "fallback-groq"},
    "gemini-fallback": {"provider": "gemini", "model": "gemini-fallback"},
    "ollama-fallback": {"provider": "ollama", "model": "fallback-ollama:1b", "tier": "local"},
    "or-notools": {"provider": "openrouter", "model": "vendor/notools:free", "tools": False},
    "or-small": {"provider": "openrouter", "model": "vendor/small:free", "context_window": 8192},
    "groq-small": {"provider": "groq", "model": "small-groq", "context_window": 8192},
    "gemini-large": {"provider": "gemini", "model": "gemini-large", "context_window": 1048576},
    "hf-json": {
        "provider": "huggingface", "model": "vendor/json-mode", "structured_output": "json_mode",
    },
    "or-paid": {
        "provider": "openrouter",
        "model": "vendor/paid",
        "tier": "paid",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    },
}

#: The primary candidate per wire protocol, and a fallback on another protocol.
PRIMARY = {
    "openai": "or-free",
    "groq": "groq-free",
    "gemini": "gemini-free",
    "ollama": "ollama-local",
}
FALLBACK = {
    "openai": "groq-fallback",
    "groq": "gemini-fallback",
    "gemini": "ollama-fallback",
    "ollama": "or-paid",  # after the local tier, the next tier up
}
PROTOCOLS = tuple(PRIMARY)

FALLBACK_TEXT = "the fallback's answer"
FREE_UP_TO_PAID = Policy(mode="free_first", max_tier="paid")
_FACTORIES: dict[tuple[str, float, str | None], ProviderFactory] = {}
T = TypeVar("T")


def build_catalog(*keys: str, limits: dict[str, dict[str, int]] | None = None) -> Catalog:
    """A catalog whose every operation's chain is ``keys``, grouped by tier in order."""
    models: dict[str, dict[str, Any]] = {}
    for key in keys:
        fields = {"tier": "free", "context_window": 32768, **MODELS[key]}
        if limits and key in limits:
            fields["limits"] = limits[key]
        models[key] = fields
    tiers: dict[str, list[str]] = {"local": [], "free": [], "paid": []}
    for key in keys:
        tiers[models[key]["tier"]].append(key)
    chains = {op.value: tiers for op in TaskType}
    return Catalog.from_mapping({"models": models, "chains": chains})


@dataclasses.dataclass
class Rig:
    """A test catalog, settings pointing at the simulator, and a shared client factory."""

    sim: Simulator
    catalog: Catalog
    settings: Settings
    factory: ProviderFactory

    def router(self, **kwargs: Any) -> ModelRouter:
        kwargs.setdefault("policy", FREE_UP_TO_PAID)
        kwargs.setdefault("snapshot", Snapshot.everything(self.catalog))
        kwargs.setdefault("factory", self.factory)
        return ModelRouter(self.settings, **kwargs)

    def spec(self, key: str) -> ModelSpec:
        return self.catalog.spec(key)

    def script(self, key: str, *behaviours: Reply | Fault, **kwargs: Any) -> None:
        self.sim.script(self.spec(key), *behaviours, **kwargs)

    def sent(self, key: str) -> list[RecordedRequest]:
        """The requests that reached the simulator for catalog model ``key``."""
        return self.sim.requests_for(self.spec(key))


def make_rig(
    sim: Simulator,
    *keys: str,
    timeout: float = 4.0,
    short_timeout: str | None = None,
    limits: dict[str, dict[str, int]] | None = None,
    credentials: Credentials | None = None,
) -> Rig:
    """A rig whose chain is ``keys``; clients are shared by every test of this module.

    Every coroutine here runs on one event loop (:func:`run`): LangChain clients keep
    async connection pools bound to the loop that first used them — ChatOpenAI even
    shares one pool per (base URL, timeout) across instances — so a pool used on a
    closed loop fails with "Event loop is closed". The default ``timeout`` differs
    from the simulator's so no other test module's pools are shared either.

    ``short_timeout`` names a provider whose client times out after 0.3 s (to see a
    read timeout quickly) while the others keep ``timeout``: google-genai spends
    ~0.25 s setting up inside its first async call, which 0.3 s would not survive.
    """
    catalog = build_catalog(*keys, limits=limits)
    settings = sim.settings(dataclasses.replace(sim.settings(), catalog=catalog), timeout=timeout)
    if short_timeout is not None:
        provider = Provider(short_timeout)
        url = settings.base_url(provider)
        settings = settings.with_providers(
            {provider: ProviderConfig(base_url=url, timeout=0.3)}, settings.credentials
        )
    if credentials is not None:
        settings = settings.with_providers({}, credentials)
        factory = ProviderFactory(settings)
    else:
        key = (sim.url, timeout, short_timeout)
        factory = _FACTORIES.setdefault(key, ProviderFactory(settings))
    return Rig(sim, catalog, settings, factory)


_LOOP: list[asyncio.AbstractEventLoop] = []


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on this module's one event loop (see :func:`make_rig`)."""
    if not _LOOP:
        _LOOP.append(asyncio.new_event_loop())
    return _LOOP[0].run_until_complete(coroutine)


@pytest.fixture(scope="module", autouse=True)
def _close_the_loop() -> Iterator[None]:
    yield
    if _LOOP:
        _LOOP.pop().close()


class Clock:
    """A hand-wound clock for limiters, health boards and the simulator."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Answer(BaseModel):
    """The schema used by the structured-output tests."""

    answer: str
    n: int


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


def drive(router: ModelRouter, driver: str, *args: Any, **kwargs: Any) -> RoutedResult:
    """``router.invoke`` or ``router.ainvoke`` (on a fresh event loop)."""
    if driver == "invoke":
        return router.invoke(*args, **kwargs)
    return run(router.ainvoke(*args, **kwargs))


def collect(router: ModelRouter, driver: str, *args: Any, **kwargs: Any) -> list[StreamEvent]:
    """Every event of ``router.stream`` or ``router.astream``."""
    if driver == "stream":
        return list(router.stream(*args, **kwargs))

    async def consume() -> list[StreamEvent]:
        return [event async for event in router.astream(*args, **kwargs)]

    return run(consume())


async def gather(calls: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*calls))


def kinds(result: RoutedResult) -> list[tuple[str, str | None]]:
    return [(a.model, a.failure.value if a.failure else None) for a in result.attempts]


def no_429(sim: Simulator) -> None:
    refused = [r for r in sim.requests if r.status == 429 or r.outcome.startswith("limit:")]
    assert refused == [], f"the simulator refused {len(refused)} request(s)"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim_clock(simulator: Simulator, clock: Clock) -> Iterator[Clock]:
    """The same hand-wound clock for the simulator's limit windows and the test."""
    saved = simulator.clock
    simulator.clock = clock
    try:
        yield clock
    finally:
        simulator.clock = saved


# --------------------------------------------------------------------------- 1. fault matrix

#: (fault id, fault, kind the router must record). Stream-only faults become their
#: non-streamed form on invoke (a malformed body, an HTTP 500); Ollama always streams.
INVOKE_FAULTS = [
    ("429-retry-after", Fault.rate_limited(30), FailureKind.RATE_LIMITED),
    ("429-no-retry-after", Fault.rate_limited(None, headers=False), FailureKind.RATE_LIMITED),
    ("500", Fault.server_error(500), FailureKind.UNAVAILABLE),
    ("503", Fault.server_error(503), FailureKind.UNAVAILABLE),
    ("read-timeout", Fault.timeout(5), FailureKind.TIMEOUT),
    ("dropped-connection", Fault.drop(), FailureKind.UNAVAILABLE),
    ("malformed-json", Fault.malformed_json(), FailureKind.INVALID_OUTPUT),
    ("malformed-chunk", Fault.malformed_chunk(), FailureKind.INVALID_OUTPUT),
    ("midstream-error", Fault.midstream_error(), FailureKind.UNAVAILABLE),
    ("truncated", Fault.truncated_stream(), FailureKind.INVALID_OUTPUT),
    ("empty", Fault.empty(), FailureKind.INVALID_OUTPUT),
    ("schema-violation", Fault.schema_violation(), FailureKind.INVALID_OUTPUT),
]
STREAM_FAULTS = [
    ("malformed-chunk", Fault.malformed_chunk(), FailureKind.INVALID_OUTPUT),
    ("midstream-error", Fault.midstream_error(), FailureKind.UNAVAILABLE),
    ("truncated", Fault.truncated_stream(), FailureKind.INVALID_OUTPUT),
    ("malformed-json", Fault.malformed_json(), FailureKind.INVALID_OUTPUT),
    ("503", Fault.server_error(503), FailureKind.UNAVAILABLE),
    ("read-timeout", Fault.timeout(5), FailureKind.TIMEOUT),
]


@pytest.mark.parametrize("driver", ["invoke", "ainvoke"])
@pytest.mark.parametrize(
    ("fault_id", "fault", "kind"), INVOKE_FAULTS, ids=[f[0] for f in INVOKE_FAULTS]
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fault_matrix_invoke_returns_the_fallbacks_answer(
    simulator: Simulator,
    protocol: str,
    fault_id: str,
    fault: Fault,
    kind: FailureKind,
    driver: str,
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    short = MODELS[primary]["provider"] if fault.kind is FaultKind.TIMEOUT else None
    rig = make_rig(simulator, primary, fallback, short_timeout=short)
    rig.script(primary, fault)
    structured = fault_id == "schema-violation"
    rig.script(
        fallback, Reply.json({"answer": "ok", "n": 7}) if structured else Reply.text(FALLBACK_TEXT)
    )

    result = drive(
        rig.router(),
        driver,
        "rewriting",
        "Make this clearer: do the thing.",
        schema=Answer if structured else None,
    )

    assert result.model == fallback
    if structured:
        assert result.value == Answer(answer="ok", n=7)
    else:
        assert result.message.content == FALLBACK_TEXT
        assert result.value is result.message
    failed, answered = result.attempts[:-1], result.attempts[-1]
    assert failed, "the primary's failure must be recorded"
    assert {a.model for a in failed} == {primary}
    assert all(a.failure is kind and a.sent for a in failed), kinds(result)
    assert answered.ok and answered.model == fallback and answered.sent
    assert len(rig.sent(primary)) == len(failed)  # sent once (plus a schema repair, if any)
    assert len(rig.sent(fallback)) == 1
    if fault_id == "429-retry-after" and protocol != "ollama":  # Ollama sends no headers
        assert failed[0].retry_after == pytest.approx(30)


@pytest.mark.parametrize("driver", ["stream", "astream"])
@pytest.mark.parametrize(
    ("fault_id", "fault", "kind"), STREAM_FAULTS, ids=[f[0] for f in STREAM_FAULTS]
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fault_matrix_stream_returns_the_fallbacks_answer(
    simulator: Simulator,
    protocol: str,
    fault_id: str,
    fault: Fault,
    kind: FailureKind,
    driver: str,
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    short = MODELS[primary]["provider"] if fault.kind is FaultKind.TIMEOUT else None
    rig = make_rig(simulator, primary, fallback, short_timeout=short)
    rig.script(primary, fault)
    rig.script(fallback, Reply.text(FALLBACK_TEXT))

    events = collect(rig.router(), driver, "rewriting", "Make this clearer: do the thing.")

    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.result.model == fallback
    assert end.result.message.content == FALLBACK_TEXT
    assert kinds(end.result) == [(primary, kind.value), (fallback, None)]
    after_restart = events[
        next((i + 1 for i, e in enumerate(events) if isinstance(e, StreamRestart)), 0) : -1
    ]
    assert all(isinstance(e, StreamChunk) and e.spec.key == fallback for e in after_restart)
    assert "".join(str(e.chunk.content) for e in after_restart) == FALLBACK_TEXT  # type: ignore[union-attr]
    assert [r.stream for r in rig.sent(primary)] == [True]
    assert [r.stream for r in rig.sent(fallback)] == [True]


# --------------------------------------------------------------------------- 2. Retry-After


def test_429_retry_after_30_falls_back_fast_and_primary_waits_for_its_window(
    simulator: Simulator, clock: Clock
) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback")
    router = rig.router(limiter=RateLimiter(clock=clock))
    assert router.invoke("rewriting", "warm up").model == "or-free"  # clients built, connected
    router.factory.chat_model(rig.spec("groq-fallback"))
    # Retry-After only: the simulator's synthetic x-ratelimit-* headers would also cap RPM
    rig.script("or-free", Fault.rate_limited(30, headers=False), times=1)
    rig.script("groq-fallback", Reply.text(FALLBACK_TEXT))

    started = time.perf_counter()
    result = router.invoke("rewriting", "Make this clearer.")
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0, f"fallback took {elapsed:.3f} s"
    assert result.model == "groq-fallback"
    assert kinds(result) == [("or-free", "rate_limited"), ("groq-fallback", None)]
    assert result.attempts[0].retry_after == pytest.approx(30)
    assert len(rig.sent("or-free")) == 2  # the warm-up and the 429

    for advance in (0.0, 10.0, 19.9):  # still inside the 30 s the provider asked for
        clock.advance(advance)
        skipped = router.invoke("rewriting", "Make this clearer.")
        assert skipped.model == "groq-fallback"
        first = skipped.attempts[0]
        assert (first.model, first.failure, first.sent) == (
            "or-free",
            FailureKind.RATE_LIMITED,
            False,
        )
        assert first.retry_after is not None and first.retry_after > 0
    assert len(rig.sent("or-free")) == 2, "the primary was called inside its Retry-After window"

    clock.advance(0.5)  # 30.4 s after the 429: the window has reopened
    reopened = router.invoke("rewriting", "Make this clearer.")
    assert reopened.model == "or-free" and kinds(reopened) == [("or-free", None)]
    assert len(rig.sent("or-free")) == 3


# --------------------------------------------------------------------------- 3. no 429 ever

FREE_TRIO = ("or-free", "groq-free", "gemini-free")


def test_limiter_predicts_every_429_under_concurrency(
    simulator: Simulator, sim_clock: Clock
) -> None:
    limits = {key: {"rpm": 3} for key in FREE_TRIO}
    rig = make_rig(simulator, *FREE_TRIO, "ollama-fallback", limits=limits)
    for key in FREE_TRIO:
        simulator.limit(rig.spec(key), rpm=3)  # the provider's real limit, same numbers
    router = rig.router(limiter=RateLimiter(clock=sim_clock))

    for window in range(2):  # the first window, and the next one after a minute
        if window:
            sim_clock.advance(60.0)
        results = run(
            gather(router.ainvoke("rewriting", f"request {i}", max_wait=0.0) for i in range(30))
        )
        assert len(results) == 30
        by_model = Counter(r.model for r in results)
        assert by_model == {"or-free": 3, "groq-free": 3, "gemini-free": 3, "ollama-fallback": 21}
        for result in results:
            assert result.message.content
            if result.model == "ollama-fallback":  # the free trio was skipped, not called
                assert [(a.model, a.failure, a.sent) for a in result.attempts[:-1]] == [
                    (key, FailureKind.RATE_LIMITED, False) for key in FREE_TRIO
                ]

    no_429(simulator)
    assert len(simulator.requests_for(provider="ollama")) == 42
    assert all(len(rig.sent(key)) == 6 for key in FREE_TRIO)


# --------------------------------------------------------------------------- 4. bad output


@pytest.mark.parametrize(
    "fault",
    [Fault.schema_violation(), Fault.empty(), Fault.truncated_stream()],
    ids=["schema-violation", "empty", "truncated"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_structured_output_falls_back_to_a_parsed_answer(
    simulator: Simulator, protocol: str, fault: Fault
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, fault)
    rig.script(fallback, Reply.json({"answer": "from the fallback", "n": 2}))

    result = rig.router().invoke("parameter_extraction", "Extract: n is 2.", schema=Answer)

    assert isinstance(result.value, Answer)
    assert result.value == Answer(answer="from the fallback", n=2)
    assert result.model == fallback
    assert all(a.failure is FailureKind.INVALID_OUTPUT for a in result.attempts[:-1])
    assert result.attempts[-1].ok


@pytest.mark.parametrize("protocol", ["groq", "gemini", "ollama"])
def test_one_repair_request_to_the_same_model_is_allowed(
    simulator: Simulator, protocol: str
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, Fault.schema_violation(), Reply.json({"answer": "repaired", "n": 3}))

    result = rig.router().invoke("parameter_extraction", "Extract: n is 3.", schema=Answer)

    assert result.value == Answer(answer="repaired", n=3)
    assert result.model == primary
    assert [(a.model, a.failure, a.repair) for a in result.attempts] == [
        (primary, FailureKind.INVALID_OUTPUT, False),
        (primary, None, True),
    ]
    assert "schema violation" in result.attempts[0].detail
    repair_request = rig.sent(primary)[1]
    assert "did not match the required JSON schema" in str(repair_request.body)
    assert rig.sent(fallback) == []


@pytest.mark.parametrize("protocol", ["groq", "gemini", "ollama"])
def test_a_failed_repair_moves_on_and_there_is_only_one(
    simulator: Simulator, protocol: str
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, Fault.schema_violation())  # for ever
    rig.script(fallback, Reply.json({"answer": "fb", "n": 1}))

    result = rig.router().invoke("parameter_extraction", "Extract.", schema=Answer)

    assert result.model == fallback
    assert [(a.model, a.repair) for a in result.attempts] == [
        (primary, False),
        (primary, True),
        (fallback, False),
    ]
    assert len(rig.sent(primary)) == 2


def test_a_json_mode_model_is_told_the_schema(simulator: Simulator) -> None:
    """JSON mode guarantees JSON, not keys: the schema goes into the system message."""
    rig = make_rig(simulator, "hf-json")

    result = rig.router().invoke(
        "parameter_extraction",
        [SystemMessage("You extract."), HumanMessage("Extract: n is 2.")],
        schema=Answer,
    )

    assert result.value == Answer(answer="sim", n=0)  # the simulator answers the stated schema
    [request] = rig.sent("hf-json")
    assert request.body["response_format"] == {"type": "json_object"}
    system = request.body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You extract.")
    stated = json.loads(system["content"].split("\n")[-1])
    assert stated["required"] == ["answer", "n"]
    assert len(request.body["messages"]) == 2  # stated in the system turn, not a new one


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_truncated_structured_answer_is_not_repaired(simulator: Simulator, protocol: str) -> None:
    """A repair re-asks for a schema; a model that stopped mid-answer just fails."""
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, Fault.truncated_stream())
    rig.script(fallback, Reply.json({"answer": "fb", "n": 1}))

    result = rig.router().invoke("parameter_extraction", "Extract.", schema=Answer)

    assert kinds(result) == [(primary, "invalid_output"), (fallback, None)]
    assert "truncated" in result.attempts[0].detail
    assert len(rig.sent(primary)) == 1


def test_a_json_schema_dict_one_client_cannot_take_falls_back(simulator: Simulator) -> None:
    """ChatOpenAI/ChatGroq refuse a JSON schema without a title; Gemini accepts it."""
    rig = make_rig(simulator, "or-free", "gemini-fallback")
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    rig.script("gemini-fallback", Reply.json({"answer": "yes"}))

    result = rig.router().invoke("parameter_extraction", "Extract.", schema=schema)

    assert result.model == "gemini-fallback"
    assert result.value == {"answer": "yes"}
    first = result.attempts[0]
    assert (first.model, first.sent) == ("or-free", False)
    assert "title" in first.detail
    assert rig.sent("or-free") == []


# --------------------------------------------------------------------------- 5. auth, breaker


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_disables_the_provider(simulator: Simulator, status: int) -> None:
    rig = make_rig(simulator, "or-free", "or-fallback", "groq-fallback")
    rig.script("or-free", Fault.http_error(status, "invalid api key"))
    rig.script("groq-fallback", Reply.text(FALLBACK_TEXT))
    router = rig.router()

    first = router.invoke("rewriting", "Make this clearer.")
    assert [(a.model, a.failure, a.sent) for a in first.attempts] == [
        ("or-free", FailureKind.AUTH, True),
        ("or-fallback", FailureKind.AUTH, False),  # same provider, same rejected key
        ("groq-fallback", None, True),
    ]

    second = router.invoke("rewriting", "Make this clearer.")
    assert kinds(second) == [("groq-fallback", None)]
    assert len(rig.sent("or-free")) == 1
    assert rig.sent("or-fallback") == []
    assert "openrouter" in router.health.disabled_providers
    assert not {"or-free", "or-fallback"} & router.snapshot().available


def test_circuit_breaker_skips_a_failing_model_for_its_cooldown(
    simulator: Simulator, clock: Clock
) -> None:
    rig = make_rig(simulator, "groq-free", "or-fallback")
    rig.script("groq-free", Fault.server_error(503), times=3)
    rig.script("or-fallback", Reply.text(FALLBACK_TEXT))
    router = rig.router(health=HealthBoard(clock=clock, failure_threshold=3, base_cooldown=5.0))

    for _ in range(3):
        assert kinds(router.invoke("rewriting", "x")) == [
            ("groq-free", "unavailable"),
            ("or-fallback", None),
        ]
    assert "groq-free" in router.snapshot().cooling
    assert "cooling down" in router.snapshot().reasons["groq-free"]

    for _ in range(3):
        assert kinds(router.invoke("rewriting", "x")) == [("or-fallback", None)]
        clock.advance(1.0)
    assert len(rig.sent("groq-free")) == 3, "a cooling model was called"

    clock.advance(2.0)  # 5 s cooldown over: one probe goes through and closes the circuit
    assert "groq-free" not in router.snapshot().cooling
    assert kinds(router.invoke("rewriting", "x")) == [("groq-free", None)]
    assert router.health.state("groq-free") == "closed"
    assert len(rig.sent("groq-free")) == 4


# --------------------------------------------------------------------------- 6. 400s


def test_bad_request_stops_the_route(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback")
    rig.script("or-free", Fault.http_error(400, "'messages' must contain at least one message"))

    with pytest.raises(NoModelAvailable) as caught:
        rig.router().invoke("rewriting", "x")

    assert [(a.model, a.failure) for a in caught.value.attempts] == [
        ("or-free", FailureKind.BAD_REQUEST)
    ]
    assert "malformed" in str(caught.value) and "bad_request" in str(caught.value)
    assert rig.sent("groq-fallback") == []


def test_capability_mismatch_moves_on(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback")
    rig.script("or-free", Fault.http_error(400, "This model does not support tools"))
    rig.script("groq-fallback", Reply.text(FALLBACK_TEXT))

    result = rig.router().invoke("rewriting", "x")

    assert kinds(result) == [("or-free", "bad_request"), ("groq-fallback", None)]


def test_context_overflow_skips_to_a_larger_window(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-small", "groq-small", "gemini-large")
    rig.script(
        "or-small",
        Fault.http_error(
            400,
            "This model's maximum context length is 8192 tokens. "
            "However, your messages resulted in 9000 tokens.",
        ),
    )
    rig.script("gemini-large", Reply.text("long answer"))

    result = rig.router().invoke("rewriting", "a long prompt")

    assert result.model == "gemini-large"
    assert [(a.model, a.failure, a.sent) for a in result.attempts] == [
        ("or-small", FailureKind.CONTEXT_OVERFLOW, True),
        ("groq-small", FailureKind.CONTEXT_OVERFLOW, False),  # same window: not even sent
        ("gemini-large", None, True),
    ]
    assert rig.sent("groq-small") == []


# --------------------------------------------------------------------------- 7. NoModelAvailable


def test_no_model_available_lists_every_attempt_without_keys(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = {
        "OPENROUTER_API_KEY": "sk-or-v1-CANARY0123456789abcdefCANARY",
        "GROQ_API_KEY": "gsk_CANARY0123456789abcdefghijCANARY",
        "GEMINI_API_KEY": "AIzaCANARY0123456789abcdefghijklmnoCAN",
    }
    for name, value in canary.items():
        monkeypatch.setenv(name, value)
    credentials = Credentials(_env_file=None)  # the canaries, read from the environment
    rig = make_rig(
        simulator,
        "or-free",
        "groq-free",
        "gemini-free",
        "ollama-local",
        "or-paid",
        credentials=credentials,
    )
    rig.script(
        "or-free",
        Fault.http_error(401, f"Incorrect API key provided: {canary['OPENROUTER_API_KEY']}"),
    )
    rig.script("groq-free", Fault.rate_limited(2, headers=False))
    rig.script("gemini-free", Fault.http_error(500, f"key={canary['GEMINI_API_KEY']} broke us"))
    rig.script("ollama-local", Fault.empty())

    with pytest.raises(NoModelAvailable) as caught:
        rig.router(policy=FREE_UP_TO_PAID).invoke("rewriting", "x")

    error = caught.value
    text = str(error)
    assert [(a.model, a.failure, a.sent) for a in error.attempts] == [
        ("or-free", FailureKind.AUTH, True),
        ("groq-free", FailureKind.RATE_LIMITED, True),
        ("gemini-free", FailureKind.UNAVAILABLE, True),
        ("ollama-local", FailureKind.INVALID_OUTPUT, True),
        ("or-paid", FailureKind.AUTH, False),  # its provider rejected the key: not sent
        ("gemini-free", FailureKind.UNAVAILABLE, True),  # the last 5xx, retried once
    ]
    assert rig.sent("or-paid") == []
    assert "every candidate failed" in text
    for attempt in error.attempts:
        assert attempt.describe() in text
        assert attempt.failure is not None and attempt.failure.value in attempt.describe()
    for value in canary.values():
        assert value not in text
        assert all(value not in a.detail for a in error.attempts)
        assert value not in repr(error.attempts)


def test_no_model_available_never_shows_the_configured_keys(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-free", "groq-free")
    rig.script("or-free", Fault.http_error(500, "upstream rejected key sim-openrouter"))
    rig.script("groq-free", Fault.http_error(503, "overloaded (key sim-groq)"))

    with pytest.raises(NoModelAvailable) as caught:
        rig.router().invoke("rewriting", "x")

    assert "sim-openrouter" not in str(caught.value)
    assert "sim-groq" not in str(caught.value)
    # each 5xx is retried once (jittered), the most recent first, before giving up
    assert [a.model for a in caught.value.attempts] == [
        "or-free", "groq-free", "groq-free", "or-free",
    ]


def test_no_candidate_at_all_says_so(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-paid")
    with pytest.raises(NoModelAvailable, match="no candidate is both allowed"):
        rig.router(policy=Policy()).invoke("rewriting", "x")  # free_first never pays by default
    assert simulator.requests == []


# --------------------------------------------------------------------------- 8. streaming


@pytest.mark.parametrize("driver", ["stream", "astream"])
@pytest.mark.parametrize(
    "fault",
    [Fault.server_error(503), Fault.rate_limited(5), Fault.drop()],
    ids=["503", "429", "drop"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_failure_before_the_first_token_is_invisible(
    simulator: Simulator, protocol: str, fault: Fault, driver: str
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, fault)
    rig.script(fallback, Reply.text(FALLBACK_TEXT))

    events = collect(rig.router(), driver, "rewriting", "x")

    assert not any(isinstance(e, StreamRestart) for e in events)
    chunks = [e for e in events[:-1] if isinstance(e, StreamChunk)]
    assert len(chunks) == len(events) - 1
    assert {c.spec.key for c in chunks} == {fallback}
    assert "".join(str(c.chunk.content) for c in chunks) == FALLBACK_TEXT
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.result.message.content == FALLBACK_TEXT


@pytest.mark.parametrize("driver", ["stream", "astream"])
@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.midstream_error(), FailureKind.UNAVAILABLE),
        (Fault.truncated_stream(), FailureKind.INVALID_OUTPUT),
    ],
    ids=["midstream-error", "truncated"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_failure_after_tokens_signals_a_restart(
    simulator: Simulator, protocol: str, fault: Fault, kind: FailureKind, driver: str
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, fault)
    rig.script(fallback, Reply.text(FALLBACK_TEXT))

    events = collect(rig.router(), driver, "rewriting", "x")

    restarts = [i for i, e in enumerate(events) if isinstance(e, StreamRestart)]
    assert len(restarts) == 1
    cut = restarts[0]
    before, restart, after, end = events[:cut], events[cut], events[cut + 1 : -1], events[-1]
    assert isinstance(restart, StreamRestart) and isinstance(end, StreamEnd)
    assert all(isinstance(e, StreamChunk) and e.spec.key == primary for e in before)
    shown = "".join(str(e.chunk.content) for e in before)  # type: ignore[union-attr]
    assert shown and restart.discarded == shown
    assert f"simulated answer from {rig.spec(primary).model}".startswith(shown)
    assert (restart.failed.model, restart.failed.failure) == (primary, kind)
    assert all(isinstance(e, StreamChunk) and e.spec.key == fallback for e in after)
    assert "".join(str(e.chunk.content) for e in after) == FALLBACK_TEXT  # type: ignore[union-attr]
    assert end.result.message.content == FALLBACK_TEXT  # never glued to the discarded text
    assert kinds(end.result) == [(primary, kind.value), (fallback, None)]


@pytest.mark.parametrize("driver", ["stream", "astream"])
@pytest.mark.parametrize(
    "fault",
    [Fault.truncated_stream(), Fault.midstream_error()],
    ids=["truncated", "midstream-error"],
)
@pytest.mark.parametrize("protocol", ["openai", "groq", "gemini"])
def test_a_consumer_never_joins_two_models_tool_calls(
    simulator: Simulator, protocol: str, fault: Fault, driver: str
) -> None:
    """What a consumer assembles (restarting at each StreamRestart) is the routed answer."""
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, fault)
    rig.script(fallback, Reply.tool_call("get_weather", {"city": "Oslo"}))

    events = collect(
        rig.router(),
        driver,
        "tool_use_formatting",
        "Weather in Oslo?",
        tools=[get_weather],
        tool_choice="any",
    )

    assembled: Any = None
    shown_by_primary = False
    for event in events:
        if isinstance(event, StreamRestart):
            assert shown_by_primary, "a restart must follow something shown"
            assembled = None
        elif isinstance(event, StreamChunk):
            shown_by_primary |= event.spec.key == primary
            assembled = event.chunk if assembled is None else assembled + event.chunk
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.result.model == fallback
    assert [(c["name"], c["args"]) for c in assembled.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert end.result.message.tool_calls == assembled.tool_calls
    restarted = any(isinstance(e, StreamRestart) for e in events)
    assert restarted == shown_by_primary  # tool-call chunks shown count, not just text


def test_chunks_without_content_before_a_failure_are_not_shown(simulator: Simulator) -> None:
    """OpenAI streams open with an empty role chunk; a failure right after it is invisible."""
    rig = make_rig(simulator, "or-free", "groq-fallback")
    rig.script("or-free", Fault.malformed_chunk())  # role chunk, then a broken frame
    rig.script("groq-fallback", Reply.text(FALLBACK_TEXT))

    events = list(rig.router().stream("rewriting", "x"))

    assert {e.spec.key for e in events if isinstance(e, StreamChunk)} == {"groq-fallback"}
    assert not any(isinstance(e, StreamRestart) for e in events)
    assert rig.sent("or-free")[0].outcome == "malformed_chunk"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streamed_answers_keep_finish_reason_and_usage(simulator: Simulator, protocol: str) -> None:
    rig = make_rig(simulator, PRIMARY[protocol])
    rig.script(PRIMARY[protocol], Reply.text("one two three four five", usage=(11, 5)))

    events = list(rig.router().stream("rewriting", "x"))

    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.result.message.content == "one two three four five"
    assert (end.result.input_tokens, end.result.output_tokens) == (11, 5)
    assert end.result.attempts[0].time_to_first_token is not None


# --------------------------------------------------------------------------- 9. sync / async


@pytest.mark.parametrize("driver", ["invoke", "ainvoke"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_happy_path_answers_with_provenance(
    simulator: Simulator, protocol: str, driver: str
) -> None:
    rig = make_rig(simulator, PRIMARY[protocol], "or-paid")
    rig.script(PRIMARY[protocol], Reply.text("a clear answer", usage=(20, 4)))

    result = drive(rig.router(), driver, "rewriting", "Make this clearer.")

    assert (result.model, result.message.content, result.fallbacks) == (
        PRIMARY[protocol],
        "a clear answer",
        0,
    )
    assert (result.input_tokens, result.output_tokens) == (20, 4)
    assert result.provenance()["attempts"] == [result.attempts[0].describe()]
    record = rig.sent(PRIMARY[protocol])
    assert len(record) == 1 and "Make this clearer." in str(record[0].body)


def test_two_hundred_concurrent_ainvokes_are_all_answered(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback")
    rig.script("or-free", Fault.server_error(503), fraction=0.2, seed=7)
    router = rig.router(health=HealthBoard(failure_threshold=1000))

    results = run(gather(router.ainvoke("rewriting", f"request {i}") for i in range(200)))

    assert len(results) == 200
    assert all(r.message.content for r in results)
    sent = Counter(a.model for r in results for a in r.attempts if a.sent)
    for result in results:
        assert result.attempts[-1].ok and result.attempts[-1].model == result.model
        assert all(a.failure is FailureKind.UNAVAILABLE for a in result.attempts[:-1])
        assert len(result.attempts) <= 2
    assert sent["or-free"] == len(rig.sent("or-free")) == 200  # each primary call exactly once
    failed = len(rig.sent("or-free")) - sum(r.model == "or-free" for r in results)
    assert failed == len(rig.sent("groq-fallback")) == sent["groq-fallback"]
    assert 0 < failed < 200
    assert len(simulator.requests) == 200 + failed  # nothing lost, nothing sent twice


def test_cancellation_is_not_swallowed(simulator: Simulator) -> None:
    """``CancelledError`` is a BaseException: the drivers' ``except Exception`` let it by."""
    rig = make_rig(simulator, "or-free", "groq-fallback")
    rig.script("or-free", Reply.text("too late"), first_byte=3.0)
    router = rig.router()

    async def until_sent(count: int) -> None:
        for _ in range(500):
            if len(rig.sent("or-free")) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the request never reached the simulator")

    async def cancel_midway(awaitable: Any, count: int) -> None:
        task = asyncio.ensure_future(awaitable)
        await until_sent(count)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_midway(router.ainvoke("rewriting", "x"), 1))
    assert rig.sent("groq-fallback") == [], "a cancelled call must not fall back"
    run(cancel_midway(anext(router.astream("rewriting", "x")), 2))
    assert rig.sent("groq-fallback") == []


def test_closing_a_stream_early_sends_nothing_more(simulator: Simulator) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback")
    stream = rig.router().stream("rewriting", "x")
    first = next(stream)
    assert isinstance(first, StreamChunk)
    stream.close()
    assert len(simulator.requests) == 1


# --------------------------------------------------------------------------- 10. max_wait


@pytest.mark.parametrize("driver", ["invoke", "ainvoke"])
def test_max_wait_waits_for_a_permit_that_frees_in_time(simulator: Simulator, driver: str) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback", limits={"or-free": {"rpm": 1}})
    router = rig.router(limiter=RateLimiter(time_scale=0.5 / 60))  # a "minute" is 0.5 s
    assert drive(router, driver, "rewriting", "first").model == "or-free"
    assert router.limiter.wait_time("or-free") > 0  # no permit now: it must be waited for

    result = drive(router, driver, "rewriting", "second", max_wait=5.0)

    assert kinds(result) == [("or-free", None)]
    assert len(rig.sent("or-free")) == 2
    assert rig.sent("groq-fallback") == []


@pytest.mark.parametrize("driver", ["invoke", "ainvoke"])
def test_max_wait_skips_a_permit_that_frees_too_late(
    simulator: Simulator, clock: Clock, driver: str
) -> None:
    rig = make_rig(simulator, "or-free", "groq-fallback", limits={"or-free": {"rpm": 1}})
    router = rig.router(limiter=RateLimiter(clock=clock))
    assert drive(router, driver, "rewriting", "first").model == "or-free"
    clock.advance(30.0)  # the next permit frees in 30 s

    started = time.monotonic()
    result = drive(router, driver, "rewriting", "second", max_wait=5.0)

    assert time.monotonic() - started < 5.0  # skipped at once, not waited for
    assert result.model == "groq-fallback"
    first = result.attempts[0]
    assert (first.model, first.failure, first.sent) == ("or-free", FailureKind.RATE_LIMITED, False)
    assert first.retry_after == pytest.approx(30.0)
    assert "rpm" in first.detail
    assert len(rig.sent("or-free")) == 1


# --------------------------------------------------------------------------- 11. tools


@pytest.mark.parametrize("driver", ["invoke", "ainvoke"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tool_calls_are_forced_validated_and_skip_toolless_models(
    simulator: Simulator, protocol: str, driver: str
) -> None:
    primary = PRIMARY[protocol]
    rig = make_rig(simulator, "or-notools", primary)
    if protocol == "ollama":  # ChatOllama ignores tool_choice; the model decides to call
        rig.script(primary, Reply.tool_call("get_weather", {"city": "Paris"}))
    else:
        rig.script(primary, Reply.json({"city": "Paris"}), when=lambda r: r.forced_tool is not None)

    result = drive(
        rig.router(),
        driver,
        "tool_use_formatting",
        "Weather in Paris?",
        tools=[get_weather],
        tool_choice="any",
    )

    assert result.model == primary
    assert isinstance(result.value, AIMessage)
    [call] = result.value.tool_calls
    assert call["name"] == "get_weather"
    assert get_weather.args_schema.model_validate(call["args"]).city == "Paris"  # type: ignore[union-attr]
    assert "or-notools" not in {a.model for a in result.attempts}
    assert rig.sent("or-notools") == []


@pytest.mark.parametrize(
    "bad",
    [Fault.schema_violation(), Reply.tool_call("launch_rockets", {"count": 3})],
    ids=["args-violate-the-schema", "unknown-tool"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_invalid_tool_call_falls_back(
    simulator: Simulator, protocol: str, bad: Reply | Fault
) -> None:
    primary, fallback = PRIMARY[protocol], FALLBACK[protocol]
    rig = make_rig(simulator, primary, fallback)
    rig.script(primary, bad)
    rig.script(fallback, Reply.tool_call("get_weather", {"city": "Oslo"}))

    result = rig.router().invoke(
        "tool_use_formatting", "Weather in Oslo?", tools=[get_weather], tool_choice="any"
    )

    assert kinds(result) == [(primary, "invalid_output"), (fallback, None)]
    assert result.value.tool_calls[0]["args"] == {"city": "Oslo"}


def test_provider_built_in_tools_are_not_checked_against_function_schemas(
    simulator: Simulator,
) -> None:
    rig = make_rig(simulator, "or-free")
    rig.script("or-free", Reply.tool_call("web_search", {"query": "tierwise"}))
    built_in = {"type": "web_search_preview"}  # no function schema to check calls against

    result = rig.router().invoke("tool_use_formatting", "Search.", tools=[get_weather, built_in])

    assert result.model == "or-free"
    assert result.value.tool_calls[0]["name"] == "web_search"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"city": "Rome", "days": 3, "units": "metric", "tags": ["a"]}, ""),
        ({"city": "Rome", "days": 3.0}, ""),  # clients that make every number a float
        ({}, "lack required 'city'"),
        ({"city": 7}, "city should be string"),
        ({"city": "Rome", "days": 2.5}, "days should be integer"),
        ({"city": "Rome", "days": True}, "days should be integer"),
        ({"city": "Rome", "units": "kelvin"}, "units should be one of"),
        ({"city": "Rome", "tags": ["a", 1]}, "tags[1] should be string"),
        ({"city": "Rome", "mood": "happy"}, "unexpected 'mood'"),
        (["Rome"], "arguments should be object"),
    ],
)
def test_tool_call_arguments_are_checked_against_the_tool_schema(args: Any, problem: str) -> None:
    from tierwise.routing.answers import json_problem as _json_problem

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "units": {"type": "string", "enum": ["metric", "imperial"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    found = _json_problem(args, schema, "")
    assert (problem in found) if problem else found == ""


def test_a_required_tool_call_that_is_not_made_falls_back(simulator: Simulator) -> None:
    rig = make_rig(simulator, "ollama-local", "or-paid")
    rig.script("ollama-local", Reply.text("I would rather chat"))

    result = rig.router().invoke(
        "tool_use_formatting", "Weather?", tools=[get_weather], tool_choice="any"
    )

    assert kinds(result) == [("ollama-local", "invalid_output"), ("or-paid", None)]
    assert "tool call was required" in result.attempts[0].detail


# --------------------------------------------------------------------------- 12. min_tier


def test_min_tier_filters_lower_tiers(simulator: Simulator) -> None:
    rig = make_rig(simulator, "ollama-local", "groq-free", "or-paid")
    rig.script("groq-free", Fault.server_error(500))
    rig.script("or-paid", Reply.text("paid answer", usage=(1000, 500)))
    router = rig.router(policy=FREE_UP_TO_PAID)

    assert router.invoke("rewriting", "x").model == "ollama-local"  # free fails, local answers

    escalated = router.invoke("rewriting", "x", min_tier="free")
    assert kinds(escalated) == [("groq-free", "unavailable"), ("or-paid", None)]
    assert escalated.cost == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)

    paid_only = router.invoke("rewriting", "x", min_tier="paid")
    assert kinds(paid_only) == [("or-paid", None)]
    assert len(rig.sent("ollama-local")) == 1


# --------------------------------------------------------------------------- finish reasons


@pytest.mark.parametrize(
    ("metadata", "extra", "problem"),
    [
        ({"finish_reason": "stop"}, {}, None),  # OpenAI, OpenRouter, Groq
        ({"finish_reason": "tool_calls"}, {}, None),
        ({"finish_reason": "STOP"}, {}, None),  # Gemini
        ({"done": True, "done_reason": "stop"}, {}, None),  # Ollama
        ({"done": True}, {}, None),  # an older Ollama without done_reason
        ({}, {}, "truncated"),
        ({"done": False}, {}, "truncated"),
        ({"model_name": "x"}, {}, "truncated"),
        ({"finish_reason": "content_filter"}, {}, "withheld"),
        ({"finish_reason": "SAFETY"}, {}, "withheld"),
        ({"finish_reason": "RECITATION"}, {}, "withheld"),
        ({"finish_reason": "stop"}, {"refusal": "I can't help with that."}, "refused"),
    ],
)
def test_check_finished_reads_every_providers_finish_reason(
    metadata: dict[str, Any], extra: dict[str, Any], problem: str | None
) -> None:
    from tierwise.providers.failures import InvalidOutput
    from tierwise.routing.answers import check_finished as _check_finished

    message = AIMessage("an answer", response_metadata=metadata, additional_kwargs=extra)
    if problem is None:
        _check_finished(message)
    else:
        with pytest.raises(InvalidOutput, match=problem):
            _check_finished(message)


# --------------------------------------------------------------------------- permits


def test_permits_are_settled_with_real_usage_and_given_back_when_unsent(
    simulator: Simulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(
        simulator, "or-free", "groq-fallback", limits={"or-free": {"rpm": 10, "tpm": 100_000}}
    )
    rig.script("or-free", Reply.text("ok", usage=(30, 12)))
    limiter = RateLimiter(clock=clock)
    router = rig.router(limiter=limiter)

    router.invoke("rewriting", "x", max_tokens=4000)

    usage = limiter.usage("or-free")
    assert (usage.requests_minute, usage.tokens_minute) == (1, 42)  # estimate corrected

    # A recovery probe taken by another caller between selection and the call: the
    # router holds a permit by then, and must give it back unused.
    health = HealthBoard(clock=clock)
    monkeypatch.setattr(health, "allow", lambda key: key != "or-free")
    rig.script("groq-fallback", Reply.text(FALLBACK_TEXT))
    result = rig.router(limiter=limiter, health=health).invoke("rewriting", "x")
    assert result.model == "groq-fallback"
    first = result.attempts[0]
    assert (first.model, first.failure, first.sent) == ("or-free", FailureKind.UNAVAILABLE, False)
    assert limiter.usage("or-free").requests_minute == 1  # the permit taken was given back
    assert len(rig.sent("or-free")) == 1
