"""Budget checks: may a candidate be called without crossing a cost cap or a daily quota?

The router asks before every call, from a cost estimate, and skips a candidate that would
cross a cap (the next, cheaper allowed one runs). Spend and request counts come from the
:class:`~tierwise.ledger.store.Ledger`, so the caps hold across every process sharing
the ledger file and across restarts; the ledger counts this process's own attempts the
moment they are recorded, so the estimate is replaced by the real cost after each call.

Caps (from :class:`~tierwise.catalog.policy.Policy`; USD):

============================  =========================================================
``per_call``                  ``max_cost_per_call``: the estimate alone
``per_run``                   ``max_cost_per_run``: everything recorded for the run id
``per_day``                   ``max_cost_per_day``: everything since UTC midnight
``per_provider_day:<p>``      ``max_cost_per_provider_per_day[p]``: the provider's share
``rpd:<model>``               the model's ``limits.rpd``: requests sent since UTC midnight
============================  =========================================================

Concurrent calls: a check alone does not see calls that are in flight and not yet
recorded, so parallel calls could each pass and together cross a cap. :meth:`BudgetGuard.
reserve` checks and holds the estimate until the call's real cost is recorded, which
closes that gap within one process.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import ModelSpec
from tierwise.ledger import DAY, Ledger, day_start
from tierwise.providers.failures import FailureKind

__all__ = ["BudgetExceeded", "BudgetGuard", "CapStatus", "Reservation"]

#: Float slack (USD) so that spend adding up to exactly the cap is not refused.
_EPSILON: Final = 1e-9


def _usd(amount: float) -> str:
    """``$0.0123``: up to six decimals, trailing zeros dropped."""
    text = f"{amount:,.6f}".rstrip("0").rstrip(".")
    return f"${text}"


class BudgetExceeded(Exception):
    """A call would cross a cost cap or a daily request quota.

    The router gets it *returned* by :class:`BudgetGuard` for each refused candidate (and
    records a not-sent attempt); it raises one when no candidate is allowed. Its
    ``failure_kind`` makes :func:`~tierwise.providers.failures.classify` map it to
    ``budget_exceeded``.

    Attributes:
        cap: Which cap: ``per_call``, ``per_run``, ``per_day``,
            ``per_provider_day:<provider>`` or ``rpd:<model>``.
        limit: The cap (USD, or requests for ``rpd:``).
        spent: What is used up already (USD, or requests sent today).
        left: ``limit - spent``, never below zero.
        estimate: The refused call's estimated cost (USD; 1 request for ``rpd:``).
        model: Catalog key of the refused candidate, when known.
        retry_after: Seconds until a daily cap resets at UTC midnight (``None`` for per
            call and per run caps, which no amount of waiting changes).
    """

    failure_kind: ClassVar[FailureKind] = FailureKind.BUDGET_EXCEEDED

    def __init__(
        self,
        cap: str,
        *,
        limit: float,
        spent: float,
        estimate: float = 0.0,
        model: str | None = None,
        retry_after: float | None = None,
        note: str = "",
    ) -> None:
        """Record the cap and build the message (which cap, how much is left)."""
        self.cap = cap
        self.limit = limit
        self.spent = spent
        self.left = max(0.0, limit - spent)
        self.estimate = estimate
        self.model = model
        self.retry_after = retry_after
        self.note = note
        super().__init__(self._message())

    @property
    def is_quota(self) -> bool:
        """True for a requests-per-day quota (counts requests, not dollars)."""
        return self.cap.startswith("rpd:")

    def _message(self) -> str:
        who = f" for {self.model}" if self.model else ""
        if self.is_quota:
            text = (
                f"daily request quota {self.cap} used up{who}: {self.spent:.0f} of "
                f"{self.limit:.0f} requests sent since 00:00 UTC, {self.left:.0f} left"
            )
        elif self.cap == "per_call":
            text = (
                f"{self.cap} cap of {_usd(self.limit)} would be exceeded{who}: the call is "
                f"estimated at {_usd(self.estimate)}"
            )
        else:
            text = (
                f"{self.cap} cap of {_usd(self.limit)} would be exceeded{who}: "
                f"{_usd(self.spent)} spent, {_usd(self.left)} left, the call is estimated "
                f"at {_usd(self.estimate)}"
            )
        if self.retry_after is not None:
            text += f"; resets in {_duration(self.retry_after)}"
        if self.note:
            text += f" ({self.note})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        """Keyword arguments survive pickling (process pools, checkpoints)."""
        return (_rebuild, (self.cap, self.limit, self.spent, self.estimate, self.model,
                           self.retry_after, self.note))


def _rebuild(
    cap: str,
    limit: float,
    spent: float,
    estimate: float,
    model: str | None,
    retry_after: float | None,
    note: str,
) -> BudgetExceeded:
    return BudgetExceeded(
        cap, limit=limit, spent=spent, estimate=estimate, model=model,
        retry_after=retry_after, note=note,
    )


def _duration(seconds: float) -> str:
    minutes = max(0, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


@dataclass(frozen=True, slots=True)
class CapStatus:
    """One cap and how much of it is used, for ``tierwise budget``.

    ``limit``, ``spent`` and ``left`` are USD, or requests for an ``rpd:`` cap.
    """

    cap: str
    limit: float
    spent: float

    @property
    def left(self) -> float:
        """What may still be spent (never below zero)."""
        return max(0.0, self.limit - self.spent)


class Reservation:
    """An estimate held against the caps while its call is in flight.

    Release it once the call's attempt has been recorded in the ledger (the ledger then
    counts the real cost); releasing twice is harmless. Usable as a context manager.
    """

    __slots__ = ("_guard", "amount", "provider", "run_id")

    def __init__(self, guard: BudgetGuard, amount: float, provider: str, run_id: str | None):
        """Hold ``amount`` USD for ``provider`` and ``run_id`` (the guard has added it)."""
        self._guard: BudgetGuard | None = guard
        self.amount = amount
        self.provider = provider
        self.run_id = run_id

    def release(self) -> None:
        """Stop holding the estimate."""
        guard, self._guard = self._guard, None
        if guard is not None:
            guard._release(self)

    def __enter__(self) -> Reservation:
        """The reservation itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the estimate."""
        self.release()


class BudgetGuard:
    """Decides, before a call, whether it fits the policy's caps and the model's quota.

    Without a ledger only the per-call cap applies (there is no spend to read).

    Args:
        ledger: Where spend and requests are read; ``None`` turns the ledger caps off.
        clock: Unix time, for the UTC day boundary (tests pass a fake clock).

    Example:
        >>> from tierwise.catalog.specs import load_default_catalog
        >>> from tierwise.catalog.policy import Policy
        >>> spec = next(s for s in load_default_catalog().models.values() if s.tier == "paid")
        >>> refusal = BudgetGuard(None).check(
        ...     spec, 0.05, Policy(mode="balanced", max_cost_per_call=0.01), run_id=None)
        >>> refusal.cap, refusal.left
        ('per_call', 0.01)
    """

    def __init__(self, ledger: Ledger | None, clock: Callable[[], float] = time.time) -> None:
        """Read spend from ``ledger``; tell the day from ``clock``."""
        self.ledger = ledger
        self.clock = clock
        self._lock = threading.Lock()
        self._held = 0.0
        self._held_provider: dict[str, float] = {}
        self._held_run: dict[str, float] = {}
        self._holds = 0

    def check(
        self, spec: ModelSpec, estimated_cost: float, policy: Policy, *, run_id: str | None
    ) -> BudgetExceeded | None:
        """The refusal if calling ``spec`` at ``estimated_cost`` USD would cross a cap.

        Caps are checked in the order per call, per run (needs ``run_id``), per day, per
        provider per day; the first one crossed is returned. A call estimated at zero
        (local and free models) never crosses a cost cap and reads nothing. Estimates of
        calls in flight under a :meth:`reserve` count as spent.
        """
        with self._lock:
            return self._check(spec, estimated_cost, policy, run_id)

    def reserve(
        self, spec: ModelSpec, estimated_cost: float, policy: Policy, *, run_id: str | None
    ) -> Reservation | BudgetExceeded:
        """:meth:`check`, and if allowed hold the estimate until the reservation is released.

        Check and hold happen under one lock, so concurrent calls in this process cannot
        together cross a cap that each alone would respect.
        """
        with self._lock:
            refusal = self._check(spec, estimated_cost, policy, run_id)
            if refusal is not None:
                return refusal
            provider = spec.provider.value
            amount = float(estimated_cost)
            if amount > 0:
                self._held += amount
                self._held_provider[provider] = self._held_provider.get(provider, 0.0) + amount
                if run_id is not None:
                    self._held_run[run_id] = self._held_run.get(run_id, 0.0) + amount
                self._holds += 1
        return Reservation(self, amount, provider, run_id)

    def check_quota(self, spec: ModelSpec) -> BudgetExceeded | None:
        """The refusal if ``spec``'s requests-per-day quota is used up today (UTC).

        Counted from the requests the ledger saw sent since UTC midnight, by every process
        and before any restart — so a quota the provider enforces per day is not overrun
        just because this process is new.
        """
        rpd = spec.limits.rpd
        if rpd is None or self.ledger is None:
            return None
        now = self.clock()
        cap = f"rpd:{spec.key}"
        try:
            sent = self.ledger.requests(spec.key, since=day_start(now))
        except sqlite3.Error as exc:
            return BudgetExceeded(cap, limit=rpd, spent=rpd, estimate=1, model=spec.key,
                                  note=f"the ledger could not be read: {exc}")
        if sent >= rpd:
            return BudgetExceeded(cap, limit=rpd, spent=sent, estimate=1, model=spec.key,
                                  retry_after=_until_midnight(now))
        return None

    def status(
        self, policy: Policy, *, run_id: str | None = None, models: Iterable[ModelSpec] = ()
    ) -> list[CapStatus]:
        """Every cap ``policy`` sets (and each of ``models``' RPD quota): limit and spent.

        The per-call cap is listed with ``spent`` 0. Needs a ledger for anything else.
        """
        result: list[CapStatus] = []
        if policy.max_cost_per_call is not None:
            result.append(CapStatus("per_call", policy.max_cost_per_call, 0.0))
        ledger = self.ledger
        if ledger is None:
            return result
        today = day_start(self.clock())
        if policy.max_cost_per_run is not None and run_id is not None:
            spent = ledger.spent(since=0.0, run_id=run_id)
            result.append(CapStatus("per_run", policy.max_cost_per_run, spent))
        if policy.max_cost_per_day is not None:
            result.append(CapStatus("per_day", policy.max_cost_per_day, ledger.spent(since=today)))
        for provider, limit in policy.max_cost_per_provider_per_day.items():
            spent = ledger.spent(since=today, provider=provider.value)
            result.append(CapStatus(f"per_provider_day:{provider.value}", limit, spent))
        for spec in models:
            if spec.limits.rpd is not None:
                sent = ledger.requests(spec.key, since=today)
                result.append(CapStatus(f"rpd:{spec.key}", spec.limits.rpd, sent))
        return result

    # ------------------------------------------------------------------ internals
    def _check(
        self, spec: ModelSpec, estimate: float, policy: Policy, run_id: str | None
    ) -> BudgetExceeded | None:
        if math.isnan(estimate) or estimate < 0:
            raise ValueError(f"estimated_cost must be a non-negative number, got {estimate!r}")
        if estimate == 0:
            return None
        key = spec.key
        if policy.max_cost_per_call is not None and estimate > policy.max_cost_per_call + _EPSILON:
            return BudgetExceeded("per_call", limit=policy.max_cost_per_call, spent=0.0,
                                  estimate=estimate, model=key)
        ledger = self.ledger
        if ledger is None:
            return None
        now = self.clock()
        today = day_start(now)
        provider = spec.provider.value
        provider_cap = policy.max_cost_per_provider_per_day.get(spec.provider)
        caps: list[tuple[str, float, Callable[[], float], float, float | None]] = []
        if policy.max_cost_per_run is not None and run_id is not None:
            caps.append(("per_run", policy.max_cost_per_run,
                         lambda: ledger.spent(since=0.0, run_id=run_id),
                         self._held_run.get(run_id, 0.0), None))
        if policy.max_cost_per_day is not None:
            caps.append(("per_day", policy.max_cost_per_day,
                         lambda: ledger.spent(since=today),
                         self._held, _until_midnight(now)))
        if provider_cap is not None:
            caps.append((f"per_provider_day:{provider}", provider_cap,
                         lambda: ledger.spent(since=today, provider=provider),
                         self._held_provider.get(provider, 0.0), _until_midnight(now)))
        for cap, limit, read, held, retry_after in caps:
            try:
                spent = read() + held
            except sqlite3.Error as exc:
                # Budgets must trip: a ledger that cannot be read refuses paid calls.
                note = f"the ledger could not be read: {exc}"
                return BudgetExceeded(cap, limit=limit, spent=limit, estimate=estimate,
                                      model=key, note=note)
            if spent + estimate > limit + _EPSILON:
                return BudgetExceeded(cap, limit=limit, spent=spent, estimate=estimate,
                                      model=key, retry_after=retry_after)
        return None

    def _release(self, reservation: Reservation) -> None:
        amount = reservation.amount
        if amount <= 0:
            return
        with self._lock:
            self._held -= amount
            _take(self._held_provider, reservation.provider, amount)
            if reservation.run_id is not None:
                _take(self._held_run, reservation.run_id, amount)
            self._holds -= 1
            if self._holds == 0:  # no drift from float subtraction
                self._held = 0.0
                self._held_provider.clear()
                self._held_run.clear()


def _take(held: dict[str, float], key: str, amount: float) -> None:
    left = held.get(key, 0.0) - amount
    if left > _EPSILON:
        held[key] = left
    else:
        held.pop(key, None)


def _until_midnight(now: float) -> float:
    return day_start(now) + DAY - now
