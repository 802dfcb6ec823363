"""Rate limiter and health board: deterministic, with an injected clock and no sleeps."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Limits, load_default_catalog
from tierwise.guards.backend import Denied, InMemoryLimitBackend, LimitBackend, Permit
from tierwise.guards.health import HealthBoard
from tierwise.guards.limits import RateLimiter
from tierwise.providers.headers import parse_duration
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot


class Clock:
    """A hand-wound clock: tests move time with ``advance`` or by assigning ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limiter_with(
    clock: Clock, key: str = "m", *, time_scale: float = 1.0, **limits: int
) -> RateLimiter:
    limiter = RateLimiter(clock=clock, time_scale=time_scale)
    limiter.configure(key, Limits(**limits))
    return limiter


def granted(result: Permit | Denied) -> Permit:
    assert isinstance(result, Permit), f"expected a permit, got {result}"
    return result


def denied(result: Permit | Denied) -> Denied:
    assert isinstance(result, Denied), "expected a denial, got a permit"
    return result


def expect(refusal: Denied, limit: str, retry_after: float) -> None:
    assert refusal.limit == limit
    assert refusal.retry_after == pytest.approx(retry_after)


# --------------------------------------------------------------------------- RPM


def test_rpm_grants_n_then_denies_until_the_oldest_request_leaves(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=3)
    for _ in range(3):
        granted(limiter.try_acquire("m"))
        clock.advance(10)
    refusal = denied(limiter.try_acquire("m"))
    assert refusal.limit == "rpm"
    assert refusal.key == "m"
    assert refusal.retry_after == pytest.approx(30.0)  # the t=0 request leaves at t=60
    assert not refusal
    assert "rpm limit of 'm' reached" in str(refusal)
    assert limiter.wait_time("m") == pytest.approx(30.0)


def test_rpm_window_slides(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=2)
    granted(limiter.try_acquire("m"))  # t=0
    clock.advance(20)
    granted(limiter.try_acquire("m"))  # t=20
    clock.advance(39.999)
    denied(limiter.try_acquire("m"))
    clock.advance(0.001)  # t=60: the first request has left the window
    assert limiter.wait_time("m") == 0.0
    granted(limiter.try_acquire("m"))
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(20.0)
    assert limiter.usage("m").requests_minute == 2


def test_unconfigured_key_is_unlimited(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)
    for _ in range(1000):
        granted(limiter.try_acquire("anything", 10_000))
    assert limiter.usage("anything").requests_minute == 1000


# --------------------------------------------------------------------------- TPM


def test_tpm_estimate_and_settle_over_estimate_gives_tokens_back(clock: Clock) -> None:
    limiter = limiter_with(clock, tpm=1000)
    first = granted(limiter.try_acquire("m", 600))
    refusal = denied(limiter.try_acquire("m", 500))
    expect(refusal, "tpm", 60.0)
    first.settle(300)  # the call used less than estimated
    assert limiter.usage("m").tokens_minute == 300
    granted(limiter.try_acquire("m", 500))
    assert limiter.usage("m").tokens_minute == 800


def test_tpm_settle_under_estimate_takes_more(clock: Clock) -> None:
    limiter = limiter_with(clock, tpm=1000)
    first = granted(limiter.try_acquire("m", 100))
    first.settle(900)
    assert limiter.usage("m").tokens_minute == 900
    assert denied(limiter.try_acquire("m", 200)).limit == "tpm"
    granted(limiter.try_acquire("m", 100))
    first.settle(10)  # only the first settle counts
    assert limiter.usage("m").tokens_minute == 1000


def test_tpm_denial_waits_until_enough_tokens_leave(clock: Clock) -> None:
    limiter = limiter_with(clock, tpm=1000)
    granted(limiter.try_acquire("m", 300))  # t=0
    clock.advance(10)
    granted(limiter.try_acquire("m", 300))  # t=10
    clock.advance(10)
    granted(limiter.try_acquire("m", 300))  # t=20
    # 900 used; 500 more needs 400 freed: the t=0 and t=10 entries, gone at t=70.
    assert denied(limiter.try_acquire("m", 500)).retry_after == pytest.approx(50.0)


def test_request_larger_than_tpm_never_fits(clock: Clock) -> None:
    limiter = limiter_with(clock, tpm=1000)
    refusal = denied(limiter.try_acquire("m", 1001))
    assert refusal.limit == "tpm"
    assert math.isinf(refusal.retry_after)
    assert "never fits" in str(refusal)


def test_settle_after_the_window_moved_on_does_not_corrupt_counts(clock: Clock) -> None:
    limiter = limiter_with(clock, tpm=1000)
    permit = granted(limiter.try_acquire("m", 400))
    clock.advance(61)
    permit.settle(5000)
    assert limiter.usage("m").tokens_minute == 0
    granted(limiter.try_acquire("m", 1000))


# --------------------------------------------------------------------------- RPD


def test_cancel_returns_the_reservation(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=1, tpm=100, rpd=1)
    permit = granted(limiter.try_acquire("m", 100))
    denied(limiter.try_acquire("m", 1))
    permit.cancel()
    usage = limiter.usage("m")
    assert (usage.requests_minute, usage.tokens_minute, usage.requests_day) == (0, 0, 0)
    again = granted(limiter.try_acquire("m", 100))
    again.settle(50)
    again.cancel()  # too late: the call was settled
    assert limiter.usage("m").tokens_minute == 50


def test_cancelled_entries_do_not_count_when_computing_retry_after(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=2)
    first = granted(limiter.try_acquire("m"))  # t=0
    clock.advance(10)
    granted(limiter.try_acquire("m"))  # t=10
    clock.advance(10)
    first.cancel()
    granted(limiter.try_acquire("m"))  # t=20, takes the cancelled slot
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(50.0)  # t=10 leaves


# --------------------------------------------------------------------------- scale, keys


def test_time_scale_shrinks_windows(clock: Clock) -> None:
    limiter = limiter_with(clock, time_scale=0.01, rpm=1)
    granted(limiter.try_acquire("m"))
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(0.6)
    assert limiter.wait_time("m") == pytest.approx(0.6)
    clock.advance(0.6)
    granted(limiter.try_acquire("m"))


def test_time_scale_keeps_provider_durations_real(clock: Clock) -> None:
    limiter = limiter_with(clock, time_scale=0.01, rpm=100)
    limiter.penalize("m", retry_after=2.0)
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(2.0)
    assert limiter.usage("m").blocked_for == pytest.approx(2.0)


def test_provider_wide_key_is_all_or_nothing(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)
    limiter.configure("groq", Limits(rpm=2))
    limiter.configure("groq/a", Limits(rpm=5))
    limiter.configure("groq/b", Limits(rpm=5))
    both = granted(limiter.try_acquire("groq/a", 10, also=("groq",)))
    granted(limiter.try_acquire("groq/b", 10, also=("groq",)))
    refusal = denied(limiter.try_acquire("groq/a", 10, also=("groq",)))
    assert (refusal.key, refusal.limit) == ("groq", "rpm")
    assert limiter.usage("groq/a").requests_minute == 1  # nothing reserved on denial
    assert limiter.wait_time("groq/a", also=("groq",)) == pytest.approx(60.0)
    both.settle(3)
    assert limiter.usage("groq/a").tokens_minute == 3
    assert limiter.usage("groq").tokens_minute == 13
    granted(limiter.try_acquire("groq/a"))  # the model alone still has room


def test_in_memory_backend_satisfies_the_protocol() -> None:
    backend: LimitBackend = InMemoryLimitBackend()
    limiter = RateLimiter(backend)
    granted(limiter.try_acquire("m"))


# --------------------------------------------------------------------------- provider word


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("2.5s", 2.5),
        ("120ms", 0.12),
        ("7", 7.0),
        ("0.5", 0.5),
        (" 12 ", 12.0),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723.0),
        ("1.5µs", 1.5e-6),
        ("250us", 2.5e-4),
        ("100ns", 1e-7),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s2", None),
        ("-1", None),
        ("s", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


def test_penalize_retry_after_blocks_until_then(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.penalize("m", retry_after=30)
    refusal = denied(limiter.try_acquire("m"))
    expect(refusal, "rpm", 30.0)
    clock.advance(29.9)
    denied(limiter.try_acquire("m"))
    clock.advance(0.1)
    granted(limiter.try_acquire("m"))


def test_penalize_keeps_the_later_block(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.penalize("m", retry_after=30)
    limiter.penalize("m", retry_after=5)
    assert limiter.wait_time("m") == pytest.approx(30.0)


def test_penalize_reads_retry_after_headers(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.penalize("m", headers={"Retry-After": "12"})
    assert limiter.wait_time("m") == pytest.approx(12.0)
    other = limiter_with(clock, rpm=100)
    other.penalize("m", headers={"retry-after": "12", "retry-after-ms": "1500"})
    assert other.wait_time("m") == pytest.approx(1.5)


def test_penalize_without_any_duration_blocks_one_window(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.penalize("m")
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(60.0)


def test_the_limiter_leaves_the_daily_quota_to_guards_quota(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100, rpd=1)
    for _ in range(5):
        granted(limiter.try_acquire("m"))
    assert limiter.usage("m").limits.rpd is None


def test_penalize_with_exhausted_headers_blocks_until_their_reset(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.penalize(
        "m",
        headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2.5s"},
    )
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("reset", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("2.5s", 2.5), ("120ms", 0.12), ("7", 7.0)]
)
def test_remaining_zero_on_success_blocks_until_reset(
    clock: Clock, reset: str, seconds: float
) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.observe_headers(
        "m", {"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": reset}
    )
    refusal = denied(limiter.try_acquire("m"))
    assert refusal.retry_after == pytest.approx(seconds)
    assert refusal.limit == ("rpd" if seconds > 60 else "rpm")
    assert limiter.usage("m").blocked_for == pytest.approx(seconds)
    clock.advance(seconds)
    granted(limiter.try_acquire("m"))


def test_remaining_tokens_zero_blocks_with_tpm(clock: Clock) -> None:
    limiter = limiter_with(clock, tpm=100_000)
    limiter.observe_headers(
        "m", {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}
    )
    refusal = denied(limiter.try_acquire("m", 10))
    expect(refusal, "tpm", 360.0)


def test_remaining_requests_caps_what_may_start_before_reset(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=100)
    limiter.observe_headers(
        "m", {"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "10s"}
    )
    first = granted(limiter.try_acquire("m"))
    granted(limiter.try_acquire("m"))
    assert denied(limiter.try_acquire("m")).retry_after == pytest.approx(10.0)
    first.cancel()  # never reached the provider: the allowance is given back
    granted(limiter.try_acquire("m"))
    clock.advance(10)
    granted(limiter.try_acquire("m"))


def test_remaining_tokens_are_charged_and_settled(clock: Clock) -> None:
    limiter = limiter_with(clock)
    limiter.observe_headers(
        "m", {"x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "30s"}
    )
    permit = granted(limiter.try_acquire("m", 800))
    assert denied(limiter.try_acquire("m", 300)).limit == "tpm"
    permit.settle(500)
    granted(limiter.try_acquire("m", 300))


def test_limit_headers_lower_the_catalog_limits_until_reconfigured(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=500, tpm=100_000)
    limiter.observe_headers(
        "m",
        {
            "x-ratelimit-limit-requests": "2",
            "x-ratelimit-limit-tokens": "5000",
            "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "1s",
        },
    )
    assert limiter.usage("m").limits == Limits(rpm=2, tpm=5000)
    granted(limiter.try_acquire("m"))
    granted(limiter.try_acquire("m"))
    clock.advance(1)  # the provider's allowance reset, the learned RPM still holds
    assert denied(limiter.try_acquire("m")).limit == "rpm"
    limiter.observe_headers("m", {"x-ratelimit-limit-requests": "1000"})  # never raises it
    assert limiter.usage("m").limits.rpm == 2
    limiter.configure("m", Limits(rpm=500, tpm=100_000))
    assert limiter.usage("m").limits == Limits(rpm=500, tpm=100_000)


def test_limit_learned_from_headers_counts_requests_already_made(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)  # nothing configured: the catalog knew no limit
    for _ in range(3):
        granted(limiter.try_acquire("m"))
    limiter.observe_headers("m", {"x-ratelimit-limit-requests": "3"})
    refusal = denied(limiter.try_acquire("m"))
    expect(refusal, "rpm", 60.0)


def test_garbage_headers_are_ignored(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=5)
    limiter.observe_headers(
        "m",
        {
            "x-ratelimit-remaining-requests": "lots",
            "x-ratelimit-reset-requests": "tomorrow",
            "content-type": "application/json",
        },
    )
    granted(limiter.try_acquire("m"))
    assert limiter.usage("m").limits.rpm == 5


# --------------------------------------------------------------------------- concurrency


def test_threads_get_exactly_n_permits(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=250, tpm=10**9)
    barrier = threading.Barrier(8)
    counts = [0] * 8

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(2000):
            if limiter.try_acquire("m", 7):
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 250
    usage = limiter.usage("m")
    assert (usage.requests_minute, usage.tokens_minute) == (250, 250 * 7)


def test_threads_settling_and_cancelling_keep_counts_exact(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=10**6, tpm=10**9)
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        for n in range(1000):
            permit = granted(limiter.try_acquire("m", 10))
            if n % 2:
                permit.cancel()
            else:
                permit.settle(3)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = limiter.usage("m")
    assert (usage.requests_minute, usage.tokens_minute) == (4000, 4000 * 3)


async def test_asyncio_tasks_get_exactly_n_permits(clock: Clock) -> None:
    limiter = limiter_with(clock, rpm=50)

    async def task() -> bool:
        await asyncio.sleep(0)
        first = bool(limiter.try_acquire("m"))
        await asyncio.sleep(0)
        return first

    results = await asyncio.gather(*(task() for _ in range(200)))
    assert sum(results) == 50


# --------------------------------------------------------------------------- circuit breaker


def board_with(
    clock: Clock,
    *,
    base_cooldown: float = 5.0,
    max_cooldown: float = 300.0,
    window: float = 60.0,
    half_open_calls: int = 1,
) -> HealthBoard:
    return HealthBoard(
        clock=clock,
        base_cooldown=base_cooldown,
        max_cooldown=max_cooldown,
        window=window,
        half_open_calls=half_open_calls,
    )


def trip(board: HealthBoard, key: str = "m", kind: str = "timeout", times: int = 3) -> None:
    for _ in range(times):
        board.record_failure(key, kind)


def test_trips_after_threshold(clock: Clock) -> None:
    board = board_with(clock)
    assert board.record_failure("m", "timeout") == "closed"
    assert board.record_failure("m", "unavailable") == "closed"
    assert board.allow("m")
    assert board.record_failure("m", "timeout") == "open"
    assert board.state("m") == "open"
    assert not board.allow("m")
    assert board.allow("other")


def test_successes_or_a_quiet_window_keep_it_closed(clock: Clock) -> None:
    board = board_with(clock, window=60.0)
    trip(board, times=2)
    for _ in range(5):
        board.record_success("m")
    trip(board, times=2)  # 4 failures in 9 calls: under half
    assert board.state("m") == "closed"
    clock.advance(61)  # all of it too old to count
    trip(board, times=2)
    assert board.state("m") == "closed"
    board.record_success("m")
    assert board.record_failure("m", "timeout") == "open"  # 3 of 4 calls failed


def test_failure_rate_below_the_threshold_never_trips(clock: Clock) -> None:
    board = board_with(clock)
    for i in range(1000):  # one call in ten fails, three in a row after a few successes
        assert board.allow("m")
        clock.advance(0.05)
        if i % 30 in (15, 16, 17):
            board.record_failure("m", "unavailable")
        else:
            board.record_success("m")
    assert board.state("m") == "closed"


def test_a_burst_of_concurrent_failures_is_one_signal(clock: Clock) -> None:
    """100 calls in flight, the 10 that fail answer first (issue 14): still closed."""
    board = board_with(clock)
    for _wave in range(2):
        assert all(board.allow("m") for _ in range(100))
        for _ in range(10):
            assert board.record_failure("m", "unavailable") == "closed"
        for _ in range(90):
            board.record_success("m")
        clock.advance(0.5)
    assert board.state("m") == "closed"


def test_a_dead_model_under_concurrency_trips_once(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    assert all(board.allow("m") for _ in range(100))
    states = [board.record_failure("m", "unavailable") for _ in range(100)]
    assert states.count("closed") == 49 and states[49] == "open"  # half of 100 started
    clock.advance(5)
    assert board.state("m") == "half_open"  # one trip: the base cooldown, not 2**n of it


def test_a_dead_model_called_one_at_a_time_trips_at_the_threshold(clock: Clock) -> None:
    board = board_with(clock)
    for expected in ("closed", "closed", "open"):
        assert board.allow("m")
        assert board.record_failure("m", "timeout") == expected


@pytest.mark.parametrize("kind", ["invalid_output", "rate_limited", "bad_request", "auth"])
def test_non_counting_kinds_do_not_trip(clock: Clock, kind: str) -> None:
    board = board_with(clock)
    trip(board, kind=kind, times=10)
    assert board.state("m") == "closed"
    trip(board, times=2)
    board.record_failure("m", kind)  # neither counts nor breaks the streak
    assert board.record_failure("m", "timeout") == "open"


def test_cooldown_grows_on_repeated_trips_and_is_capped(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0, max_cooldown=15.0)
    trip(board)
    cooldowns = []
    for _ in range(4):
        start = clock.now
        while board.state("m") == "open":
            clock.advance(0.5)
        cooldowns.append(clock.now - start)
        assert board.allow("m")  # the probe
        assert board.record_failure("m", "timeout") == "open"
    assert cooldowns == [5.0, 10.0, 15.0, 15.0]


def test_failures_while_open_do_not_extend_the_cooldown(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    trip(board)
    clock.advance(4)
    trip(board, times=5)  # late reports from calls started before the trip
    clock.advance(1)
    assert board.state("m") == "half_open"


def test_half_open_admits_a_bounded_trickle(clock: Clock) -> None:
    board = HealthBoard(clock=clock, base_cooldown=5.0)  # the default trickle: 3
    trip(board)
    clock.advance(5)
    assert board.state("m") == "half_open"
    assert [board.allow("m") for _ in range(5)] == [True] * 3 + [False] * 2
    board.record_success("m")
    assert board.state("m") == "closed"
    assert all(board.allow("m") for _ in range(10))


def test_last_resort_is_the_least_recently_failed(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=30.0)
    trip(board, "a")
    clock.advance(1)
    trip(board, "b")
    assert board.last_resort(["b", "a"]) == "a"
    assert board.last_resort(["b"]) == "b"
    assert board.last_resort(["healthy"]) is None


@pytest.mark.parametrize("trickle", [1, 3])
def test_concurrent_allow_in_half_open_gives_the_trickle(clock: Clock, trickle: int) -> None:
    for _ in range(10):
        board = board_with(clock, base_cooldown=5.0, half_open_calls=trickle)
        trip(board)
        clock.advance(5)
        barrier = threading.Barrier(8)
        answers: list[bool] = []

        def caller(board: HealthBoard, barrier: threading.Barrier, answers: list[bool]) -> None:
            barrier.wait()
            answers.append(board.allow("m"))

        threads = [
            threading.Thread(target=caller, args=(board, barrier, answers)) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == [False] * (8 - trickle) + [True] * trickle


def test_probe_success_closes_and_resets_growth(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    trip(board)
    clock.advance(5)
    assert board.allow("m")
    board.record_failure("m", "timeout")  # second trip: 10 s
    clock.advance(10)
    assert board.allow("m")
    board.record_success("m")
    assert board.state("m") == "closed"
    assert board.allow("m") and board.allow("m")
    trip(board)
    clock.advance(5)  # back to the base cooldown
    assert board.state("m") == "half_open"


def test_success_while_open_is_ignored(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    trip(board)
    board.record_success("m")  # a call started before the trip
    assert board.state("m") == "open"


def test_lost_probe_is_reissued_after_probe_timeout(clock: Clock) -> None:
    board = HealthBoard(clock=clock, base_cooldown=5.0, probe_timeout=30.0, half_open_calls=1)
    trip(board)
    clock.advance(5)
    assert board.allow("m")
    clock.advance(29)
    assert not board.allow("m")
    clock.advance(1)
    assert board.allow("m")


def test_non_counting_outcome_of_a_probe_frees_the_ticket(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    trip(board)
    clock.advance(5)
    assert board.allow("m")
    board.record_failure("m", "rate_limited")
    assert board.state("m") == "half_open"
    assert board.allow("m")


# --------------------------------------------------------------------------- snapshot

PROVIDERS = {"groq/a": "groq", "groq/b": "groq", "gemini/c": "gemini"}
BASE = Snapshot(frozenset(PROVIDERS))


def test_healthy_snapshot_is_the_base_itself(clock: Clock) -> None:
    board = board_with(clock)
    assert board.snapshot(BASE, PROVIDERS) is BASE
    board.record_failure("groq/a", "timeout")  # not tripped: nothing to show
    assert board.snapshot(BASE, PROVIDERS) is BASE


def test_snapshot_marks_cooling_models_with_live_reasons(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    trip(board, "groq/a")
    snap = board.snapshot(BASE, PROVIDERS)
    assert snap.cooling == {"groq/a"}
    assert snap.available == BASE.available
    assert snap.reasons["groq/a"] == "cooling down 5.0 s more after 3 timeouts"
    clock.advance(2.3)
    assert board.snapshot(BASE, PROVIDERS) is snap
    assert snap.reasons["groq/a"] == "cooling down 2.7 s more after 3 timeouts"
    clock.advance(2.7)
    recovered = board.snapshot(BASE, PROVIDERS)
    assert recovered is BASE  # half-open with the probe available: callable again
    assert board.allow("groq/a")
    probing = board.snapshot(BASE, PROVIDERS)
    assert probing.cooling == {"groq/a"}
    assert probing.reasons["groq/a"].startswith("recovering: 1 probe call in flight")
    board.record_failure("groq/a", "unavailable")
    reopened = board.snapshot(BASE, PROVIDERS)
    assert reopened.reasons["groq/a"] == (
        "cooling down 10.0 s more after a failed recovery probe (unavailable); "
        "trip 2, cooldown 10 s"
    )


def test_mixed_failure_kinds_are_named(clock: Clock) -> None:
    board = board_with(clock)
    board.record_failure("groq/a", "unavailable")
    board.record_failure("groq/a", "timeout")
    board.record_failure("groq/a", "unavailable")
    reason = board.snapshot(BASE, PROVIDERS).reasons["groq/a"]
    assert reason.endswith("after 2 unavailable errors and 1 timeout")


def test_snapshot_is_cached_until_health_changes(clock: Clock) -> None:
    board = board_with(clock, base_cooldown=5.0)
    trip(board, "groq/a")
    first = board.snapshot(BASE, PROVIDERS)
    assert board.snapshot(BASE, PROVIDERS) is first
    assert board.snapshot(BASE, dict(PROVIDERS)) is first  # an equal mapping also hits
    board.record_failure("gemini/c", "timeout")  # a change, but not a visible one
    assert board.snapshot(BASE, PROVIDERS) is first
    trip(board, "gemini/c", times=2)
    second = board.snapshot(BASE, PROVIDERS)
    assert second is not first
    assert second.cooling == {"groq/a", "gemini/c"}
    assert board.snapshot(BASE, PROVIDERS) is second


def test_auth_disables_a_provider_until_enabled(clock: Clock) -> None:
    board = board_with(clock)
    board.disable_provider("groq")
    snap = board.snapshot(BASE, PROVIDERS)
    assert snap.available == {"gemini/c"}
    assert snap.reasons["groq/a"] == "auth failed: disabled until the key changes"
    assert board.disabled_providers == {"groq": "auth failed"}
    assert board.snapshot(BASE, PROVIDERS) is snap
    board.disable_provider("groq", "401 invalid api key")
    assert snap.reasons["groq/b"] == "401 invalid api key: disabled until the key changes"
    board.enable_provider("groq")
    assert board.snapshot(BASE, PROVIDERS) is BASE


def test_snapshot_drives_the_selector(clock: Clock) -> None:
    catalog = load_default_catalog()
    selector = Selector(catalog)
    base = Snapshot.everything(catalog)
    provider_of = {key: spec.provider.value for key, spec in catalog.models.items()}
    board = board_with(clock)
    policy = Policy(mode="free_first")
    chain = selector.candidates("classification", "simple", policy, base)
    primary = chain[0]
    trip(board, primary.key)
    board.disable_provider(chain[1].provider.value)
    explained = selector.explain(
        "classification", "simple", policy, board.snapshot(base, provider_of)
    )
    assert primary not in explained.candidates
    assert chain[1] not in explained.candidates
    reasons = {e.spec.key: e.reason for e in explained.excluded}
    assert reasons[primary.key].startswith("cooling down")
    assert reasons[chain[1].key].endswith("disabled until the key changes")


# ----------------------------------------- the breaker under concurrent faults (issue 14)


def _one_model_router(simulator: object, **kwargs: object) -> tuple[object, object]:
    import dataclasses

    from tierwise.catalog.specs import Catalog, TaskType
    from tierwise.routing.router import ModelRouter
    from tierwise.testing import Simulator

    assert isinstance(simulator, Simulator)
    catalog = Catalog.from_mapping({
        "models": {"only": {"provider": "openai", "model": "breaker-only", "tier": "free",
                            "context_window": 32_768}},
        "chains": {op.value: {"free": ["only"]} for op in TaskType},
    })
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    router = ModelRouter(
        settings, policy=Policy(mode="free_first", max_tier="free"),
        snapshot=Snapshot.everything(catalog), ledger=None, **kwargs,  # type: ignore[arg-type]
    )
    return router, catalog.spec("only")


def test_a_burst_of_503s_in_flight_neither_trips_nor_loses_calls(simulator: object) -> None:
    """100 concurrent calls, the first 10 answered 503 at once (before the 90 successes),
    then a second wave: every call answered, the breaker closed, 10 jittered retries."""
    from tierwise.routing.router import ModelRouter
    from tierwise.testing import Fault, Reply, Simulator

    assert isinstance(simulator, Simulator)
    router, spec = _one_model_router(simulator)
    assert isinstance(router, ModelRouter)
    simulator.script(spec, Reply.default(), first_byte=0.05)  # successes take a while
    simulator.script(spec, Fault.server_error(503), times=10)  # newer: the first 10 fail fast

    async def wave() -> list[object]:
        return await asyncio.gather(
            *(router.ainvoke("rewriting", f"request {i}") for i in range(100))
        )

    async def waves() -> tuple[list[object], list[object]]:
        first = await wave()
        await asyncio.sleep(0.5)
        return first, await wave()

    first, second = asyncio.run(waves())
    assert len(first) == len(second) == 100
    assert router.health.state("only") == "closed"
    retried = [r for r in first if len(r.attempts) == 2]  # type: ignore[attr-defined]
    assert len(retried) == 10
    assert all(r.attempts[0].failure is not None for r in retried)  # type: ignore[attr-defined]
    assert all(len(r.attempts) == 1 for r in second)  # type: ignore[attr-defined]
    assert len(simulator.requests_for(spec)) == 210


def test_when_every_candidate_is_cooling_one_last_resort_attempt_is_made(
    simulator: object,
) -> None:
    from tierwise.routing.results import NoModelAvailable
    from tierwise.routing.router import ModelRouter
    from tierwise.testing import Fault, Reply, Simulator

    assert isinstance(simulator, Simulator)
    clock = Clock()
    router, spec = _one_model_router(
        simulator, health=HealthBoard(clock=clock, base_cooldown=30.0)
    )
    assert isinstance(router, ModelRouter)
    simulator.script(spec, Fault.server_error(503), times=6)
    for _ in range(3):  # each call: the attempt and its one retry fail
        with pytest.raises(NoModelAvailable):
            router.invoke("rewriting", "hello")
    assert router.health.state("only") == "open"
    simulator.script(spec, Reply.text("recovered"))
    result = router.invoke("rewriting", "hello")  # cooling: no candidate but the last resort
    assert result.message.content == "recovered"
    assert [a.sent for a in result.attempts] == [True]
