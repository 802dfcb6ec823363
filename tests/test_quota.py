"""The daily request quota (RPD): one owner, counted since 00:00 UTC, refused as a quota."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tierwise.ledger.store as ledger_module
from tierwise.catalog.specs import Limits, ModelSpec, Provider
from tierwise.guards.quota import DailyQuota, QuotaExceeded, QuotaHold
from tierwise.ledger import DAY, Ledger, LedgerRow
from tierwise.providers.failures import FailureKind, classify

TODAY = 20_000 * DAY  # a UTC midnight
NOON = TODAY + DAY / 2

FREE = ModelSpec(
    key="flash-x", provider=Provider.GEMINI, model="gemini-x", tier="free",
    context_window=1_000_000, limits=Limits(rpm=10, rpd=3),
)  # fmt: skip
UNLIMITED = ModelSpec(
    key="gpt-x", provider=Provider.OPENAI, model="gpt-x", tier="paid", context_window=128_000,
)  # fmt: skip


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sent(ledger: Ledger, *, at: float = NOON, **fields: Any) -> None:
    values: dict[str, Any] = dict(
        time=at, run_id="run-1", thread_id=None, node=None, operation="classification",
        complexity="simple", policy="free_first", provider=FREE.provider.value,
        model=FREE.key, tier="free", outcome="ok", sent=True, latency=1.0,
        time_to_first_token=None, input_tokens=10, output_tokens=5, cost=0.0,
        escalation=False, repair=False, detail="",
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


def held(result: QuotaHold | QuotaExceeded) -> QuotaHold:
    assert isinstance(result, QuotaHold), result
    return result


def refused(result: QuotaHold | QuotaExceeded) -> QuotaExceeded:
    assert isinstance(result, QuotaExceeded), result
    return result


def test_counts_the_requests_sent_since_utc_midnight(ledger: Ledger) -> None:
    clock = Clock()
    quota = DailyQuota(ledger, clock)
    sent(ledger, at=TODAY - 5)  # yesterday
    sent(ledger)
    sent(ledger, outcome="rate_limited")  # sent: the provider counted it
    sent(ledger, outcome="rate_limited", sent=False)  # never sent
    held(quota.take(FREE)).cancel()
    sent(ledger)
    refusal = refused(quota.take(FREE))
    assert (refusal.model, refusal.limit, refusal.used, refusal.retry_after) == (
        "flash-x", 3, 3, DAY / 2)
    assert str(refusal) == (
        "daily request quota of flash-x used up: 3 of 3 requests sent since 00:00 UTC; "
        "resets in 12h00m"
    )
    clock.now = TODAY + DAY  # the next UTC day
    held(quota.take(FREE))


def test_a_refusal_is_a_quota_not_a_budget(ledger: Ledger) -> None:
    for _ in range(3):
        sent(ledger)
    refusal = refused(DailyQuota(ledger, Clock()).take(FREE))
    failure = classify(refusal)
    assert failure.kind is FailureKind.QUOTA_EXHAUSTED
    assert failure.retry_after == DAY / 2


def test_requests_in_flight_count_until_the_ledger_has_them(ledger: Ledger) -> None:
    quota = DailyQuota(ledger, Clock())
    holds = [held(quota.take(FREE)) for _ in range(3)]
    refused(quota.take(FREE))  # three in flight, none recorded yet
    holds[0].cancel()  # never left: its place is free again
    held(quota.take(FREE))


def test_without_a_ledger_this_process_counts_its_own_day() -> None:
    clock = Clock()
    quota = DailyQuota(None, clock)
    for _ in range(3):
        held(quota.take(FREE)).release()
    assert refused(quota.take(FREE)).used == 3
    clock.now = TODAY + DAY + 1
    held(quota.take(FREE))


def test_a_model_without_rpd_is_never_refused_by_count(ledger: Ledger) -> None:
    quota = DailyQuota(ledger, Clock())
    for _ in range(10):
        held(quota.take(UNLIMITED)).release()


def test_the_providers_word_blocks_until_its_reset_or_midnight(ledger: Ledger) -> None:
    clock = Clock()
    quota = DailyQuota(ledger, clock)
    quota.exhausted("flash-x", retry_after=90.0)
    refusal = refused(quota.take(FREE))
    assert refusal.retry_after == 90.0 and "the provider said so" in str(refusal)
    clock.now += 90.0
    held(quota.take(FREE)).cancel()
    quota.exhausted("gpt-x")  # no reset named: 00:00 UTC
    assert refused(quota.take(UNLIMITED)).retry_after == pytest.approx(TODAY + DAY - clock.now)


def test_quota_survives_a_restart(path: Path) -> None:
    with Ledger(path) as ledger:
        for _ in range(3):
            sent(ledger)
    with Ledger(path) as restarted:
        assert refused(DailyQuota(restarted, Clock()).take(FREE)).used == 3


_RECORD_FREE = textwrap.dedent("""
    import sys
    from tierwise.ledger import Ledger, LedgerRow
    with Ledger(sys.argv[1]) as ledger:
        ledger.record(LedgerRow(
            float(sys.argv[2]), None, None, None, "classification", "simple", "free_first",
            "gemini", "flash-x", "free", "ok", True, 0.2, None, 10, 5, 0.0, False, False, ""))
""")


def test_quota_holds_across_processes(path: Path) -> None:
    root = str(Path(ledger_module.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
    with Ledger(path, refresh_interval=0) as ledger:
        quota = DailyQuota(ledger, Clock())
        sent(ledger)  # this process: 1
        for _ in range(2):  # two other processes, one request each
            subprocess.run([sys.executable, "-c", _RECORD_FREE, str(path), str(NOON)],
                           check=True, timeout=60, env=env)  # fmt: skip
        assert refused(quota.take(FREE)).used == 3


def test_an_unreadable_ledger_refuses(clock: None = None) -> None:
    import sqlite3

    class Broken:
        def requests(self, *_: Any, **__: Any) -> int:
            raise sqlite3.OperationalError("disk I/O error")

    refusal = refused(DailyQuota(Broken(), Clock()).take(FREE))  # type: ignore[arg-type]
    assert "the ledger could not be read: disk I/O error" in str(refusal)
