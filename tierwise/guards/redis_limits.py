"""Rate-limit windows in Redis, shared by every process that routes on one account.

Free-tier quotas are per account, not per process: N web workers or LangGraph Server
replicas each holding their own windows earn N times the 429s. :class:`RedisLimitBackend`
keeps the sliding logs of :mod:`tierwise.guards.backend` in Redis instead, with one Lua
script per operation (:mod:`tierwise.guards.redis_scripts`), so check-and-reserve over
several keys is atomic for every process. All keys of one deployment share the hash tag
``{prefix}``, so multi-key scripts stay legal on Redis Cluster. The clock is Redis
``TIME``: processes on different hosts share no monotonic clock. Settling a permit
re-stamps its request at the settle time: a permit is granted before the provider counts
the request, by a delay that varies (a busy process, a slow network), so a window that
slid from the permit's time could free a slot the provider still holds and earn a 429.

The event loop never waits on Redis: the router's async driver takes permits through
:meth:`RedisLimitBackend.aacquire` (redis-py's asyncio client, one per loop), and the
calls whose result nobody waits for — settling, cancelling, a provider's restriction —
are sent as tasks on the running loop, or synchronously when there is none.

When Redis is unreachable the backend fails *open*: it warns once and hands out permits
from an in-process :class:`~tierwise.guards.backend.InMemoryLimitBackend` (this process's
share of the limits is then not coordinated with the others), and tries Redis again after
``retry_after`` seconds. Rate limits only protect free quotas from 429s, which the router
already survives by falling back; refusing every call because Redis restarted would be
the worse failure. Budgets, which protect money, do not take this path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from tierwise.catalog.specs import Limits
from tierwise.catalog.state import redact_url
from tierwise.guards.backend import Denied, InMemoryLimitBackend, LimitName, Restriction, Usage
from tierwise.guards.redis_connection import DOWN, aconnect, connect
from tierwise.guards.redis_scripts import ACQUIRE, ADJUST, RESTRICT, USAGE

__all__ = ["RedisLimitBackend", "RedisUnavailableWarning"]

_log = logging.getLogger(__name__)


_SOURCES: Final = (
    ("acquire", ACQUIRE), ("adjust", ADJUST), ("restrict", RESTRICT), ("usage", USAGE)
)


class RedisUnavailableWarning(RuntimeWarning):
    """Redis could not be reached: rate limits are enforced per process until it is back."""


@dataclass(frozen=True, slots=True)
class _Ticket:
    """A permit held in Redis: its id, token estimate and each key's allowance generations."""

    keys: tuple[str, ...]
    id: str
    tokens: int
    gens: tuple[str, ...]


def _limit(value: int | None) -> str:
    return "-1" if value is None else str(value)


def _opt(value: object) -> str:
    return "" if value is None else str(value)


class RedisLimitBackend:
    """A :class:`~tierwise.guards.backend.LimitBackend` on Redis (see the module docstring).

    ``time_scale`` must equal the :class:`~tierwise.guards.limits.RateLimiter`'s: this
    backend reads Redis ``TIME`` and ignores the ``now`` it is given, so it scales windows
    itself. ``prefix`` is the hash tag of every key (one per deployment, or per test).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tierwise",
        time_scale: float = 1.0,
        timeout: float = 1.0,
        retry_after: float = 5.0,
    ) -> None:
        """Connect lazily to ``url``; nothing is sent until the first permit."""
        self.url = url
        self.prefix = prefix
        self._scale = repr(float(time_scale))
        self._timeout = timeout
        self._retry_after = retry_after
        self._client = connect(url, timeout)
        self._scripts = {name: self._client.register_script(src) for name, src in _SOURCES}
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._limits: dict[str, Limits] = {}
        self._local = InMemoryLimitBackend()
        self._down_until = 0.0
        self._warned = False

    # ---------------------------------------------------------------- plumbing
    def _keys(self, key: str) -> list[str]:
        base = f"{{{self.prefix}}}:"
        return [f"{base}m:{key}", f"{base}d:{key}", f"{base}h:{key}"]

    def _acquire_args(
        self, keys: Sequence[str], tokens: int
    ) -> tuple[list[str], list[str]]:
        rkeys, argv = [f"{{{self.prefix}}}:seq"], [self._scale, str(tokens)]
        for key in keys:
            limits = self._limits.get(key) or Limits()
            rkeys += self._keys(key)
            argv += [_limit(limits.rpm), _limit(limits.tpm), _limit(limits.rpd)]
        return rkeys, argv

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _fail(self, exc: BaseException) -> None:
        """Redis is down: use the local windows for ``retry_after`` seconds and say so."""
        self._down_until = time.monotonic() + self._retry_after
        message = (
            f"Redis at {redact_url(self.url)} is unreachable ({type(exc).__name__}); rate "
            "limits are enforced per process until it is back (other processes' calls are "
            "not counted)"
        )
        if not self._warned:
            self._warned = True
            warnings.warn(message, RedisUnavailableWarning, stacklevel=4)
        _log.warning(message)

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            _log.warning("Redis at %s is reachable again; rate limits are shared",
                         redact_url(self.url))

    @property
    def degraded(self) -> bool:
        """Whether permits currently come from the in-process fallback."""
        return not self._up()

    def _ascript(self, name: str) -> Any:
        """This loop's asyncio script ``name`` (asyncio connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        scripts = self._aclients.get(loop)
        if scripts is None:
            client = aconnect(self.url, self._timeout)
            scripts = {n: client.register_script(src) for n, src in _SOURCES}
            self._aclients[loop] = scripts
        return scripts[name]

    def _ticket(self, keys: Sequence[str], tokens: int, reply: list[str]) -> object | Denied:
        if reply[0] == "0":
            limit = cast(LimitName, reply[2])
            return Denied(float(reply[1]), limit, keys[int(reply[3]) - 1])
        return _Ticket(tuple(keys), reply[1], tokens, tuple(reply[2:]))

    # ---------------------------------------------------------------- protocol
    def configure(self, key: str, limits: Limits) -> None:
        """Record ``key``'s catalog limits (sent with every permit; no round trip).

        Limits learned from other processes' headers stay in Redis: they are the
        provider's word about the shared account.
        """
        self._limits[key] = limits
        self._local.configure(key, limits)

    def acquire(self, keys: Sequence[str], tokens: int, now: float) -> object | Denied:
        """Reserve in Redis (one script call), or locally while Redis is down."""
        if self._up():
            rkeys, argv = self._acquire_args(keys, tokens)
            try:
                reply = self._scripts["acquire"](keys=rkeys, args=argv)
            except DOWN as exc:
                self._fail(exc)
            else:
                self._recovered()
                return self._ticket(keys, tokens, reply)
        return self._local.acquire(keys, tokens, now)

    async def aacquire(self, keys: Sequence[str], tokens: int, now: float) -> object | Denied:
        """:meth:`acquire` on the asyncio client: the loop runs on while Redis answers."""
        if self._up():
            rkeys, argv = self._acquire_args(keys, tokens)
            try:
                reply = await self._ascript("acquire")(keys=rkeys, args=argv)
            except DOWN as exc:
                self._fail(exc)
            else:
                self._recovered()
                return self._ticket(keys, tokens, reply)
        return self._local.acquire(keys, tokens, now)

    def wait(self, keys: Sequence[str], tokens: int, now: float) -> Denied | None:
        """Only the local fallback can answer without reserving; Redis' answer is a permit."""
        return self._local.wait(keys, tokens, now)

    def adjust(self, ticket: object, tokens: int | None, now: float) -> None:
        """Settle or cancel; on a running loop as a task, so the caller never waits."""
        if not isinstance(ticket, _Ticket):
            self._local.adjust(ticket, tokens, now)
            return
        rkeys = [k for key in ticket.keys for k in self._keys(key)]
        argv = [self._scale, ticket.id, str(ticket.tokens), _opt(tokens), *ticket.gens]
        self._send("adjust", rkeys, argv)

    def restrict(self, key: str, restriction: Restriction, now: float) -> None:
        """Store a provider's statement in Redis (and locally, for the fallback)."""
        r = restriction
        self._local.restrict(key, r, now)
        block, req, tok = r.block, r.requests, r.tokens
        argv = [
            self._scale,
            _opt(block and block[0]), block[1] if block else "",
            _opt(req and req[0]), _opt(req and req[1]), req[2] if req else "",
            _opt(tok and tok[0]), _opt(tok and tok[1]),
            _opt(r.rpm_cap), _opt(r.tpm_cap),
        ]
        self._send("restrict", self._keys(key)[2:], argv)

    def _send(self, name: str, rkeys: list[str], argv: list[str]) -> None:
        """Run a script whose reply nobody needs: a task on a running loop, else now."""
        if not self._up():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                self._scripts[name](keys=rkeys, args=argv)
            except DOWN as exc:
                self._fail(exc)
            return
        task = asyncio.ensure_future(self._asend(name, rkeys, argv))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _asend(self, name: str, rkeys: list[str], argv: list[str]) -> None:
        try:
            await self._ascript(name)(keys=rkeys, args=argv)
        except DOWN as exc:
            self._fail(exc)

    async def drain(self) -> None:
        """Wait for settles and restrictions still in flight (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def usage(self, key: str, now: float) -> Usage:
        """Window counts and limits in force, as Redis holds them (local when down)."""
        if self._up():
            limits = self._limits.get(key) or Limits()
            try:
                reply = self._scripts["usage"](
                    keys=self._keys(key),
                    args=[self._scale, _limit(limits.rpm), _limit(limits.tpm)],
                )
            except DOWN as exc:
                self._fail(exc)
            else:
                rpm, tpm = int(float(reply[3])), int(float(reply[4]))
                return Usage(
                    key, int(reply[0]), int(float(reply[1])), int(reply[2]),
                    Limits(rpm=None if rpm < 0 else rpm, tpm=None if tpm < 0 else tpm,
                           rpd=limits.rpd),
                    float(reply[5]),
                )
        return self._local.usage(key, now)
