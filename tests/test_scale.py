"""Several worker processes sharing one simulator that enforces limits, through real Redis.

With the rate limits in Redis the processes together never exceed a free model's RPM, so
the provider refuses nothing after the first window; each process on its own windows
oversubscribes and earns 429s. Runs ``benchmarks.scale``'s real worker subprocesses on a
small workload (a 3 s minute leaves room for a loaded machine's delays). LiteLLM's Router
with its Redis settings runs the same workers when the ``bench`` extra is installed: every
call answered once, by a free model or the paid fallback, through the same simulator.
"""

from __future__ import annotations

import importlib.util
import uuid

import pytest

redis = pytest.importorskip("redis", reason="redis-py is the scale extra")

from benchmarks.router_overhead import simulator  # noqa: E402
from benchmarks.scale import FREE, REDIS, Workload, measure, scenario  # noqa: E402
from tests.test_redis_limits import _reachable  # noqa: E402


def _unreachable() -> str | None:
    return _reachable(REDIS)


@pytest.mark.skipif(bool(_unreachable()), reason=_unreachable() or "")
@pytest.mark.timeout(300)
def test_worker_processes_share_limits_through_redis() -> None:
    w = Workload(workers=3, calls=8, waves=2, minute=3.0)
    tags = [f"t-redis-{uuid.uuid4().hex[:8]}", f"t-local-{uuid.uuid4().hex[:8]}"]
    with simulator(scenario(tags, w), in_process=False) as url:
        shared = measure(url, w, tags[0], "redis")
        local = measure(url, w, tags[1], "local")
    per_window = sum(rpm for _, rpm in FREE)
    assert shared.failed == local.failed == 0
    assert shared.rejected_late == 0, shared
    assert shared.free + shared.paid == w.requests
    assert shared.free >= per_window * w.waves * 0.95, shared  # the free capacity is used
    assert local.rejected > 0, local  # each process alone oversubscribes the provider
    try:
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(match=f"{{{tags[0]}}}:*"):
            client.delete(key)
    except redis.RedisError:
        pass


@pytest.mark.skipif(bool(_unreachable()), reason=_unreachable() or "")
@pytest.mark.skipif(importlib.util.find_spec("litellm") is None,
                    reason="litellm not installed: pip install -e '.[bench]'")
@pytest.mark.timeout(300)
def test_litellm_workers_share_the_simulator_through_redis() -> None:
    w = Workload(workers=2, calls=6, waves=1, minute=3.0)
    tag = f"t-litellm-{uuid.uuid4().hex[:8]}"
    with simulator(scenario([tag], w), in_process=False) as url:
        lite = measure(url, w, tag, "litellm")
    assert lite.failed == 0, lite
    assert lite.free + lite.paid == w.requests, lite  # each call answered exactly once
    assert lite.free > 0, lite  # the free deployments answered
