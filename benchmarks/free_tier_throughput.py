"""4. Throughput under free-tier limits: use every free request, earn no 429, pay least.

Three free models with RPM and RPD limits that the simulator enforces (sliding windows,
exact ``Retry-After``), time-scaled so that a minute lasts one second; a paid model with
no limit as the last resort. An open-loop stream of requests arrives faster than the three
free models' combined RPM for long enough that their daily quotas run out, so the best a
router can do is: every free request the quotas allow, no 429, the rest on the paid model.

Contenders, each on its own copies of the models (fresh windows), same arrival schedule:

* tierwise ``ModelRouter``: a catalog with the same limits as the simulator (free tier
  first, paid allowed), ``RateLimiter(time_scale=...)`` for the scaled minute,
  ``ledger=None``, ``max_wait=0`` (never queue: skip to the next candidate);
* LiteLLM ``Router``: one model group of the three free deployments with ``rpm`` set on
  each, ``routing_strategy="usage-based-routing-v2"`` (its RPM-aware strategy), the paid
  model's group as fallback; its clock (minute counters) and ``cooldown_time`` are scaled
  like the simulator's, everything else is default. LiteLLM has no per-deployment RPD;
* LangChain: each free ``ChatOpenAI`` with an ``InMemoryRateLimiter`` at its RPM, chained
  ``free_a.with_fallbacks([free_b, free_c, paid])``; SDK retries off (``max_retries=0``) so a
  429 falls back at once, the kindest setting for this contender. The limiter blocks until
  its next token instead of spilling over, so requests queue; each run is capped.

Counted from the simulator's request log: answers per model, 429s (all, and after the
first minute), and from the clients: requests answered within the cap, wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from benchmarks._common import Options, litellm_deployment
from benchmarks._offline import have_litellm, offline_litellm
from benchmarks._report import Bar, Panel, Row, Section
from benchmarks._stats import Spread
from benchmarks.router_overhead import KEY, MESSAGES, OPERATION, bench_settings, simulator
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, TaskType
from tierwise.guards.limits import RateLimiter
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot

NAME = "throughput"
TITLE = "4. throughput under free-tier limits"
PROMPT = [{"role": "user", "content": str(MESSAGES[0].content)}]
PEERS = ("tierwise", "langchain", "litellm")


@dataclass(frozen=True)
class Workload:
    """The limits, the time scale and the arrival schedule."""

    minute: float  # real seconds one simulated minute lasts
    minutes: int  # how long requests keep arriving, in simulated minutes
    per_minute: int  # arrivals per simulated minute
    free: tuple[tuple[str, int, int], ...]  # (name, rpm, rpd)
    cap: float  # seconds a contender gets to answer the whole burst

    @property
    def scale(self) -> float:
        return self.minute / 60.0

    @property
    def requests(self) -> int:
        return self.minutes * self.per_minute

    @property
    def free_capacity(self) -> int:
        """Free requests the limits allow while requests arrive (RPD binds before then)."""
        return sum(min(rpd, rpm * self.minutes) for _, rpm, rpd in self.free)

    def models(self, peer: str, run: int | str) -> tuple[list[tuple[str, int, int]], str]:
        prefix = f"{peer}-{run}"
        return [(f"{prefix}-{name}", rpm, rpd) for name, rpm, rpd in self.free], f"{prefix}-paid"


FULL = Workload(minute=1.0, minutes=6, per_minute=30,
                free=(("free-a", 8, 24), ("free-b", 6, 18), ("free-c", 4, 12)), cap=30.0)
QUICK = Workload(minute=1.0, minutes=3, per_minute=20,
                 free=(("free-a", 6, 9), ("free-b", 4, 6), ("free-c", 2, 3)), cap=8.0)


@dataclass(frozen=True)
class Outcome:
    """One contender's run."""

    answered: int
    failed: int
    rejected: int  # 429s from the simulator
    rejected_late: int  # ... after the first minute
    free_answers: int
    paid_answers: int
    wall: float  # seconds from the first arrival to the last answer
    p50: float
    p95: float


# ---------------------------------------------------------------------- contenders

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Contender:
    """``call`` answers one request; ``prepare`` runs in the burst's event loop first."""

    call: Call
    prepare: Callable[[], None] | None = None


def tierwise_call(
    url: str, free: list[tuple[str, int, int]], paid: str, w: Workload
) -> Contender:
    models: dict[str, dict[str, Any]] = {
        name: {"provider": "openai", "model": name, "tier": "free", "context_window": 128_000,
               "limits": {"rpm": rpm, "rpd": rpd}}
        for name, rpm, rpd in free
    }
    models[paid] = {"provider": "openai", "model": paid, "tier": "paid",
                    "context_window": 128_000,
                    "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    chain = {"free": [name for name, _, _ in free], "paid": [paid]}
    catalog = Catalog.from_mapping({"models": models,
                                    "chains": {op.value: chain for op in TaskType}})
    router = ModelRouter(
        bench_settings(url, catalog, timeout=5.0),
        policy=Policy(mode="free_first", max_tier="paid"),
        snapshot=Snapshot.everything(catalog),
        limiter=RateLimiter(time_scale=w.scale),
        ledger=None,
    )
    def prepare() -> None:
        """Build each model's client for this event loop now, as a long-lived app has them.

        Otherwise the first call per model builds it (an SSL context: tens of ms) after
        taking its rate-limit permit, so the permit is stamped well before the provider
        sees the request (see the notes).
        """
        for spec in catalog:
            router.factory.chat_model(spec)

    async def call() -> object:
        return await router.ainvoke(OPERATION, MESSAGES, max_wait=0.0)

    return Contender(call, prepare)


def langchain_call(
    url: str, free: list[tuple[str, int, int]], paid: str, w: Workload
) -> Contender:
    from langchain_core.rate_limiters import InMemoryRateLimiter
    from langchain_openai import ChatOpenAI

    def client(model: str, rpm: int | None = None) -> ChatOpenAI:
        limiter = (InMemoryRateLimiter(requests_per_second=rpm / w.minute)
                   if rpm is not None else None)
        return ChatOpenAI(model=model, base_url=url + "/v1", api_key=KEY, max_retries=0,
                          rate_limiter=limiter)

    clients = [client(name, rpm) for name, rpm, _ in free]
    chain = clients[0].with_fallbacks([*clients[1:], client(paid)])

    async def call() -> object:
        return await chain.ainvoke(MESSAGES)

    return Contender(call)


class ScaledClock:
    """LiteLLM's UTC clock, running ``1 / scale`` times faster from ``start()`` on.

    Its RPM counters are keyed by the current UTC minute (``%H-%M``) read through
    ``litellm.utils.get_utc_datetime``; every module that imported that function gets this
    one while the clock is installed, so LiteLLM's minute lasts as long as the simulator's.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.base = datetime(2030, 1, 1, tzinfo=UTC)  # starts on a minute boundary
        self.origin = time.monotonic()

    def start(self, at: float | None = None) -> None:
        """Minute 0 begins now, or at wall-clock time ``at`` (processes sharing one clock)."""
        self.origin = time.monotonic() - (0.0 if at is None else time.time() - at)

    def now(self) -> datetime:
        return self.base + timedelta(seconds=(time.monotonic() - self.origin) / self.scale)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import litellm.utils

        original = litellm.utils.get_utc_datetime
        modules = [m for m in list(sys.modules.values())
                   if m is not None and vars(m).get("get_utc_datetime") is original]
        for module in modules:
            module.get_utc_datetime = self.now  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module in modules:
                module.get_utc_datetime = original  # type: ignore[attr-defined]


def litellm_router(
    url: str, free: list[tuple[str, int, int]], paid: str, scale: float, **settings: Any
) -> Any:
    """LiteLLM's RPM-aware Router over ``free`` (name, rpm, rpd), ``paid`` as the fallback.

    ``settings``: more ``Router`` arguments (the scale benchmark's Redis settings).
    """
    offline_litellm()
    from litellm import Router

    router = Router(
        model_list=[litellm_deployment("free", name, url, rpm=rpm) for name, rpm, _ in free]
        + [litellm_deployment("paid", paid, url)],
        fallbacks=[{"free": ["paid"]}],
        routing_strategy="usage-based-routing-v2",
        cooldown_time=5.0 * scale,  # its 5 s default, in simulated time
        **settings,
    )
    router.get_available_deployment("free")  # load the strategy's modules before the clock
    return router


# ---------------------------------------------------------------------- one run


async def burst(call: Call, w: Workload) -> tuple[list[float | None], float]:
    """Start request ``i`` at ``i / rate``; each answer's latency (None: failed/unfinished)."""
    loop = asyncio.get_running_loop()
    rate = w.per_minute / w.minute
    latencies: list[float | None] = [None] * w.requests
    finished: list[float] = []
    start = loop.time()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        began = loop.time()
        try:
            await call()
        except Exception:  # noqa: BLE001 - counted as not answered
            return
        latencies[i] = loop.time() - began
        finished.append(loop.time())

    tasks = [asyncio.create_task(one(i)) for i in range(w.requests)]
    _, pending = await asyncio.wait(tasks, timeout=w.cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return latencies, (max(finished) - start if finished else w.cap)


def measure(url: str, peer: str, run: int | str, w: Workload) -> Outcome:
    free, paid = w.models(peer, run)
    clock: ScaledClock | None = None
    if peer == "tierwise":
        contender = tierwise_call(url, free, paid, w)
    elif peer == "langchain":
        contender = langchain_call(url, free, paid, w)
    else:
        router = litellm_router(url, free, paid, w.scale)
        clock = ScaledClock(w.scale)

        async def completion() -> object:
            return await router.acompletion(model="free", messages=PROMPT)

        contender = Contender(completion)

    async def go() -> tuple[list[float | None], float]:
        if contender.prepare is not None:
            contender.prepare()
        if clock is None:
            return await burst(contender.call, w)
        with clock.installed():
            clock.start()
            return await burst(contender.call, w)

    latencies, wall = asyncio.run(go())
    records = httpx.get(url + "/_sim/requests", timeout=30).json()
    names = {name for name, _, _ in free}
    mine = [r for r in records if r["model"] in names or r["model"] == paid]
    first = min((r["time"] for r in mine), default=0.0)
    limited = [r for r in mine if str(r["outcome"]).startswith("limit:")]
    done = sorted(x for x in latencies if x is not None)
    return Outcome(
        answered=len(done),
        failed=w.requests - len(done),
        rejected=len(limited),
        rejected_late=sum(1 for r in limited if r["time"] - first >= w.minute),
        free_answers=sum(1 for r in mine if r["model"] in names and r["outcome"] == "ok"),
        paid_answers=sum(1 for r in mine if r["model"] == paid and r["outcome"] == "ok"),
        wall=wall,
        p50=statistics.median(done) if done else float("nan"),
        p95=done[int(0.95 * (len(done) - 1))] if done else float("nan"),
    )


def scenario(w: Workload, runs: int, peers: tuple[str, ...]) -> dict[str, Any]:
    limits = [
        {"model": name, "rpm": rpm, "rpd": rpd, "window_scale": w.scale}
        for peer in peers for run in range(runs) for name, rpm, rpd in w.models(peer, run)[0]
    ]
    return {"limit": limits}


# ---------------------------------------------------------------------- report


def run(options: Options) -> Section:
    section = Section(NAME, TITLE)
    w = QUICK if options.quick else FULL
    runs = options.pick(3, 1)
    peers = tuple(p for p in PEERS if p != "litellm" or have_litellm())
    outcomes: dict[str, list[Outcome]] = {p: [] for p in peers}
    with simulator(scenario(w, runs, peers), in_process=False) as url:
        warm = replace(w, minutes=1, per_minute=10, cap=10.0)
        for peer in peers:  # imports and first-call paths; these models have no limits
            measure(url, peer, "warm", warm)
        for run in range(runs):
            for i in range(len(peers)):  # the first contender rotates per run
                peer = peers[(run + i) % len(peers)]
                outcomes[peer].append(measure(url, peer, run, w))

    def spread(peer: str, field: str, scale: float = 1.0) -> Spread:
        return Spread.of((getattr(o, field) for o in outcomes[peer]), scale)

    def cells(render: Callable[[str], str]) -> dict[str, str]:
        got = {p: render(p) for p in peers}
        return {"tierwise": got["tierwise"], "langchain": got["langchain"],
                "litellm": got.get("litellm", "not installed")}

    def count(peer: str, field: str) -> str:
        return spread(peer, field).cell(0)

    def share(peer: str, field: str, of: int) -> Spread:
        return Spread.of(100.0 * getattr(o, field) / of for o in outcomes[peer])

    capacity = w.free_capacity
    floor = w.requests - capacity  # every free request used, the rest paid
    tw = {f: spread("tierwise", f).median
          for f in ("rejected_late", "free_answers", "paid_answers", "answered")}
    used = share("tierwise", "free_answers", capacity).median

    def paid(peer: str) -> str:
        text = f"{count(peer, 'paid_answers')} (floor {floor})"
        unanswered = spread(peer, "failed").median
        if unanswered:
            text += f"; {unanswered:.0f} requests still unanswered at the cap"
        return text

    section.rows += [
        Row(f"{w.requests} requests in a burst ({w.per_minute}/min for {w.minutes} min; "
            f"free RPM {'+'.join(str(r) for _, r, _ in w.free)}, RPD "
            f"{'+'.join(str(d) for _, _, d in w.free)}): answered within {w.cap:g} s",
            **cells(lambda p: f"{count(p, 'answered')} / {w.requests}; wall "
                              f"{spread(p, 'wall').cell(1)} s; latency p50 "
                              f"{spread(p, 'p50', 1e3).cell(0)} ms, p95 "
                              f"{spread(p, 'p95', 1e3).cell(0)} ms")),
        Row("429s received from providers: total; after the first minute",
            **cells(lambda p: f"{count(p, 'rejected')}; {count(p, 'rejected_late')}"),
            target="tierwise 0 after the first minute", met=tw["rejected_late"] == 0,
            why="" if tw["rejected_late"] == 0 else "window-edge jitter, see notes"),
        Row(f"free capacity used (of {capacity} free requests)",
            **cells(lambda p: f"{count(p, 'free_answers')} = "
                              f"{share(p, 'free_answers', capacity).cell(0)} %"),
            target="tierwise ≥ 95 %", met=used >= 95.0),
        Row("paid calls (money spent)",
            **cells(paid),
            target=f"tierwise fewest: the floor, {w.requests} requests − {capacity} free",
            met=tw["paid_answers"] <= floor and tw["answered"] == w.requests,
            why="" if tw["paid_answers"] <= floor else "each 429 costs a free request, see notes"),
    ]
    section.notes += [
        f"{runs} run(s) per contender, contenders taking turns (first one rotating); each "
        "run on its own simulator models, so every contender starts with fresh windows.",
        f"Time scale: a simulated minute lasts {w.minute:g} s (simulator window_scale = "
        f"{w.scale:.4g}; a day {86_400 * w.scale:,.0f} s, so daily quotas never reset "
        f"during a run). Requests arrive open-loop, {w.per_minute / w.minute:g} per second, "
        f"for {w.minutes * w.minute:g} s; each contender gets {w.cap:g} s to answer them.",
        "Free capacity = Σ min(RPD, RPM × minutes of arrivals) over the free models: the "
        "most free answers any router could get; the rest must be paid for.",
        "LiteLLM: usage-based-routing-v2 counts requests per UTC minute and knows no daily "
        "quota; after a quota runs out it learns of it only from 429s (then cooldown, "
        "retries, fallback). Its clock and cooldown are scaled to the simulated minute "
        "(without that, its minute would hold 60 simulated minutes of traffic).",
        "LangChain: InMemoryRateLimiter makes a request wait for its model's next token, "
        "so the chain does not spill over to the next free model when one is busy; it "
        "moves on only on an error (a 429 once the daily quota is gone). Unfinished "
        "requests at the cap are cancelled and counted as not answered.",
        "Every contender is warmed up first on models without limits (imports, connection "
        "pools). tierwise's router also builds its clients for the burst's event loop "
        "before the burst: built on a router's first call per model instead, the client "
        "(an SSL context, ~35-85 ms) is made after the rate-limit permit is taken, so the "
        "permit is stamped that much before the provider counts the request and the first "
        "minute can end with one 429 (seen in development runs).",
        "Even so, tierwise stamps a permit a few ms (~5 ms here) before the provider counts "
        "the request, and how much before varies: when a permit is granted within those "
        "few ms after the previous one's window ended, the provider's sliding window "
        "still holds that previous request and answers 429. tierwise then treats the "
        "model as blocked for the Retry-After and keeps the refused request counted "
        "against its own minute and day windows, so each such 429 also costs one free "
        "request (a paid call above the floor).",
    ]
    for label, field in (("429s received", "rejected"), ("paid calls", "paid_answers")):
        section.panels.append(Panel(
            f"4. throughput: {label} ({w.requests} requests; free capacity {capacity})",
            "requests",
            [Bar(p + (f" ({spread(p, 'failed').median:.0f} unanswered at the cap)"
                      if spread(p, "failed").median else ""), spread(p, field), who=p)
             for p in peers],
        ))
    return section
