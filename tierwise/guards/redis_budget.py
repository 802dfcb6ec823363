"""Budget holds in Redis: every process routing on one account reserves against the same caps.

:class:`RedisReservations` has the interface of the ledger file's
:class:`~tierwise.ledger.reservations.Reservations`, so :class:`~tierwise.guards.budget.
BudgetGuard` decides what fits exactly as it does on SQLite; only where the money is
counted changes. One Lua script per operation — read, take, seed, settle — each atomic
for every process sharing the server; all keys share the hash tag ``{prefix}``.

How Redis knows what is spent. The ledger is the record, but reading it and then holding
in Redis is not one step: a call settling in between would be counted nowhere. So Redis
keeps its own counters: per UTC day a hash with ``inc`` (and ``inc:<provider>``), raised
by every paid call's real cost when it settles, and per run id one with ``inc``. The first
hold of a day (or run) *seeds* the counter once from the ledger: it reads ``inc`` first,
then the ledger's total ``X``, and stores ``base = max(0, X - inc_before)``; spent is
``base + inc``. Every cost in ``inc_before`` was committed to the ledger before it was
settled (the guard flushes first), so it is already in ``X``; a call settling during the
seed is at worst counted twice — spend is over-, never under-counted. With one shared
ledger (PostgreSQL) the seed is the account's whole day; with a ledger per host it is
the seeding host's, and Redis counts every process's spend from then on. A Redis that
restarts empty is seeded again from the ledger on the next hold.

Taking a hold. The guard's rule (its ``decide``) runs here in Python on the sums Redis
returned, as it does inside the SQLite transaction; the *take* script then adds the hold
only if, with Redis' current sums, the amount still fits under every cap the rule read
(``used + amount <= cap``). When another process took money in between and it no longer
fits, the script returns the new sums and the rule runs again — so caps are enforced
atomically in Redis, and the rule exists once. Holds expire ``ttl`` seconds after they
were taken (Redis ``TIME``): a SIGKILLed worker's holds stop counting by then.

Fail closed: when Redis cannot be reached, :meth:`RedisReservations.hold` raises
:class:`~tierwise.ledger.reservations.HoldsUnavailable`, and the guard refuses paid calls
under a cost cap with that reason (free and local calls hold nothing and go on). Money is
not what a router may guess about; rate limits and breakers, which only spare quotas and
time, fail open instead. A settle that cannot be sent is kept and sent with the next
operation, so a short outage does not lose spend.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Final, TypeAlias, TypeVar

from tierwise.catalog.state import redact_url
from tierwise.guards.redis_connection import DOWN, connect
from tierwise.ledger import DAY, day_start
from tierwise.ledger.reservations import DEFAULT_TTL, Decide, Held, HoldId, HoldsUnavailable

__all__ = ["RedisReservations"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_Arg: TypeAlias = str | int | float

#: Money is counted in integer nano-dollars: sums stay exact across processes.
_NANO: Final = 1_000_000_000
#: Rounding slack of the take script's cap check, in nano-dollars (the guard's epsilon).
_SLACK: Final = 2
#: How often the rule may be re-run because others took money in between, before giving up.
_ATTEMPTS: Final = 50
#: Seconds a day's counters outlive the day; a run's counters outlive its last call.
_DAY_KEEP: Final = int(2 * DAY)
_RUN_KEEP: Final = int(30 * DAY)

# KEYS: holds (zset id -> expiry), hold (hash id -> "amount|day|provider|run"), day, run.
_COMMON: Final = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local holds, hold, dayh, runh = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function prune()
  local old = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
    redis.call('HDEL', hold, unpack(old))
  end
end

local function int(h, field)
  local v = redis.call('HGET', h, field)
  if v then return tonumber(v) end
  return 0
end

-- {seeded, spent, held, inc} of the day, the provider's day and the run (nano-dollars)
local function sums(day, prov, run)
  local hd, hp, hr = 0, 0, 0
  local all = redis.call('HGETALL', hold)
  for i = 2, #all, 2 do
    local a, d, p, r = string.match(all[i], '^(%d+)|([^|]*)|([^|]*)|(.*)$')
    a = tonumber(a)
    if d == day then
      hd = hd + a
      if p == prov then hp = hp + a end
    end
    if run ~= '' and r == run then hr = hr + a end
  end
  local function scope(h, suffix, held)
    local base = redis.call('HGET', h, 'base' .. suffix)
    local inc = int(h, 'inc' .. suffix)
    if base then return {1, tonumber(base) + inc, held, inc} end
    return {0, inc, held, inc}
  end
  local out = {}
  for _, s in ipairs({scope(dayh, '', hd), scope(dayh, ':' .. prov, hp)}) do
    for _, v in ipairs(s) do out[#out + 1] = v end
  end
  if run ~= '' then
    for _, v in ipairs(scope(runh, '', hr)) do out[#out + 1] = v end
  end
  return out
end
"""

# ARGV: day, provider, run
_READ: Final = _COMMON + r"""
prune()
return sums(ARGV[1], ARGV[2], ARGV[3])
"""

# ARGV: day, provider, run, ttl, amount, then per checked scope: index (1..3), cap, seen
_TAKE: Final = _COMMON + r"""
prune()
local found = sums(ARGV[1], ARGV[2], ARGV[3])
local amount = tonumber(ARGV[5])
for i = 6, #ARGV, 3 do
  local at = (tonumber(ARGV[i]) - 1) * 4
  local used = found[at + 2] + found[at + 3]
  local cap, seen = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if found[at + 1] == 0 or (cap >= 0 and used + amount > cap + SLACK)
     or (cap < 0 and used > seen) then
    table.insert(found, 1, 0)
    return found
  end
end
local id = redis.call('INCR', holds .. ':seq')
redis.call('HSET', hold, id, ARGV[5] .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3])
redis.call('ZADD', holds, now + tonumber(ARGV[4]), id)
return {1, id}
""".replace("SLACK", str(_SLACK))

# ARGV: provider, then (field suffix or "run", base) pairs; a base is set only once
_SEED: Final = _COMMON + r"""
for i = 2, #ARGV, 2 do
  local h, field = dayh, 'base' .. ARGV[i]
  if ARGV[i] == 'run' then h, field = runh, 'base' end
  redis.call('HSETNX', h, field, ARGV[i + 1])
end
redis.call('EXPIRE', dayh, DAY_KEEP)
if redis.call('EXISTS', runh) == 1 then redis.call('EXPIRE', runh, RUN_KEEP) end
return 1
""".replace("DAY_KEEP", str(_DAY_KEEP)).replace("RUN_KEEP", str(_RUN_KEEP))

# ARGV: hold id or "", cost, provider, run
_SETTLE: Final = _COMMON + r"""
if ARGV[1] ~= '' then
  redis.call('HDEL', hold, ARGV[1])
  redis.call('ZREM', holds, ARGV[1])
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('HINCRBY', dayh, 'inc', cost)
  redis.call('HINCRBY', dayh, 'inc:' .. ARGV[3], cost)
  redis.call('EXPIRE', dayh, DAY_KEEP)
  if ARGV[4] ~= '' then
    redis.call('HINCRBY', runh, 'inc', cost)
    redis.call('EXPIRE', runh, RUN_KEEP)
  end
end
return 1
""".replace("DAY_KEEP", str(_DAY_KEEP)).replace("RUN_KEEP", str(_RUN_KEEP))

#: The scopes a hold reads, in the order the scripts return them.
_DAY, _PROVIDER, _RUN = 1, 2, 3

Seed = Callable[[float, str | None, str | None], float]
"""``(since, provider, run_id) -> USD`` the ledger recorded: what a counter starts from."""


def _nano(usd: float) -> int:
    return int(round(usd * _NANO))


class RedisReservations:
    """Holds of paid calls in flight, and the spend they settle to, in Redis.

    Args:
        url: The Redis URL (``[state] redis_url``).
        seed: Reads the ledger's spend for a scope, to start a counter (see the module doc).
        prefix: The hash tag of every key (one per deployment, or per test).
        ttl: Seconds a hold counts at most (a dead process's holds expire by then).
        timeout: Seconds to wait for Redis before a hold is refused.
    """

    def __init__(
        self,
        url: str,
        seed: Seed,
        *,
        prefix: str = "tierwise",
        ttl: float = DEFAULT_TTL,
        timeout: float = 1.0,
    ) -> None:
        """Connect lazily to ``url``; nothing is sent until the first hold or settle."""
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self._seed = seed
        client = connect(url, timeout)
        self._client = client
        self._read = client.register_script(_READ)
        self._take = client.register_script(_TAKE)
        self._seeder = client.register_script(_SEED)
        self._settle = client.register_script(_SETTLE)
        self._lock = threading.Lock()
        self._pending: list[tuple[list[str], list[str]]] = []  # settles Redis missed

    def _keys(self, day: float, run_id: str | None) -> list[str]:
        base = f"{{{self.prefix}}}:b:"
        return [f"{base}holds", f"{base}hold", f"{base}day:{int(day)}", f"{base}run:{run_id or ''}"]

    def _unreachable(self, exc: BaseException) -> HoldsUnavailable:
        return HoldsUnavailable(
            f"Redis at {redact_url(self.url)} cannot be reached ({type(exc).__name__}); "
            "paid calls under a cost cap are refused until it answers"
        )

    # ---------------------------------------------------------------- holds
    def hold(
        self,
        decide: Decide[_T],
        *,
        provider: str,
        run_id: str | None,
    ) -> tuple[_T, HoldId | None]:
        """Run ``decide`` on Redis' sums and hold the amount it returns, if it still fits.

        ``decide`` gets ``read(since, provider=None, run_id=None, cap=None) -> Held`` for
        the day (``since`` a UTC midnight), the provider's day, or the run (``since``
        0); ``cap`` is the limit the caller compares against, re-checked in Redis when
        the hold is taken. Raises :class:`HoldsUnavailable` when Redis does not answer.
        """
        try:
            self._flush_pending()
            return self._hold(decide, provider, run_id)
        except DOWN as exc:
            raise self._unreachable(exc) from None

    def _hold(
        self,
        decide: Decide[_T],
        provider: str,
        run_id: str | None,
    ) -> tuple[_T, HoldId | None]:
        found: dict[float, list[int]] = {}  # day -> the read script's sums

        def sums(day: float, scope: int) -> list[int]:
            """``day``'s sums, with ``scope``'s counter seeded from the ledger (once)."""
            if day not in found:
                found[day] = self._sums(day, provider, run_id)
            if found[day][(scope - 1) * 4] == 0:
                found[day] = self._seeded(day, provider, run_id, scope, found[day])
            return found[day]

        checks: list[tuple[float, int, int, int]] = []

        def read(
            since: float,
            provider: str | None = None,
            run_id: str | None = None,
            cap: float | None = None,
        ) -> Held:
            scope, day = _scope(since, provider, run_id)
            if scope == _RUN:
                day = next(iter(found), None) or day_start()
            values = sums(day, scope)
            at = (scope - 1) * 4
            spent, held = values[at + 1], values[at + 2]
            checks.append((day, scope, -1 if cap is None else _nano(cap), spent + held))
            return Held(spent / _NANO, held / _NANO)

        for _ in range(_ATTEMPTS):
            checks.clear()
            verdict, amount = decide(read)
            if amount <= 0:
                return verdict, None
            days = {day for day, scope, _, _ in checks if scope != _RUN}
            if len(days) > 1:
                raise ValueError("one hold cannot span two days")
            day = days.pop() if days else next(iter(found))
            argv: list[_Arg] = [int(day), provider, run_id or "", repr(self.ttl),
                                  math.ceil(amount * _NANO)]  # fmt: skip
            for _, scope, cap, seen in checks:
                argv += [scope, cap, seen]
            reply = self._take(keys=self._keys(day, run_id), args=argv)
            if int(reply[0]) == 1:
                return verdict, int(reply[1])
            values = [int(v) for v in reply[1:]]
            # others took money in between: decide again on Redis' sums (a counter lost in
            # a restart is seeded again first)
            found.clear()
            if all(values[(scope - 1) * 4] for _, scope, _, _ in checks):
                found[day] = values
        raise HoldsUnavailable(
            f"budget holds in Redis at {redact_url(self.url)}: {_ATTEMPTS} attempts lost to "
            "other processes' holds; the call is refused rather than risk the cap"
        )

    def _sums(self, day: float, provider: str, run_id: str | None) -> list[int]:
        """The read script's sums for ``day``, the provider's day and the run."""
        argv: list[_Arg] = [int(day), provider, run_id or ""]
        return [int(v) for v in self._read(keys=self._keys(day, run_id), args=argv)]

    def _seeded(
        self, day: float, provider: str, run_id: str | None, scope: int, values: list[int]
    ) -> list[int]:
        """Start ``scope``'s counter from the ledger, then read the sums again.

        ``values`` carries the ``inc`` read before the ledger (see the module doc). Only
        scopes a cap reads are seeded: a run id no cap reads costs no ledger query.
        """
        since, prov, run, suffix = {
            _DAY: (day, None, None, ""),
            _PROVIDER: (day, provider, None, f":{provider}"),
            _RUN: (0.0, None, run_id, "run"),
        }[scope]
        spent = _nano(self._seed(since, prov, run))
        base = max(0, spent - values[(scope - 1) * 4 + 3])
        self._seeder(keys=self._keys(day, run_id), args=[provider, suffix, base])
        return self._sums(day, provider, run_id)

    # ---------------------------------------------------------------- settling
    def settle(
        self,
        hold_id: HoldId | None,
        *,
        cost: float,
        provider: str,
        run_id: str | None,
        day: float,
    ) -> None:
        """Drop hold ``hold_id`` (if any) and add the call's real ``cost`` to ``day``'s spend.

        When Redis does not answer, the settle is kept and sent with the next operation
        (meanwhile the hold counts until it expires: over-, never under-counted).
        """
        keys = self._keys(day, run_id)
        argv = ["" if hold_id is None else str(hold_id), str(_nano(cost)), provider, run_id or ""]
        try:
            self._flush_pending()
            self._settle(keys=keys, args=argv)
        except DOWN as exc:
            with self._lock:
                self._pending.append((keys, argv))
            _log.warning("%s; the settle is sent when Redis answers", self._unreachable(exc))

    def release(self, hold_id: HoldId) -> None:
        """Drop hold ``hold_id`` without spend (the call was never sent)."""
        self.settle(hold_id, cost=0.0, provider="", run_id=None, day=0.0)

    def _flush_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for at, (keys, argv) in enumerate(pending):
            try:
                self._settle(keys=keys, args=argv)
            except DOWN:
                with self._lock:
                    self._pending[:0] = pending[at:]
                raise

    def close(self) -> None:
        """Close the connections (holds stay until settled or expired)."""
        self._client.close()


def _scope(since: float, provider: str | None, run_id: str | None) -> tuple[int, float]:
    """Which counter a read means: the day, the provider's day or the run (and its day)."""
    if run_id is not None and provider is None and since == 0:
        return _RUN, since
    if run_id is None and since > 0 and since % DAY == 0:
        return (_DAY if provider is None else _PROVIDER), since
    raise ValueError(
        "Redis keeps spend per UTC day (since = a midnight), per provider and day, and per "
        f"run (since = 0); got since={since!r}, provider={provider!r}, run_id={run_id!r}"
    )
