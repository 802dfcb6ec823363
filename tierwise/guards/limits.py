"""Rate limits: non-blocking RPM / TPM / RPD permits, corrected by what providers say.

:class:`RateLimiter` hands out permits per limit key (a catalog model key, and optionally
a provider-wide key), so free tiers are used right up to their limits and never beyond,
and a model without a permit is skipped instead of queued. It learns from what providers
say (``Retry-After``, ``x-ratelimit-*`` headers, read by
:func:`~tierwise.providers.headers.read_rate_limits`) because the catalog's published
limits are often stale and other processes may share the same API key. The windows
themselves live in a :class:`~tierwise.guards.backend.LimitBackend`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from tierwise.catalog.specs import Limits
from tierwise.guards.backend import (
    MINUTE,
    AsyncLimitBackend,
    Denied,
    InMemoryLimitBackend,
    LimitBackend,
    LimitName,
    Permit,
    Restriction,
    Usage,
)
from tierwise.providers.headers import RateLimitHeaders, read_rate_limits

__all__ = ["RateLimiter"]


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
        """Seed ``key``'s RPM / TPM (from the catalog); forgets limits learned from headers.

        A daily quota (``limits.rpd``) is :class:`~tierwise.guards.quota.DailyQuota`'s.
        """
        self._backend.configure(key, Limits(rpm=limits.rpm, tpm=limits.tpm))

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

    @property
    def remote(self) -> bool:
        """Whether permits cross a network (the async path then awaits :meth:`atry_acquire`)."""
        return isinstance(self._backend, AsyncLimitBackend)

    async def atry_acquire(
        self, key: str, tokens: int = 0, *, also: Sequence[str] = ()
    ) -> Permit | Denied:
        """:meth:`try_acquire` for the event loop: a remote backend is awaited, not waited on."""
        backend = self._backend
        if not isinstance(backend, AsyncLimitBackend):
            return self.try_acquire(key, tokens, also=also)
        ticket = await backend.aacquire((key, *also) if also else (key,), tokens, self._now())
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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Correct ``key``'s state after a 429: the provider knows usage we did not see.

        ``retry_after`` (else the response's ``retry-after-ms`` / ``retry-after``) blocks
        the key that long; the ``x-ratelimit-*`` headers are applied as in
        :meth:`observe_headers`. Without any duration the only bound on when the provider's
        window empties is one window length, so the key is blocked for a minute. A daily
        quota's 429 is :meth:`~tierwise.guards.quota.DailyQuota.exhausted`'s business.
        """
        facts = read_rate_limits(headers) if headers else RateLimitHeaders()
        if retry_after is None:
            retry_after = facts.retry_after
        block: tuple[float, LimitName] | None
        if retry_after is not None:
            block = (max(0.0, retry_after) / self._scale, "rpm")
        elif facts.exhausted:
            block = None  # remaining=0 with its reset already blocks the key
        else:
            block = (MINUTE, "rpm")
        self._backend.restrict(key, _restriction(facts, block, self._scale), self._now())

    def observe_headers(self, key: str, headers: Mapping[str, str]) -> None:
        """Learn from ``x-ratelimit-*`` headers of any response (OpenAI, Groq, OpenRouter).

        ``remaining-*`` with ``reset-*`` caps what may start before the reset (0 blocks
        the key until then); ``limit-requests`` / ``limit-tokens`` lower the RPM / TPM when
        the catalog's figure is too high. A limit-requests header is RPD at Groq, but
        capping RPM with a daily figure can only be looser than the daily limit itself,
        never wrong.
        """
        facts = read_rate_limits(headers)
        if facts.any_window:
            self._backend.restrict(key, _restriction(facts, None, self._scale), self._now())


def _restriction(
    facts: RateLimitHeaders, block: tuple[float, LimitName] | None, scale: float
) -> Restriction:
    """The backend's form of ``facts``; a missing reset is taken as one window (safe bound)."""
    requests: tuple[int, float, LimitName] | None = None
    if facts.requests.remaining is not None:
        reset = facts.requests.reset
        window = MINUTE if reset is None else reset / scale
        requests = (facts.requests.remaining, window, "rpd" if window > MINUTE else "rpm")
    tokens: tuple[int, float] | None = None
    if facts.tokens.remaining is not None:
        reset = facts.tokens.reset
        tokens = (facts.tokens.remaining, MINUTE if reset is None else reset / scale)
    return Restriction(
        block=block,
        requests=requests,
        tokens=tokens,
        rpm_cap=facts.requests.limit or None,
        tpm_cap=facts.tokens.limit or None,
    )
