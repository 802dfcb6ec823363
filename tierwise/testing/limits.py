"""Rate limits the simulator enforces itself: RPM, TPM and RPD windows with exact Retry-After.

These are the limits tierwise's own limiter and the benchmarks are measured against, so
they are exact: a window admits exactly its limit, and the 429 says exactly how long until
the next request would be admitted. ``window_scale`` shrinks time (``window_scale=0.01``
makes a "minute" 0.6 s) so benchmarks can cross many windows quickly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

__all__ = ["LimitRejection", "ModelLimiter", "Window", "WindowKind", "retry_headers"]

MINUTE = 60.0
DAY = 86_400.0

WindowKind = Literal["sliding", "fixed"]


class Window:
    """One limit over one window length: a sliding log or a fixed window.

    Sliding: an amount expires exactly ``seconds`` after it was admitted. Fixed: the window
    opens with the first admitted amount and everything expires together when it closes.
    """

    __slots__ = ("limit", "seconds", "kind", "_log", "_used", "_opened")

    def __init__(self, limit: int, seconds: float, kind: WindowKind = "sliding") -> None:
        """A window admitting ``limit`` units per ``seconds``."""
        if limit <= 0 or seconds <= 0:
            raise ValueError("limit and window length must be positive")
        self.limit = limit
        self.seconds = seconds
        self.kind: WindowKind = kind
        self._log: deque[tuple[float, int]] = deque()
        self._used = 0
        self._opened: float | None = None

    def _expire(self, now: float) -> None:
        if self.kind == "fixed":
            if self._opened is not None and now >= self._opened + self.seconds:
                self._opened, self._used = None, 0
            return
        log = self._log
        while log and log[0][0] + self.seconds <= now:
            self._used -= log.popleft()[1]

    def wait(self, now: float, amount: int = 1) -> float:
        """Seconds until ``amount`` more fits (0 when it fits now)."""
        self._expire(now)
        if self._used + amount <= self.limit:
            return 0.0
        if self.kind == "fixed":
            assert self._opened is not None
            return self._opened + self.seconds - now
        if amount > self.limit:  # never fits: one full window, then it fails again
            return self.seconds
        excess = self._used + amount - self.limit
        for admitted, size in self._log:
            excess -= size
            if excess <= 0:
                return admitted + self.seconds - now
        return self.seconds  # pragma: no cover - unreachable: the log holds _used

    def add(self, now: float, amount: int = 1) -> None:
        """Count ``amount`` as used at ``now``."""
        self._expire(now)
        if self.kind == "fixed":
            if self._opened is None:
                self._opened = now
        else:
            self._log.append((now, amount))
        self._used += amount

    def remaining(self, now: float) -> int:
        """Units still available in the current window."""
        self._expire(now)
        return max(0, self.limit - self._used)

    def reset_in(self, now: float) -> float:
        """Seconds until the window is completely empty again."""
        self._expire(now)
        if self.kind == "fixed":
            return 0.0 if self._opened is None else self._opened + self.seconds - now
        return self._log[-1][0] + self.seconds - now if self._log else 0.0


@dataclass(frozen=True, slots=True)
class LimitRejection:
    """A request refused by a limit: which one, and when to come back."""

    limit: Literal["rpm", "tpm", "rpd"]
    retry_after: float
    headers: dict[str, str]


class ModelLimiter:
    """The RPM, TPM and RPD windows of one model (``None``: that limit is not enforced).

    A request is admitted when every request window has room and the token window has room
    for its prompt tokens; an answered request then adds prompt + completion tokens.
    Refused requests consume nothing, as with the real providers.
    """

    def __init__(
        self,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        window_scale: float = 1.0,
        window: WindowKind = "sliding",
    ) -> None:
        """Limits per (scaled) minute and day; ``window_scale=0.5/60`` makes a minute 0.5 s."""
        if window_scale <= 0:
            raise ValueError("window_scale must be positive")
        if rpm is None and tpm is None and rpd is None:
            raise ValueError("give at least one of rpm, tpm, rpd")
        minute, day = MINUTE * window_scale, DAY * window_scale
        self.rpm = Window(rpm, minute, window) if rpm else None
        self.tpm = Window(tpm, minute, window) if tpm else None
        self.rpd = Window(rpd, day, window) if rpd else None

    def admit(self, now: float, prompt_tokens: int) -> LimitRejection | None:
        """Count the request in the request windows, or say which limit refuses it."""
        checks: list[tuple[Literal["rpm", "tpm", "rpd"], Window, int]] = []
        if self.rpd is not None:
            checks.append(("rpd", self.rpd, 1))
        if self.rpm is not None:
            checks.append(("rpm", self.rpm, 1))
        if self.tpm is not None:
            checks.append(("tpm", self.tpm, prompt_tokens))
        refused = [(name, w.wait(now, amount)) for name, w, amount in checks]
        refused = [(name, wait) for name, wait in refused if wait > 0]
        if refused:
            name, wait = max(refused, key=lambda item: item[1])
            return LimitRejection(name, wait, {**self.headers(now), **retry_headers(wait)})
        for name, w, _ in checks:
            if name != "tpm":
                w.add(now)
        return None

    def consume_tokens(self, now: float, tokens: int) -> None:
        """Count an answered request's tokens in the TPM window."""
        if self.tpm is not None and tokens > 0:
            self.tpm.add(now, tokens)

    def headers(self, now: float) -> dict[str, str]:
        """``x-ratelimit-*`` headers in OpenAI/Groq style (requests: RPM, else RPD)."""
        out: dict[str, str] = {}
        requests = self.rpm or self.rpd
        if requests is not None:
            out["x-ratelimit-limit-requests"] = str(requests.limit)
            out["x-ratelimit-remaining-requests"] = str(requests.remaining(now))
            out["x-ratelimit-reset-requests"] = _duration(requests.reset_in(now))
        if self.rpm is not None and self.rpd is not None:
            out["x-ratelimit-limit-requests-day"] = str(self.rpd.limit)
            out["x-ratelimit-remaining-requests-day"] = str(self.rpd.remaining(now))
        if self.tpm is not None:
            out["x-ratelimit-limit-tokens"] = str(self.tpm.limit)
            out["x-ratelimit-remaining-tokens"] = str(self.tpm.remaining(now))
            out["x-ratelimit-reset-tokens"] = _duration(self.tpm.reset_in(now))
        return out


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up, as HTTP requires) and ``retry-after-ms``."""
    return {
        "retry-after": str(max(0, math.ceil(seconds - 1e-9))),
        "retry-after-ms": str(max(0, round(seconds * 1000))),
    }


def _duration(seconds: float) -> str:
    """``1.25s`` — the reset format OpenAI and Groq use."""
    return f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".") + "s"
