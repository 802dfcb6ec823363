"""The Redis rate-limit backend against the real Redis on 127.0.0.1:6379.

Every test uses its own key prefix (hash tag), so runs never see each other's windows.
The decisions must match the in-memory backend's for the same sequence; the async path
must not block the event loop (blockbuster); a Redis that goes away mid-run must leave
the limiter enforcing limits per process, with a warning, and Redis must be used again
once it is back.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import warnings

import pytest

from tierwise.catalog.specs import Limits
from tierwise.guards.backend import Denied, Restriction
from tierwise.guards.limits import RateLimiter

redis = pytest.importorskip("redis", reason="redis-py is the scale extra")
from tierwise.guards.redis_connection import problem  # noqa: E402
from tierwise.guards.redis_limits import RedisLimitBackend, RedisUnavailableWarning  # noqa: E402

URL = "redis://127.0.0.1:6379/0"


def _reachable(url: str = URL) -> str | None:
    """``None`` when Redis at ``url`` answers, else the skip message."""
    why = problem(url, timeout=0.5)
    return None if why is None else f"Redis at {url} is not reachable ({why})"


pytestmark = pytest.mark.skipif(bool(_reachable()), reason=_reachable() or "")


def _pair(prefix: str, scale: float = 1.0) -> tuple[RateLimiter, RateLimiter]:
    backend = RedisLimitBackend(URL, prefix=prefix, time_scale=scale)
    return RateLimiter(backend, time_scale=scale), RateLimiter(time_scale=scale)


def _both(limiters: tuple[RateLimiter, RateLimiter], key: str, tokens: int = 0,
          also: tuple[str, ...] = ()) -> list[object]:
    got = [lim.try_acquire(key, tokens, also=also) for lim in limiters]
    assert [bool(g) for g in got] == [bool(got[1])] * 2, got
    for g in got:
        if isinstance(g, Denied):
            assert g.limit == got[1].limit  # type: ignore[union-attr]
    return got


def test_decisions_match_the_in_memory_backend(prefix: str) -> None:
    pair = _pair(prefix)
    for lim in pair:
        lim.configure("m", Limits(rpm=3, tpm=100, rpd=5))
        lim.configure("p", Limits(rpm=4))
    first = _both(pair, "m", 40, also=("p",))
    _both(pair, "m", 40, also=("p",))
    denied = _both(pair, "m", 40, also=("p",))  # 120 > tpm: refused by every backend
    assert all(isinstance(d, Denied) and d.limit == "tpm" for d in denied)
    for permit in first:
        permit.cancel()  # type: ignore[union-attr]
    _both(pair, "m", 40, also=("p",))  # the cancelled tokens are free again
    assert [lim.usage("p").requests_minute for lim in pair] == [2, 2]
    assert [lim.usage("m").tokens_minute for lim in pair] == [80, 80]
    _both(pair, "m", 0, also=("p",))
    refused = _both(pair, "m", 0, also=("p",))  # rpm 3 of "m": nothing reserved in "p"
    assert all(isinstance(r, Denied) and r.key == "m" for r in refused)
    assert [lim.usage("p").requests_minute for lim in pair] == [3, 3]
    # the daily quota is guards.quota's: the limiter keeps no day window
    assert [lim.usage("m").requests_day for lim in pair] == [0, 0]


def test_settle_corrects_tokens_and_restrictions_are_shared(prefix: str) -> None:
    one, local = _pair(prefix)
    other = RateLimiter(RedisLimitBackend(URL, prefix=prefix))
    for lim in (one, other, local):
        lim.configure("m", Limits(tpm=100))
    permit = one.try_acquire("m", 90)
    assert isinstance(other.try_acquire("m", 20), Denied)  # the other process sees the 90
    assert permit
    permit.settle(10)
    assert other.try_acquire("m", 20)
    assert other.usage("m").tokens_minute == 30
    one.penalize("m", retry_after=30.0)
    blocked = other.try_acquire("m", 1)
    assert isinstance(blocked, Denied) and 29 < blocked.retry_after <= 30
    other.observe_headers("x", {"x-ratelimit-limit-requests": "1"})
    assert one.try_acquire("x") and isinstance(one.try_acquire("x"), Denied)
    assert one.usage("x").limits.rpm == 1


def test_windows_slide_on_redis_time(prefix: str) -> None:
    scale = 0.5 / 60  # a half-second minute
    limiter, _ = _pair(prefix, scale)
    limiter.configure("m", Limits(rpm=2))
    assert limiter.try_acquire("m") and limiter.try_acquire("m")
    denied = limiter.try_acquire("m")
    assert isinstance(denied, Denied) and 0.3 < denied.retry_after <= 0.5
    time.sleep(denied.retry_after + 0.05)
    assert limiter.try_acquire("m")


def test_every_key_shares_one_hash_tag(prefix: str) -> None:
    limiter, _ = _pair(prefix)
    limiter.configure("groq/a", Limits(rpm=5, rpd=9))
    limiter.try_acquire("groq/a", 3, also=("groq",))
    limiter.penalize("groq", retry_after=1.0)
    keys = sorted(k.decode() for k in redis.Redis.from_url(URL).scan_iter(match="*"+prefix+"*"))
    assert keys and all(k.startswith(f"{{{prefix}}}:") for k in keys), keys
    # no day window ("d"): the daily quota is guards.quota's
    assert {k.split(":", 2)[1] for k in keys} >= {"m", "h"}


async def test_async_permits_never_block_the_loop(prefix: str) -> None:
    from blockbuster import blockbuster_ctx

    backend = RedisLimitBackend(URL, prefix=prefix)
    limiter = RateLimiter(backend)
    limiter.configure("m", Limits(rpm=5, tpm=1000))
    with blockbuster_ctx():
        permits = await asyncio.gather(*(limiter.atry_acquire("m", 10) for _ in range(8)))
        granted = [p for p in permits if p]
        for p in granted:
            p.settle(1)  # sent as tasks on this loop
        limiter.penalize("m", retry_after=5.0)
        await backend.drain()
    assert len(granted) == 5
    used = await asyncio.to_thread(limiter.usage, "m")  # a diagnostic: sync, off the loop
    assert used.tokens_minute == 5 and used.blocked_for > 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--requirepass", "hunter2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    for _ in range(100):
        if _reachable(url) is None:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.skip("a private redis-server did not start")


def test_redis_gone_mid_run_fails_open_with_local_limits_and_comes_back() -> None:
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (needed to stop a private Redis)")
    port = _free_port()
    server = _start_redis(port)
    try:
        backend = RedisLimitBackend(f"redis://:hunter2@127.0.0.1:{port}/0", timeout=0.3,
                                    retry_after=0.2)
        limiter = RateLimiter(backend)
        limiter.configure("m", Limits(rpm=3))
        assert limiter.try_acquire("m") and not backend.degraded
        server.kill()
        server.wait()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            local = [limiter.try_acquire("m") for _ in range(4)]
        assert [bool(p) for p in local] == [True, True, True, False]  # per-process limits
        assert backend.degraded
        messages = [str(w.message) for w in caught if w.category is RedisUnavailableWarning]
        assert len(messages) == 1 and "per process" in messages[0]
        assert "hunter2" not in messages[0]
        for p in local:
            if p:
                p.cancel()  # local tickets settle locally, nothing is sent to Redis
        server = _start_redis(port)
        time.sleep(0.25)
        assert limiter.try_acquire("m")  # Redis again: a fresh window there
        assert not backend.degraded
        assert limiter.usage("m").requests_minute == 1
    finally:
        server.kill()
        server.wait()


def test_restriction_round_trip_keeps_allowances(prefix: str) -> None:
    backend = RedisLimitBackend(URL, prefix=prefix)
    limiter = RateLimiter(backend)
    backend.restrict("m", Restriction(requests=(1, 30.0, "rpm")), 0.0)
    permit = limiter.try_acquire("m")
    assert permit and isinstance(limiter.try_acquire("m"), Denied)
    permit.cancel()  # gives the allowance's request back
    assert limiter.try_acquire("m")


def test_settings_choose_the_backend(prefix: str) -> None:
    import dataclasses

    from tierwise.catalog.settings import load_settings
    from tierwise.catalog.state import StateConfig
    from tierwise.guards.shared import shared_limiter

    settings = load_settings(credentials=None)
    assert not shared_limiter(dataclasses.replace(settings, state=StateConfig())).remote
    shared = shared_limiter(dataclasses.replace(settings, state=StateConfig(redis_url=URL)))
    assert shared.remote


async def test_router_takes_permits_from_redis_without_blocking_the_loop(
    simulator: object, prefix: str
) -> None:
    from blockbuster import blockbuster_ctx

    from tierwise.catalog.policy import Policy
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.snapshot import Snapshot

    settings = simulator.settings()  # type: ignore[attr-defined]
    backend = RedisLimitBackend(URL, prefix=prefix)
    router = ModelRouter(settings, policy=Policy(mode="free_first"), ledger=None,
                         limiter=RateLimiter(backend),
                         snapshot=Snapshot.everything(settings.catalog))
    for spec in settings.catalog:
        router.factory.chat_model(spec)  # clients are built off the measured path
    await router.ainvoke("rewriting", "make this clearer: do it")  # warm imports
    with blockbuster_ctx():
        result = await router.ainvoke("rewriting", "make this clearer: do the thing")
        await backend.drain()
    used = await asyncio.to_thread(router.limiter.usage, result.model)
    assert used.requests_minute == 2 and used.tokens_minute > 0
