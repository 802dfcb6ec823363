"""Rate-limit headers: the one reader of what a provider says about its limits.

Both failure classification (how long to wait after a 429) and the rate limiter (what may
start before a window resets, on failures *and* on successful responses) read headers
through :func:`read_rate_limits`, so a format one of them understands the other does too.

What providers send (PROVIDERS.md):

=================================  ==================================================
header                             formats
=================================  ==================================================
``retry-after-ms``                 milliseconds (OpenAI SDK convention)
``retry-after``                    delta seconds, or an HTTP date (RFC 9110)
``x-ratelimit-reset-requests``     a Go duration (``"6m0s"``, ``"2.5s"``, ``"120ms"``,
``x-ratelimit-reset-tokens``       OpenAI, Groq), delta seconds, epoch seconds, or epoch
``x-ratelimit-reset``              milliseconds (OpenRouter)
``x-ratelimit-remaining-*``        an integer; 0 means nothing more before the reset
``x-ratelimit-limit-*``            the window's size, when the catalog's is stale
=================================  ==================================================

The unsuffixed ``x-ratelimit-remaining/limit/reset`` (OpenRouter) describe requests.
Unreadable values are ignored rather than trusted.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = [
    "RateLimitHeaders",
    "Window",
    "parse_duration",
    "parse_reset",
    "parse_retry_after",
    "read_rate_limits",
]

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_UNIT: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_EPOCH_MS: Final = 1e11
"""A reset above this is epoch milliseconds (OpenRouter); above ``_EPOCH_S``, epoch seconds."""
_EPOCH_S: Final = 1e9


def _seconds(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def parse_duration(text: str) -> float | None:
    """Seconds in a provider's duration: ``"1s"``, ``"6m0s"``, ``"2.5s"``, ``"120ms"``, ``"7"``.

    Go-style durations are what OpenAI and Groq put in ``x-ratelimit-reset-*``; plain
    numbers are seconds (``Retry-After``, Gemini's ``retryDelay`` without its ``s``).
    Returns ``None`` for anything else (an HTTP date, garbage, a negative number).

    Example:
        >>> parse_duration("6m0s"), parse_duration("120ms"), parse_duration("soon")
        (360.0, 0.12, None)
    """
    text = text.strip()
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def parse_retry_after(value: str, *, wall: Callable[[], float] = time.time) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date (seconds from ``wall()``, at least 0).

    Example:
        >>> parse_retry_after("12")
        12.0
        >>> parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", wall=lambda: 1792567680.0)
        30.0
    """
    text = value.strip()
    try:
        return _seconds(float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _seconds(max(0.0, when.timestamp() - wall()))


def parse_reset(value: str, *, wall: Callable[[], float] = time.time) -> float | None:
    """``x-ratelimit-reset*``: a duration, delta seconds, or epoch seconds / milliseconds.

    Example:
        >>> parse_reset("2.5s"), parse_reset("7")
        (2.5, 7.0)
        >>> parse_reset("1700000030000", wall=lambda: 1700000000.0)
        30.0
    """
    try:
        number = float(value.strip())
    except ValueError:
        return parse_duration(value)
    if not math.isfinite(number) or number < 0:
        return None
    if number > _EPOCH_MS:
        return max(0.0, number / 1000.0 - wall())
    if number > _EPOCH_S:
        return max(0.0, number - wall())
    return number


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return max(0, int(number)) if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class Window:
    """One rate-limit window as a response described it (any field may be missing).

    Attributes:
        remaining: How many more (requests or tokens) may start before ``reset``.
        reset: Seconds from the response until the window resets.
        limit: The window's size.
    """

    remaining: int | None = None
    reset: float | None = None
    limit: int | None = None

    @property
    def exhausted(self) -> bool:
        """Whether nothing more may start before the reset."""
        return self.remaining == 0


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """The rate-limit facts in one response's headers, in real seconds.

    Attributes:
        retry_after: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date).
        requests: The request window (``*-requests``, else the unsuffixed OpenRouter form).
        tokens: The token window (``*-tokens``).
    """

    retry_after: float | None = None
    requests: Window = Window()
    tokens: Window = Window()

    @property
    def any_window(self) -> bool:
        """Whether a remaining count or a limit is known (something a limiter can apply)."""
        return any(
            w.remaining is not None or bool(w.limit) for w in (self.requests, self.tokens)
        )

    @property
    def exhausted(self) -> bool:
        """Whether the headers themselves say nothing more may start for a while."""
        return self.requests.exhausted or self.tokens.exhausted

    @property
    def exhausted_wait(self) -> float | None:
        """The longest reset among the exhausted windows, if any says when."""
        waits = [
            w.reset for w in (self.requests, self.tokens) if w.exhausted and w.reset is not None
        ]
        return max(waits) if waits else None


_EMPTY: Final = RateLimitHeaders()


def _window(h: Mapping[str, str], suffix: str, wall: Callable[[], float]) -> Window | None:
    remaining = _count(h.get(f"x-ratelimit-remaining{suffix}"))
    limit = _count(h.get(f"x-ratelimit-limit{suffix}"))
    raw_reset = h.get(f"x-ratelimit-reset{suffix}")
    reset = parse_reset(raw_reset, wall=wall) if raw_reset is not None else None
    if remaining is None and limit is None and reset is None:
        return None
    return Window(remaining, reset, limit)


def read_rate_limits(
    headers: Mapping[str, str], *, wall: Callable[[], float] = time.time
) -> RateLimitHeaders:
    """What ``headers`` (any case) say about rate limits; empty facts when nothing does.

    ``wall`` is the wall clock HTTP dates and epoch resets are measured against.

    Example:
        >>> facts = read_rate_limits({"Retry-After": "3", "x-ratelimit-remaining-tokens": "0",
        ...                           "x-ratelimit-reset-tokens": "6m0s"})
        >>> facts.retry_after, facts.tokens.exhausted, facts.exhausted_wait
        (3.0, True, 360.0)
    """
    h = {
        name: value
        for key, value in headers.items()
        if (name := key.lower()).startswith(("x-ratelimit-", "retry-after"))
    }
    if not h:
        return _EMPTY
    retry_after: float | None = None
    if (ms := h.get("retry-after-ms")) is not None and (value := parse_duration(ms)) is not None:
        retry_after = value / 1000.0
    elif (ra := h.get("retry-after")) is not None:
        retry_after = parse_retry_after(ra, wall=wall)
    requests = _window(h, "-requests", wall) or _window(h, "", wall) or Window()
    tokens = _window(h, "-tokens", wall) or Window()
    return RateLimitHeaders(retry_after, requests, tokens)
