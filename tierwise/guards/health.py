"""Model health: a circuit breaker per model key and a kill switch per provider.

:class:`HealthBoard` keeps repeated ``unavailable`` / ``timeout`` failures from being
retried against a model that is down, and ``auth`` failures from being retried against a
provider whose key was rejected. Its :meth:`HealthBoard.snapshot` marks a routing
snapshot (any frozen dataclass with ``available``, ``cooling`` and ``reasons``), so this
module knows nothing of routing.

Pure Python with no I/O and no awaits: every method holds a ``threading.Lock`` for a few
microseconds at most, safe from threads and asyncio tasks alike. Several processes share
their breakers through a :class:`HealthShare` (Redis: :mod:`tierwise.guards.redis_health`):
the board hands it each circuit it opens or closes, without waiting, and the share applies
other processes' openings and closings with :meth:`HealthBoard.adopt`. Each process still
counts failures in its own window (the tripping rule reads every call, and sending each
one across the network would put a round trip on the event loop); the first process
whose window trips opens the circuit for all, a recovery probe that succeeds anywhere
closes it everywhere, and one that fails re-opens it everywhere for the longer cooldown.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, TypeVar, cast

__all__ = ["CircuitState", "HealthBoard", "HealthShare", "Marked"]

CircuitState: TypeAlias = Literal["closed", "open", "half_open"]
"""A model's circuit: callable, cooling down, or waiting for its single recovery probe."""

class Marked(Protocol):
    """What :meth:`HealthBoard.snapshot` marks: a frozen dataclass of usable models."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def available(self) -> frozenset[str]:
        """Model keys that may be called."""
        ...

    @property
    def cooling(self) -> frozenset[str]:
        """Model keys cooling down (usable only when nothing else is)."""
        ...

    @property
    def reasons(self) -> Mapping[str, str]:
        """Why a model is unusable or cooling, per key."""
        ...


S = TypeVar("S", bound=Marked)


class HealthShare(Protocol):
    """Where breakers are shared between processes (see the module docstring)."""

    def start(self, board: HealthBoard) -> None:
        """Begin applying other processes' changes to ``board`` (:meth:`HealthBoard.adopt`)."""
        ...

    def publish(self, key: str, trips: int, cooldown: float, cause: str) -> None:
        """``key``'s circuit opened (``trips`` > 0, for ``cooldown`` s) or closed; never waits."""
        ...

# --------------------------------------------------------------------------- health

_KIND_WORDS = {
    "timeout": ("timeout", "timeouts"),
    "unavailable": ("unavailable error", "unavailable errors"),
}


def _count_words(kinds: Sequence[str]) -> str:
    """``["timeout"] * 3`` → ``"3 timeouts"``; mixed kinds are joined with ``and``."""
    parts = []
    for kind, n in Counter(kinds).most_common():
        one, many = _KIND_WORDS.get(kind, (kind, kind))
        parts.append(f"{n} {one if n == 1 else many}")
    return " and ".join(parts)


class _Circuit:
    """One model's breaker; ``trips == 0`` means closed."""

    __slots__ = (
        "buckets",
        "cause",
        "cooldown",
        "failures",
        "last_failure",
        "open_until",
        "probes",
        "trips",
    )

    def __init__(self) -> None:
        self.failures: deque[tuple[float, str]] = deque()
        # Call volume in coarse time buckets: [bucket start, calls started, successes].
        self.buckets: deque[list[float]] = deque()
        self.trips = 0
        self.cooldown = 0.0
        self.open_until = -math.inf
        self.probes: deque[float] = deque()
        self.cause = ""
        self.last_failure = -math.inf

    def prune(self, now: float, window: float) -> None:
        cut = now - window
        fails = self.failures
        while fails and fails[0][0] <= cut:
            fails.popleft()
        buckets = self.buckets
        while buckets and buckets[0][0] <= cut:
            buckets.popleft()

    def count(self, now: float, width: float, slot: int) -> None:
        """Add one to ``slot`` (1: a call started, 2: a success) of the current bucket."""
        buckets = self.buckets
        if not buckets or now - buckets[-1][0] >= width:
            buckets.append([now, 0.0, 0.0])
        buckets[-1][slot] += 1

    def volume(self) -> float:
        """Calls in the window: those started, or at least those that reported back."""
        started = sum(b[1] for b in self.buckets)
        reported = sum(b[2] for b in self.buckets) + len(self.failures)
        return max(started, reported)


class HealthBoard:
    """A circuit breaker per model key and a kill switch per provider.

    Tripping rule: over the last ``window`` seconds, at least ``failure_threshold``
    counting failures (kinds in ``counting``, by default ``unavailable`` and ``timeout``)
    *and* a failure rate of at least ``failure_rate`` of the calls. The rate's denominator
    is the calls *started* in the window (each :meth:`allow`), not only those that
    reported: concurrent errors come back before the concurrent successes, so a burst
    of 503s among 100 calls in flight is 10 failures out of 100, one signal, not a
    streak. So a busy model failing 1 call in 10 never trips, a dead one trips after
    ``failure_threshold`` calls, and three timeouts spread over a quiet afternoon do
    not count together. Other kinds (``invalid_output``, ``rate_limited``, ...) are the
    limiter's or the validator's business and are neither failures nor successes here.

    A tripped model is *open* for ``base_cooldown * 2**(trips - 1)`` seconds, capped at
    ``max_cooldown``, then *half-open*: :meth:`allow` admits a trickle of at most
    ``half_open_calls`` probes at a time (a probe unreported after ``probe_timeout`` frees
    its place, so a lost probe cannot strand a model). A success closes the circuit and
    forgets the trips; a counting failure re-opens it for the next, longer cooldown.
    Outcomes arriving while the circuit is open come from calls started before it tripped
    and are ignored. When every candidate is cooling, :meth:`last_resort` names the one
    that failed least recently, for one attempt rather than none.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        failure_threshold: int = 3,
        base_cooldown: float = 5.0,
        max_cooldown: float = 300.0,
        window: float = 60.0,
        *,
        failure_rate: float = 0.5,
        half_open_calls: int = 3,
        probe_timeout: float = 60.0,
        counting: frozenset[str] = frozenset({"unavailable", "timeout"}),
        share: HealthShare | None = None,
    ) -> None:
        """Configure the breaker; see the class docstring for the rules.

        ``share``: other processes' breakers to open and close together with (default:
        this process's alone).
        """
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0.0 < failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if half_open_calls < 1:
            raise ValueError("half_open_calls must be at least 1")
        self._clock = clock
        self._threshold = failure_threshold
        self._rate = failure_rate
        self._trickle = half_open_calls
        self._base = base_cooldown
        self._max = max_cooldown
        self._window = window
        self._width = window / 12  # volume bucket: the window's edge is this coarse
        self._probe_timeout = probe_timeout
        self._counting = counting
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        self._disabled: dict[str, str] = {}
        self._version = 0
        self._cache: tuple[int, Marked, Mapping[str, str], float, Marked] | None = None
        self._share = share
        if share is not None:
            share.start(self)

    # ----------------------------------------------------------------- outcomes

    def _circuit(self, key: str) -> _Circuit:
        c = self._circuits.get(key)
        if c is None:
            c = self._circuits[key] = _Circuit()
        return c

    def record_success(self, key: str) -> None:
        """A call to ``key`` answered: it counts in the volume, or closes a half-open circuit."""
        with self._lock:
            now = self._clock()
            c = self._circuit(key)
            if not c.trips:
                c.prune(now, self._window)
                c.count(now, self._width, 2)
            elif now >= c.open_until:
                self._close(c)
                if self._share is not None:
                    self._share.publish(key, 0, 0.0, "")

    def _close(self, c: _Circuit) -> None:
        c.trips, c.cause = 0, ""
        c.probes.clear()
        c.failures.clear()
        c.buckets.clear()
        self._version += 1

    def adopt(self, key: str, trips: int, remaining: float, cooldown: float, cause: str) -> None:
        """Another process opened ``key``'s circuit (for ``remaining`` s more) or closed it.

        ``trips`` 0 closes it; otherwise it is open with that trip count, as if it had
        tripped here (a later probe's outcome is shared back as usual).
        """
        with self._lock:
            now = self._clock()
            c = self._circuit(key)
            if trips <= 0:
                if c.trips:
                    self._close(c)
                return
            c.trips, c.cooldown, c.cause = trips, cooldown, cause
            c.open_until = now + max(0.0, remaining)
            c.last_failure = max(c.last_failure, now - max(0.0, cooldown - remaining))
            c.probes.clear()
            c.failures.clear()
            c.buckets.clear()
            self._version += 1

    def record_failure(self, key: str, kind: str) -> CircuitState:
        """A call to ``key`` failed with ``kind`` (a ``FailureKind``); returns the new state."""
        with self._lock:
            now = self._clock()
            c = self._circuits.get(key)
            if kind not in self._counting:
                if c is not None and c.trips and c.probes:
                    c.probes.popleft()  # the probe reached the model; let another one try
                    self._version += 1
                return self._state(c, now)
            if c is None:
                c = self._circuit(key)
            if c.trips:
                if now < c.open_until:
                    return "open"
                c.last_failure = now
                self._trip(key, c, now, f"a failed recovery probe ({kind})")
                return "open"
            c.last_failure = now
            c.prune(now, self._window)
            fails = c.failures
            fails.append((now, kind))
            failed = len(fails)
            volume = c.volume()
            if failed >= self._threshold and failed >= self._rate * volume:
                words = _count_words([k for _, k in fails])
                if volume > failed:
                    words += f" in {volume:.0f} calls"
                self._trip(key, c, now, words)
                fails.clear()
                c.buckets.clear()
                return "open"
            return "closed"

    def _trip(self, key: str, c: _Circuit, now: float, cause: str) -> None:
        c.trips += 1
        c.cooldown = min(self._base * 2 ** (c.trips - 1), self._max)
        c.open_until = now + c.cooldown
        c.probes.clear()
        c.cause = cause
        self._version += 1
        if self._share is not None:
            self._share.publish(key, c.trips, c.cooldown, cause)

    def allow(self, key: str) -> bool:
        """Whether a call to ``key`` may go ahead (counted as started); half-open: a trickle."""
        with self._lock:
            now = self._clock()
            c = self._circuit(key)
            if not c.trips:
                c.prune(now, self._window)
                c.count(now, self._width, 1)
                return True
            if now < c.open_until:
                return False
            probes = c.probes
            while probes and now - probes[0] >= self._probe_timeout:
                probes.popleft()
            if len(probes) >= self._trickle:
                return False
            probes.append(now)
            if len(probes) == self._trickle:
                self._version += 1  # no place left: the snapshot shows it cooling
            return True

    def last_resort(self, keys: Sequence[str]) -> str | None:
        """Of ``keys``, all refused by their breakers, the one that failed least recently.

        The router calls it when no candidate may be called at all: one attempt on the
        model most likely to have recovered beats failing outright. The attempt is let
        through whatever the circuit says, and its outcome is recorded as usual.
        """
        with self._lock:
            cooling = [
                (c.last_failure, i, key)
                for i, key in enumerate(keys)
                if (c := self._circuits.get(key)) is not None and c.trips
            ]
        return min(cooling)[2] if cooling else None

    def state(self, key: str) -> CircuitState:
        """``key``'s circuit right now."""
        with self._lock:
            return self._state(self._circuits.get(key), self._clock())

    @staticmethod
    def _state(c: _Circuit | None, now: float) -> CircuitState:
        if c is None or not c.trips:
            return "closed"
        return "open" if now < c.open_until else "half_open"

    # ----------------------------------------------------------------- providers

    def disable_provider(self, provider: str, reason: str = "auth failed") -> None:
        """Take every model of ``provider`` out of the snapshot (a rejected API key).

        It stays out until :meth:`enable_provider` — the router calls that when the
        configuration (the key) changes; retrying a rejected key only burns time.
        """
        with self._lock:
            if self._disabled.get(provider) != reason:
                self._disabled[provider] = reason
                self._version += 1

    def enable_provider(self, provider: str) -> None:
        """Put ``provider``'s models back (its credentials changed)."""
        with self._lock:
            if self._disabled.pop(provider, None) is not None:
                self._version += 1

    @property
    def disabled_providers(self) -> Mapping[str, str]:
        """Disabled providers and why."""
        with self._lock:
            return dict(self._disabled)

    # ----------------------------------------------------------------- snapshot

    def snapshot(self, base: S, provider_of: Mapping[str, str]) -> S:
        """``base`` with cooling models marked and disabled providers' models removed.

        Returns ``base`` itself when everything is healthy, and the very same object as
        the previous call while nothing changed (no outcome, probe, cooldown end or
        provider switch), so the selector's cache keeps hitting. ``provider_of`` maps model
        key → provider. Reasons are worded when read, so their countdowns stay true.
        """
        now = self._clock()
        with self._lock:
            cache = self._cache
            same_input = (
                cache is not None
                and _same(cache[1], base)
                and (cache[2] is provider_of or cache[2] == provider_of)
            )
            if cache is not None and same_input and cache[0] == self._version and now < cache[3]:
                return cast(S, cache[4])
            cooling: set[str] = set()
            valid_until = math.inf
            for key, c in self._circuits.items():
                if not c.trips or key not in base.available:
                    continue
                if now < c.open_until:
                    cooling.add(key)
                    valid_until = min(valid_until, c.open_until)
                elif len(c.probes) >= self._trickle and now - c.probes[0] < self._probe_timeout:
                    cooling.add(key)
                    valid_until = min(valid_until, c.probes[0] + self._probe_timeout)
            removed = (
                frozenset(key for key in base.available if provider_of.get(key) in self._disabled)
                if self._disabled
                else frozenset()
            )
            snap = dataclasses.replace(
                base,
                available=base.available - removed,
                cooling=base.cooling | (cooling - removed),
                reasons=_Reasons(self, frozenset(cooling), removed, provider_of, base.reasons),
            )
            if snap == base:
                snap = base
            elif cache is not None and same_input and cache[4] == snap:
                snap = cache[4]  # same sets again: hand back the object already cached
            self._cache = (self._version, base, provider_of, valid_until, snap)
            return snap

    def _reason(self, key: str, provider: str | None) -> str:
        """Why ``key`` is unusable, phrased for a person, as of now."""
        with self._lock:
            if provider is not None and provider in self._disabled:
                return f"{self._disabled[provider]}: disabled until the key changes"
            c = self._circuits.get(key)
            now = self._clock()
            if c is None or not c.trips:
                return "recovered"
            trips = f"; trip {c.trips}, cooldown {c.cooldown:g} s" if c.trips > 1 else ""
            if now < c.open_until:
                return f"cooling down {c.open_until - now:.1f} s more after {c.cause}{trips}"
            calls = len(c.probes)
            probes = f"{calls} probe call{'s' if calls != 1 else ''} in flight"
            return f"recovering: {probes} after {c.cause}{trips}"


def _same(a: Marked, b: Marked) -> bool:
    """Whether two base snapshots are interchangeable, reasons included."""
    return a is b or (a == b and a.reasons == b.reasons)


class _Reasons(Mapping[str, str]):
    """Snapshot reasons worded when read, so "12.3 s more" is true whenever it is shown."""

    __slots__ = ("_base", "_board", "_cooling", "_provider_of", "_removed")

    def __init__(
        self,
        board: HealthBoard,
        cooling: frozenset[str],
        removed: frozenset[str],
        provider_of: Mapping[str, str],
        base: Mapping[str, str],
    ) -> None:
        self._board = board
        self._cooling = cooling
        self._removed = removed
        self._provider_of = provider_of
        self._base = base

    def __getitem__(self, key: str) -> str:
        if key in self._removed or key in self._cooling:
            return self._board._reason(key, self._provider_of.get(key))
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._base.keys() | self._removed | self._cooling)

    def __len__(self) -> int:
        return len(self._base.keys() | self._removed | self._cooling)

