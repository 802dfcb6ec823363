"""Where rate-limit state lives: the backend interface, its results, in-process sliding logs.

Why sliding logs: a provider may count requests in fixed windows (Gemini's day resets at
midnight), sliding windows, or token buckets (OpenAI, Groq). A sliding log of the last
60 s / 24 h admits at most ``limit`` requests in *every* window of that length, which
stays within all three schemes. GCRA or a token bucket with a burst of ``limit`` would
admit the burst *plus* its refill — nearly twice the limit within one window — and so
earn 429s from every provider that counts windows. Sliding logs cost one small object
per request kept for the window; for the limits free tiers have, that is little.

Every method of :class:`InMemoryLimitBackend` holds a ``threading.Lock`` for a few
microseconds at most and never awaits, which makes it safe from threads and from asyncio
tasks alike (nothing can yield while the lock is held).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias, runtime_checkable

from tierwise.catalog.specs import Limits

__all__ = [
    "DAY",
    "MINUTE",
    "Denied",
    "InMemoryLimitBackend",
    "LimitBackend",
    "LimitName",
    "Permit",
    "Restriction",
    "Usage",
    "AsyncLimitBackend",
]

LimitName: TypeAlias = Literal["rpm", "tpm", "rpd"]
"""Which limit refused a permit: requests per minute, tokens per minute, requests per day."""

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


class _Settles(Protocol):
    """What a :class:`Permit` reports back to: the :class:`~tierwise.guards.limits.RateLimiter`."""

    def _adjust(self, ticket: object, tokens: int | None) -> None:
        """Count ``tokens`` for the permit ``ticket`` (``None``: give the request back)."""


class Permit:
    """A reservation of one request and an estimated number of tokens in every window.

    Call :meth:`settle` with the real token count once the provider reported usage (the
    TPM window is corrected both ways), or :meth:`cancel` when the call never reached the
    provider. Only the first of the two has an effect; a permit left alone simply keeps
    its estimate, which errs on the safe side.
    """

    __slots__ = ("_done", "_limiter", "_ticket")

    def __init__(self, limiter: _Settles, ticket: object) -> None:
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


@runtime_checkable
class AsyncLimitBackend(LimitBackend, Protocol):
    """A backend across a network: the event loop awaits its permits instead of blocking."""

    async def aacquire(self, keys: Sequence[str], tokens: int, now: float) -> object | Denied:
        """:meth:`LimitBackend.acquire` without blocking the running loop."""
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

