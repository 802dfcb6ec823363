"""ModelRouter: ask the selector for candidates, call them in order, judge every answer.

The routing logic is written once, as a sans-I/O generator (:meth:`ModelRouter._route`)
that yields steps — call this runnable, sleep this long, tell the consumer this — and
receives the outcomes; two drivers (:mod:`.drivers`, one sync, one async) perform them,
streaming or not. So ``invoke``, ``ainvoke``, ``stream`` and ``astream`` cannot drift apart:

* a candidate the rate limiter has no permit for is skipped at once — or waited for, only
  when the permit frees sooner than the caller's ``max_wait``;
* a 429, 5xx, timeout or dropped connection moves to the next candidate immediately (SDK
  retries are off) and teaches the limiter and the circuit breaker;
* an answer that is empty, truncated, refused or fails the schema, or a tool call that
  fits no bound tool, is a failure of that model, like an HTTP 500 (one repair request to
  the same model is allowed for a schema).

What is usable comes from :class:`~.availability.Availability`; the order from the pure
:class:`~.selector.Selector`, then :mod:`.steering` (A/B arm, learned pick).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import replace
from functools import partial
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import Runnable
from typing_extensions import Unpack

from tierwise.catalog.policy import Policy, PolicyMode
from tierwise.catalog.settings import Settings, load_settings
from tierwise.catalog.specs import ModelSpec, Provider, TaskType
from tierwise.guards.backend import Denied, Permit
from tierwise.guards.budget import HOLD_WAIT, BudgetExceeded, BudgetGuard, Reservation
from tierwise.guards.health import HealthBoard
from tierwise.guards.limits import RateLimiter
from tierwise.guards.quota import DailyQuota, QuotaExceeded
from tierwise.guards.shared import shared_health, shared_holds, shared_limiter
from tierwise.ledger import (
    Attempt,
    Ledger,
)
from tierwise.providers.answer_limit import answer_limit
from tierwise.providers.clients import ProviderFactory
from tierwise.providers.failures import Failure, FailureKind, classify
from tierwise.providers.headers import read_rate_limits
from tierwise.routing.answers import answer_text, parse_raw
from tierwise.routing.availability import DEFAULT_DEMOTION, Availability
from tierwise.routing.demotion import DemotionRule
from tierwise.routing.drivers import (
    Acquire,
    Blocking,
    Call,
    Notice,
    Outcome,
    Route,
    Sleep,
    Step,
    adrive,
    alast,
    drive,
    last,
)
from tierwise.routing.prepared import RunnableCache
from tierwise.routing.provenance import default_ledger, recorder, run_config
from tierwise.routing.request import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    RouteOptions,
    RouteRequest,
    StreamOptions,
    config_value,
)
from tierwise.routing.results import (
    NoModelAvailable,
    RoutedResult,
    StreamEvent,
    StreamRestart,
)
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot
from tierwise.routing.steering import Steer, Steering
from tierwise.routing.tokens import estimate_tokens
from tierwise.routing.verdicts import judge, refused, repairable, retries

__all__ = ["ModelRouter"]

logger = logging.getLogger(__name__)


#: Seconds (low, high) the retry waits, at random: concurrent retries do not arrive at once.
_RETRY_JITTER = (0.05, 0.25)

_REPAIR_PROMPT = (
    "Your previous answer did not match the required JSON schema: {error}\n"
    "Answer again with only a JSON object that matches the schema."
)


class ModelRouter:
    """Routes each call of an operation to the best model that can answer it now.

    Example:
        >>> from tierwise.testing import Simulator
        >>> with Simulator() as sim:
        ...     router = ModelRouter(sim.settings(), policy=Policy(mode="free_first"))
        ...     result = router.invoke("rewriting", "make this clearer: do the thing")
        >>> result.tier.value, result.fallbacks, bool(result.message.content)
        ('free', 0, True)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policy: Policy | None = None,
        factory: ProviderFactory | None = None,
        limiter: RateLimiter | None = None,
        health: HealthBoard | None = None,
        snapshot: Snapshot | None = None,
        probe_ttl: float = 60.0,
        ledger: Ledger | Literal["default"] | None = "default",
        demotion: DemotionRule | None = DEFAULT_DEMOTION,
        standings_ttl: float = 2.0,
        evidence_min_n: int | None = 20,
    ) -> None:
        """Build a router.

        Args:
            settings: catalog, endpoints, credentials (default: :func:`load_settings`).
            policy: default policy for calls that pass none (default: the settings').
            factory: client factory (default: one over ``settings``).
            limiter: rate limiter; seeded here with every catalog model's limits. Default:
                in-process, or in Redis when the settings name one (``[state] redis_url``).
            health: circuit breakers.
            snapshot: fixed availability (skips probing); by default availability is
                probed (keys present, Ollama reachable, embedded installed) at most every
                ``probe_ttl`` seconds.
            probe_ttl: seconds an availability probe stays valid.
            ledger: where every attempt is recorded (tokens, cost, latency, outcome) and
                where the policy's run / day / provider cost caps and free models'
                daily quotas are read from. ``"default"``: the process's shared ledger
                at ``settings.ledger``, else ``$TIERWISE_LEDGER`` or the user data dir (see
                :func:`~tierwise.ledger.opening.shared_ledger`), or no record with a warning
                when that file cannot be opened (a read-only home, a corrupt file);
                ``None``: no record; per-call caps apply, and under a run / day /
                provider cap paid calls are refused (nothing could count them).
            demotion: with a ledger, how its rolling record of each (operation, model)
                moves failing or slow models below their same-tier peers (see
                :class:`~tierwise.routing.demotion.DemotionRule`); ``None``: never.
            standings_ttl: seconds the ledger's record is reused before it is read again
                (one indexed query per judged (operation, model); the calls in between
                read no SQLite).
            evidence_min_n: with a ledger, the selector orders models within a tier by
                their measured quality (evals, judges, escalations; see
                :mod:`~tierwise.ledger.evidence`) in place of the catalog's rubric once
                a model has this many verdicts on the operation; read with the standings.
                ``None``: rubric and catalog order only.
        """
        self.settings = settings if settings is not None else load_settings()
        self.policy = policy if policy is not None else self.settings.policy
        self.factory = factory if factory is not None else ProviderFactory(self.settings)
        self.selector = Selector(self.settings.catalog)
        self.limiter = limiter if limiter is not None else shared_limiter(self.settings)
        # Successful responses' x-ratelimit-* headers feed the limiter too.
        self.factory.watch_headers(self.limiter.observe_headers)
        self.health = health if health is not None else shared_health(self.settings)
        for spec in self.settings.catalog:
            self.limiter.configure(spec.key, spec.limits)
        self._runnables = RunnableCache()
        self._redact = self.settings.credentials.redact
        self.ledger = default_ledger(self.settings) if ledger == "default" else ledger
        self.budget = BudgetGuard(self.ledger, holds=shared_holds(self.settings, self.ledger))
        self.quota = DailyQuota(self.ledger)
        #: What is usable now; ``tierwise route`` and ``doctor`` build theirs the same way.
        self.availability = Availability(
            self.settings, health=self.health, ledger=self.ledger, fixed=snapshot,
            probe_ttl=probe_ttl, demotion=demotion, standings_ttl=standings_ttl,
            evidence_min_n=evidence_min_n,
        )
        self._steering = Steering(self.ledger)

    @property
    def demotion(self) -> DemotionRule | None:
        """The rule the ledger's record demotes models by (``None``: never)."""
        return self.availability.demotion

    @property
    def evidence_min_n(self) -> int | None:
        """Verdicts a model needs before its measured quality reorders it."""
        return self.availability.evidence_min_n

    # ------------------------------------------------------------------ calls
    def invoke(
        self, operation: TaskType | str, messages: LanguageModelInput,
        **options: Unpack[RouteOptions],
    ) -> RoutedResult:
        """Answer ``messages`` for ``operation`` with the first candidate that succeeds.

        The options are :class:`~tierwise.routing.request.RouteRequest`'s (schema, tools...).

        Raises:
            NoModelAvailable: every candidate failed or none was allowed; it lists why.
        """
        return self.run(RouteRequest(operation, messages, **options))

    async def ainvoke(
        self, operation: TaskType | str, messages: LanguageModelInput,
        **options: Unpack[RouteOptions],
    ) -> RoutedResult:
        """Async :meth:`invoke`; waiting for a permit never blocks the event loop."""
        return await self.arun(RouteRequest(operation, messages, **options))

    def stream(
        self, operation: TaskType | str, messages: LanguageModelInput,
        **options: Unpack[StreamOptions],
    ) -> Iterator[StreamEvent]:
        """Stream the answer as :class:`StreamChunk` events, ending with :class:`StreamEnd`.

        A failure before the first token falls back invisibly: chunks that carry no
        text and no tool call (a role header) are held back until the answer starts. A
        failure after that yields :class:`StreamRestart` — the consumer discards what it
        received, text or partial tool calls — and the answer starts over on the next
        candidate; two models' output is never joined. Options: :meth:`invoke`'s but schema.
        """
        request = RouteRequest(operation, messages, **options)
        yield from drive(self._route(request, request.policy or self.policy, streaming=True),
                         streaming=True)  # fmt: skip

    async def astream(
        self, operation: TaskType | str, messages: LanguageModelInput,
        **options: Unpack[StreamOptions],
    ) -> AsyncIterator[StreamEvent]:
        """Async :meth:`stream`, with the same restart contract."""
        request = RouteRequest(operation, messages, **options)
        await self.availability.aready()
        route = self._route(request, request.policy or self.policy, streaming=True)
        async for event in adrive(route, streaming=True):
            yield event

    def run(self, request: RouteRequest) -> RoutedResult:
        """:meth:`invoke` for a request built beforehand."""
        policy = request.policy or self.policy
        return last(drive(self._route(request, policy, streaming=False), streaming=False))

    async def arun(self, request: RouteRequest) -> RoutedResult:
        """:meth:`ainvoke` for a request built beforehand."""
        await self.availability.aready()
        policy = request.policy or self.policy
        return await alast(adrive(self._route(request, policy, streaming=False),
                                  streaming=False))  # fmt: skip

    # ------------------------------------------------------------------ state
    def snapshot(self) -> Snapshot:
        """What is usable now, and in which order within a tier (see :class:`Availability`)."""
        return self.availability.snapshot()

    def refresh(self) -> None:
        """Forget the availability probe, so the next call probes again."""
        self.availability.refresh()

    # ------------------------------------------------------------------ the route
    def _permit(
        self, key: str, tokens: int
    ) -> Generator[Step, Outcome | None, Permit | Denied]:
        """A permit for ``key``: taken here when local, by the driver when it crosses a network."""
        if not self.limiter.remote:
            return self.limiter.try_acquire(key, tokens)
        step = Acquire(self.limiter, key, tokens)
        yield step
        assert step.permit is not None
        return step.permit

    def _route(self, request: RouteRequest, policy: Policy, *, streaming: bool) -> Route:
        """Try candidates in order; yields steps, returns the first valid answer."""
        started = time.perf_counter()
        estimate = request.prompt_tokens + (request.max_tokens or DEFAULT_MAX_OUTPUT_TOKENS)
        if self.availability.stale():  # the ledger's record: read off the event loop
            yield Blocking(self.availability.read_record)
        candidates = self._candidates(request, policy)
        steer = (
            (yield Blocking(partial(self._steer, request, policy, candidates, estimate)))
            if self._steered(request, policy, candidates) else Steer(candidates)
        )
        candidates = steer.candidates
        deadline = time.monotonic() + request.max_wait
        attempts: list[Attempt] = []
        refusals: list[BudgetExceeded] = []
        record = recorder(self.ledger, request, policy, steer.arm)

        def note(attempt: Attempt) -> Iterator[Blocking]:
            attempts.append(attempt)
            yield Blocking(partial(record, attempt))  # the ledger's file: off the event loop

        overflowed = 0  # after a context overflow, windows this small are skipped
        rejected: set[Provider] = set()  # providers that refused their key in this call
        tool_schemas = self._runnables.tool_schemas(request.tools) if request.tools else None
        cooled: list[str] = []  # candidates their breaker refused
        forced: str | None = None  # the extra attempt below: past its breaker
        retrying = False

        def then() -> Iterator[ModelSpec]:
            """The chain, then extra attempts rather than failing outright.

            Every model whose request failed transiently gets one more attempt after a
            jittered pause, the most recent failure first — a 5xx from each, but a timeout
            only from the last (a second wait on each slow model would turn a failover of
            seconds into minutes). When nothing could be sent because every candidate is
            cooling, the one that failed least recently gets one attempt (issue 14).
            """
            nonlocal forced, retrying
            yield from candidates
            sent = [a for a in attempts if a.sent]
            again = retries(sent)
            for key in again:
                forced, retrying = key, True
                yield self.settings.catalog.spec(key)
            if not sent:  # nothing could be sent, so nothing to retry either
                spare = self.health.last_resort(cooled or self._cooling(request, policy))
                if spare is not None:
                    forced = spare
                    yield self.settings.catalog.spec(spare)

        for spec in then():
            if retrying:
                yield Sleep(random.uniform(*_RETRY_JITTER))
            if spec.provider in rejected:
                yield from note(refused(
                    spec, FailureKind.AUTH, f"{spec.provider} rejected its key in this call"
                ))
                continue
            if spec.context_window <= overflowed:
                yield from note(refused(
                    spec, FailureKind.CONTEXT_OVERFLOW, "window no larger than one that overflowed"
                ))
                continue
            # The client is built (once per model and event loop; slow the first time)
            # before the permit is taken, so a permit's time is when the request
            # leaves, as the provider's window counts it.
            try:
                model = self.factory.chat_model(spec)
                prepared = self._runnables.get(model, spec, request)
            except Exception as exc:  # noqa: BLE001 - this client cannot express the request
                reason = classify(exc, redact=self._redact).message
                yield from note(refused(
                    spec, FailureKind.BAD_REQUEST, f"the client cannot take it: {reason}"
                ))
                continue
            permit = yield from self._permit(spec.key, estimate)
            while isinstance(permit, Denied) and permit.retry_after <= deadline - time.monotonic():
                yield Sleep(permit.retry_after)
                permit = yield from self._permit(spec.key, estimate)
            if isinstance(permit, Denied):
                wait = (f"next permit in {permit.retry_after:.2f}s"
                        if permit.retry_after != float("inf")  # more than one window holds
                        else f"the request's ~{estimate} tokens exceed the whole window")
                yield from note(refused(
                    spec, FailureKind.RATE_LIMITED, f"local {permit.limit} limit: {wait}",
                    retry_after=permit.retry_after,
                ))
                continue
            answer_tokens = estimate - request.prompt_tokens
            quota = yield Blocking(partial(self.quota.take, spec))  # reads the ledger
            if isinstance(quota, QuotaExceeded):
                permit.cancel()
                yield from note(refused(
                    spec, FailureKind.QUOTA_EXHAUSTED, str(quota), retry_after=quota.retry_after
                ))
                continue
            hold = partial(self._hold, spec, policy, request, request.prompt_tokens, answer_tokens)
            held = yield Blocking(hold)
            waited = time.monotonic() + HOLD_WAIT
            while isinstance(held, BudgetExceeded) and held.in_flight and time.monotonic() < waited:
                yield Sleep(0.05)  # other calls' worst cases: they settle to their real cost
                held = yield Blocking(hold)
            if isinstance(held, BudgetExceeded):
                permit.cancel()
                quota.cancel()
                refusals.append(held)
                yield from note(refused(spec, FailureKind.BUDGET_EXCEEDED, str(held)))
                continue
            if spec.key != forced and not self.health.allow(spec.key):
                permit.cancel()
                quota.cancel()
                yield Blocking(held.release)
                cooled.append(spec.key)
                yield from note(refused(
                    spec, FailureKind.UNAVAILABLE, "circuit open: a recovery probe is in flight"
                ))
                continue

            prompt = prepared.messages(request.messages)
            messages, repair = prompt, False
            try:  # the estimate is released however the call ends, even if it is abandoned
                while True:
                    call_started = time.perf_counter()
                    outcome = yield Call(
                        spec, _limited(prepared.runnable, model, spec, held), messages,
                        run_config(spec, request, held.amount, steer.why),
                    )
                    assert outcome is not None
                    if prepared.parse is not None and outcome.error is None:
                        outcome.output = parse_raw(prepared.parse, outcome.output)
                    verdict = judge(
                        request, spec, outcome, time.perf_counter() - call_started, repair,
                        tool_schemas, self._redact,
                    )
                    # The real cost is recorded (and, under a cap, committed) before the
                    # hold of the worst case is dropped.
                    attempts.append(verdict.attempt)
                    yield Blocking(partial(_settle, record, verdict.attempt, held))
                    used = verdict.attempt.input_tokens + verdict.attempt.output_tokens
                    permit.settle(used or estimate)
                    if verdict.failure is None:
                        self.health.record_success(spec.key)
                        assert verdict.message is not None
                        return RoutedResult(
                            request.operation, verdict.value, verdict.message, spec,
                            tuple(attempts), time.perf_counter() - started,
                            request.call_id, steer.arm,
                        )
                    if repair or not repairable(request, verdict):
                        break
                    assert verdict.message is not None
                    messages = [
                        *prompt,
                        AIMessage(answer_text(verdict.message)),
                        HumanMessage(_REPAIR_PROMPT.format(error=verdict.attempt.detail)),
                    ]
                    # The repair is a second paid request: it must fit the caps as well.
                    repair_prompt = request.prompt_tokens + estimate_tokens(
                        messages[len(prompt):]
                    )
                    repair_estimate = estimate - request.prompt_tokens + repair_prompt
                    retry = yield from self._permit(spec.key, repair_estimate)
                    if isinstance(retry, Denied):
                        break
                    held = yield Blocking(partial(
                        self.budget.reserve, spec, policy, prompt_tokens=repair_prompt,
                        max_tokens=request.max_tokens, expected_tokens=answer_tokens,
                        run_id=request.run_id,
                    ))
                    if isinstance(held, BudgetExceeded):
                        retry.cancel()
                        yield from note(replace(refused(
                            spec, FailureKind.BUDGET_EXCEEDED, f"no schema repair: {held}"
                        ), repair=True))
                        break
                    permit, repair = retry, True
            finally:
                quota.release()  # recorded in the ledger: counted there from now on
                if not isinstance(held, BudgetExceeded):
                    held.release()

            failure = verdict.failure
            self._learn(spec, failure)
            if streaming and outcome.shown:
                yield Notice(StreamRestart(verdict.attempt, outcome.emitted))
            if failure.kind is FailureKind.AUTH:
                rejected.add(spec.provider)
            elif failure.kind is FailureKind.CONTEXT_OVERFLOW:
                overflowed = max(overflowed, spec.context_window)
            elif failure.kind is FailureKind.BAD_REQUEST and not failure.capability_mismatch:
                raise NoModelAvailable(
                    request.operation, attempts,
                    "the request was rejected as malformed, and would be by every model",
                    request.call_id,
                )
        if refusals and len(refusals) == len(attempts):  # only money stood in the way
            raise refusals[0]
        reason = "every candidate failed" if candidates else (
            "no candidate is both allowed by the policy and available now"
        )
        raise NoModelAvailable(request.operation, attempts, reason, request.call_id)

    def _hold(
        self,
        spec: ModelSpec,
        policy: Policy,
        request: RouteRequest,
        prompt_tokens: int,
        answer_tokens: int,
    ) -> Reservation | BudgetExceeded:
        """The call's worst case held against the cost caps (the daily quota is taken first)."""
        return self.budget.reserve(
            spec, policy, prompt_tokens=prompt_tokens, max_tokens=request.max_tokens,
            expected_tokens=answer_tokens, run_id=request.run_id,
        )

    def _cooling(self, request: RouteRequest, policy: Policy) -> list[str]:
        """The candidates the breakers took out of the chain (a last resort picks one)."""
        snapshot = self.availability.snapshot()
        if not snapshot.cooling:
            return []
        found = self.selector.candidates(
            request.operation, request.complexity, policy,
            replace(snapshot, cooling=frozenset()),
            needs_tools=bool(request.tools), prompt_tokens=request.prompt_tokens,
            max_output_tokens=request.max_tokens or 0,
        )
        return [c.key for c in found if c.key in snapshot.cooling]

    def _candidates(self, request: RouteRequest, policy: Policy) -> tuple[ModelSpec, ...]:
        """The selector's chain for ``request``, without the tiers below ``min_tier``.

        The selector leaves out models whose estimate is over the per-call cap. When that
        leaves nothing, the chain is taken without the cap and each model is refused by
        the budget guard instead, so the caller gets :class:`BudgetExceeded` (which cap,
        what it allows) and the ledger records the refusals, as for every other cap.
        """
        snapshot = self.availability.snapshot()

        def select(policy: Policy) -> tuple[ModelSpec, ...]:
            found = self.selector.candidates(
                request.operation,
                request.complexity,
                policy,
                snapshot,
                needs_tools=bool(request.tools),
                prompt_tokens=request.prompt_tokens,
                max_output_tokens=request.max_tokens or 0,
            )
            if request.min_tier is not None:
                floor = request.min_tier.rank
                found = tuple(c for c in found if c.tier.rank >= floor)
            return found

        candidates = select(policy)
        if not candidates and policy.max_cost_per_call is not None:
            candidates = select(policy.model_copy(update={"max_cost_per_call": None}))
        return candidates

    def _steer(
        self,
        request: RouteRequest,
        policy: Policy,
        candidates: tuple[ModelSpec, ...],
        estimate: int,
    ) -> Steer:
        """``candidates`` after the request's A/B arm or learned pick (see :mod:`.steering`).

        Escalations (``min_tier``) and single-model chains are left as they are: the graph
        asked for a tier, not for a model.
        """
        if not self._steered(request, policy, candidates):
            return Steer(candidates)
        sticky = (config_value(request.config, "thread_id") or request.run_id
                  or request.call_id)  # fmt: skip
        return self._steering.steer(
            request.operation, policy, candidates, request.messages,
            sticky_key=sticky, prompt_tokens=request.prompt_tokens,
            max_tokens=estimate - request.prompt_tokens,
        )

    @staticmethod
    def _steered(
        request: RouteRequest, policy: Policy, candidates: tuple[ModelSpec, ...]
    ) -> bool:
        """Whether an A/B arm or the learned router may reorder ``candidates``."""
        override = policy.override(request.operation)
        steered = policy.mode is PolicyMode.LEARNED or (
            override is not None and override.ab is not None
        )
        return steered and request.min_tier is None and len(candidates) >= 2

    def _learn(self, spec: ModelSpec, failure: Failure) -> None:
        """Feed a provider's failure to the limiter, the daily quota and the breaker."""
        kind = failure.kind
        if kind is FailureKind.RATE_LIMITED:
            self.limiter.penalize(spec.key, failure.retry_after, headers=failure.headers)
        elif kind is FailureKind.QUOTA_EXHAUSTED:  # the provider's day, not a minute window
            reset = read_rate_limits(failure.headers).requests.reset
            self.quota.exhausted(spec.key, failure.retry_after or reset)
        elif kind is FailureKind.AUTH:
            self.health.disable_provider(spec.provider.value, failure.message)
        self.health.record_failure(spec.key, kind.value)


#: The argument that limits the answer's length, per client (others: ``max_tokens``).
def _limited(
    runnable: Runnable[Any, Any], model: BaseChatModel, spec: ModelSpec, held: Reservation
) -> Runnable[Any, Any]:
    """``runnable`` sending the answer limit its budget hold was sized for (when capped)."""
    if not held.capped:
        return runnable
    return runnable.bind(**answer_limit(model, spec.provider, held.max_tokens))


def _settle(record: Callable[[Attempt], None], attempt: Attempt, held: Reservation) -> None:
    """Record ``attempt``, then settle its hold at the real cost (the ledger commits first)."""
    record(attempt)
    held.settle(attempt.cost)
