"""Budget holds and circuit breakers in Redis, against the real Redis on 127.0.0.1:6379.

Every test uses its own key prefix (hash tag). The processes here share no ledger file,
so only Redis can keep them under one cap or one breaker. What happens when Redis goes
away is defined and tested on a private redis-server this test starts and stops (never
the shared one): budgets fail closed, rate limits and breakers fail open.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierwise.catalog.policy import Policy
from tierwise.catalog.state import StateConfig
from tierwise.guards.budget import BudgetExceeded, BudgetGuard, Reservation
from tierwise.guards.health import HealthBoard
from tierwise.ledger import Ledger

redis = pytest.importorskip("redis", reason="redis-py is the scale extra")
from tests.test_budget import NOON, PAID, TODAY, Clock, balanced, child_env, hold, spend  # noqa: E402
from tests.test_redis_limits import URL, _free_port, _reachable, _start_redis  # noqa: E402
from tierwise.guards.redis_budget import RedisReservations  # noqa: E402
from tierwise.guards.redis_health import RedisHealthShare  # noqa: E402
from tierwise.guards.redis_limits import RedisUnavailableWarning  # noqa: E402

pytestmark = pytest.mark.skipif(bool(_reachable()), reason=_reachable() or "")


def redis_guard(ledger: Ledger, prefix: str, clock: Clock, **options: float) -> BudgetGuard:
    """A guard whose holds live in Redis, seeded from ``ledger`` (one "process")."""

    def seed(since: float, provider: str | None, run_id: str | None) -> float:
        return ledger.spent(since=since, provider=provider, run_id=run_id)

    holds = RedisReservations(URL, seed, prefix=prefix, **options)
    return BudgetGuard(ledger, clock, holds=holds)


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    with Ledger(tmp_path / "a.sqlite3") as a, Ledger(tmp_path / "b.sqlite3") as b:
        yield a, b


# --------------------------------------------------------------------------- budgets


def test_holds_follow_the_guards_rules_and_count_spend_from_the_ledger(
    ledgers: tuple[Ledger, Ledger], prefix: str
) -> None:
    mine, theirs = ledgers
    spend(mine, 0.25, run_id="old")  # committed before Redis held anything: the seed
    clock = Clock()
    guard, other = redis_guard(mine, prefix, clock), redis_guard(theirs, prefix, clock)
    policy = balanced(max_cost_per_day=1.0)
    first = hold(guard, policy, 40_000, "run-1")  # $0.40
    assert isinstance(first, Reservation) and first.amount == pytest.approx(0.4)
    second = hold(other, policy, 40_000, "run-2")  # $0.35 left: the answer is capped
    assert isinstance(second, Reservation) and second.max_tokens == 35_000
    refused = hold(other, policy, 10_000, "run-3")
    assert isinstance(refused, BudgetExceeded) and refused.cap == "per_day"
    assert refused.spent == pytest.approx(1.0) and refused.held == pytest.approx(0.75)
    assert "$0.25" not in str(refused)

    first.settle(0.1)  # the real cost: $0.30 of the hold comes back
    assert other.check(PAID, 0.3, policy, run_id=None) is None
    assert other.check(PAID, 0.31, policy, run_id=None) is not None
    second.release()  # never sent: costs nothing
    assert other.check(PAID, 0.65, policy, run_id=None) is None  # 0.25 + 0.1 spent

    run_cap = balanced(max_cost_per_run=0.15)
    spend(theirs, 0.1, run_id="run-9")  # the run's earlier spend, in the other ledger
    assert isinstance(hold(other, run_cap, 5_000, "run-9"), Reservation)  # $0.05 fits
    assert isinstance(hold(guard, run_cap, 1_000, "run-9"), BudgetExceeded)


def test_concurrent_holds_from_two_guards_never_cross_the_cap(
    ledgers: tuple[Ledger, Ledger], prefix: str
) -> None:
    guards = [redis_guard(ledger, prefix, Clock()) for ledger in ledgers]
    policy = balanced(max_cost_per_day=1.0)
    results: list[Reservation | BudgetExceeded] = []
    barrier = threading.Barrier(20)

    def call(guard: BudgetGuard) -> None:
        barrier.wait()
        results.append(hold(guard, policy, 10_000))  # $0.10

    threads = [threading.Thread(target=call, args=(guards[i % 2],)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, Reservation) for r in results) == 10


_HOLDER = textwrap.dedent("""
    import sys
    from tierwise.catalog.policy import Policy
    from tierwise.catalog.specs import ModelSpec, Price, Provider
    from tierwise.guards.budget import BudgetGuard, Reservation
    from tierwise.guards.redis_budget import RedisReservations
    from tierwise.ledger import Ledger
    spec = ModelSpec(key="gpt-x", provider=Provider.OPENAI, model="gpt-x", tier="paid",
                     context_window=128_000, price=Price(input_per_mtok=2.5, output_per_mtok=10.0))
    with Ledger(sys.argv[1]) as ledger:
        holds = RedisReservations(sys.argv[2], lambda *a: 0.0, prefix=sys.argv[3],
                                  ttl=float(sys.argv[4]))
        guard = BudgetGuard(ledger, holds=holds)
        held = [guard.reserve(spec, Policy(mode="balanced", max_cost_per_day=1.0),
                              prompt_tokens=0, max_tokens=10_000, expected_tokens=10_000,
                              run_id=None) for _ in range(10)]
        print(sum(h.amount for h in held if isinstance(h, Reservation)), flush=True)
        sys.stdin.readline()  # SIGKILLed here, holds in flight
""")


def test_a_killed_workers_holds_are_released_within_their_expiry(
    tmp_path: Path, prefix: str
) -> None:
    ttl = 5.0
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "child.sqlite3"), URL, prefix, str(ttl)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert float(child.stdout.readline()) == pytest.approx(1.0)
        taken = time.monotonic()  # just after the child's last hold
        child.send_signal(signal.SIGKILL)
        child.wait()
        with Ledger(tmp_path / "mine.sqlite3") as ledger:
            guard = redis_guard(ledger, prefix, Clock(time.time()))
            policy = balanced(max_cost_per_day=1.0)
            assert time.monotonic() - taken < ttl / 2  # well within their expiry:
            assert isinstance(hold(guard, policy, 1_000), BudgetExceeded)  # they count
            while time.monotonic() - taken < ttl + 5.0:
                granted = hold(guard, policy, 100_000)  # the whole $1.00
                if isinstance(granted, Reservation) and granted.max_tokens == 100_000:
                    break
                if isinstance(granted, Reservation):
                    granted.release()  # some holds expired, not all yet
                time.sleep(0.1)
            assert isinstance(granted, Reservation) and granted.max_tokens == 100_000
            assert time.monotonic() - taken >= ttl - 1.0  # released by expiry, not before
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.timeout(600)
def test_a_day_cap_holds_for_four_processes_sharing_only_redis() -> None:
    """benchmarks.budget_cap on Redis: 4 processes x 10 calls, a ledger file each."""
    from benchmarks.budget_cap import run

    result = run(4, 10, 2000, redis=URL)
    assert result.spent <= 1.0 + 1e-9, result
    assert result.outcomes.get("paid", 0) >= 1, result  # the cap was spent, not refused


# --------------------------------------------------------------------------- breakers

_TRIPPER = textwrap.dedent("""
    import sys
    from tierwise.guards.health import HealthBoard
    from tierwise.guards.redis_health import RedisHealthShare
    share = RedisHealthShare(sys.argv[1], prefix=sys.argv[2])
    board = HealthBoard(base_cooldown=float(sys.argv[3]), share=share)
    print(board.record_failure("m", "unavailable"), board.record_failure("m", "timeout"),
          board.record_failure("m", "unavailable"), flush=True)
    share.close()  # sends what is queued first
""")


def _until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_breaker_opened_in_one_process_is_open_in_the_others(prefix: str) -> None:
    shares = [RedisHealthShare(URL, prefix=prefix) for _ in range(2)]
    boards = [HealthBoard(base_cooldown=1.0, share=share) for share in shares]
    try:
        assert all(share.wait_synced(10.0) for share in shares)
        out = subprocess.run(
            [sys.executable, "-c", _TRIPPER, URL, prefix, "1.0"], capture_output=True,
            text=True, env=child_env(), timeout=60, check=True,
        )  # fmt: skip
        assert out.stdout.split() == ["closed", "closed", "open"]
        assert _until(lambda: all(b.state("m") == "open" for b in boards))
        reason = boards[0]._reason("m", None)  # worded from the child's failures
        assert "after 2 unavailable errors and 1 timeout" in reason, reason
        late = RedisHealthShare(URL, prefix=prefix)  # a process starting now catches up
        joined = HealthBoard(share=late)
        assert late.wait_synced(10.0) and joined.state("m") != "closed"
        late.close()

        assert _until(lambda: boards[0].state("m") == "half_open")
        assert boards[0].allow("m")
        boards[0].record_success("m")  # the probe answered here: closed everywhere
        assert _until(lambda: boards[1].state("m") == "closed")
        assert boards[1].allow("m")
    finally:
        for share in shares:
            share.close()


# --------------------------------------------------------------------------- Redis gone


@pytest.mark.timeout(120)
def test_redis_gone_budgets_fail_closed_limits_and_breakers_fail_open(
    simulator: object, tmp_path: Path
) -> None:
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.snapshot import Snapshot

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (needed to stop a private Redis)")
    port = _free_port()
    server = _start_redis(port)
    private = f"redis://:hunter2@127.0.0.1:{port}/0"
    base = simulator.settings()  # type: ignore[attr-defined]
    settings = dataclasses.replace(base, state=StateConfig(redis_url=private))
    paid = Policy(mode="quality_first", max_tier="paid", max_cost_per_day=1.0,
                  operations={"rewriting": {"pin": "claude-opus-4"}})  # fmt: skip
    free = Policy(mode="free_first")
    try:
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            router = ModelRouter(settings, policy=paid, ledger=ledger,
                                 snapshot=Snapshot.everything(settings.catalog))  # fmt: skip
            first = router.invoke("rewriting", "rewrite: hello")
            assert first.tier.value == "paid"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                server.kill()
                server.wait()
                with pytest.raises(BudgetExceeded) as refused:
                    router.invoke("rewriting", "rewrite: hello again")
                assert "cannot be reached" in str(refused.value)
                assert "refused until it answers" in str(refused.value)
                assert "hunter2" not in str(refused.value)
                answered = router.invoke("rewriting", "rewrite: hello", policy=free)
                assert answered.tier.value != "paid"  # free calls go on, local limits
                for _ in range(3):
                    router.health.record_failure("m", "unavailable")
                assert router.health.state("m") == "open"  # the breaker trips locally
                assert _until(lambda: any("circuit breakers" in str(w.message)
                                          for w in caught))  # fmt: skip
            kinds = [w for w in caught if w.category is RedisUnavailableWarning]
            assert sum("circuit breakers" in str(w.message) for w in kinds) == 1
            assert sum("rate limits" in str(w.message) for w in kinds) == 1
            assert all("hunter2" not in str(w.message) for w in kinds)

            server = _start_redis(port)  # back, empty: the day is seeded from the ledger
            again = router.invoke("rewriting", "rewrite: once more")
            assert again.tier.value == "paid"
            holds = router.budget.reservations
            assert isinstance(holds, RedisReservations)
            spent = BudgetGuard(ledger, holds=holds).check(
                PAID, 1.0 - (first.cost + again.cost) + 1e-6, paid, run_id=None
            )
            assert spent is not None  # Redis counts both calls: the ledger's and the new one
            share = router.health._share
            assert isinstance(share, RedisHealthShare)
            share.close()
    finally:
        server.kill()
        server.wait()


async def test_a_routed_call_on_redis_state_never_blocks_the_loop(
    simulator: object, tmp_path: Path, prefix: str
) -> None:
    """Limits, budget holds and breakers all in Redis; the suite's blockbuster watches."""
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.snapshot import Snapshot

    base = simulator.settings()  # type: ignore[attr-defined]
    settings = dataclasses.replace(base, state=StateConfig(redis_url=URL, redis_prefix=prefix))
    paid = Policy(mode="quality_first", max_tier="paid", max_cost_per_day=1.0,
                  operations={"rewriting": {"pin": "claude-opus-4"}})  # fmt: skip
    ledger = await asyncio.to_thread(Ledger, tmp_path / "ledger.sqlite3")  # files: off the loop
    router = await asyncio.to_thread(
        ModelRouter, settings, policy=paid, ledger=ledger,
        snapshot=Snapshot.everything(settings.catalog),
    )  # fmt: skip
    try:
        results = [await router.ainvoke("rewriting", f"rewrite: {i}") for i in range(3)]
        assert [r.tier.value for r in results] == ["paid"] * 3
        assert isinstance(router.budget.reservations, RedisReservations)
        spent = sum(r.cost for r in results)
        left = await asyncio.to_thread(  # the settles reached Redis: only the rest fits
            router.budget.check, PAID, 1.0 - spent + 1e-6, paid, run_id=None
        )
        assert left is not None
    finally:
        share = router.health._share
        assert isinstance(share, RedisHealthShare)
        await asyncio.to_thread(share.close)
        await asyncio.to_thread(ledger.close)


def test_doctor_lists_where_each_kind_of_state_lives(prefix: str) -> None:
    from tierwise.catalog.settings import load_settings
    from tierwise.guards.shared import state_backends

    settings = load_settings(credentials=None)
    local = state_backends(dataclasses.replace(settings, state=StateConfig()))
    assert [r.kind for r in local] == ["rate limits", "circuit breakers", "budgets, ledger"]
    shared = state_backends(dataclasses.replace(settings, state=StateConfig(redis_url=URL)))
    assert [(r.kind, r.problem) for r in shared[:3]] == [
        ("rate limits", None), ("circuit breakers", None), ("budget holds", None)
    ]
    gone = f"redis://127.0.0.1:{_free_port()}/0"
    down = state_backends(dataclasses.replace(settings, state=StateConfig(redis_url=gone)))
    meanwhile = {r.kind: r.consequence for r in down}
    assert "fail closed" in meanwhile["budget holds"]
    assert "fail open" in meanwhile["rate limits"] and "fail open" in meanwhile["circuit breakers"]


def test_guard_day_keys_follow_the_guards_clock(
    ledgers: tuple[Ledger, Ledger], prefix: str
) -> None:
    """Yesterday's spend in Redis does not count today (one counter per UTC day)."""
    mine, _ = ledgers
    clock = Clock(NOON - 86_400)
    guard = redis_guard(mine, prefix, clock)
    policy = balanced(max_cost_per_day=0.5)
    held = hold(guard, policy, 50_000)
    assert isinstance(held, Reservation)
    held.settle(0.5)
    assert isinstance(hold(guard, policy, 1_000), BudgetExceeded)
    clock.now = NOON
    assert TODAY < clock.now and isinstance(hold(guard, policy, 50_000), Reservation)
