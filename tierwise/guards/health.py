"""Model health: a circuit breaker per model key and a kill switch per provider.

:class:`HealthBoard` keeps repeated ``unavailable`` / ``timeout`` failures from being
retried against a model that is down, and ``auth`` failures from being retried against a
provider whose key was rejected. Its :meth:`HealthBoard.snapshot` marks a routing
snapshot (any frozen dataclass with ``available``, ``cooling`` and ``reasons``), so this
module knows nothing of routing.

Pure Python with no I/O and no awaits: every method holds a ``threading.Lock`` for a few
microseconds at most, safe from threads and asyncio tasks alike.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, TypeVar, cast

__all__ = ["CircuitState", "HealthBoard", "Marked"]

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

    __slots__ = ("cause", "cooldown", "failures", "open_until", "probe_at", "trips")

    def __init__(self) -> None:
        self.failures: deque[tuple[float, str]] = deque()
        self.trips = 0
        self.cooldown = 0.0
        self.open_until = -math.inf
        self.probe_at: float | None = None
        self.cause = ""


class HealthBoard:
    """A circuit breaker per model key and a kill switch per provider.

    Tripping rule: ``failure_threshold`` *consecutive* counting failures (kinds in
    ``counting``, by default ``unavailable`` and ``timeout``), all within ``window``
    seconds. Consecutive, so a busy model that fails 1 call in 300 never trips; within a
    window, so three timeouts spread over a quiet afternoon do not either. Other kinds
    (``invalid_output``, ``rate_limited``, ...) are the limiter's or the validator's
    business and neither count nor reset the streak.

    A tripped model is *open* for ``base_cooldown * 2**(trips - 1)`` seconds, capped at
    ``max_cooldown``, then *half-open*: :meth:`allow` hands exactly one probe ticket out
    (a ticket unreported after ``probe_timeout`` is handed out again, so a lost probe
    cannot strand a model). A success closes the circuit and forgets the trips; a counting
    failure re-opens it for the next, longer cooldown. Outcomes arriving while the circuit
    is open come from calls started before it tripped and are ignored.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        failure_threshold: int = 3,
        base_cooldown: float = 5.0,
        max_cooldown: float = 300.0,
        window: float = 60.0,
        *,
        probe_timeout: float = 60.0,
        counting: frozenset[str] = frozenset({"unavailable", "timeout"}),
    ) -> None:
        """Configure the breaker; see the class docstring for the rules."""
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._clock = clock
        self._threshold = failure_threshold
        self._base = base_cooldown
        self._max = max_cooldown
        self._window = window
        self._probe_timeout = probe_timeout
        self._counting = counting
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        self._disabled: dict[str, str] = {}
        self._version = 0
        self._cache: tuple[int, Marked, Mapping[str, str], float, Marked] | None = None

    # ----------------------------------------------------------------- outcomes

    def record_success(self, key: str) -> None:
        """A call to ``key`` answered: end a failure streak, or close a half-open circuit."""
        c = self._circuits.get(key)
        if c is None or (not c.trips and not c.failures):
            return
        with self._lock:
            if not c.trips:
                c.failures.clear()
            elif self._clock() >= c.open_until:
                c.trips, c.probe_at, c.cause = 0, None, ""
                c.failures.clear()
                self._version += 1

    def record_failure(self, key: str, kind: str) -> CircuitState:
        """A call to ``key`` failed with ``kind`` (a ``FailureKind``); returns the new state."""
        with self._lock:
            now = self._clock()
            c = self._circuits.get(key)
            if kind not in self._counting:
                if c is not None and c.trips and c.probe_at is not None:
                    c.probe_at = None  # the probe reached the model; let another one try
                    self._version += 1
                return self._state(c, now)
            if c is None:
                c = self._circuits[key] = _Circuit()
            if c.trips:
                if now < c.open_until:
                    return "open"
                self._trip(c, now, f"a failed recovery probe ({kind})")
                return "open"
            fails = c.failures
            cut = now - self._window
            while fails and fails[0][0] <= cut:
                fails.popleft()
            fails.append((now, kind))
            if len(fails) >= self._threshold:
                self._trip(c, now, _count_words([k for _, k in fails]))
                fails.clear()
                return "open"
            return "closed"

    def _trip(self, c: _Circuit, now: float, cause: str) -> None:
        c.trips += 1
        c.cooldown = min(self._base * 2 ** (c.trips - 1), self._max)
        c.open_until = now + c.cooldown
        c.probe_at = None
        c.cause = cause
        self._version += 1

    def allow(self, key: str) -> bool:
        """Whether a call to ``key`` may go ahead; in half-open state, one caller only."""
        c = self._circuits.get(key)
        if c is None or not c.trips:
            return True
        with self._lock:
            if not c.trips:
                return True
            now = self._clock()
            if now < c.open_until:
                return False
            if c.probe_at is not None and now - c.probe_at < self._probe_timeout:
                return False
            c.probe_at = now
            self._version += 1
            return True

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
                elif c.probe_at is not None and now - c.probe_at < self._probe_timeout:
                    cooling.add(key)
                    valid_until = min(valid_until, c.probe_at + self._probe_timeout)
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
            return f"recovering: one probe call in flight after {c.cause}{trips}"


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

