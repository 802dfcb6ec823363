"""ModelRouter: ask the selector for candidates, call them in order, judge every answer.

The routing logic is written once, as a sans-I/O generator (:meth:`ModelRouter._route`)
that yields steps — call this runnable, sleep this long, tell the consumer this — and
receives the outcomes; thin drivers run those steps synchronously, asynchronously or as
streams. So ``invoke``, ``ainvoke``, ``stream`` and ``astream`` cannot drift apart:

* a candidate the rate limiter has no permit for is skipped at once — or waited for, only
  when the permit frees sooner than the caller's ``max_wait``;
* a 429, 5xx, timeout or dropped connection moves to the next candidate immediately (SDK
  retries are off) and teaches the limiter and the circuit breaker;
* an answer that is empty, truncated, refused or fails the schema, or a tool call that
  fits no bound tool, is a failure of that model, like an HTTP 500 (one repair request to
  the same model is allowed for a schema).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSequence
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from tierwise.catalog.policy import Policy, PolicyMode
from tierwise.catalog.settings import Settings, load_settings
from tierwise.catalog.specs import Complexity, ModelSpec, Provider, TaskType, Tier
from tierwise.guards.backend import Denied, LimitName
from tierwise.guards.budget import BudgetExceeded, BudgetGuard
from tierwise.guards.health import HealthBoard
from tierwise.guards.limits import RateLimiter
from tierwise.ledger.evidence import Measured
from tierwise.ledger.store import Ledger, LedgerRow, shared_ledger
from tierwise.providers.clients import ProbeCache, ProviderFactory
from tierwise.providers.failures import Failure, FailureKind, InvalidOutput, classify
from tierwise.routing.answers import (
    SchemaViolation,
    accept,
    answer_text,
    content_text,
    parse_raw,
)
from tierwise.routing.results import (
    Attempt,
    NoModelAvailable,
    RoutedResult,
    StreamChunk,
    StreamEnd,
    StreamEvent,
    StreamRestart,
)
from tierwise.routing.selector import DemotionRule, Selector, Snapshot, Standing
from tierwise.routing.steering import Steer, Steering

__all__ = ["DEFAULT_DEMOTION", "DEFAULT_MAX_OUTPUT_TOKENS", "ModelRouter", "Schema", "config_value"]

logger = logging.getLogger(__name__)

#: Output tokens assumed when the caller sets no ``max_tokens`` (cost and TPM estimates).
DEFAULT_MAX_OUTPUT_TOKENS = 512
#: The rule a router with a ledger demotes failing or slow models by, within their tier.
DEFAULT_DEMOTION = DemotionRule()
_REPAIR_PROMPT = (
    "Your previous answer did not match the required JSON schema: {error}\n"
    "Answer again with only a JSON object that matches the schema."
)
#: A schema is a pydantic class, a TypedDict or a JSON-schema dict.
Schema = type[BaseModel] | type | Mapping[str, Any]


@dataclass(slots=True)
class _Request:
    operation: TaskType
    messages: list[BaseMessage]
    schema: Schema | None
    tools: tuple[Any, ...]
    tool_choice: str | None
    complexity: Complexity
    policy: Policy
    max_wait: float
    max_tokens: int | None
    min_tier: Tier | None
    config: RunnableConfig | None
    prompt_tokens: int
    run_id: str | None = None
    call_id: str = ""
    #: Why the chain's first model leads, when an A/B test or the learned router put it
    #: there (:class:`~tierwise.routing.steering.Steer`); shown to tracers.
    steering: str = ""


@dataclass(slots=True)
class _Call:
    """Step: call ``runnable`` with ``messages`` and send back an :class:`_Outcome`."""

    spec: ModelSpec
    runnable: Runnable[Any, Any]
    messages: list[BaseMessage]
    config: RunnableConfig


@dataclass(slots=True)
class _Sleep:
    """Step: wait ``seconds`` for a rate-limit permit, then send back ``None``."""

    seconds: float


@dataclass(slots=True)
class _Notice:
    """Step: pass ``event`` to the stream's consumer, then send back ``None``."""

    event: StreamEvent


_Step = _Call | _Sleep | _Notice
_Route = Generator[_Step, "_Outcome | None", RoutedResult]


@dataclass(slots=True)
class _Outcome:
    """What a driver hands back for a :class:`_Call`."""

    output: Any = None
    error: BaseException | None = None
    emitted: str = ""
    shown: bool = False  # a stream passed chunks of this answer to its consumer
    time_to_first_token: float | None = None


@dataclass(slots=True)
class _Verdict:
    """An outcome judged: the attempt record, and either a failure or the answer."""

    attempt: Attempt
    failure: Failure | None
    value: Any = None
    message: AIMessage | None = None
    repairable: bool = False


@dataclass(slots=True)
class _RunnableCache:
    """Structured / tool-bound runnables per (model, schema, tools), a bounded LRU.

    It also keeps the argument schemas of each tool set, for checking tool calls.

    Keys use object identities; each entry keeps its schema and tools alive, so an
    identity cannot be reused while its entry exists.
    """

    size: int = 512
    entries: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = field(default_factory=OrderedDict)

    def get(
        self, model: BaseChatModel, spec: ModelSpec, request: _Request
    ) -> tuple[Runnable[Any, Any], Runnable[Any, Any] | None]:
        """The runnable to call and, for a schema, the parser to run on its message.

        ``with_structured_output(include_raw=True)`` would keep the raw message too, but
        it is built from parallel steps that start two threads per sync call (+4 ms);
        splitting the plain ``model | parser`` sequence keeps the message at no cost.
        """
        if request.schema is None and not request.tools:
            return model, None
        key = (spec.key, id(request.schema), tuple(map(id, request.tools)), request.tool_choice)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            cached: tuple[Runnable[Any, Any], Runnable[Any, Any] | None] = entry[0]
            return cached
        prepared: tuple[Runnable[Any, Any], Runnable[Any, Any] | None]
        if request.schema is not None:
            schema = request.schema if isinstance(request.schema, type) else dict(request.schema)
            method = spec.structured_output.value
            structured = model.with_structured_output(schema, method=method)
            if isinstance(structured, RunnableSequence):
                rest = structured.steps[1:]
                parse = rest[0] if len(rest) == 1 else RunnableSequence(*rest)
                prepared = (structured.first, parse)
            else:  # not a plain sequence: let LangChain keep the raw message
                prepared = (
                    model.with_structured_output(schema, method=method, include_raw=True),
                    None,
                )
        else:
            prepared = (
                model.bind_tools(list(request.tools), tool_choice=request.tool_choice),
                None,
            )
        self._put(key, prepared, (request.schema, request.tools))
        return prepared

    def tool_schemas(self, tools: tuple[Any, ...]) -> Mapping[str, Mapping[str, Any]] | None:
        """Name -> JSON schema of the arguments of every bound tool.

        ``None`` when a tool has no function schema (a provider's built-in tool): then
        tool calls cannot be checked against the set.
        """
        key = ("tool schemas", *map(id, tools))
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            found: Mapping[str, Mapping[str, Any]] | None = entry[0]
            return found
        schemas: dict[str, Mapping[str, Any]] = {}
        try:
            for tool in tools:
                function = convert_to_openai_tool(tool)["function"]
                schemas[function["name"]] = function.get("parameters") or {}
        except Exception:  # noqa: BLE001 - not a function tool: nothing to check against
            self._put(key, None, tools)
            return None
        self._put(key, schemas, tools)
        return schemas

    def definition_tokens(self, schema: Schema | None, tools: tuple[Any, ...]) -> int:
        """Estimated prompt tokens of the tool definitions and response schema of a call.

        Providers send them to the model as part of the prompt and bill them as input
        tokens, so a cost estimate that left them out could let a call cross a cap.
        """
        if schema is None and not tools:
            return 0
        key = ("definition tokens", id(schema), *map(id, tools))
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            found: int = entry[0]
            return found
        definitions = (*tools, schema) if schema is not None else tools
        tokens = sum(_text_tokens(_definition_text(d)) + 4 for d in definitions)
        self._put(key, tokens, (schema, tools))
        return tokens

    def _put(self, key: tuple[Any, ...], value: Any, keep_alive: Any) -> None:
        self.entries[key] = (value, keep_alive)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


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
            limiter: rate limiter; seeded here with every catalog model's limits.
            health: circuit breakers.
            snapshot: fixed availability (skips probing); by default availability is
                probed (keys present, Ollama reachable, embedded installed) at most every
                ``probe_ttl`` seconds.
            probe_ttl: seconds an availability probe stays valid.
            ledger: where every attempt is recorded (tokens, cost, latency, outcome) and
                where the policy's run / day / provider cost caps and free models'
                daily quotas are read from. ``"default"``: the process's shared ledger
                at ``$TIERWISE_LEDGER`` or the user data dir (see
                :func:`~tierwise.ledger.store.shared_ledger`); ``None``: no record,
                only per-call caps.
            demotion: with a ledger, how its rolling record of each (operation, model)
                moves failing or slow models below their same-tier peers (see
                :class:`~tierwise.routing.selector.DemotionRule`); ``None``: never.
            standings_ttl: seconds the ledger's record is reused before it is read again
                (about 0.5 ms: one indexed query per judged (operation, model); the calls
                in between read no SQLite).
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
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.health = health if health is not None else HealthBoard()
        for spec in self.settings.catalog:
            self.limiter.configure(spec.key, spec.limits)
        self._fixed_snapshot = snapshot
        self.availability = ProbeCache(self.settings, ttl=probe_ttl)
        self._probed: tuple[object, Snapshot] | None = None
        self._provider_of = {k: s.provider.value for k, s in self.settings.catalog.models.items()}
        self._runnables = _RunnableCache()
        self._redact = self.settings.credentials.redact
        self.ledger = shared_ledger() if ledger == "default" else ledger
        self.budget = BudgetGuard(self.ledger)
        self.demotion = demotion
        self._standings_ttl = standings_ttl
        self._standings: tuple[float, frozenset[Standing]] | None = None
        self._ranked: tuple[Snapshot, frozenset[Standing], frozenset[Measured], Snapshot] | None
        self._ranked = None
        self.evidence_min_n = evidence_min_n
        self._quality: frozenset[Measured] = frozenset()
        self._steering = Steering(self.ledger)

    # ------------------------------------------------------------------ drivers
    def invoke(
        self,
        operation: TaskType | str,
        messages: LanguageModelInput,
        *,
        schema: Schema | None = None,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        complexity: Complexity | str = Complexity.MODERATE,
        policy: Policy | None = None,
        max_wait: float = 0.0,
        max_tokens: int | None = None,
        min_tier: Tier | str | None = None,
        config: RunnableConfig | None = None,
        call_id: str | None = None,
    ) -> RoutedResult:
        """Answer ``messages`` for ``operation`` with the first candidate that succeeds.

        Args:
            operation: the cognitive operation (decides the catalog chain).
            messages: a string, a prompt value or a list of messages.
            schema: pydantic class, TypedDict or JSON schema the answer must validate
                against; the result's ``value`` is then the parsed object.
            tools: tools to bind (LangChain tools, functions or OpenAI tool dicts); only
                models with tool calling are tried.
            tool_choice: force a tool call (``"any"`` or a tool name).
            complexity: how hard the instruction is (decides the tier order).
            policy: this call's policy instead of the router's default.
            max_wait: seconds the caller accepts to wait for a rate-limit permit on a
                candidate before moving on (0: never wait).
            max_tokens: expected completion size, for cost and token-limit estimates.
            min_tier: skip candidates below this tier (used to escalate).
            config: LangChain run config (callbacks, tags, metadata) for the model call.
            call_id: the id the ledger files this call's attempts under (default: a new
                one); calls sharing an id are one routed result (ensemble members).

        Raises:
            NoModelAvailable: every candidate failed or none was allowed; it lists why.
        """
        route = self._route(self._request(
            operation, messages, schema, tools, tool_choice, complexity, policy, max_wait,
            max_tokens, min_tier, config, call_id,
        ), streaming=False)
        outcome: _Outcome | None = None
        try:  # closed however the caller leaves: the route releases what it holds
            while True:
                try:
                    step = route.send(outcome)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                outcome = None
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                elif isinstance(step, _Call):
                    try:
                        outcome = _Outcome(step.runnable.invoke(step.messages, step.config))
                    except Exception as exc:  # noqa: BLE001 - every failure is classified
                        outcome = _Outcome(error=exc)
        finally:
            route.close()

    async def ainvoke(
        self,
        operation: TaskType | str,
        messages: LanguageModelInput,
        *,
        schema: Schema | None = None,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        complexity: Complexity | str = Complexity.MODERATE,
        policy: Policy | None = None,
        max_wait: float = 0.0,
        max_tokens: int | None = None,
        min_tier: Tier | str | None = None,
        config: RunnableConfig | None = None,
        call_id: str | None = None,
    ) -> RoutedResult:
        """Async :meth:`invoke`; waiting for a permit never blocks the event loop."""
        await self._aprobe()
        route = self._route(self._request(
            operation, messages, schema, tools, tool_choice, complexity, policy, max_wait,
            max_tokens, min_tier, config, call_id,
        ), streaming=False)
        outcome: _Outcome | None = None
        try:  # closed however the caller leaves: the route releases what it holds
            while True:
                try:
                    step = route.send(outcome)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                outcome = None
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _Call):
                    try:
                        outcome = _Outcome(await step.runnable.ainvoke(step.messages, step.config))
                    except Exception as exc:  # noqa: BLE001 - every failure is classified
                        outcome = _Outcome(error=exc)
        finally:
            route.close()

    def stream(
        self,
        operation: TaskType | str,
        messages: LanguageModelInput,
        *,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        complexity: Complexity | str = Complexity.MODERATE,
        policy: Policy | None = None,
        max_wait: float = 0.0,
        max_tokens: int | None = None,
        min_tier: Tier | str | None = None,
        config: RunnableConfig | None = None,
    ) -> Iterator[StreamEvent]:
        """Stream the answer as :class:`StreamChunk` events, ending with :class:`StreamEnd`.

        A failure before the first token falls back invisibly: chunks that carry no
        text and no tool call (a role header) are held back until the answer starts. A
        failure after that yields :class:`StreamRestart` — the consumer discards what it
        received, text or partial tool calls — and the answer starts over on the next
        candidate; two models' output is never joined. Arguments are those of
        :meth:`invoke` (no schema: use ``invoke``).
        """
        route = self._route(self._request(
            operation, messages, None, tools, tool_choice, complexity, policy, max_wait,
            max_tokens, min_tier, config,
        ), streaming=True)
        outcome: _Outcome | None = None
        try:  # closed however the caller leaves: the route releases what it holds
            while True:
                try:
                    step = route.send(outcome)
                except StopIteration as done:
                    yield StreamEnd(done.value)
                    return
                outcome = None
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                elif isinstance(step, _Notice):
                    yield step.event
                else:
                    outcome = _Outcome()
                    started = time.perf_counter()
                    held: list[StreamChunk] = []
                    try:
                        for chunk in step.runnable.stream(step.messages, step.config):
                            _collect(outcome, chunk, started)
                            held.append(StreamChunk(chunk, step.spec))
                            if outcome.shown or _carries_answer(chunk):
                                outcome.shown = True
                                yield from held
                                held.clear()
                    except Exception as exc:  # noqa: BLE001 - every failure is classified
                        outcome.error = exc
        finally:
            route.close()

    async def astream(
        self,
        operation: TaskType | str,
        messages: LanguageModelInput,
        *,
        tools: Sequence[Any] = (),
        tool_choice: str | None = None,
        complexity: Complexity | str = Complexity.MODERATE,
        policy: Policy | None = None,
        max_wait: float = 0.0,
        max_tokens: int | None = None,
        min_tier: Tier | str | None = None,
        config: RunnableConfig | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Async :meth:`stream`, with the same restart contract."""
        await self._aprobe()
        route = self._route(self._request(
            operation, messages, None, tools, tool_choice, complexity, policy, max_wait,
            max_tokens, min_tier, config,
        ), streaming=True)
        outcome: _Outcome | None = None
        try:  # closed however the caller leaves: the route releases what it holds
            while True:
                try:
                    step = route.send(outcome)
                except StopIteration as done:
                    yield StreamEnd(done.value)
                    return
                outcome = None
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _Notice):
                    yield step.event
                else:
                    outcome = _Outcome()
                    started = time.perf_counter()
                    held: list[StreamChunk] = []
                    try:
                        async for chunk in step.runnable.astream(step.messages, step.config):
                            _collect(outcome, chunk, started)
                            held.append(StreamChunk(chunk, step.spec))
                            if outcome.shown or _carries_answer(chunk):
                                outcome.shown = True
                                for event in held:
                                    yield event
                                held.clear()
                    except Exception as exc:  # noqa: BLE001 - every failure is classified
                        outcome.error = exc
        finally:
            route.close()

    # ------------------------------------------------------------------ state
    def snapshot(self) -> Snapshot:
        """What is usable now, and in which order within a tier.

        Availability (probed at most every ``probe_ttl``), the circuit breakers and, with
        a ledger and a demotion rule, the standings of models failing or slow on an
        operation (read at most every ``standings_ttl``). The same object is returned
        while none of them changed, so the selector's memo keeps hitting.

        Standings are per (operation, model), as the ledger's record is; only demoted
        models are listed, so the snapshot stays small. They are read from every
        process's committed rows: this process's last ``flush_interval`` of rows may be
        missing (the circuit breaker reacts at once).
        """
        base = self._fixed_snapshot
        if base is None:
            availability = self.availability.get()
            if self._probed is None or self._probed[0] is not availability:
                self._probed = (availability, availability.snapshot(self.settings.catalog.models))
            base = self._probed[1]
        snap = self.health.snapshot(base, self._provider_of)
        standings = self._current_standings()
        quality = self._quality
        if not standings and not quality:
            return snap
        ranked = self._ranked
        if (ranked is not None and ranked[0] is snap and ranked[1] is standings
                and ranked[2] is quality):  # fmt: skip
            return ranked[3]
        result = snap.ranked(standings) if standings else snap
        if quality:
            result = result.measured(quality)
        self._ranked = (snap, standings, quality, result)
        return result

    def _current_standings(self) -> frozenset[Standing]:
        """The ledger's demotions (and measured quality), read at most every ``standings_ttl`` s.

        Hands back the previous object while the standings are equal, so the snapshot
        built from them is the same object too. A ledger that cannot be read keeps the
        last standings (logged): routing must not fail over its monitoring.
        """
        rule, ledger = self.demotion, self.ledger
        if ledger is None or (rule is None and self.evidence_min_n is None):
            return frozenset()
        now = time.monotonic()
        cached = self._standings
        if cached is not None and now - cached[0] < self._standings_ttl:
            return cached[1]
        previous = cached[1] if cached is not None else frozenset()
        try:
            found = (
                rule.read(ledger, self.settings.catalog, time.time())
                if rule is not None else frozenset()
            )
        except sqlite3.Error as exc:
            logger.warning("ledger %s: cannot read the models' record (%s)", ledger.path, exc)
            found = previous
        if found == previous:
            found = previous
        self._standings = (now, found)
        self._read_quality(ledger)
        return found

    def _read_quality(self, ledger: Ledger) -> None:
        """Refresh the measured quality from the ledger's evidence (with the standings)."""
        if self.evidence_min_n is None:
            return
        try:
            found = frozenset(ledger.evidence.quality(min_n=self.evidence_min_n).values())
        except sqlite3.Error as exc:
            logger.warning("ledger %s: cannot read quality evidence (%s)", ledger.path, exc)
            return
        if found != self._quality:
            self._quality = found

    async def _aprobe(self) -> None:
        """Have an availability probe before routing, probed without blocking the loop."""
        if self._fixed_snapshot is None:
            await self.availability.aget()

    def refresh(self) -> None:
        """Forget the availability probe, so the next call probes again."""
        self.availability.invalidate()

    # ------------------------------------------------------------------ the route
    def _request(
        self,
        operation: TaskType | str,
        messages: LanguageModelInput,
        schema: Schema | None,
        tools: Sequence[Any],
        tool_choice: str | None,
        complexity: Complexity | str,
        policy: Policy | None,
        max_wait: float,
        max_tokens: int | None,
        min_tier: Tier | str | None,
        config: RunnableConfig | None,
        call_id: str | None = None,
    ) -> _Request:
        msgs = _as_messages(messages)
        return _Request(
            operation=TaskType(operation),
            messages=msgs,
            schema=schema,
            tools=tuple(tools),
            tool_choice=tool_choice,
            complexity=Complexity(complexity),
            policy=policy if policy is not None else self.policy,
            max_wait=max_wait,
            max_tokens=max_tokens,
            min_tier=Tier(min_tier) if min_tier is not None else None,
            config=config,
            prompt_tokens=(
                _estimate_tokens(msgs) + self._runnables.definition_tokens(schema, tuple(tools))
            ),
            run_id=config_value(config, "run_id"),
            call_id=call_id or uuid.uuid4().hex,
        )

    def _route(self, request: _Request, *, streaming: bool) -> _Route:
        """Try candidates in order; yields steps, returns the first valid answer."""
        started = time.perf_counter()
        estimate = request.prompt_tokens + (request.max_tokens or DEFAULT_MAX_OUTPUT_TOKENS)
        steer = self._steer(request, self._candidates(request), estimate)
        candidates, request.steering = steer.candidates, steer.why
        deadline = time.monotonic() + request.max_wait
        attempts: list[Attempt] = []
        refusals: list[BudgetExceeded] = []
        record = self._recorder(request, steer.arm)

        def note(attempt: Attempt) -> None:
            attempts.append(attempt)
            record(attempt)
        overflowed = 0  # after a context overflow, windows this small are skipped
        rejected: set[Provider] = set()  # providers that refused their key in this call

        for spec in candidates:
            if spec.provider in rejected:
                note(_refused(
                    spec, FailureKind.AUTH, f"{spec.provider} rejected its key in this call"
                ))
                continue
            if spec.context_window <= overflowed:
                note(_refused(
                    spec, FailureKind.CONTEXT_OVERFLOW, "window no larger than one that overflowed"
                ))
                continue
            # The client is built (once per model and event loop; tens of ms the first
            # time) before the permit is taken, so a permit's time is when the request
            # leaves, as the provider's window counts it.
            try:
                runnable, parse = self._runnables.get(
                    self.factory.chat_model(spec), spec, request
                )
            except Exception as exc:  # noqa: BLE001 - this client cannot express the request
                reason = classify(exc, redact=self._redact).message
                note(_refused(
                    spec, FailureKind.BAD_REQUEST, f"the client cannot take it: {reason}"
                ))
                continue
            permit = self.limiter.try_acquire(spec.key, estimate)
            while isinstance(permit, Denied) and permit.retry_after <= deadline - time.monotonic():
                yield _Sleep(permit.retry_after)
                permit = self.limiter.try_acquire(spec.key, estimate)
            if isinstance(permit, Denied):
                note(_refused(
                    spec, FailureKind.RATE_LIMITED,
                    f"local {permit.limit} limit: next permit in {permit.retry_after:.2f}s",
                    retry_after=permit.retry_after,
                ))
                continue
            answer_tokens = estimate - request.prompt_tokens
            estimated_cost = spec.price.cost(request.prompt_tokens, answer_tokens)
            held = self.budget.check_quota(spec) or self.budget.reserve(
                spec, estimated_cost, request.policy, run_id=request.run_id
            )
            if isinstance(held, BudgetExceeded):
                permit.cancel()
                refusals.append(held)
                note(_refused(spec, FailureKind.BUDGET_EXCEEDED, str(held)))
                continue
            if not self.health.allow(spec.key):
                permit.cancel()
                held.release()
                note(_refused(
                    spec, FailureKind.UNAVAILABLE, "circuit open: a recovery probe is in flight"
                ))
                continue

            messages, repair = request.messages, False
            try:  # the estimate is released however the call ends, even if it is abandoned
                while True:
                    call_started = time.perf_counter()
                    outcome = yield _Call(
                        spec, runnable, messages, self._config(spec, request, estimated_cost)
                    )
                    assert outcome is not None
                    if parse is not None and outcome.error is None:
                        outcome.output = parse_raw(parse, outcome.output)
                    verdict = self._judge(
                        request, spec, outcome, time.perf_counter() - call_started, repair
                    )
                    note(verdict.attempt)  # the ledger counts the real cost from here on
                    used = verdict.attempt.input_tokens + verdict.attempt.output_tokens
                    permit.settle(used or estimate)
                    held.release()
                    if verdict.failure is None:
                        self.health.record_success(spec.key)
                        assert verdict.message is not None
                        return RoutedResult(
                            request.operation, verdict.value, verdict.message, spec,
                            tuple(attempts), time.perf_counter() - started,
                            request.call_id, steer.arm,
                        )
                    if repair or not _repairable(request, verdict):
                        break
                    assert verdict.message is not None
                    messages = [
                        *request.messages,
                        AIMessage(answer_text(verdict.message)),
                        HumanMessage(_REPAIR_PROMPT.format(error=verdict.attempt.detail)),
                    ]
                    # The repair is a second paid request: it must fit the caps as well.
                    repair_prompt = request.prompt_tokens + _estimate_tokens(
                        messages[len(request.messages):]
                    )
                    repair_estimate = estimate - request.prompt_tokens + repair_prompt
                    retry = self.limiter.try_acquire(spec.key, repair_estimate)
                    if isinstance(retry, Denied):
                        break
                    held = self.budget.reserve(
                        spec,
                        spec.price.cost(repair_prompt, estimate - request.prompt_tokens),
                        request.policy,
                        run_id=request.run_id,
                    )
                    if isinstance(held, BudgetExceeded):
                        retry.cancel()
                        note(replace(_refused(
                            spec, FailureKind.BUDGET_EXCEEDED, f"no schema repair: {held}"
                        ), repair=True))
                        break
                    permit, repair = retry, True
            finally:
                if not isinstance(held, BudgetExceeded):
                    held.release()

            failure = verdict.failure
            self._learn(spec, failure)
            if streaming and outcome.shown:
                yield _Notice(StreamRestart(verdict.attempt, outcome.emitted))
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

    def _candidates(self, request: _Request) -> tuple[ModelSpec, ...]:
        """The selector's chain for ``request``, without the tiers below ``min_tier``.

        The selector leaves out models whose estimate is over the per-call cap. When that
        leaves nothing, the chain is taken without the cap and each model is refused by
        the budget guard instead, so the caller gets :class:`BudgetExceeded` (which cap,
        what it allows) and the ledger records the refusals, as for every other cap.
        """
        snapshot = self.snapshot()

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

        candidates = select(request.policy)
        if not candidates and request.policy.max_cost_per_call is not None:
            candidates = select(request.policy.model_copy(update={"max_cost_per_call": None}))
        return candidates

    def _steer(
        self, request: _Request, candidates: tuple[ModelSpec, ...], estimate: int
    ) -> Steer:
        """``candidates`` after the request's A/B arm or learned pick (see :mod:`.steering`).

        Escalations (``min_tier``) and single-model chains are left as they are: the graph
        asked for a tier, not for a model.
        """
        override = request.policy.override(request.operation)
        steered = request.policy.mode is PolicyMode.LEARNED or (
            override is not None and override.ab is not None
        )
        if not steered or request.min_tier is not None or len(candidates) < 2:
            return Steer(candidates)
        sticky = (config_value(request.config, "thread_id") or request.run_id
                  or request.call_id)  # fmt: skip
        return self._steering.steer(
            request.operation, request.policy, candidates, request.messages,
            sticky_key=sticky, prompt_tokens=request.prompt_tokens,
            max_tokens=estimate - request.prompt_tokens,
        )

    def _recorder(self, request: _Request, arm: str | None) -> Callable[[Attempt], None]:
        """A function writing one ledger row per attempt of ``request`` (no-op: no ledger)."""
        ledger = self.ledger
        if ledger is None:
            return lambda attempt: None
        operation, complexity = request.operation.value, request.complexity.value
        policy, run_id = request.policy, request.run_id
        thread_id = config_value(request.config, "thread_id")
        node = config_value(request.config, "langgraph_node")
        escalation = request.min_tier is not None
        call_id = request.call_id

        def record(attempt: Attempt) -> None:
            ledger.record(LedgerRow.from_attempt(
                attempt, operation=operation, complexity=complexity, policy=policy,
                run_id=run_id, thread_id=thread_id, node=node, escalation=escalation,
                call_id=call_id, arm=arm,
            ))

        return record

    def _config(
        self, spec: ModelSpec, request: _Request, estimated_cost: float
    ) -> RunnableConfig:
        """The caller's run config plus routing metadata, so tracers show the decision.

        With an A/B test or the learned router, ``tierwise_steering`` says which arm or
        pick (and the cost weight) put the first model first.

        The cost is the estimate the budget checked before the call (prompt tokens plus
        the expected answer at the catalog's prices); the real cost is in the ledger and
        in :meth:`RoutedResult.provenance`.
        """
        base: RunnableConfig = request.config or {}
        metadata = {
            **base.get("metadata", {}),
            "tierwise_operation": request.operation.value,
            "tierwise_model": spec.key,
            "tierwise_tier": spec.tier.value,
            "tierwise_provider": spec.provider.value,
            "tierwise_complexity": request.complexity.value,
            "tierwise_estimated_cost": round(estimated_cost, 8),
        }
        if request.steering:
            metadata["tierwise_steering"] = request.steering
        tags = [*base.get("tags", []), f"tierwise:{spec.tier.value}"]
        return {**base, "metadata": metadata, "tags": tags}

    def _judge(
        self,
        request: _Request,
        spec: ModelSpec,
        outcome: _Outcome,
        latency: float,
        repair: bool,
    ) -> _Verdict:
        """Turn a call's outcome into an attempt record and a failure or an answer."""
        value: Any = None
        message: AIMessage | None = None
        error = outcome.error
        if error is None:
            tools = self._runnables.tool_schemas(request.tools) if request.tools else None
            try:
                value, message = accept(
                    outcome.output,
                    structured=request.schema is not None,
                    tools_bound=bool(request.tools),
                    tool_choice=request.tool_choice,
                    tools=tools,
                )
            except InvalidOutput as exc:
                error = exc
                message = exc.message
        failure = classify(error, redact=self._redact) if error is not None else None
        input_tokens, output_tokens = _usage(message)
        attempt = Attempt(
            spec.key, spec.provider, spec.tier,
            failure.kind if failure is not None else None,
            latency,
            detail=failure.message if failure is not None else "",
            retry_after=failure.retry_after if failure is not None else None,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=spec.price.cost(input_tokens, output_tokens),
            time_to_first_token=outcome.time_to_first_token,
            repair=repair,
        )
        return _Verdict(
            attempt, failure, value, message, repairable=isinstance(error, SchemaViolation)
        )

    def _learn(self, spec: ModelSpec, failure: Failure) -> None:
        """Feed a provider's failure to the limiter and the circuit breaker."""
        kind = failure.kind
        if kind in (FailureKind.RATE_LIMITED, FailureKind.QUOTA_EXHAUSTED):
            scope: LimitName | None = "rpd" if kind is FailureKind.QUOTA_EXHAUSTED else None
            self.limiter.penalize(spec.key, failure.retry_after, scope, failure.headers)
        elif kind is FailureKind.AUTH:
            self.health.disable_provider(spec.provider.value, failure.message)
        self.health.record_failure(spec.key, kind.value)


def config_value(config: RunnableConfig | None, name: str) -> str | None:
    """A run attribute LangGraph/LangChain put in ``configurable`` or ``metadata``.

    How the router reads a call's ``run_id`` / ``thread_id`` / ``langgraph_node`` for the
    ledger; whoever files more about the same call reads them the same way.
    """
    if not config:
        return None
    value = config.get("configurable", {}).get(name) or config.get("metadata", {}).get(name)
    return str(value) if value is not None else None


def _repairable(request: _Request, verdict: _Verdict) -> bool:
    return (
        request.schema is not None
        and verdict.repairable
        and verdict.message is not None
        and bool(answer_text(verdict.message).strip())
    )


def _carries_answer(chunk: AIMessageChunk) -> bool:
    """Whether a streamed chunk holds part of the answer (text or a tool call)."""
    return bool(content_text(chunk.content) or chunk.tool_call_chunks)


def _collect(outcome: _Outcome, chunk: AIMessageChunk, started: float) -> None:
    """Add a streamed chunk to the outcome being assembled."""
    if outcome.time_to_first_token is None:
        outcome.time_to_first_token = time.perf_counter() - started
    outcome.output = chunk if outcome.output is None else outcome.output + chunk
    outcome.emitted += content_text(chunk.content)


def _as_messages(messages: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(messages, str):
        return [HumanMessage(messages)]
    if isinstance(messages, PromptValue):
        return messages.to_messages()
    from langchain_core.messages import convert_to_messages

    return convert_to_messages(messages)


def _usage(message: AIMessage | None) -> tuple[int, int]:
    usage = message.usage_metadata if message is not None else None
    if not usage:
        return 0, 0
    return usage.get("input_tokens", 0), usage.get("output_tokens", 0)


def _estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """Roughly 4 characters per token plus a few per message: a budget, not a count."""
    chars = sum(len(m.content) if isinstance(m.content, str) else len(str(m.content))
                for m in messages)
    return chars // 4 + 4 * len(messages)


def _text_tokens(text: str) -> int:
    """4 characters per token, rounded up (as :func:`_estimate_tokens` counts text)."""
    return (len(text) + 3) // 4


def _definition_text(definition: Any) -> str:
    """A tool or schema as the JSON a provider receives (name, description, parameters)."""
    try:
        return json.dumps(convert_to_openai_tool(definition))
    except Exception:  # noqa: BLE001 - a provider's built-in tool, a bare JSON schema...
        try:
            return json.dumps(definition, default=str)
        except (TypeError, ValueError):
            return str(definition)


def _refused(
    spec: ModelSpec, kind: FailureKind, detail: str, *, retry_after: float | None = None
) -> Attempt:
    """An attempt that never left the process."""
    return Attempt(
        spec.key, spec.provider, spec.tier, kind, 0.0,
        detail=detail, sent=False, retry_after=retry_after,
    )
