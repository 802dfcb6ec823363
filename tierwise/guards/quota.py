"""Daily request quotas (RPD): the one owner, one clock (00:00 UTC), a *quota* refusal.

A free model's daily quota is not money and not a per-minute window: it is a count of the
requests sent since the provider's day began, and once it is used up waiting seconds does
not help. :class:`DailyQuota` owns it for the router:

* the count is the ledger's (requests *sent* to the model since 00:00 UTC, by every
  process sharing the ledger and before any restart), plus this process's requests in
  flight; without a ledger, this process's own count for the day;
* when a provider says its daily quota is used up (a ``quota_exhausted`` failure), the
  model is refused until the provider's reset, or 00:00 UTC when it named none;
* a refusal is a :class:`QuotaExceeded` (``quota_exhausted``), never a budget failure.

The rate limiter keeps only the per-minute windows (RPM, TPM).
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from tierwise.catalog.specs import ModelSpec
from tierwise.ledger.rows import DAY, day_start
from tierwise.ledger.schema import LedgerError
from tierwise.providers.failures import FailureKind

if TYPE_CHECKING:
    from tierwise.ledger.store import Ledger

__all__ = ["DailyQuota", "QuotaExceeded", "QuotaHold"]


def _hm(seconds: float) -> str:
    minutes = max(0, math.ceil(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


class QuotaExceeded(Exception):
    """A model's daily request quota is used up; ``retry_after`` says when it resets.

    Its ``failure_kind`` makes :func:`~tierwise.providers.failures.classify` map it to
    ``quota_exhausted``.

    Attributes:
        model: Catalog key of the refused model.
        limit: The model's requests per day, when the catalog knows it.
        used: Requests counted today (sent and in flight), when counted.
        retry_after: Seconds until the quota resets.
        note: Why, when the count is not the reason (the provider said so, the ledger
            could not be read).
    """

    failure_kind: ClassVar[FailureKind] = FailureKind.QUOTA_EXHAUSTED

    def __init__(
        self,
        model: str,
        *,
        limit: int | None,
        used: int | None,
        retry_after: float | None,
        note: str = "",
    ) -> None:
        """Record the refusal; the message says what was counted and when it resets."""
        self.model, self.limit, self.used = model, limit, used
        self.retry_after, self.note = retry_after, note
        if note:
            text = f"daily request quota of {model} used up: {note}"
        else:
            text = (
                f"daily request quota of {model} used up: {used} of {limit} requests "
                "sent since 00:00 UTC"
            )
        if retry_after is not None:
            text += f"; resets in {_hm(retry_after)}"
        super().__init__(text)


class QuotaHold:
    """One request counted against a model's quota until the ledger records it.

    :meth:`release` once the attempt is recorded (the ledger counts it from then on),
    :meth:`cancel` when the request never left. Only the first call has an effect.
    """

    __slots__ = ("_day", "_done", "_key", "_quota")

    def __init__(self, quota: DailyQuota | None, key: str, day: float) -> None:
        """Only :class:`DailyQuota` creates these (``quota=None``: nothing to count)."""
        self._quota, self._key, self._day, self._done = quota, key, day, False

    def release(self) -> None:
        """The request was sent and recorded."""
        if not self._done and self._quota is not None:
            self._quota._settle(self._key, self._day, sent=True)
        self._done = True

    def cancel(self) -> None:
        """The request never reached the provider."""
        if not self._done and self._quota is not None:
            self._quota._settle(self._key, self._day, sent=False)
        self._done = True


class DailyQuota:
    """Requests per day per model, counted since 00:00 UTC; see the module docstring.

    Example:
        >>> from tierwise.catalog.specs import Limits, ModelSpec, Provider, Tier
        >>> spec = ModelSpec(key="g", provider=Provider.GROQ, model="m", tier=Tier.FREE,
        ...                  context_window=8192, limits=Limits(rpd=1))
        >>> quota = DailyQuota(clock=lambda: 43_200.0)  # noon, day 0, no ledger
        >>> quota.take(spec).release()
        >>> print(quota.take(spec))
        daily request quota of g used up: 1 of 1 requests sent since 00:00 UTC; resets in 12h00m
    """

    def __init__(
        self, ledger: Ledger | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        """Count in ``ledger`` (or in this process without one) on the wall ``clock``."""
        self.ledger = ledger
        self.clock = clock
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._local: dict[str, tuple[float, int]] = {}  # key -> (day, requests sent)
        self._blocked: dict[str, tuple[float, str]] = {}  # key -> (until, why)

    def take(self, spec: ModelSpec) -> QuotaHold | QuotaExceeded:
        """Count one request of ``spec`` now, or say why its quota is used up."""
        now = self.clock()
        today = day_start(now)
        key = spec.key
        blocked = self._blocked.get(key)
        if blocked is not None and blocked[0] > now:
            return QuotaExceeded(key, limit=spec.limits.rpd, used=None,
                                 retry_after=blocked[0] - now, note=blocked[1])
        rpd = spec.limits.rpd
        if rpd is None:
            return QuotaHold(None, key, today)
        until_midnight = today + DAY - now
        if self.ledger is not None:
            try:
                sent = self.ledger.requests(key, since=today)
            except (sqlite3.Error, LedgerError) as exc:
                return QuotaExceeded(key, limit=rpd, used=None, retry_after=None,
                                     note=f"the ledger could not be read: {exc}")
        else:
            day, count = self._local.get(key, (today, 0))
            sent = count if day == today else 0
        with self._lock:
            used = sent + self._in_flight.get(key, 0)
            if used >= rpd:
                return QuotaExceeded(key, limit=rpd, used=used, retry_after=until_midnight)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return QuotaHold(self, key, today)

    def exhausted(self, key: str, retry_after: float | None = None) -> None:
        """The provider said ``key``'s daily quota is used up: refuse it until its reset.

        ``retry_after`` is the provider's word (seconds); without one, 00:00 UTC.
        """
        now = self.clock()
        if retry_after is not None and retry_after > 0:
            until, why = now + retry_after, "the provider said so"
        else:
            until, why = day_start(now) + DAY, "the provider said so (no reset given)"
        with self._lock:
            current = self._blocked.get(key)
            if current is None or current[0] < until:
                self._blocked[key] = (until, why)

    def _settle(self, key: str, day: float, *, sent: bool) -> None:
        with self._lock:
            self._in_flight[key] = max(0, self._in_flight.get(key, 0) - 1)
            if sent and self.ledger is None:
                current_day, count = self._local.get(key, (day, 0))
                self._local[key] = (day, count + 1 if current_day == day else 1)
