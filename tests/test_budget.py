"""tierwise.guards.budget: cost caps and daily quotas, checked before a call, from the ledger."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tierwise.ledger.store as ledger_module
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Limits, ModelSpec, Price, Provider
from tierwise.guards.budget import (
    DEFAULT_ANSWER_TOKENS,
    BudgetExceeded,
    BudgetGuard,
    CapStatus,
    Reservation,
)
from tierwise.ledger import DAY, Ledger, LedgerRow
from tierwise.ledger.reservations import HoldsUnavailable, Reservations
from tierwise.providers.failures import FailureKind, classify

TODAY = 20_000 * DAY  # a UTC midnight
NOON = TODAY + DAY / 2

PAID = ModelSpec(
    key="gpt-x", provider=Provider.OPENAI, model="gpt-x", tier="paid", context_window=128_000,
    price=Price(input_per_mtok=2.5, output_per_mtok=10.0),
)  # fmt: skip
PAID_OTHER = ModelSpec(
    key="claude-x", provider=Provider.OPENROUTER, model="anthropic/claude-x", tier="paid",
    context_window=200_000, price=Price(input_per_mtok=3.0, output_per_mtok=15.0),
)  # fmt: skip
FREE = ModelSpec(
    key="flash-x", provider=Provider.GEMINI, model="gemini-x", tier="free",
    context_window=1_000_000, limits=Limits(rpm=10, rpd=3),
)  # fmt: skip


def child_env() -> dict[str, str]:
    """Children import the same tierwise as this test process, wherever pytest runs."""
    root = str(Path(ledger_module.__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spend(
    ledger: Ledger, cost: float, *, spec: ModelSpec = PAID, at: float = NOON, **fields: Any
) -> None:
    values: dict[str, Any] = dict(
        time=at, run_id="run-1", thread_id=None, node=None, operation="classification",
        complexity="simple", policy="balanced", provider=spec.provider.value, model=spec.key,
        tier=spec.tier.value, outcome="ok", sent=True, latency=1.0, time_to_first_token=None,
        input_tokens=100, output_tokens=10, cost=cost, escalation=False, repair=False,
        detail="",
    )  # fmt: skip
    values.update(fields)
    ledger.record(LedgerRow(**values))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


def balanced(**caps: Any) -> Policy:
    return Policy(mode="balanced", **caps)


# --------------------------------------------------------------------------- per call


def test_per_call_cap_needs_no_ledger() -> None:
    guard = BudgetGuard(None)
    policy = balanced(max_cost_per_call=0.01)
    refusal = guard.check(PAID, 0.05, policy, run_id="r")
    assert isinstance(refusal, BudgetExceeded)
    assert (refusal.cap, refusal.limit, refusal.spent, refusal.left) == ("per_call", 0.01, 0, 0.01)
    assert (refusal.estimate, refusal.model, refusal.retry_after) == (0.05, "gpt-x", None)
    assert str(refusal) == (
        "per_call cap of $0.01 would be exceeded for gpt-x: the call is estimated at $0.05"
    )
    assert guard.check(PAID, 0.01, policy, run_id="r") is None  # exactly the cap is allowed
    assert guard.check(PAID, 5.0, balanced(), run_id=None) is None  # no caps at all


@pytest.mark.parametrize("caps", [
    {"max_cost_per_day": 5.0},
    {"max_cost_per_provider_per_day": {"openai": 5.0}},
    {"max_cost_per_run": 5.0},
])
def test_a_cap_with_no_ledger_to_count_in_fails_closed(caps: dict[str, Any]) -> None:
    """A router that could not open its ledger must not pay past a cap it cannot count."""
    guard = BudgetGuard(None)
    policy = balanced(**caps)
    refused = guard.reserve(PAID, policy, prompt_tokens=10, max_tokens=100,
                            expected_tokens=100, run_id="r")  # fmt: skip
    assert isinstance(refused, BudgetExceeded)
    assert "no ledger to count spend in" in str(refused)
    assert isinstance(guard.check(PAID, 0.001, policy, run_id="r"), BudgetExceeded)
    assert guard.reserve(FREE, policy, prompt_tokens=10, max_tokens=100,
                         expected_tokens=100, run_id="r").amount == 0  # fmt: skip
    assert guard.check(PAID, 1.0, balanced(max_cost_per_run=5.0), run_id=None) is None


def test_a_free_call_never_crosses_a_cost_cap_and_reads_nothing() -> None:
    class Exploding:
        def spent(self, **_: Any) -> float:
            raise AssertionError("a zero estimate must not read the ledger")

    guard = BudgetGuard(Exploding())  # type: ignore[arg-type]
    policy = balanced(max_cost_per_call=0.0, max_cost_per_day=0.0, max_cost_per_run=0.0)
    assert guard.check(FREE, 0.0, policy, run_id="r") is None


def test_bad_estimates_are_rejected() -> None:
    guard = BudgetGuard(None)
    for bad in (-0.01, math.nan):
        with pytest.raises(ValueError, match="non-negative"):
            guard.check(PAID, bad, balanced(), run_id=None)


# --------------------------------------------------------------------------- ledger caps


def test_day_cap_counts_today_only(ledger: Ledger, clock: Clock) -> None:
    guard = BudgetGuard(ledger, clock)
    spend(ledger, 5.0, at=TODAY - 1)  # yesterday
    spend(ledger, 0.6, at=TODAY + 60)
    spend(ledger, 0.3, spec=PAID_OTHER, at=NOON)
    policy = balanced(max_cost_per_day=1.0)
    assert guard.check(PAID, 0.1, policy, run_id=None) is None  # 0.9 + 0.1 == 1.0
    refusal = guard.check(PAID, 0.2, policy, run_id=None)
    assert isinstance(refusal, BudgetExceeded)
    assert refusal.cap == "per_day"
    assert refusal.spent == pytest.approx(0.9)
    assert refusal.left == pytest.approx(0.1)
    assert refusal.retry_after == DAY / 2  # until the next UTC midnight
    assert str(refusal) == (
        "per_day cap of $1 would be exceeded for gpt-x: $0.9 spent, $0.1 left, "
        "the call is estimated at $0.2; resets in 12h00m"
    )
    clock.now = TODAY + DAY + 1  # tomorrow: today's spend is yesterday's
    assert guard.check(PAID, 0.2, policy, run_id=None) is None


def test_run_cap_counts_the_run_only(ledger: Ledger, clock: Clock) -> None:
    guard = BudgetGuard(ledger, clock)
    spend(ledger, 0.5, run_id="run-1", at=TODAY - 3 * DAY)  # a run spans days: all counts
    spend(ledger, 0.4, run_id="run-2")
    policy = balanced(max_cost_per_run=0.6)
    refusal = guard.check(PAID, 0.2, policy, run_id="run-1")
    assert isinstance(refusal, BudgetExceeded)
    assert (refusal.cap, refusal.spent, refusal.retry_after) == ("per_run", 0.5, None)
    assert refusal.left == pytest.approx(0.1)
    assert guard.check(PAID, 0.2, policy, run_id="run-2") is None
    assert guard.check(PAID, 0.2, policy, run_id="run-3") is None
    assert guard.check(PAID, 0.2, policy, run_id=None) is None  # no run, no run cap


def test_provider_day_cap(ledger: Ledger, clock: Clock) -> None:
    guard = BudgetGuard(ledger, clock)
    spend(ledger, 0.25, spec=PAID)
    spend(ledger, 10.0, spec=PAID_OTHER)
    policy = balanced(max_cost_per_provider_per_day={"openai": 0.3})
    refusal = guard.check(PAID, 0.1, policy, run_id=None)
    assert isinstance(refusal, BudgetExceeded)
    assert refusal.cap == "per_provider_day:openai"
    assert refusal.left == pytest.approx(0.05)
    assert guard.check(PAID, 0.05, policy, run_id=None) is None
    assert guard.check(PAID_OTHER, 1.0, policy, run_id=None) is None  # no cap for openrouter


def test_caps_are_checked_in_order(ledger: Ledger, clock: Clock) -> None:
    guard = BudgetGuard(ledger, clock)
    spend(ledger, 1.0)
    every = balanced(
        max_cost_per_call=0.1, max_cost_per_run=0.5, max_cost_per_day=0.5,
        max_cost_per_provider_per_day={"openai": 0.5},
    )  # fmt: skip
    found = guard.check(PAID, 0.2, every, run_id="run-1")
    assert found is not None and found.cap == "per_call"
    found = guard.check(PAID, 0.05, every, run_id="run-1")
    assert found is not None and found.cap == "per_run"
    found = guard.check(PAID, 0.05, every, run_id=None)
    assert found is not None and found.cap == "per_day"


def test_spend_recorded_a_moment_ago_trips_the_cap_at_once(path: Path, clock: Clock) -> None:
    # No flush, and cached totals would be reused for a minute: the ledger's own-write
    # path is what makes the second call see the first one's cost.
    with Ledger(path, flush_interval=60, refresh_interval=60) as ledger:
        guard = BudgetGuard(ledger, clock)
        policy = balanced(max_cost_per_day=1.0)
        assert guard.check(PAID, 0.6, policy, run_id=None) is None
        spend(ledger, 0.7)  # the real cost came out higher than the estimate
        refusal = guard.check(PAID, 0.6, policy, run_id=None)
        assert refusal is not None and refusal.left == pytest.approx(0.3)


def test_an_unreadable_ledger_refuses_paid_calls(
    ledger: Ledger, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise HoldsUnavailable("disk I/O error")

    monkeypatch.setattr(Reservations, "hold", broken)
    monkeypatch.setattr(ledger, "requests", broken)
    guard = BudgetGuard(ledger, clock)
    refusal = guard.check(PAID, 0.01, balanced(max_cost_per_day=10.0), run_id=None)
    assert refusal is not None and refusal.cap == "per_day" and refusal.left == 0
    assert "could not be read: disk I/O error" in str(refusal)
    held = guard.reserve(PAID, balanced(max_cost_per_day=10.0), prompt_tokens=10,
                         max_tokens=100, expected_tokens=100, run_id=None)  # fmt: skip
    assert isinstance(held, BudgetExceeded) and held.left == 0


# --------------------------------------------------------------------------- reservations


def hold(
    guard: BudgetGuard, policy: Policy, tokens: int, run_id: str | None = None
) -> Reservation | BudgetExceeded:
    """A reservation for an answer of ``tokens`` (PAID: $10 per million, no prompt)."""
    return guard.reserve(PAID, policy, prompt_tokens=0, max_tokens=tokens,
                         expected_tokens=tokens, run_id=run_id)  # fmt: skip


def test_reservations_hold_the_worst_case_and_cap_the_answer(
    ledger: Ledger, clock: Clock
) -> None:
    guard = BudgetGuard(ledger, clock)
    policy = balanced(max_cost_per_day=1.0, max_cost_per_run=0.9)
    first = hold(guard, policy, 40_000, "run-1")  # $0.40
    second = hold(guard, policy, 40_000, "run-2")
    assert isinstance(first, Reservation) and isinstance(second, Reservation)
    assert (first.amount, first.max_tokens, first.capped) == (pytest.approx(0.4), 40_000, True)
    third = hold(guard, policy, 40_000, "run-3")  # $0.20 left: the answer is capped to fit
    assert isinstance(third, Reservation)
    assert (third.max_tokens, third.amount) == (20_000, pytest.approx(0.2))
    fourth = hold(guard, policy, 40_000, "run-4")  # nothing left
    assert isinstance(fourth, BudgetExceeded) and fourth.cap == "per_day"
    assert fourth.spent == pytest.approx(1.0)
    assert guard.check(PAID, 0.01, policy, run_id="run-4") is not None  # check sees holds too

    spend(ledger, 0.3, run_id="run-1")  # first call's real cost recorded...
    first.release()  # ...then its worst case let go
    first.release()  # harmless
    assert guard.check(PAID, 0.1, policy, run_id="run-4") is None  # 0.3 + 0.4 + 0.2 + 0.1
    assert guard.check(PAID, 0.11, policy, run_id="run-4") is not None
    with second, third:
        pass
    assert guard.check(PAID, 0.7, policy, run_id="run-4") is None


def test_a_call_no_ledger_cap_reads_is_not_capped(ledger: Ledger, clock: Clock) -> None:
    guard = BudgetGuard(ledger, clock)
    free = guard.reserve(FREE, balanced(max_cost_per_day=0.0), prompt_tokens=10,
                         max_tokens=None, expected_tokens=512, run_id=None)  # fmt: skip
    assert isinstance(free, Reservation) and (free.amount, free.capped) == (0.0, False)
    open_ = guard.reserve(PAID, balanced(), prompt_tokens=10, max_tokens=None,
                          expected_tokens=512, run_id=None)  # fmt: skip
    assert isinstance(open_, Reservation) and not open_.capped and open_.max_tokens == 512
    capped = guard.reserve(PAID, balanced(max_cost_per_day=5.0), prompt_tokens=10,
                           max_tokens=None, expected_tokens=512, run_id=None)  # fmt: skip
    assert isinstance(capped, Reservation) and capped.capped
    assert capped.max_tokens == DEFAULT_ANSWER_TOKENS  # the worst case a cap must hold


def test_concurrent_reservations_never_cross_the_cap(ledger: Ledger, clock: Clock) -> None:
    guard = BudgetGuard(ledger, clock)
    policy = balanced(max_cost_per_day=1.0)
    results: list[Reservation | BudgetExceeded] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        results.append(hold(guard, policy, 10_000))  # $0.10

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results if isinstance(r, Reservation)]
    assert len(granted) == 10
    for r in granted:
        spend(ledger, 0.1)
        r.release()
    assert ledger.spent(since=TODAY) == pytest.approx(1.0)
    assert guard.check(PAID, 0.01, policy, run_id=None) is not None


_RESERVER = textwrap.dedent("""
    import sys, time
    from tierwise.catalog.policy import Policy
    from tierwise.catalog.specs import ModelSpec, Price, Provider
    from tierwise.guards.budget import BudgetGuard, Reservation
    from tierwise.ledger import Ledger
    spec = ModelSpec(key="gpt-x", provider=Provider.OPENAI, model="gpt-x", tier="paid",
                     context_window=128_000, price=Price(input_per_mtok=2.5, output_per_mtok=10.0))
    with Ledger(sys.argv[1]) as ledger:
        guard = BudgetGuard(ledger)
        print("ready", flush=True)
        sys.stdin.readline()
        held = [guard.reserve(spec, Policy(mode="balanced", max_cost_per_day=1.0),
                              prompt_tokens=0, max_tokens=10_000, expected_tokens=10_000,
                              run_id=None) for _ in range(int(sys.argv[2]))]
        print(sum(h.amount for h in held if isinstance(h, Reservation)), flush=True)
        if sys.argv[3] == "hold":
            sys.stdin.readline()  # killed here, holds in flight
""")


def _reserver(path: Path, n: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _RESERVER, str(path), str(n), mode], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip


def test_reservations_hold_across_processes(path: Path) -> None:
    Ledger(path).close()
    children = [_reserver(path, 10, "hold") for _ in range(3)]  # 3 x $1.00 wanted
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        held = [float(child.stdout.readline()) for child in children if child.stdout]
        assert sum(held) == pytest.approx(1.0)  # one cap, shared: never more
        with Ledger(path) as ledger:  # all three alive: their holds count here too
            assert BudgetGuard(ledger).check(PAID, 0.01, balanced(max_cost_per_day=1.0),
                                             run_id=None) is not None  # fmt: skip
        for child in children:
            child.kill()  # SIGKILL: no release, the holds stay in the file
            child.wait()
        with Ledger(path) as ledger:  # their processes are gone: the holds no longer count
            granted = hold(BudgetGuard(ledger), balanced(max_cost_per_day=1.0), 100_000)
            assert isinstance(granted, Reservation) and granted.max_tokens == 100_000
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.mark.timeout(600)
def test_a_day_cap_holds_for_processes_spending_through_the_router() -> None:
    """The issue's workload: $1.00 a day, 3 processes x 10 concurrent 2,000-token answers
    from the priciest paid model, then 1 process x 10 (the recorded spend was $1.52-$4.56)."""
    from benchmarks.budget_cap import run

    for processes, tokens in ((3, 2000), (1, 2000), (3, 500)):
        result = run(processes, 10, tokens)
        assert result.spent <= 1.0 + 1e-9, result
        assert result.outcomes.get("paid", 0) >= 1, result  # the cap was spent, not refused


# --------------------------------------------------------------------------- RPD quotas


# (moved to tests/test_quota.py: the daily quota is guards.quota's)


# --------------------------------------------------------------------------- the exception


def test_budget_exceeded_is_classified_and_pickles() -> None:
    exc = BudgetExceeded("per_day", limit=1.0, spent=0.95, estimate=0.1, model="gpt-x",
                         retry_after=60.0)  # fmt: skip
    assert exc.failure_kind is FailureKind.BUDGET_EXCEEDED
    assert classify(exc).kind is FailureKind.BUDGET_EXCEEDED
    back = pickle.loads(pickle.dumps(exc))
    assert (back.cap, back.limit, back.spent, back.left, back.model, back.retry_after) == (
        "per_day", 1.0, 0.95, exc.left, "gpt-x", 60.0,
    )  # fmt: skip
    assert str(back) == str(exc)
    over = BudgetExceeded("per_day", limit=1.0, spent=1.2)
    assert over.left == 0.0  # never negative


def test_status_lists_every_cap(ledger: Ledger, clock: Clock) -> None:
    spend(ledger, 0.25, run_id="run-1")
    spend(ledger, 0.0, spec=FREE)
    policy = balanced(
        max_cost_per_call=0.05, max_cost_per_run=1.0, max_cost_per_day=2.0,
        max_cost_per_provider_per_day={"openai": 0.5},
    )  # fmt: skip
    status = BudgetGuard(ledger, clock).status(policy, run_id="run-1", models=[PAID, FREE])
    assert status == [
        CapStatus("per_call", 0.05, 0.0),
        CapStatus("per_run", 1.0, 0.25),
        CapStatus("per_day", 2.0, 0.25),
        CapStatus("per_provider_day:openai", 0.5, 0.25),
        CapStatus("rpd:flash-x", 3, 1),
    ]
    assert status[3].left == 0.25
    assert BudgetGuard(None).status(policy) == [CapStatus("per_call", 0.05, 0.0)]
