"""Circuit breakers shared through Redis: a model that trips in one process cools in all.

:class:`RedisHealthShare` is a :class:`~tierwise.guards.health.HealthShare`. Redis holds
one hash (``{prefix}:cb``) of the open circuits, model key -> ``trips|open until|cooldown|
cause`` on Redis ``TIME`` (processes share no monotonic clock), and a channel of the same
name on which every change is published. One Lua script applies a change: an opening is
kept unless the circuit is already open for longer (so two processes tripping at once
keep the longer cooldown), a closing only once the circuit is past its cooldown (a probe
that failed elsewhere meanwhile wins). Each process runs two daemon threads: one sends
its board's changes (the board never waits on the network: the router asks the breaker
on the event loop), one listens on the channel and, after each (re)connection, reads
the whole hash, so a process that starts late or lost its connection catches up.

What is not shared: the failure window (each process trips on its own calls) and the
half-open trickle (each process admits its own ``half_open_calls`` probes, so N processes
probe a recovering model with up to N times as many calls).

When Redis is unreachable the breakers fail *open* to this process's own state: one
:class:`~tierwise.guards.redis_limits.RedisUnavailableWarning`, then each process trips
and recovers on what it sees, as without Redis, until Redis answers again (changes made
meanwhile stay local; the next ones are shared). A breaker only spares time on a model
that is down; waiting for Redis would cost more than it saves.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
import warnings
from typing import Final

from tierwise.catalog.state import redact_url
from tierwise.guards.health import HealthBoard
from tierwise.guards.redis_connection import DOWN, connect
from tierwise.guards.redis_limits import RedisUnavailableWarning

__all__ = ["RedisHealthShare"]

_log = logging.getLogger(__name__)


# KEYS[1] the hash; ARGV: channel, origin, key, trips, cooldown, cause.
# Replies (and publishes) "origin|key|trips|remaining|cooldown|cause" of the stored state.
_CHANGE: Final = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, trips, cooldown = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HGET', KEYS[1], key)
local ct, cu, cc, ccause = 0, 0, 0, ''
if cur then
  local a, b, c, d = string.match(cur, '^(%d+)|([^|]*)|([^|]*)|(.*)$')
  ct, cu, cc, ccause = tonumber(a), tonumber(b), tonumber(c), d
end
local keep = false
if trips == 0 then
  keep = cur and cu > now
  if not keep then redis.call('HDEL', KEYS[1], key) end
else
  keep = cur and cu >= now + cooldown
  if not keep then
    ct, cu, cc, ccause = trips, now + cooldown, cooldown, ARGV[6]
    redis.call('HSET', KEYS[1], key, ct .. '|' .. string.format('%.6f', cu) .. '|' .. cc
               .. '|' .. ccause)
  end
end
local state
if trips == 0 and not keep then
  state = ARGV[2] .. '|' .. key .. '|0|0|0|'
else
  state = ARGV[2] .. '|' .. key .. '|' .. ct .. '|' .. string.format('%.6f', cu - now)
          .. '|' .. cc .. '|' .. ccause
end
if not keep then redis.call('PUBLISH', ARGV[1], state) end
if keep then return 'kept|' .. string.sub(state, #ARGV[2] + 2) end
return state
"""

# KEYS[1] the hash: every open circuit as "key|trips|remaining|cooldown|cause".
_ALL: Final = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local a, b, c, d = string.match(all[i + 1], '^(%d+)|([^|]*)|([^|]*)|(.*)$')
  out[#out + 1] = all[i] .. '|' .. a .. '|' .. string.format('%.6f', tonumber(b) - now)
                  .. '|' .. c .. '|' .. d
end
return out
"""


class RedisHealthShare:
    """Breaker openings and closings shared through Redis (see the module docstring).

    Args:
        url: The Redis URL (``[state] redis_url``).
        prefix: The hash tag of the keys (one per deployment, or per test).
        timeout: Seconds a Redis command may take before Redis counts as down.
        retry_after: Seconds between reconnection attempts while Redis is down.
    """

    def __init__(
        self, url: str, *, prefix: str = "tierwise", timeout: float = 1.0,
        retry_after: float = 5.0,
    ) -> None:
        """Connect lazily; the threads start with :meth:`start`."""
        self.url = url
        self._hash = f"{{{prefix}}}:cb"
        self._client = connect(url, timeout)
        self._change = self._client.register_script(_CHANGE)
        self._all = self._client.register_script(_ALL)
        self._retry_after = retry_after
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._outbox: queue.SimpleQueue[tuple[str, int, float, str] | None] = queue.SimpleQueue()
        self._board: HealthBoard | None = None
        self._stopped = threading.Event()
        self._synced = threading.Event()
        self._warned = False
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- HealthShare
    def start(self, board: HealthBoard) -> None:
        """Send ``board``'s changes and apply the others', each on a daemon thread."""
        self._board = board
        for target in (self._send, self._listen):
            thread = threading.Thread(target=target, name=f"tierwise-{target.__name__[1:]}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._threads.append(thread)

    def publish(self, key: str, trips: int, cooldown: float, cause: str) -> None:
        """Queue the change for the sending thread (the caller never waits)."""
        self._outbox.put((key, trips, cooldown, cause.replace("|", "/")))

    def wait_synced(self, timeout: float) -> bool:
        """Whether the listener has read Redis' open circuits (tests, orderly start)."""
        return self._synced.wait(timeout)

    def close(self) -> None:
        """Stop both threads (pending changes are sent first)."""
        self._stopped.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._client.close()

    # ---------------------------------------------------------------- threads
    def _down(self, exc: BaseException) -> None:
        message = (
            f"Redis at {redact_url(self.url)} is unreachable ({type(exc).__name__}); circuit "
            "breakers trip and recover per process until it is back"
        )
        if not self._warned:
            self._warned = True
            warnings.warn(message, RedisUnavailableWarning, stacklevel=2)
            _log.warning(message)

    def _apply(self, state: str, *, own: bool = False) -> None:
        """Adopt ``origin|key|trips|remaining|cooldown|cause`` unless this process sent it."""
        origin, key, trips, remaining, cooldown, cause = state.split("|", 5)
        board = self._board
        if board is not None and (own or origin != self._origin):
            board.adopt(key, int(trips), float(remaining), float(cooldown), cause)

    def _send(self) -> None:
        while True:
            change = self._outbox.get()
            if change is None:
                return
            key, trips, cooldown, cause = change
            try:
                reply = self._change(
                    keys=[self._hash],
                    args=[self._hash, self._origin, key, trips, repr(cooldown), cause],
                )
            except DOWN as exc:
                self._down(exc)  # this process's board already holds the change
                continue
            if reply.startswith("kept|"):  # Redis keeps another process's state: take it
                self._apply(f"{self._origin}|{reply[5:]}", own=True)

    def _listen(self) -> None:
        while not self._stopped.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._hash)
                for entry in self._all(keys=[self._hash]):
                    self._apply(f"|{entry}")
                self._synced.set()
                if self._warned:
                    self._warned = False
                    _log.warning("Redis at %s is reachable again; breakers are shared",
                                 redact_url(self.url))  # fmt: skip
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and isinstance(message.get("data"), str):
                        self._apply(message["data"])
            except DOWN as exc:
                self._down(exc)
                self._stopped.wait(self._retry_after)
            finally:
                pubsub.close()
