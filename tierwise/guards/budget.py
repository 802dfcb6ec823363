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
``rpd:<model>``               :meth:`BudgetGuard.status` only (the refusal is
                              :class:`~tierwise.guards.quota.DailyQuota`'s): requests
                              sent since UTC midnight
============================  =========================================================

Calls in flight: a check alone does not see calls that are running and not yet
recorded, so parallel calls — in one process or in several sharing the ledger — could
each pass and together cross a cap. :meth:`BudgetGuard.reserve` therefore holds the
call's *worst case* (its prompt plus the answer's ``max_tokens``) in the ledger file's
``reservations`` table (:mod:`tierwise.ledger.reservations`), checked and taken in one
SQLite write transaction, so no two processes can take the last dollar. When less is
left than the worst case, the reservation lowers ``max_tokens`` until it fits (the router
sends that limit to the provider, so the answer cannot cost more); when not even a short
answer fits, the call is refused. After the call the real cost is committed to the ledger
and the hold dropped. Holds of processes that died are dropped (same host: the pid is
gone; otherwise after their expiry).

With ``[state] redis_url`` set, the holds (and the day's and run's spend they are checked
against) live in Redis instead (:mod:`tierwise.guards.redis_budget`), for processes that
share no ledger file; the rule deciding what fits is this module's either way. Where
holds cannot be read (a locked or corrupt ledger, Redis down), paid calls under a cap are
refused: budgets fail closed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import ModelSpec
from tierwise.ledger import DAY, Ledger, day_start
from tierwise.ledger.reservations import Held, HoldId, HoldStore, HoldsUnavailable, SpendCounter
from tierwise.providers.failures import FailureKind

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ANSWER_TOKENS",
    "HOLD_WAIT",
    "BudgetExceeded",
    "BudgetGuard",
    "CapStatus",
    "Reservation",
]

#: Float slack (USD) so that spend adding up to exactly the cap is not refused.
_EPSILON: Final = 1e-9
#: The longest answer a paid call under a ledger cost cap may give when the caller sets
#: no ``max_tokens`` (what its reservation holds, and the limit sent to the provider).
DEFAULT_ANSWER_TOKENS: Final = 4096
#: Seconds a call refused only because of other calls' holds waits for them to settle
#: (they release as soon as their real cost is recorded) before it gives up.
HOLD_WAIT: Final = 30.0
#: A reservation never lowers ``max_tokens`` below this (or the caller's, if smaller):
#: an answer cut shorter would fail and still cost money, so the call is refused instead.
_MIN_ANSWER_TOKENS: Final = 64


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
        held: Of ``spent``, USD held by calls in flight (:meth:`BudgetGuard.reserve`).
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
        held: float = 0.0,
    ) -> None:
        """Record the cap and build the message (which cap, how much is left)."""
        self.held = held
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
    def in_flight(self) -> bool:
        """The call would fit once calls in flight settle (their holds, not spend, refuse it)."""
        return self.held > 0 and self.spent - self.held + self.estimate <= self.limit + _EPSILON

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
                           self.retry_after, self.note, self.held))


def _rebuild(
    cap: str,
    limit: float,
    spent: float,
    estimate: float,
    model: str | None,
    retry_after: float | None,
    note: str,
    held: float = 0.0,
) -> BudgetExceeded:
    return BudgetExceeded(
        cap, limit=limit, spent=spent, estimate=estimate, model=model,
        retry_after=retry_after, note=note, held=held,
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
    """A call's worst case, held against the caps while the call is in flight.

    ``max_tokens`` is the answer limit the hold covers; when ``capped`` the router must
    send it to the provider (the hold was sized for it). Release the reservation once
    the call's attempt has been recorded in the ledger: the ledger's rows are committed
    first, then the hold is dropped. Releasing twice is harmless; usable as a context
    manager. :meth:`settle` releases with the call's real cost, for a hold store that
    counts spend itself (Redis).
    """

    __slots__ = ("_guard", "_scope", "amount", "capped", "hold_id", "max_tokens")

    def __init__(
        self,
        guard: BudgetGuard | None,
        amount: float,
        max_tokens: int,
        *,
        hold_id: HoldId | None = None,
        capped: bool = False,
        scope: tuple[str, str | None] = ("", None),
    ) -> None:
        """Hold ``amount`` USD (hold ``hold_id``, if any) for a call of ``scope``.

        ``scope`` is the call's (provider, run id), where its real cost is settled.
        """
        self._guard = guard
        self._scope = scope
        self.amount = amount
        self.max_tokens = max_tokens
        self.hold_id = hold_id
        self.capped = capped

    def settle(self, cost: float) -> None:
        """The call cost ``cost`` USD (recorded in the ledger by now): stop holding."""
        guard, self._guard = self._guard, None
        if guard is not None:
            guard._release(self.hold_id, cost, *self._scope)

    def release(self) -> None:
        """Stop holding the worst case (the call cost nothing, or is settled already)."""
        self.settle(0.0)

    def __enter__(self) -> Reservation:
        """The reservation itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the hold."""
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

    def __init__(
        self,
        ledger: Ledger | None,
        clock: Callable[[], float] = time.time,
        *,
        holds: HoldStore | None = None,
    ) -> None:
        """Read spend from ``ledger``; tell the day from ``clock``; hold in ``holds``.

        ``holds`` defaults to the ledger's own store (:meth:`Ledger.holds`): the same
        database the spend is read from, so a hold and the spend it is checked against
        are read in one transaction.
        """
        self.ledger = ledger
        self.clock = clock
        self._reservations: HoldStore | None = holds
        self._lock = threading.Lock()

    @property
    def reservations(self) -> HoldStore | None:
        """Where holds of calls in flight live (``None`` without a ledger)."""
        if self._reservations is None and self.ledger is not None:
            with self._lock:
                if self._reservations is None:
                    self._reservations = self.ledger.holds()
        return self._reservations

    def check(
        self, spec: ModelSpec, estimated_cost: float, policy: Policy, *, run_id: str | None
    ) -> BudgetExceeded | None:
        """The refusal if calling ``spec`` at ``estimated_cost`` USD would cross a cap.

        Caps are checked in the order per call, per run (needs ``run_id``), per day, per
        provider per day; the first one crossed is returned. A call estimated at zero
        (local and free models) never crosses a cost cap and reads nothing. Every
        process's holds of calls in flight (:meth:`reserve`) count as spent.
        """
        _valid(estimated_cost)
        if estimated_cost == 0:
            return None
        refusal = self._per_call(spec, estimated_cost, policy)
        if refusal is not None or not self._ledger_caps(spec, policy, run_id):
            return refusal
        result = self._transaction(
            spec, policy, run_id, estimated_cost,
            lambda left: (True if estimated_cost <= left + _EPSILON else None, 0.0),
        )
        return result if isinstance(result, BudgetExceeded) else None

    def reserve(
        self,
        spec: ModelSpec,
        policy: Policy,
        *,
        prompt_tokens: int,
        max_tokens: int | None,
        expected_tokens: int,
        run_id: str | None,
    ) -> Reservation | BudgetExceeded:
        """Hold the call's worst case against every cap, or the refusal of the cap it crosses.

        The worst case is ``prompt_tokens`` plus an answer of ``max_tokens`` (the caller's;
        without one :data:`DEFAULT_ANSWER_TOKENS` under a ledger cap, else
        ``expected_tokens``, the routing estimate) at
        ``spec``'s prices. Under a run / day / provider cap it is held in the ledger file,
        checked and taken in one transaction across processes; when less is left, the
        reservation's ``max_tokens`` is lowered to what fits (``capped``: the caller must
        send it). Free and local models hold nothing and read nothing.
        """
        price = spec.price
        capped = self._ledger_caps(spec, policy, run_id) and price.output_per_mtok > 0
        answer = max_tokens if max_tokens is not None else (
            DEFAULT_ANSWER_TOKENS if capped else expected_tokens
        )
        worst = price.cost(prompt_tokens, answer)
        _valid(worst)
        if worst == 0:
            return Reservation(None, 0.0, answer)
        refusal = self._per_call(spec, worst, policy)
        if refusal is not None:
            return refusal
        scope = (spec.provider.value, run_id)
        if not self._ledger_caps(spec, policy, run_id):
            # a store counting spend itself hears of every paid call's cost
            counts = self.ledger is not None and isinstance(self._reservations, SpendCounter)
            return Reservation(self if counts else None, worst, answer, scope=scope)
        floor = min(answer, _MIN_ANSWER_TOKENS)
        per_token = price.cost(0, 1)
        prompt_cost = price.cost(prompt_tokens, 0)

        def fit(left: float) -> tuple[Reservation | BudgetExceeded | None, float]:
            tokens = answer
            if per_token > 0:
                tokens = min(answer, math.floor((left - prompt_cost + _EPSILON) / per_token))
            if tokens < floor:
                return None, 0.0  # refused: the caller builds the refusal of the tightest cap
            amount = price.cost(prompt_tokens, tokens)
            return Reservation(None, amount, tokens, capped=capped), amount

        result = self._transaction(spec, policy, run_id, price.cost(prompt_tokens, floor), fit)
        if isinstance(result, BudgetExceeded):
            return result
        reservation, hold_id = result
        assert isinstance(reservation, Reservation)
        return Reservation(self, reservation.amount, reservation.max_tokens, hold_id=hold_id,
                           capped=capped, scope=scope)  # fmt: skip

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
    def _per_call(
        self, spec: ModelSpec, estimate: float, policy: Policy
    ) -> BudgetExceeded | None:
        limit = policy.max_cost_per_call
        if limit is not None and estimate > limit + _EPSILON:
            return BudgetExceeded("per_call", limit=limit, spent=0.0, estimate=estimate,
                                  model=spec.key)  # fmt: skip
        return None

    def _ledger_caps(self, spec: ModelSpec, policy: Policy, run_id: str | None) -> bool:
        """Whether a cap read from the ledger applies to this call."""
        return (
            (policy.max_cost_per_run is not None and run_id is not None)
            or policy.max_cost_per_day is not None
            or spec.provider in policy.max_cost_per_provider_per_day
        )

    def _transaction(
        self,
        spec: ModelSpec,
        policy: Policy,
        run_id: str | None,
        estimate: float,
        fit: Callable[[float], tuple[Any, float]],
    ) -> tuple[Any, HoldId | None] | BudgetExceeded:
        """In one ledger write transaction: what each cap leaves, ``fit``'s verdict, its hold.

        ``fit(left)`` gets the smallest amount any cap leaves and returns ``(verdict,
        amount)``; a ``None`` verdict is a refusal, reported for the tightest cap with
        ``estimate`` as the call's (smallest) cost. Where spend cannot be counted — no
        ledger, or holds that cannot be read — the call is refused: budgets fail closed.
        """
        ledger, reservations = self.ledger, self.reservations
        now = self.clock()
        today = day_start(now)
        provider = spec.provider.value
        caps: list[tuple[str, float, tuple[float, str | None, str | None], float | None]] = []
        if policy.max_cost_per_run is not None and run_id is not None:
            caps.append(("per_run", policy.max_cost_per_run, (0.0, None, run_id), None))
        if policy.max_cost_per_day is not None:
            caps.append(("per_day", policy.max_cost_per_day, (today, None, None),
                         _until_midnight(now)))  # fmt: skip
        provider_cap = policy.max_cost_per_provider_per_day.get(spec.provider)
        if provider_cap is not None:
            caps.append((f"per_provider_day:{provider}", provider_cap, (today, provider, None),
                         _until_midnight(now)))  # fmt: skip

        def closed(why: str) -> BudgetExceeded:
            cap, limit = caps[0][0], caps[0][1]
            return BudgetExceeded(cap, limit=limit, spent=limit, estimate=estimate,
                                  model=spec.key, note=why)  # fmt: skip

        if ledger is None or reservations is None:
            return closed("no ledger to count spend in, so paid calls are refused")
        refusal: list[BudgetExceeded] = []

        def decide(read: Callable[..., Held]) -> tuple[Any, float]:
            tightest: tuple[float, str, float, Held, float | None] | None = None
            for cap, limit, (since, prov, run), retry_after in caps:
                found = read(since, provider=prov, run_id=run, cap=limit)
                left = limit - found.used
                if tightest is None or left < tightest[0]:
                    tightest = (left, cap, limit, found, retry_after)
            assert tightest is not None
            left, cap, limit, found, retry_after = tightest
            verdict, amount = fit(left)
            if verdict is None:
                refusal.append(BudgetExceeded(
                    cap, limit=limit, spent=found.used, estimate=estimate, model=spec.key,
                    retry_after=retry_after, held=found.held,
                ))
            return verdict, amount

        try:
            ledger.flush()  # this process's recorded costs are committed, so they are read
            verdict, hold_id = reservations.hold(decide, provider=provider, run_id=run_id)
        except HoldsUnavailable as exc:
            return closed(f"budget holds could not be read: {exc}")
        if refusal:
            return refusal[0]
        return verdict, hold_id

    def _release(
        self, hold_id: HoldId | None, cost: float, provider: str, run_id: str | None
    ) -> None:
        """The call's cost is recorded: commit it, then drop the hold (never neither counts)."""
        ledger, reservations = self.ledger, self.reservations
        if ledger is None or reservations is None:
            return
        try:
            ledger.flush()
            if isinstance(reservations, SpendCounter):
                reservations.settle(hold_id, cost=cost, provider=provider, run_id=run_id,
                                    day=day_start(self.clock()))  # fmt: skip
            elif hold_id is not None:
                reservations.release(hold_id)
        except HoldsUnavailable:
            # The hold then counts until it expires: spend is over-, never under-counted.
            logger.warning("ledger %s: cannot release a budget hold", ledger.label,
                           exc_info=True)  # fmt: skip


def _valid(estimate: float) -> None:
    if math.isnan(estimate) or estimate < 0:
        raise ValueError(f"estimated_cost must be a non-negative number, got {estimate!r}")


def _until_midnight(now: float) -> float:
    return day_start(now) + DAY - now
