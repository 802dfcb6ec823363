"""Rate limits (RPM / TPM / RPD sliding windows) and model health (circuit breakers).

Two pieces of live state decide whether a candidate model may be called *now*:

* :class:`RateLimiter` hands out non-blocking permits per limit key (a catalog model key,
  and optionally a provider-wide key), so free tiers are used right up to their limits and
  never beyond, and a model without a permit is skipped instead of queued. It learns from
  what providers say (``Retry-After``, ``x-ratelimit-*`` headers) because the catalog's
  published limits are often stale and other processes may share the same API key.
* :class:`HealthBoard` is a circuit breaker per model key: repeated ``unavailable`` /
  ``timeout`` failures cool a model down for a growing period, one probe call tests its
  recovery, and ``auth`` failures disable a whole provider. Its :meth:`HealthBoard.snapshot`
  feeds the selector.

Both are pure Python with no I/O and no awaits: every method holds a ``threading.Lock``
for a few microseconds at most, which makes them safe from threads and from asyncio tasks
alike (nothing can yield while the lock is held).

Why sliding logs: a provider may count requests in fixed windows (Gemini's day resets at
midnight), sliding windows, or token buckets (OpenAI, Groq). A sliding log of the last
60 s / 24 h admits at most ``limit`` requests in *every* window of that length, which
stays within all three schemes. GCRA or a token bucket with a burst of ``limit`` would
admit the burst *plus* its refill — nearly twice the limit within one window — and so
earn 429s from every provider that counts windows. Sliding logs cost one small object
per request kept for the window; for the limits free tiers have, that is little.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias

from tierwise.catalog.specs import Limits
from tierwise.routing.selector import Snapshot

__all__ = [
    "CircuitState",
    "Denied",
    "HealthBoard",
    "InMemoryLimitBackend",
    "LimitBackend",
    "LimitName",
    "Permit",
    "RateLimiter",
    "Restriction",
    "Usage",
    "parse_duration",
]

LimitName: TypeAlias = Literal["rpm", "tpm", "rpd"]
"""Which limit refused a permit: requests per minute, tokens per minute, requests per day."""

CircuitState: TypeAlias = Literal["closed", "open", "half_open"]
"""A model's circuit: callable, cooling down, or waiting for its single recovery probe."""

MINUTE: Final = 60.0
"""Length of the RPM / TPM window, in backend seconds (before ``time_scale``)."""
DAY: Final = 86_400.0
"""Length of the RPD window, in backend seconds (before ``time_scale``)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Denied:
    """No permit now; ``retry_after`` seconds from now one will be free (absent other traffic).

    It is falsy, so ``if permit := limiter.try_acquire(...)`` reads naturally.
    ``retry_after`` is ``math.inf`` when the request can never fit (an estimate larger
    than the whole TPM limit: the provider would refuse it as too large).
    """

    retry_after: float
    limit: LimitName
    key: str = ""

    def __bool__(self) -> bool:
        """Always false: a denial is not a permit."""
        return False

    def __str__(self) -> str:
        """A short sentence for attempt logs and ``NoModelAvailable``."""
        when = (
            "never fits" if math.isinf(self.retry_after) else f"frees in {self.retry_after:.3g} s"
        )
        return f"{self.limit} limit of {self.key!r} reached; a permit {when}"


class Permit:
    """A reservation of one request and an estimated number of tokens in every window.

    Call :meth:`settle` with the real token count once the provider reported usage (the
    TPM window is corrected both ways), or :meth:`cancel` when the call never reached the
    provider. Only the first of the two has an effect; a permit left alone simply keeps
    its estimate, which errs on the safe side.
    """

    __slots__ = ("_done", "_limiter", "_ticket")

    def __init__(self, limiter: RateLimiter, ticket: object) -> None:
        """Wrap the backend's opaque ``ticket``; only :class:`RateLimiter` creates these."""
        self._limiter = limiter
        self._ticket = ticket
        self._done = False

    def __bool__(self) -> bool:
        """Always true: a permit was granted."""
        return True

    def settle(self, actual_tokens: int) -> None:
        """Replace the token estimate by ``actual_tokens`` (prompt + completion used)."""
        if not self._done:
            self._done = True
            self._limiter._adjust(self._ticket, max(0, int(actual_tokens)))

    def cancel(self) -> None:
        """Give the request and its tokens back: the call never reached the provider.

        A request refused with 429 counts against the limit at some providers (OpenAI)
        and not at others; when in doubt, ``settle(0)`` keeps the request counted.
        """
        if not self._done:
            self._done = True
            self._limiter._adjust(self._ticket, None)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one key has used in its current windows, and the limits in force (diagnostics)."""

    key: str
    requests_minute: int
    tokens_minute: int
    requests_day: int
    limits: Limits
    blocked_for: float
    """Seconds until a provider-imposed block (Retry-After, remaining=0) ends; 0 if none."""


@dataclass(frozen=True, slots=True)
class Restriction:
    """What a provider said about one key, in backend seconds from now.

    Attributes:
        block: nothing may start for this long, blamed on this limit (``Retry-After``,
            a quota 429). Merged with an existing block by keeping the later end.
        requests: at most ``remaining`` requests may start in the next ``reset`` seconds
            (``x-ratelimit-remaining/reset-requests``); replaces the previous such
            allowance, since the provider's newest count is the best one we have.
        tokens: the same for tokens (``x-ratelimit-remaining/reset-tokens``).
        rpm_cap: a lower RPM than the catalog's (``x-ratelimit-limit-requests``).
        tpm_cap: a lower TPM than the catalog's (``x-ratelimit-limit-tokens``).
    """

    block: tuple[float, LimitName] | None = None
    requests: tuple[int, float, LimitName] | None = None
    tokens: tuple[int, float] | None = None
    rpm_cap: int | None = None
    tpm_cap: int | None = None


# --------------------------------------------------------------------------- backend


class LimitBackend(Protocol):
    """Where limit state lives: in this process now, in Redis when processes must share it.

    Times are in *backend seconds*; :class:`RateLimiter` passes its (scaled) clock as
    ``now``. Each method must be atomic over every key it touches — that is why the whole
    check-and-reserve sits in the backend rather than in the limiter. A Redis backend
    needs, per key, a sorted set of request members scored by start time (the member
    carries its token count, e.g. ``"<id>:<tokens>"``, so expiry can subtract tokens), a
    hash with the limits, running sums, allowances and block, and one Lua script per
    method: ``acquire`` = prune with ZRANGEBYSCORE/ZREMRANGEBYSCORE, check every key, then
    ZADD + HINCRBY on all of them or none; ``adjust`` = if the member is still in the set,
    swap it (same score) and HINCRBY the token sum by the difference; ``restrict`` =
    HSET with max/replace merges. Processes do not share a monotonic clock, so such a
    backend should read Redis ``TIME`` inside the scripts and ignore ``now`` (and with it
    ``time_scale``, which exists for in-memory tests and benchmarks).
    """

    def configure(self, key: str, limits: Limits) -> None:
        """Set ``key``'s limits (the catalog's), dropping limits learned from headers."""
        ...

    def acquire(self, keys: Sequence[str], tokens: int, now: float) -> object | Denied:
        """Reserve one request and ``tokens`` under every key, or none; ticket or denial."""
        ...

    def wait(self, keys: Sequence[str], tokens: int, now: float) -> Denied | None:
        """What :meth:`acquire` would refuse with, without reserving anything."""
        ...

    def adjust(self, ticket: object, tokens: int | None, now: float) -> None:
        """Correct a reservation to ``tokens`` actually used, or release it when ``None``."""
        ...

    def restrict(self, key: str, restriction: Restriction, now: float) -> None:
        """Apply what a provider said about ``key``."""
        ...

    def usage(self, key: str, now: float) -> Usage:
        """Current window counts and limits for ``key``."""
        ...


class _Allowance:
    """The provider's word: ``remaining`` more may start before ``until``."""

    __slots__ = ("limit", "remaining", "until")

    def __init__(self, remaining: int, until: float, limit: LimitName) -> None:
        self.remaining = remaining
        self.until = until
        self.limit: LimitName = limit


class _Entry:
    """One reserved request, shared by the minute log and (if RPD is limited) the day log."""

    __slots__ = ("in_day", "req_allow", "requests", "state", "t", "tok_allow", "tokens")

    def __init__(self, t: float, tokens: int, state: _KeyState) -> None:
        self.t = t
        self.tokens = tokens
        self.requests = 1
        self.state = state
        self.in_day = False
        self.req_allow: _Allowance | None = None
        self.tok_allow: _Allowance | None = None


class _KeyState:
    """Windows, running sums, limits and provider-imposed restrictions of one key."""

    __slots__ = (
        "block_limit",
        "block_until",
        "configured",
        "d_req",
        "dlog",
        "m_req",
        "m_tok",
        "mlog",
        "req_allow",
        "rpd",
        "rpm",
        "tok_allow",
        "tpm",
    )

    def __init__(self, limits: Limits) -> None:
        self.configured = limits
        self.rpm = limits.rpm
        self.tpm = limits.tpm
        self.rpd = limits.rpd
        self.mlog: deque[_Entry] = deque()
        self.dlog: deque[_Entry] = deque()
        self.m_req = 0
        self.m_tok = 0
        self.d_req = 0
        self.block_until = -math.inf
        self.block_limit: LimitName = "rpm"
        self.req_allow: _Allowance | None = None
        self.tok_allow: _Allowance | None = None

    def prune(self, now: float) -> None:
        """Drop entries that left their windows; a window is the half-open ``(now-W, now]``."""
        log = self.mlog
        if log:
            cut = now - MINUTE
            while log and log[0].t <= cut:
                e = log.popleft()
                self.m_req -= e.requests
                self.m_tok -= e.tokens
        log = self.dlog
        if log:
            cut = now - DAY
            while log and log[0].t <= cut:
                self.d_req -= log.popleft().requests

    def fits(self, tokens: int, now: float) -> bool:
        """Whether one more request of ``tokens`` is allowed now (prunes first)."""
        self.prune(now)
        if self.block_until > now:
            return False
        if self.rpm is not None and self.m_req >= self.rpm:
            return False
        if self.tpm is not None and self.m_tok + tokens > self.tpm:
            return False
        if self.rpd is not None and self.d_req >= self.rpd:
            return False
        a = self.req_allow
        if a is not None:
            if a.until <= now:
                self.req_allow = None
            elif a.remaining < 1:
                return False
        a = self.tok_allow
        if a is not None:
            if a.until <= now:
                self.tok_allow = None
            elif a.remaining < tokens:
                return False
        return True

    def reserve(self, tokens: int, now: float) -> _Entry:
        """Count one request of ``tokens`` in every window (call :meth:`fits` first)."""
        e = _Entry(now, tokens, self)
        self.mlog.append(e)
        self.m_req += 1
        self.m_tok += tokens
        if self.rpd is not None:
            e.in_day = True
            self.dlog.append(e)
            self.d_req += 1
        a = self.req_allow
        if a is not None:
            a.remaining -= 1
            e.req_allow = a
        a = self.tok_allow
        if a is not None:
            a.remaining -= tokens
            e.tok_allow = a
        return e

    def denial(self, key: str, tokens: int, now: float) -> Denied:
        """Why :meth:`fits` said no, with the wait until every constraint holds again."""
        waits: list[tuple[float, LimitName]] = []
        if self.block_until > now:
            waits.append((self.block_until - now, self.block_limit))
        if self.rpm is not None and self.m_req >= self.rpm:
            at = _freed_at(self.mlog, self.m_req - self.rpm + 1, by_tokens=False)
            waits.append((at + MINUTE - now, "rpm"))
        if self.tpm is not None and self.m_tok + tokens > self.tpm:
            if tokens > self.tpm:
                waits.append((math.inf, "tpm"))
            else:
                at = _freed_at(self.mlog, self.m_tok + tokens - self.tpm, by_tokens=True)
                waits.append((at + MINUTE - now, "tpm"))
        if self.rpd is not None and self.d_req >= self.rpd:
            at = _freed_at(self.dlog, self.d_req - self.rpd + 1, by_tokens=False)
            waits.append((at + DAY - now, "rpd"))
        a = self.req_allow
        if a is not None and a.remaining < 1:
            waits.append((a.until - now, a.limit))
        a = self.tok_allow
        if a is not None and a.remaining < tokens:
            waits.append((a.until - now, "tpm"))
        wait, limit = max(waits, key=lambda w: w[0]) if waits else (0.0, "rpm")
        return Denied(max(0.0, wait), limit, key)


def _freed_at(log: deque[_Entry], excess: int, *, by_tokens: bool) -> float:
    """Start time of the entry whose expiry frees ``excess`` requests (or tokens)."""
    freed = 0
    for e in log:
        freed += e.tokens if by_tokens else e.requests
        if freed >= excess:
            return e.t
    return math.inf


class InMemoryLimitBackend:
    """The default :class:`LimitBackend`: sliding logs in this process, one lock for all keys.

    Cost per permit is O(1) amortised (each entry is appended once and expired once);
    memory is one small object per request in the last minute, plus the last day for
    keys with an RPD limit — at most ``rpd`` live entries, because the limit holds them
    there. Keys nobody configured are unlimited but still logged for a minute, so a
    limit learned from a provider's headers applies to the requests already made.
    """

    def __init__(self) -> None:
        """Start with no keys; unknown keys are created unlimited on first use."""
        self._lock = threading.Lock()
        self._states: dict[str, _KeyState] = {}

    def _state(self, key: str) -> _KeyState:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _KeyState(Limits())
        return st

    def configure(self, key: str, limits: Limits) -> None:
        """Set limits; usage already logged for ``key`` keeps counting against them."""
        with self._lock:
            st = self._states.get(key)
            if st is None:
                self._states[key] = _KeyState(limits)
            else:
                st.configured = limits
                st.rpm, st.tpm, st.rpd = limits.rpm, limits.tpm, limits.rpd

    def acquire(self, keys: Sequence[str], tokens: int, now: float) -> object | Denied:
        """Check every key, then reserve in all of them; the ticket lists the entries."""
        with self._lock:
            if len(keys) == 1:
                key = keys[0]
                st = self._states.get(key) or self._state(key)
                if st.fits(tokens, now):
                    return [st.reserve(tokens, now)]
                return st.denial(key, tokens, now)
            states = [self._state(k) for k in keys]
            refused = [
                st.denial(k, tokens, now)
                for k, st in zip(keys, states, strict=True)
                if not st.fits(tokens, now)
            ]
            if refused:
                return max(refused, key=lambda d: d.retry_after)
            return [st.reserve(tokens, now) for st in states]

    def wait(self, keys: Sequence[str], tokens: int, now: float) -> Denied | None:
        """The denial :meth:`acquire` would return now, or ``None``; reserves nothing."""
        with self._lock:
            refused = []
            for key in keys:
                st = self._state(key)
                if not st.fits(tokens, now):
                    refused.append(st.denial(key, tokens, now))
        return max(refused, key=lambda d: d.retry_after) if refused else None

    def adjust(self, ticket: object, tokens: int | None, now: float) -> None:
        """Settle (``tokens``) or cancel (``None``) the entries of an in-memory ticket."""
        assert isinstance(ticket, list)
        with self._lock:
            for e in ticket:
                assert isinstance(e, _Entry)
                st = e.state
                st.prune(now)
                in_minute = e.t > now - MINUTE
                if tokens is None:
                    if in_minute:
                        st.m_req -= e.requests
                        st.m_tok -= e.tokens
                    if e.in_day and e.t > now - DAY:
                        st.d_req -= e.requests
                    if e.req_allow is not None and e.req_allow is st.req_allow:
                        e.req_allow.remaining += e.requests
                    if e.tok_allow is not None and e.tok_allow is st.tok_allow:
                        e.tok_allow.remaining += e.tokens
                    e.requests = e.tokens = 0
                else:
                    delta = tokens - e.tokens
                    if in_minute:
                        st.m_tok += delta
                    if e.tok_allow is not None and e.tok_allow is st.tok_allow:
                        e.tok_allow.remaining -= delta
                    e.tokens = tokens

    def restrict(self, key: str, restriction: Restriction, now: float) -> None:
        """Merge a provider's statement into ``key``'s state."""
        r = restriction
        with self._lock:
            st = self._state(key)
            if r.block is not None:
                until = now + r.block[0]
                if until > st.block_until:
                    st.block_until, st.block_limit = until, r.block[1]
            if r.requests is not None:
                remaining, reset, limit = r.requests
                st.req_allow = _Allowance(remaining, now + reset, limit)
            if r.tokens is not None:
                st.tok_allow = _Allowance(r.tokens[0], now + r.tokens[1], "tpm")
            if r.rpm_cap is not None and (st.rpm is None or r.rpm_cap < st.rpm):
                st.rpm = r.rpm_cap
            if r.tpm_cap is not None and (st.tpm is None or r.tpm_cap < st.tpm):
                st.tpm = r.tpm_cap

    def usage(self, key: str, now: float) -> Usage:
        """Window counts and the limits in force (the catalog's, lowered by headers)."""
        with self._lock:
            st = self._state(key)
            st.prune(now)
            blocked = max(0.0, st.block_until - now)
            for a in (st.req_allow, st.tok_allow):
                if a is not None and a.remaining < 1 and a.until > now:
                    blocked = max(blocked, a.until - now)
            return Usage(
                key,
                st.m_req,
                st.m_tok,
                st.d_req,
                Limits(rpm=st.rpm, tpm=st.tpm, rpd=st.rpd),
                blocked,
            )


# --------------------------------------------------------------------------- limiter

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a provider's duration: ``"1s"``, ``"6m0s"``, ``"2.5s"``, ``"120ms"``, ``"7"``.

    Go-style durations are what OpenAI and Groq put in ``x-ratelimit-reset-*``; plain
    numbers are seconds (``Retry-After``, Gemini's ``retryDelay`` without its ``s``).
    Returns ``None`` for anything else (an HTTP date, garbage) so a bad header is ignored
    rather than trusted.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except ValueError:
        return None


class RateLimiter:
    """Non-blocking RPM / TPM / RPD permits per limit key, corrected by what providers say.

    A limit key is any string: the router uses the catalog model key and may also
    configure a provider-wide key and pass it in ``also=``. Nothing ever blocks or
    queues: a denial says how long until a permit frees, and the caller decides whether
    that is worth waiting for (``max_wait``) or moves on to the next candidate.

    Example:
        >>> from tierwise.catalog.specs import Limits
        >>> now = [0.0]
        >>> limiter = RateLimiter(clock=lambda: now[0])
        >>> limiter.configure("groq/llama", Limits(rpm=2))
        >>> first, second = limiter.try_acquire("groq/llama"), limiter.try_acquire("groq/llama")
        >>> limiter.try_acquire("groq/llama")
        Denied(retry_after=60.0, limit='rpm', key='groq/llama')
        >>> now[0] = 60.0
        >>> bool(limiter.try_acquire("groq/llama"))
        True
    """

    def __init__(
        self,
        backend: LimitBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
    ) -> None:
        """Use ``backend`` (in-memory by default) and ``clock``.

        ``time_scale`` shrinks every window (0.01 makes a "minute" last 0.6 s of
        ``clock``) for tests and benchmarks against a simulator that scales time the same
        way. Durations a provider reports (``Retry-After``, resets) are real seconds and
        are not scaled.
        """
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._backend: LimitBackend = backend if backend is not None else InMemoryLimitBackend()
        self._clock = clock
        self._scale = time_scale

    def _now(self) -> float:
        return self._clock() / self._scale

    def _real(self, denied: Denied) -> Denied:
        if self._scale == 1.0:
            return denied
        return Denied(denied.retry_after * self._scale, denied.limit, denied.key)

    def _adjust(self, ticket: object, tokens: int | None) -> None:
        self._backend.adjust(ticket, tokens, self._now())

    def configure(self, key: str, limits: Limits) -> None:
        """Seed ``key``'s limits (from the catalog); forgets limits learned from headers."""
        self._backend.configure(key, limits)

    def try_acquire(
        self, key: str, tokens: int = 0, *, also: Sequence[str] = ()
    ) -> Permit | Denied:
        """Reserve one request and ``tokens`` estimated tokens now, or say when one frees.

        ``also`` names further keys the call counts against (e.g. a provider-wide limit);
        the permit covers all of them or none. Estimate ``tokens`` as prompt tokens plus
        ``max_tokens``, as providers themselves do, then :meth:`Permit.settle` it.
        """
        now = self._clock() / self._scale
        ticket = self._backend.acquire((key, *also) if also else (key,), tokens, now)
        if type(ticket) is Denied:
            return self._real(ticket)
        return Permit(self, ticket)

    def wait_time(self, key: str, tokens: int = 0, *, also: Sequence[str] = ()) -> float:
        """Seconds until :meth:`try_acquire` would succeed (0 now, ``inf`` never)."""
        denied = self._backend.wait((key, *also), tokens, self._now())
        return 0.0 if denied is None else self._real(denied).retry_after

    def usage(self, key: str) -> Usage:
        """What ``key`` used in its current windows (``blocked_for`` in real seconds)."""
        u = self._backend.usage(key, self._now())
        if self._scale == 1.0:
            return u
        return Usage(
            u.key,
            u.requests_minute,
            u.tokens_minute,
            u.requests_day,
            u.limits,
            u.blocked_for * self._scale,
        )

    def penalize(
        self,
        key: str,
        retry_after: float | None = None,
        scope: LimitName | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Correct ``key``'s state after a 429: the provider knows usage we did not see.

        ``retry_after`` (else the response's ``retry-after-ms`` / ``retry-after``) blocks
        the key that long; the ``x-ratelimit-*`` headers are applied as in
        :meth:`observe_headers`. Without any duration the only bound on when the provider's
        window empties is one window length, so the key is blocked for a minute — or for
        a day when ``scope`` is ``"rpd"`` (a daily quota), unless the headers say when the
        request quota resets.
        """
        parsed = self._parse(headers) if headers else _Parsed()
        if retry_after is None:
            retry_after = parsed.retry_after
        block: tuple[float, LimitName] | None
        if retry_after is not None:
            block = (max(0.0, retry_after) / self._scale, scope or "rpm")
        elif scope == "rpd":
            reset = parsed.reset_requests
            block = (DAY if reset is None else reset / self._scale, "rpd")
        elif parsed.exhausted:
            block = None  # remaining=0 with its reset already blocks the key
        else:
            block = (MINUTE, scope or "rpm")
        self._backend.restrict(key, parsed.restriction(block, self._scale), self._now())

    def observe_headers(self, key: str, headers: Mapping[str, str]) -> None:
        """Learn from ``x-ratelimit-*`` headers of any response (OpenAI, Groq, OpenRouter).

        ``remaining-*`` with ``reset-*`` caps what may start before the reset (0 blocks
        the key until then); ``limit-requests`` / ``limit-tokens`` lower the RPM / TPM when
        the catalog's figure is too high. A limit-requests header is RPD at Groq, but
        capping RPM with a daily figure can only be looser than the daily limit itself,
        never wrong.
        """
        parsed = self._parse(headers)
        if parsed.any:
            self._backend.restrict(key, parsed.restriction(None, self._scale), self._now())

    @staticmethod
    def _parse(headers: Mapping[str, str]) -> _Parsed:
        h = {
            name: v
            for k, v in headers.items()
            if (name := k.lower()).startswith(("x-ratelimit-", "retry-after"))
        }
        p = _Parsed()
        ms = h.get("retry-after-ms")
        if ms is not None and (value := parse_duration(ms)) is not None:
            p.retry_after = value / 1000
        elif (ra := h.get("retry-after")) is not None:
            p.retry_after = parse_duration(ra)
        p.remaining_requests = _int(h.get("x-ratelimit-remaining-requests"))
        p.remaining_tokens = _int(h.get("x-ratelimit-remaining-tokens"))
        p.limit_requests = _int(h.get("x-ratelimit-limit-requests"))
        p.limit_tokens = _int(h.get("x-ratelimit-limit-tokens"))
        if (reset := h.get("x-ratelimit-reset-requests")) is not None:
            p.reset_requests = parse_duration(reset)
        if (reset := h.get("x-ratelimit-reset-tokens")) is not None:
            p.reset_tokens = parse_duration(reset)
        return p


class _Parsed:
    """The rate-limit facts found in one response's headers, in real seconds."""

    __slots__ = (
        "limit_requests",
        "limit_tokens",
        "remaining_requests",
        "remaining_tokens",
        "reset_requests",
        "reset_tokens",
        "retry_after",
    )

    def __init__(self) -> None:
        self.retry_after: float | None = None
        self.remaining_requests: int | None = None
        self.remaining_tokens: int | None = None
        self.reset_requests: float | None = None
        self.reset_tokens: float | None = None
        self.limit_requests: int | None = None
        self.limit_tokens: int | None = None

    @property
    def any(self) -> bool:
        """Whether there is anything to apply besides a retry-after."""
        return (
            self.remaining_requests is not None
            or self.remaining_tokens is not None
            or bool(self.limit_requests)
            or bool(self.limit_tokens)
        )

    @property
    def exhausted(self) -> bool:
        """Whether the headers themselves say nothing more may start for a while."""
        return self.remaining_requests == 0 or self.remaining_tokens == 0

    def restriction(self, block: tuple[float, LimitName] | None, scale: float) -> Restriction:
        """The backend's form; a missing reset is taken as one window (the safe bound)."""
        requests: tuple[int, float, LimitName] | None = None
        if self.remaining_requests is not None:
            reset = MINUTE if self.reset_requests is None else self.reset_requests / scale
            requests = (self.remaining_requests, reset, "rpd" if reset > MINUTE else "rpm")
        tokens: tuple[int, float] | None = None
        if self.remaining_tokens is not None:
            reset = MINUTE if self.reset_tokens is None else self.reset_tokens / scale
            tokens = (self.remaining_tokens, reset)
        return Restriction(
            block=block,
            requests=requests,
            tokens=tokens,
            rpm_cap=self.limit_requests or None,
            tpm_cap=self.limit_tokens or None,
        )


# --------------------------------------------------------------------------- health

_KIND_WORDS = {
    "timeout": ("timeout", "timeouts"),
    "unavailable": ("unavailable error", "unavailable errors"),
}


def _count_words(kinds: Sequence[str]) -> str:
    """``["timeout"] * 3`` → ``"3 timeouts"``; mixed kinds are joined with ``and``."""
    parts = []
    for kind, n in Counter(kinds).most_common():
        one, many = _KIND_WORDS.get(kind, (kind, kind))
        parts.append(f"{n} {one if n == 1 else many}")
    return " and ".join(parts)


class _Circuit:
    """One model's breaker; ``trips == 0`` means closed."""

    __slots__ = ("cause", "cooldown", "failures", "open_until", "probe_at", "trips")

    def __init__(self) -> None:
        self.failures: deque[tuple[float, str]] = deque()
        self.trips = 0
        self.cooldown = 0.0
        self.open_until = -math.inf
        self.probe_at: float | None = None
        self.cause = ""


class HealthBoard:
    """A circuit breaker per model key and a kill switch per provider.

    Tripping rule: ``failure_threshold`` *consecutive* counting failures (kinds in
    ``counting``, by default ``unavailable`` and ``timeout``), all within ``window``
    seconds. Consecutive, so a busy model that fails 1 call in 300 never trips; within a
    window, so three timeouts spread over a quiet afternoon do not either. Other kinds
    (``invalid_output``, ``rate_limited``, ...) are the limiter's or the validator's
    business and neither count nor reset the streak.

    A tripped model is *open* for ``base_cooldown * 2**(trips - 1)`` seconds, capped at
    ``max_cooldown``, then *half-open*: :meth:`allow` hands exactly one probe ticket out
    (a ticket unreported after ``probe_timeout`` is handed out again, so a lost probe
    cannot strand a model). A success closes the circuit and forgets the trips; a counting
    failure re-opens it for the next, longer cooldown. Outcomes arriving while the circuit
    is open come from calls started before it tripped and are ignored.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        failure_threshold: int = 3,
        base_cooldown: float = 5.0,
        max_cooldown: float = 300.0,
        window: float = 60.0,
        *,
        probe_timeout: float = 60.0,
        counting: frozenset[str] = frozenset({"unavailable", "timeout"}),
    ) -> None:
        """Configure the breaker; see the class docstring for the rules."""
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._clock = clock
        self._threshold = failure_threshold
        self._base = base_cooldown
        self._max = max_cooldown
        self._window = window
        self._probe_timeout = probe_timeout
        self._counting = counting
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        self._disabled: dict[str, str] = {}
        self._version = 0
        self._cache: tuple[int, Snapshot, Mapping[str, str], float, Snapshot] | None = None

    # ----------------------------------------------------------------- outcomes

    def record_success(self, key: str) -> None:
        """A call to ``key`` answered: end a failure streak, or close a half-open circuit."""
        c = self._circuits.get(key)
        if c is None or (not c.trips and not c.failures):
            return
        with self._lock:
            if not c.trips:
                c.failures.clear()
            elif self._clock() >= c.open_until:
                c.trips, c.probe_at, c.cause = 0, None, ""
                c.failures.clear()
                self._version += 1

    def record_failure(self, key: str, kind: str) -> CircuitState:
        """A call to ``key`` failed with ``kind`` (a ``FailureKind``); returns the new state."""
        with self._lock:
            now = self._clock()
            c = self._circuits.get(key)
            if kind not in self._counting:
                if c is not None and c.trips and c.probe_at is not None:
                    c.probe_at = None  # the probe reached the model; let another one try
                    self._version += 1
                return self._state(c, now)
            if c is None:
                c = self._circuits[key] = _Circuit()
            if c.trips:
                if now < c.open_until:
                    return "open"
                self._trip(c, now, f"a failed recovery probe ({kind})")
                return "open"
            fails = c.failures
            cut = now - self._window
            while fails and fails[0][0] <= cut:
                fails.popleft()
            fails.append((now, kind))
            if len(fails) >= self._threshold:
                self._trip(c, now, _count_words([k for _, k in fails]))
                fails.clear()
                return "open"
            return "closed"

    def _trip(self, c: _Circuit, now: float, cause: str) -> None:
        c.trips += 1
        c.cooldown = min(self._base * 2 ** (c.trips - 1), self._max)
        c.open_until = now + c.cooldown
        c.probe_at = None
        c.cause = cause
        self._version += 1

    def allow(self, key: str) -> bool:
        """Whether a call to ``key`` may go ahead; in half-open state, one caller only."""
        c = self._circuits.get(key)
        if c is None or not c.trips:
            return True
        with self._lock:
            if not c.trips:
                return True
            now = self._clock()
            if now < c.open_until:
                return False
            if c.probe_at is not None and now - c.probe_at < self._probe_timeout:
                return False
            c.probe_at = now
            self._version += 1
            return True

    def state(self, key: str) -> CircuitState:
        """``key``'s circuit right now."""
        with self._lock:
            return self._state(self._circuits.get(key), self._clock())

    @staticmethod
    def _state(c: _Circuit | None, now: float) -> CircuitState:
        if c is None or not c.trips:
            return "closed"
        return "open" if now < c.open_until else "half_open"

    # ----------------------------------------------------------------- providers

    def disable_provider(self, provider: str, reason: str = "auth failed") -> None:
        """Take every model of ``provider`` out of the snapshot (a rejected API key).

        It stays out until :meth:`enable_provider` — the router calls that when the
        configuration (the key) changes; retrying a rejected key only burns time.
        """
        with self._lock:
            if self._disabled.get(provider) != reason:
                self._disabled[provider] = reason
                self._version += 1

    def enable_provider(self, provider: str) -> None:
        """Put ``provider``'s models back (its credentials changed)."""
        with self._lock:
            if self._disabled.pop(provider, None) is not None:
                self._version += 1

    @property
    def disabled_providers(self) -> Mapping[str, str]:
        """Disabled providers and why."""
        with self._lock:
            return dict(self._disabled)

    # ----------------------------------------------------------------- snapshot

    def snapshot(self, base: Snapshot, provider_of: Mapping[str, str]) -> Snapshot:
        """``base`` with cooling models marked and disabled providers' models removed.

        Returns ``base`` itself when everything is healthy, and the very same object as
        the previous call while nothing changed (no outcome, probe, cooldown end or
        provider switch), so the selector's cache keeps hitting. ``provider_of`` maps model
        key → provider. Reasons are worded when read, so their countdowns stay true.
        """
        now = self._clock()
        with self._lock:
            cache = self._cache
            same_input = (
                cache is not None
                and _same(cache[1], base)
                and (cache[2] is provider_of or cache[2] == provider_of)
            )
            if cache is not None and same_input and cache[0] == self._version and now < cache[3]:
                return cache[4]
            cooling: set[str] = set()
            valid_until = math.inf
            for key, c in self._circuits.items():
                if not c.trips or key not in base.available:
                    continue
                if now < c.open_until:
                    cooling.add(key)
                    valid_until = min(valid_until, c.open_until)
                elif c.probe_at is not None and now - c.probe_at < self._probe_timeout:
                    cooling.add(key)
                    valid_until = min(valid_until, c.probe_at + self._probe_timeout)
            removed = (
                frozenset(key for key in base.available if provider_of.get(key) in self._disabled)
                if self._disabled
                else frozenset()
            )
            snap = Snapshot(
                base.available - removed,
                base.cooling | (cooling - removed),
                _Reasons(self, frozenset(cooling), removed, provider_of, base.reasons),
                base.standings,
            )
            if snap == base:
                snap = base
            elif cache is not None and same_input and cache[4] == snap:
                snap = cache[4]  # same sets again: hand back the object already cached
            self._cache = (self._version, base, provider_of, valid_until, snap)
            return snap

    def _reason(self, key: str, provider: str | None) -> str:
        """Why ``key`` is unusable, phrased for a person, as of now."""
        with self._lock:
            if provider is not None and provider in self._disabled:
                return f"{self._disabled[provider]}: disabled until the key changes"
            c = self._circuits.get(key)
            now = self._clock()
            if c is None or not c.trips:
                return "recovered"
            trips = f"; trip {c.trips}, cooldown {c.cooldown:g} s" if c.trips > 1 else ""
            if now < c.open_until:
                return f"cooling down {c.open_until - now:.1f} s more after {c.cause}{trips}"
            return f"recovering: one probe call in flight after {c.cause}{trips}"


def _same(a: Snapshot, b: Snapshot) -> bool:
    """Whether two base snapshots are interchangeable, reasons included."""
    return a is b or (a == b and a.reasons == b.reasons)


class _Reasons(Mapping[str, str]):
    """Snapshot reasons worded when read, so "12.3 s more" is true whenever it is shown."""

    __slots__ = ("_base", "_board", "_cooling", "_provider_of", "_removed")

    def __init__(
        self,
        board: HealthBoard,
        cooling: frozenset[str],
        removed: frozenset[str],
        provider_of: Mapping[str, str],
        base: Mapping[str, str],
    ) -> None:
        self._board = board
        self._cooling = cooling
        self._removed = removed
        self._provider_of = provider_of
        self._base = base

    def __getitem__(self, key: str) -> str:
        if key in self._removed or key in self._cooling:
            return self._board._reason(key, self._provider_of.get(key))
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._base.keys() | self._removed | self._cooling)

    def __len__(self) -> int:
        return len(self._base.keys() | self._removed | self._cooling)
