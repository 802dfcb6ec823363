"""Per-request changes to the selector's chain: an A/B test's arm, the learned router's pick.

The selector (:mod:`tierwise.routing.selector`) orders candidates from things that hold
for every request of an operation — catalog, policy, health, evidence — and memoises
that. Two decisions depend on the request itself and are made here, after selection,
by moving one candidate to the front; neither ever adds a model the policy does not
allow, and the rest of the chain stays behind it as fallbacks:

* **A/B tests** (:class:`~tierwise.catalog.policy.ABTest`): the thread (else run, else
  call) is hashed with the test's name into [0, 1); below ``share_b`` is arm b. A
  stable hash (BLAKE2), so the same thread gets the same arm in every process. A call
  keeps its arm even when the arm's model is not a candidate now (intention to treat).
* **mode ``learned``**: the trained :class:`~tierwise.learning.learned_router.LearnedRouter`
  predicts each candidate's chance of a good answer for this prompt and the one with
  the best chance minus ``λ`` x its expected cost leads. ``λ`` comes from the policy
  (``cost_weight``), or is calibrated so the most expensive candidate gets
  ``strong_share`` of the calls; without either, a policy with ``max_cost_per_day`` gets
  the share the day's budget pays for at the ledger's call volume (below), otherwise 50 %.

Budget calibration: ``share = max_cost_per_day / (calls per day x the strongest
candidate's cost per call)``, clamped to [0, 1], where calls per day are the calls
answered under mode ``learned`` in the last 24 h (all processes, from the ledger; read at
most once a minute; under 20 calls the default share applies). It spreads the budget
over the day's traffic instead of spending it on the morning's calls; the cap itself is
still enforced by the budget guard, call by call, whatever the calibration says.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import platformdirs
from langchain_core.messages import BaseMessage, SystemMessage

from tierwise.catalog.policy import ABTest, Policy, PolicyMode
from tierwise.catalog.specs import ModelSpec, TaskType
from tierwise.ledger import DAY

if TYPE_CHECKING:
    from tierwise.learning.learned_router import LearnedRouter
    from tierwise.ledger import Ledger

__all__ = [
    "ROUTER_ENV",
    "Steer",
    "arm_of",
    "default_router_path",
    "lead",
    "Steering",
]

logger = logging.getLogger(__name__)

ROUTER_ENV: Final = "TIERWISE_ROUTER"
"""Environment variable naming the trained router file used by mode ``learned``."""
_DEFAULT_SHARE: Final = 0.5
_VOLUME_TTL: Final = 60.0
# Fewer calls than this in 24 h say nothing about tomorrow's volume: the default share.
_MIN_VOLUME: Final = 20


def default_router_path() -> Path:
    """``$TIERWISE_ROUTER``, else ``router.npz`` in the user data dir."""
    explicit = os.environ.get(ROUTER_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_data_dir("tierwise")) / "router.npz"


def arm_of(test: ABTest, key: str) -> str:
    """``"a"`` or ``"b"`` for the thread / run / call ``key``; the same key, the same arm.

    Example:
        >>> from tierwise.catalog.policy import ABTest
        >>> test = ABTest(name="t", a="x", b="y", share_b=0.5)
        >>> sorted({arm_of(test, f"thread-{i}") for i in range(20)})
        ['a', 'b']
        >>> arm_of(test, "thread-1") == arm_of(test, "thread-1")
        True
    """
    digest = hashlib.blake2b(f"{test.name}\0{key}".encode(), digest_size=8).digest()
    return "b" if int.from_bytes(digest, "big") / 2**64 < test.share_b else "a"


def lead(candidates: tuple[ModelSpec, ...], key: str) -> tuple[ModelSpec, ...]:
    """``candidates`` with model ``key`` first (unchanged when it is not among them)."""
    for index, spec in enumerate(candidates):
        if spec.key == key:
            if index == 0:
                return candidates
            return (spec, *candidates[:index], *candidates[index + 1:])
    return candidates


@dataclass(frozen=True, slots=True)
class Steer:
    """The chain after steering, and what was decided (for the ledger and explanations)."""

    candidates: tuple[ModelSpec, ...]
    arm: str | None = None
    why: str = ""


class Steering:
    """Applies A/B tests and the learned router to one request's chain.

    The trained router file is loaded on first use and reloaded when it changes on disk
    (``tierwise router train`` replaces it): one ``stat`` per decision tells.
    """

    def __init__(self, ledger: Ledger | None = None) -> None:
        """Steer with the call volume of ``ledger`` (for budget calibration); no router yet."""
        self.ledger = ledger
        self._volume: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._routers: dict[Path, tuple[float, LearnedRouter]] = {}
        self._lams: dict[tuple[Path, float, float, tuple[str, ...]], float] = {}

    def steer(
        self,
        operation: TaskType,
        policy: Policy,
        candidates: tuple[ModelSpec, ...],
        messages: Sequence[BaseMessage],
        *,
        sticky_key: str,
        prompt_tokens: int,
        max_tokens: int,
    ) -> Steer:
        """The chain for this request: the A/B arm's model, else the learned pick, first."""
        override = policy.override(operation)
        if override is not None and override.ab is not None:
            test = override.ab
            arm = arm_of(test, sticky_key)
            model = test.a if arm == "a" else test.b
            # Intention to treat: the call belongs to its arm even when the arm's model
            # cannot take it now (the report counts that as the arm's failure).
            return Steer(lead(candidates, model), f"{test.name}:{arm}",
                         f"A/B test {test.name}: arm {arm}")  # fmt: skip
        if policy.mode is PolicyMode.LEARNED and len(candidates) > 1:
            return self._learned(operation, policy, candidates, messages,
                                 prompt_tokens, max_tokens)  # fmt: skip
        return Steer(candidates)

    def _learned(
        self,
        operation: TaskType,
        policy: Policy,
        candidates: tuple[ModelSpec, ...],
        messages: Sequence[BaseMessage],
        prompt_tokens: int,
        max_tokens: int,
    ) -> Steer:
        path = Path(policy.router_model).expanduser() if policy.router_model else (
            default_router_path()
        )
        router = self.router(path)
        if router is None:
            return Steer(candidates, why=f"no trained router at {path}: chain order kept")
        options = [(spec.key, spec.price.cost(prompt_tokens, max_tokens)) for spec in candidates]
        lam = policy.cost_weight
        if lam is None:
            share = self.share(policy, max(cost for _, cost in options))
            lam = self._lam(path, router, round(share, 3), options)
        text = prompt_text(messages, operation)
        # guarded: a prompt unlike the training data, or no clear gain, keeps the chain order
        decision = router.decide(text, options, lam=lam)
        return Steer(lead(candidates, decision.choice), why=f"{decision.why} (λ={lam:.3g})")

    def share(self, policy: Policy, strong_cost: float) -> float:
        """The strong candidate's target share: the policy's, the budget's, else 50 %."""
        if policy.strong_share is not None:
            return policy.strong_share
        budget = policy.max_cost_per_day
        if budget is None or strong_cost <= 0:
            return _DEFAULT_SHARE
        calls = self._calls_per_day()
        if calls is None or calls < _MIN_VOLUME:
            return _DEFAULT_SHARE
        return min(1.0, max(0.0, budget / (calls * strong_cost)))

    def _calls_per_day(self) -> int | None:
        """Calls answered under mode ``learned`` in the last 24 h (cached for a minute)."""
        if self.ledger is None:
            return None
        now = time.monotonic()
        cached = self._volume
        if cached is None or now - cached[0] > _VOLUME_TTL:
            calls = self.ledger.answered(since=time.time() - DAY, policy=PolicyMode.LEARNED.value)
            cached = self._volume = (now, calls)
        return cached[1]

    def router(self, path: Path) -> LearnedRouter | None:
        """The trained router at ``path`` (reloaded when the file changed), or ``None``."""
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        with self._lock:
            cached = self._routers.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        from tierwise.learning.learned_router import LearnedRouter

        try:
            router = LearnedRouter.load(path)
        except (OSError, ValueError) as exc:
            logger.warning("learned router %s cannot be used (%s): chain order kept", path, exc)
            return None
        with self._lock:
            self._routers[path] = (mtime, router)
        return router

    def _lam(
        self,
        path: Path,
        router: LearnedRouter,
        share: float,
        options: list[tuple[str, float]],
    ) -> float:
        """The cost weight giving the priciest candidate ``share`` of calls (memoised)."""
        mtime = self._routers[path][0]
        key = (path, mtime, share, tuple(k for k, _ in options))
        lam = self._lams.get(key)
        if lam is None:
            try:
                lam = router.lam_for_share(share, options)
            except ValueError:  # no single costliest candidate (e.g. all free): quality only
                lam = 0.0
            self._lams[key] = lam
        return lam


def prompt_text(messages: Sequence[BaseMessage], operation: TaskType | str) -> str:
    """What the learned router reads: the non-system messages' text, tagged with the operation.

    System messages are the operation's fixed instructions, the same for every call; the
    operation tag lets one router learn that a model is good at one operation and not at
    another.
    """
    parts = [f"__op_{TaskType(operation).value}"]
    for message in messages:
        if isinstance(message, SystemMessage):
            continue
        content = message.content
        parts.append(content if isinstance(content, str) else message.text)
    return "\n".join(parts)
