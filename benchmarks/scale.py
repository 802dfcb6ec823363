"""Scale-out: worker processes sharing free models' limits through Redis, or each on its own.

``W`` worker processes (real subprocesses, each with its own ``ModelRouter``) fire ``C``
concurrent calls per wave at three free models whose RPM the simulator enforces
(time-scaled: a minute lasts ``minute`` seconds), with a paid model last. Waves start
1.5 windows apart, so each wave finds the free windows empty and the free capacity is
Σ RPM per wave. With the limits in Redis (``RedisLimitBackend``) the processes share one
window per model; with in-process state each believes it has the whole RPM to itself.
The same run gives LiteLLM's ``Router`` the same workload with its Redis settings
(``redis_host``/``redis_port``, ``rpm`` per deployment, ``usage-based-routing-v2``, the
paid group as fallback; its minute clock scaled like the simulator's, one clock for all
workers), when the ``bench`` extra is installed.

Counted from the simulator's request log: 429s (all, and after the first window), free
answers against the free capacity, paid answers against the floor (calls − capacity).
Also the Redis permit round trip a routed call adds: ``atry_acquire`` + ``settle`` on
Redis against the in-process limiter, medians over the same number of permits.

Run ``python -m benchmarks --only scale`` (or ``python -m benchmarks.scale``); needs Redis
on 127.0.0.1:6379 (``TIERWISE_BENCH_REDIS`` names another).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks._common import Options
from benchmarks._offline import have_litellm
from benchmarks._report import Row, Section
from benchmarks.router_overhead import MESSAGES, OPERATION, bench_settings, simulator
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, Limits, TaskType

NAME = "scale"
TITLE = "scale-out: worker processes sharing free limits (Redis vs in-process)"
REDIS = os.environ.get("TIERWISE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
FREE = (("free-a", 8), ("free-b", 6), ("free-c", 4))
GAP = 1.5  # windows between waves: a loaded machine delays requests by a good part of one
MODES = ("redis", "local", "litellm")  # tierwise shared, tierwise in-process, LiteLLM + Redis
LITELLM_MISSING = "litellm not installed: pip install -e '.[bench]'"


@dataclass(frozen=True)
class Workload:
    workers: int
    calls: int  # concurrent calls per worker per wave
    waves: int
    minute: float  # real seconds per simulated minute

    @property
    def scale(self) -> float:
        return self.minute / 60.0

    @property
    def requests(self) -> int:
        return self.workers * self.calls * self.waves

    @property
    def capacity(self) -> int:
        return sum(rpm for _, rpm in FREE) * self.waves


FULL = Workload(workers=4, calls=50, waves=3, minute=1.0)
QUICK = Workload(workers=3, calls=20, waves=2, minute=1.0)


@dataclass(frozen=True)
class Outcome:
    capacity: int  # Σ RPM × waves: the most free answers calls asking at a wave's start get
    windows: int  # windows the run's requests spanned (waves outlast a window when loaded)
    rejected: int
    rejected_late: int
    free: int
    paid: int
    failed: int


def _models(tag: str) -> tuple[dict[str, int], str]:
    return {f"{tag}-{name}": rpm for name, rpm in FREE}, f"{tag}-paid"


def _catalog(tag: str) -> Catalog:
    free, paid = _models(tag)
    models: dict[str, dict[str, Any]] = {
        name: {"provider": "openai", "model": name, "tier": "free", "context_window": 128_000,
               "limits": {"rpm": rpm}}
        for name, rpm in free.items()
    }
    models[paid] = {"provider": "openai", "model": paid, "tier": "paid",
                    "context_window": 128_000,
                    "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    chain = {"free": list(free), "paid": [paid]}
    return Catalog.from_mapping({"models": models,
                                 "chains": {op.value: chain for op in TaskType}})


# ---------------------------------------------------------------------- worker process


def worker(config: dict[str, Any]) -> None:
    """One app process: build its router, say ready, wait for the start time, fire waves."""
    from benchmarks._offline import guard_network

    guard_network()
    print(json.dumps({"failed": asyncio.run(_fire(config))}), flush=True)


async def _fire(config: dict[str, Any]) -> int:
    clock: Any = None
    if config["mode"] == "litellm":
        call, clock = _litellm_call(config)  # in the loop: its Redis sync task runs here
    else:
        call = _tierwise_call(config)
    print("ready", flush=True)
    start = float(await asyncio.to_thread(sys.stdin.readline))
    failed = 0
    with clock.installed() if clock else contextlib.nullcontext():
        if clock:
            clock.start(at=start)  # every worker's minute 0 begins at the common start
        for wave in range(config["waves"]):
            await asyncio.sleep(max(0.0, start + wave * GAP * config["minute"] - time.time()))
            done = await asyncio.gather(*(call() for _ in range(config["calls"])))
            failed += done.count(False)
    return failed


def _tierwise_call(config: dict[str, Any]) -> Callable[[], Awaitable[bool]]:
    from tierwise.guards.limits import RateLimiter
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.snapshot import Snapshot

    catalog = _catalog(config["tag"])
    scale = config["minute"] / 60.0
    if config["mode"] == "redis":
        from tierwise.guards.redis_limits import RedisLimitBackend

        backend = RedisLimitBackend(REDIS, prefix=config["tag"], time_scale=scale)
        limiter = RateLimiter(backend, time_scale=scale)
    else:
        limiter = RateLimiter(time_scale=scale)
    router = ModelRouter(bench_settings(config["url"], catalog, timeout=10.0),
                         policy=Policy(mode="free_first", max_tier="paid"),
                         snapshot=Snapshot.everything(catalog), limiter=limiter, ledger=None)
    for spec in catalog:
        router.factory.chat_model(spec)  # clients for this loop before the first permit

    async def call() -> bool:
        try:
            await router.ainvoke(OPERATION, MESSAGES, max_wait=0.0)
        except Exception:  # noqa: BLE001 - counted, the benchmark goes on
            return False
        return True

    return call


def _litellm_call(config: dict[str, Any]) -> tuple[Callable[[], Awaitable[bool]], Any]:
    """LiteLLM's Router on the same models, sharing its usage through Redis; its clock."""
    from benchmarks.free_tier_throughput import PROMPT, ScaledClock, litellm_router

    scale = config["minute"] / 60.0
    free, paid = _models(config["tag"])
    redis = urlsplit(REDIS)
    router = litellm_router(
        config["url"], [(name, rpm, 0) for name, rpm in free.items()], paid, scale,
        redis_host=redis.hostname, redis_port=redis.port or 6379,
        redis_db=int(redis.path.strip("/") or 0), redis_password=redis.password,
        timeout=10.0,
    )

    async def call() -> bool:
        try:
            await router.acompletion(model="free", messages=PROMPT)
        except Exception:  # noqa: BLE001 - counted, the benchmark goes on
            return False
        return True

    return call, ScaledClock(scale)


def scenario(tags: list[str], w: Workload) -> dict[str, Any]:
    """The simulator's limits: each run's own copies of the free models (fresh windows)."""
    return {"limit": [{"model": name, "rpm": rpm, "window_scale": w.scale}
                      for tag in tags for name, rpm in _models(tag)[0].items()]}


def measure(url: str, w: Workload, tag: str, mode: str) -> Outcome:
    """Run ``w.workers`` worker processes on ``tag``'s models; count from the simulator's log.

    ``mode``: ``redis`` (tierwise, limits in Redis), ``local`` (tierwise, each process on
    its own windows) or ``litellm`` (LiteLLM's Router with its Redis settings).
    """
    assert mode in MODES, mode
    config = {"url": url, "tag": tag, "mode": mode, "calls": w.calls,
              "waves": w.waves, "minute": w.minute}
    procs = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.scale", "--worker", json.dumps(config)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(w.workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            for line in p.stdout:  # a library may print before the worker is ready
                if line.strip() == "ready":
                    break
            else:
                raise RuntimeError(f"a {mode} worker exited before it was ready")
        start = time.time() + 0.5
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start}\n")
            p.stdin.flush()
        failed = sum(json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1])["failed"]
                     for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    free, paid = _models(tag)
    records = [r for r in httpx.get(url + "/_sim/requests", timeout=30).json()
               if r["model"] in free or r["model"] == paid]
    first = min((r["time"] for r in records), default=0.0)
    span = max((r["time"] for r in records), default=0.0) - first
    limited = [r for r in records if str(r["outcome"]).startswith("limit:")]
    return Outcome(
        capacity=sum(rpm for _, rpm in FREE) * w.waves,
        windows=math.ceil(span / w.minute),
        rejected=len(limited),
        rejected_late=sum(1 for r in limited if r["time"] - first >= w.minute),
        free=sum(1 for r in records if r["model"] in free and r["outcome"] == "ok"),
        paid=sum(1 for r in records if r["model"] == paid and r["outcome"] == "ok"),
        failed=failed,
    )


def permit_round_trip(n: int) -> tuple[float, float]:
    """Median ms of one permit + settle on the async path: Redis, then in-process."""
    from tierwise.guards.limits import RateLimiter
    from tierwise.guards.redis_limits import RedisLimitBackend

    async def timed(limiter: RateLimiter, drain: Any) -> float:
        limiter.configure("m", Limits(rpm=10 * n, tpm=10**9))
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            permit = await limiter.atry_acquire("m", 100)
            assert permit
            permit.settle(80)
            if drain is not None:
                await drain()  # the settle's round trip too (it does not delay the call)
            samples.append(time.perf_counter() - t)
        return statistics.median(samples) * 1e3

    backend = RedisLimitBackend(REDIS, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    redis_ms = asyncio.run(timed(RateLimiter(backend), backend.drain))
    local_ms = asyncio.run(timed(RateLimiter(), None))
    return redis_ms, local_ms


def run(options: Options) -> Section:
    section = Section(NAME, TITLE)
    w = QUICK if options.quick else FULL
    from tierwise.guards.redis_connection import problem as unreachable

    problem = unreachable(REDIS)
    if problem:
        section.notes.append(f"skipped: Redis at {REDIS} is not reachable ({problem})")
        return section
    modes = [m for m in MODES if m != "litellm" or have_litellm()]
    if "litellm" not in modes:
        print(LITELLM_MISSING, flush=True)
    tags = {mode: f"{mode}-{uuid.uuid4().hex[:8]}" for mode in modes}
    with simulator(scenario(list(tags.values()), w), in_process=False) as url:
        got = {mode: measure(url, w, tag, mode) for mode, tag in tags.items()}
    redis_ms, local_ms = permit_round_trip(options.pick(500, 100))
    shared, local, floor = got["redis"], got["local"], w.requests - w.capacity

    def cells(render: Callable[[Outcome], str]) -> dict[str, str]:
        lite = got.get("litellm")
        return {"tierwise": f"shared Redis: {render(shared)}; in-process: {render(local)}",
                "litellm": "not installed" if lite is None else f"with Redis: {render(lite)}"}

    def used(o: Outcome) -> str:  # and the windows its requests spanned
        return f"{o.free} of {o.capacity} = {100.0 * o.free / o.capacity:.0f} % ({o.windows} w)"

    section.rows += [
        Row(f"{w.workers} processes × {w.calls} concurrent calls × {w.waves} waves; free RPM "
            f"{'+'.join(str(r) for _, r in FREE)}: provider 429s, total",
            **cells(lambda o: str(o.rejected))),
        Row("provider 429s after the first window", **cells(lambda o: str(o.rejected_late)),
            target="Redis 0", met=shared.rejected_late == 0),
        Row("free answers of the burst capacity (Σ RPM × waves); windows spanned",
            **cells(used),
            target="Redis ≥ 95 %", met=shared.free >= 0.95 * shared.capacity),
        Row(f"paid calls (floor: calls − free capacity = {floor}); calls that failed",
            **cells(lambda o: f"{o.paid} paid, {o.failed} failed"),
            target="Redis at the floor", met=shared.paid <= floor),
        Row("permit + settle per routed call, async path (median)",
            f"Redis {redis_ms:.2f} ms; in-process {local_ms:.3f} ms"),
    ]
    section.notes += [
        f"A simulated minute lasts {w.minute:g} s; waves start {GAP:g} windows apart ("
        f"{w.waves} waves: {math.ceil((w.waves - 1) * GAP) + 1} windows if nothing waits). "
        "Calls ask at their wave's start with max_wait=0, so the capacity they can get is "
        "Σ RPM per wave; in-process calls can exceed it because each 429 and fallback "
        "delays a call into windows that have since refilled. Workers are separate "
        "processes started and warmed (imports, clients) before a common start time; "
        "each tierwise worker routes free_first with max_wait=0 (a model "
        "without a permit is skipped, the paid one is last).",
        "In-process state: every process believes it has each free model's whole RPM; the "
        "provider refuses the excess with 429, and the router falls back from each.",
        "A permit is granted before the provider counts its request, by a delay that a "
        "loaded machine stretches to hundreds of ms; the Redis backend re-stamps each "
        "request when it is settled, so its window never frees a slot before the provider's.",
        "The permit figure includes the settle's round trip, which in a routed call runs "
        "as a task while the answer is processed.",
        LITELLM_MISSING if "litellm" not in got else
        "LiteLLM: Router(redis_host, redis_port, routing_strategy='usage-based-routing-v2', "
        "rpm per free deployment, fallbacks free → paid, cooldown_time scaled), defaults "
        "otherwise; its UTC-minute counters run on a clock scaled like the simulator's, "
        "started at the common start in every worker. Its pre-call check counts a request "
        "in the process's memory and queues the increment for Redis, which it syncs every "
        "0.1 s, so a burst in several processes at once is checked against each process's "
        "own count. A provider's 429 is retried (2 retries by default) after its "
        "Retry-After, so LiteLLM's calls wait into windows that have since refilled (the "
        "windows spanned): more free answers than the burst capacity, fewer paid calls than "
        "the floor.",
    ]
    return section


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        from benchmarks.__main__ import main

        sys.exit(main(["--only", NAME, *sys.argv[1:]]))
