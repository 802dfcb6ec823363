"""What every operation node shares: asking its model, provenance, escalation, progress.

An :class:`OperationNode` is a LangGraph node for one cognitive operation: a ``Runnable``
with a sync and an async path, so a graph of them runs under ``invoke`` and ``ainvoke``.
It formats its prompt from the state keys it ``reads``, asks its model for the
operation's pydantic schema, and returns an update for the keys it ``writes`` plus one
*report entry* — where the answer came from (model, tier, attempts, tokens, cost,
latency) — appended to the ``report`` key.

The model is a :class:`ModelRouter` (every call routed), a plain ``BaseChatModel`` (no
routing: for users who want the nodes without tiers), or a catalog key (the default
router, pinned to that model for this operation).

Escalation is derived from the report, so it survives checkpoints and needs no hidden
state: a node that already answered in the current scope (the whole run, or one sub-task
of a plan) answers again only because a conditional edge judged its answer poor, and then
asks for a tier above the one that answered last time (:func:`escalation_floor`).

When the run's policy gives the node's operation an ensemble, a first answer comes from
several models at once, combined (:mod:`tierwise.nodes.ensembles`); an escalated rerun
asks one routed call with the higher floor — the graph wants a better tier, and the
ensemble's members may all sit below it. Judges and escalations file quality evidence
for the answers they judge (:mod:`tierwise.nodes.feedback`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.runtime import get_runtime
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs it for JSON schemas on 3.11

from tierwise.catalog.policy import EnsembleSpec, Policy
from tierwise.catalog.specs import Complexity, TaskType, Tier
from tierwise.ledger import Ledger
from tierwise.nodes.context import RunContext
from tierwise.nodes.ensembles import CombinerKind, combiner_for
from tierwise.nodes.feedback import keep_features, record_escalation, record_judgement
from tierwise.nodes.render import render, render_keys
from tierwise.routing.default import default_router
from tierwise.routing.ensemble import EnsembleResult, aensemble, ensemble
from tierwise.routing.request import config_value
from tierwise.routing.results import NoModelAvailable, RoutedResult
from tierwise.routing.router import ModelRouter

__all__ = [
    "REPORT_KEY",
    "Answer",
    "JudgeNode",
    "ModelLike",
    "OperationNode",
    "ReportEntry",
    "escalation_floor",
    "latest_entry",
    "resolve_model",
]

#: State key every node appends its report entries to (a list with an ``add`` reducer).
REPORT_KEY = "report"

#: What a node factory accepts as its model.
ModelLike = ModelRouter | BaseChatModel | str

#: The tier recorded for answers from a plain chat model (no routing, no escalation).
UNROUTED = "unrouted"


class ReportEntry(TypedDict):
    """One node execution in the routing report (JSON, so checkpoints and ``--json`` keep it)."""

    node: str
    operation: str
    step: int | None
    status: Literal["ok", "failed"]
    model: str | None
    provider: str | None
    tier: str | None
    min_tier: str | None
    escalation: int
    input_tokens: int
    output_tokens: int
    cost: float
    latency: float
    attempts: list[str]
    detail: str
    #: The routed call behind the answer (ledger ``call_id``, quality evidence); ``""``
    #: for a plain chat model's answer and for a failed run (no call answered).
    call_id: str
    #: How an ensemble decided (``EnsembleResult.describe``); ``""``: one routed call.
    ensemble: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A parsed answer and its provenance, whichever kind of model gave it.

    ``call_id`` is empty for a plain chat model (nothing routed, nothing in the ledger).
    """

    value: Any
    message: AIMessage
    model: str
    provider: str
    tier: str
    attempts: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    cost: float
    call_id: str = ""
    ensemble: str = ""


@dataclass(frozen=True, slots=True)
class Question:
    """One model call a node makes: what to ask and under which constraints."""

    operation: TaskType
    messages: list[BaseMessage]
    schema: type[BaseModel] | None
    tools: tuple[Any, ...]
    complexity: Complexity
    policy: Policy
    min_tier: Tier | None
    max_tokens: int
    config: RunnableConfig
    #: Seconds the router may wait for a rate-limit permit (the run context's).
    max_wait: float = 0.0
    #: What an ensemble's ``auto`` combiner means for this node, and the label fields
    #: votes compare (see :mod:`tierwise.nodes.ensembles`).
    combine: CombinerKind = "best_score"
    vote_fields: tuple[str, ...] = ()


def latest_entry(
    report: Sequence[ReportEntry], node: str, step: int | None = None
) -> ReportEntry | None:
    """The last report entry of ``node`` in the scope ``step`` (``None``: the whole run)."""
    for entry in reversed(report):
        if entry["node"] == node and entry["step"] == step:
            return entry
    return None


def runs_of(report: Sequence[ReportEntry], node: str, step: int | None = None) -> int:
    """How many times ``node`` ran in the scope ``step``."""
    return sum(1 for e in report if e["node"] == node and e["step"] == step)


def escalation_floor(
    report: Sequence[ReportEntry], node: str, step: int | None = None
) -> Tier | None:
    """The minimum tier for ``node``'s next answer: above the tier of its last answer.

    ``None`` on a first run, after an answer from an unrouted model (it has no tiers) and
    after a failure (the floor of the failed escalation stays the floor).
    """
    last = latest_entry(report, node, step)
    if last is None:
        return None
    if last["status"] == "failed":
        return Tier(last["min_tier"]) if last["min_tier"] else None
    if last["tier"] is None or last["tier"] == UNROUTED:
        return None
    rank = Tier(last["tier"]).rank + 1
    return next((t for t in Tier if t.rank == rank), None)


class _Routed:
    """Answers through a :class:`ModelRouter`, optionally pinned to one catalog model."""

    def __init__(self, router: ModelRouter, pin: str | None = None) -> None:
        self.router = router
        self.pin = pin
        self.ledger: Ledger | None = router.ledger

    def policy(self, context: RunContext, operation: TaskType) -> Policy:
        policy = context.policy or self.router.policy
        if self.pin is None:
            return policy
        return policy.pinned(operation, self.pin)

    def _kwargs(self, q: Question) -> dict[str, Any]:
        return {
            "schema": q.schema, "tools": q.tools, "tool_choice": "any" if q.tools else None,
            "complexity": q.complexity, "policy": q.policy, "min_tier": q.min_tier,
            "max_tokens": q.max_tokens, "max_wait": q.max_wait, "config": q.config,
        }

    def _ensemble(self, q: Question) -> EnsembleSpec | None:
        """The ensemble answering ``q``: the policy's, unless this is an escalation."""
        override = q.policy.override(q.operation)
        if override is None or override.ensemble is None or q.min_tier is not None:
            return None
        return override.ensemble

    def _ensemble_kwargs(self, q: Question, spec: EnsembleSpec) -> dict[str, Any]:
        combiner = combiner_for(
            spec, auto=q.combine, vote_fields=q.vote_fields, router=self.router,
            messages=q.messages, render=render, complexity=q.complexity, policy=q.policy,
            config=q.config,
        )  # fmt: skip
        kwargs = self._kwargs(q)
        del kwargs["min_tier"]
        return {**kwargs, "models": spec.models, "combiner": combiner}

    def answer(self, q: Question) -> Answer:
        spec = self._ensemble(q)
        if spec is not None:
            return _routed_answer(ensemble(
                self.router, q.operation, q.messages, **self._ensemble_kwargs(q, spec)
            ))
        return _routed_answer(self.router.invoke(q.operation, q.messages, **self._kwargs(q)))

    async def aanswer(self, q: Question) -> Answer:
        spec = self._ensemble(q)
        if spec is not None:
            return _routed_answer(await aensemble(
                self.router, q.operation, q.messages, **self._ensemble_kwargs(q, spec)
            ))
        result = await self.router.ainvoke(q.operation, q.messages, **self._kwargs(q))
        return _routed_answer(result)


def _routed_answer(result: RoutedResult) -> Answer:
    return Answer(
        value=result.value, message=result.message, model=result.model,
        provider=result.provider.value, tier=result.tier.value,
        attempts=tuple(a.describe() for a in result.attempts),
        input_tokens=result.input_tokens, output_tokens=result.output_tokens,
        cost=result.cost, call_id=result.call_id,
        ensemble=result.describe() if isinstance(result, EnsembleResult) else "",
    )


class _Plain:
    """Answers with one chat model: no routing, no fallback, no tiers."""

    ledger: Ledger | None = None  # nothing routed, nothing to file evidence under

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model
        self.name = str(
            getattr(model, "model_name", None) or getattr(model, "model", None)
            or model.get_name()
        )

    def policy(self, context: RunContext, operation: TaskType) -> Policy:
        return context.policy or Policy()

    def _runnable(self, q: Question) -> Runnable[Any, Any]:
        if q.schema is not None:
            return self.model.with_structured_output(q.schema, include_raw=True)
        return self.model.bind_tools(list(q.tools), tool_choice="any") if q.tools else self.model

    def answer(self, q: Question) -> Answer:
        return self._answer(q, self._runnable(q).invoke(q.messages, q.config))

    async def aanswer(self, q: Question) -> Answer:
        return self._answer(q, await self._runnable(q).ainvoke(q.messages, q.config))

    def _answer(self, q: Question, out: Any) -> Answer:
        value: Any = out
        message: AIMessage = out
        if q.schema is not None:
            if out.get("parsing_error") is not None or out.get("parsed") is None:
                raise ValueError(f"{self.name} gave no valid {q.schema.__name__}: "
                                 f"{out.get('parsing_error')}")
            value, message = out["parsed"], out["raw"]
        usage: Mapping[str, Any] = message.usage_metadata or {}
        return Answer(
            value=value, message=message, model=self.name, provider=UNROUTED, tier=UNROUTED,
            attempts=(f"{self.name} (unrouted): ok",),
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)), cost=0.0,
        )


def resolve_model(model: ModelLike | None) -> _Routed | _Plain:
    """Turn what a factory was given into something that answers.

    ``None`` is the process's shared :func:`~tierwise.routing.default.default_router`; a
    string is a catalog key it pins for this node's operation (:meth:`Policy.pinned`).
    """
    if isinstance(model, ModelRouter):
        return _Routed(model)
    if isinstance(model, BaseChatModel):
        return _Plain(model)
    router = default_router()
    if model is None:
        return _Routed(router)
    if model not in router.settings.catalog.models:
        known = ", ".join(sorted(router.settings.catalog.models))
        raise ValueError(f"unknown catalog model {model!r}; known: {known}")
    return _Routed(router, pin=model)


@dataclass(slots=True)
class _Asking:
    """A node run in progress: its question and what the report entry will need."""

    question: Question
    state: Mapping[str, Any]
    step: int | None
    escalation: int
    emit: Callable[[Any], None]
    started: float


class OperationNode(Runnable[Any, dict[str, Any]]):
    """A graph node answering one cognitive operation from, and into, the graph state.

    Subclasses set the class attributes and implement :meth:`inputs` (prompt variables
    from the state) and :meth:`update` (the state update from the parsed answer).
    Attributes ``reads`` and ``writes`` name the state keys, so a node can be dropped into
    any ``StateGraph`` whose state has those keys (plus ``report`` as
    ``Annotated[list[ReportEntry], operator.add]`` and, optionally, ``complexity``).
    """

    operation: ClassVar[TaskType]
    schema: type[BaseModel] | None = None
    prompt: ClassVar[ChatPromptTemplate]
    #: Answer size the router budgets for (cost, TPM, context window).
    max_tokens: ClassVar[int] = 256
    #: Judges (assessment, scoring) judge again at the same tier when their subject is
    #: rerun; only producers escalate.
    judge: ClassVar[bool] = False
    #: What an ensemble's ``auto`` combiner is for this operation: ``vote`` for labels,
    #: ``best_score`` (a quality judge) for free text.
    combine: ClassVar[CombinerKind] = "best_score"
    #: The fields of the answer a vote compares (empty: the whole answer).
    vote_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: ModelLike | None,
        *,
        name: str,
        reads: Sequence[str],
        writes: Sequence[str],
        tools: Sequence[Any] = (),
    ) -> None:
        """Bind the node to its model and its state keys."""
        self.answerer = resolve_model(model)
        self.name = self.node = name
        self.reads = tuple(reads)
        self.writes = tuple(writes)
        self.tools = tuple(tools)
        #: Keep each answer's hashed prompt features in the ledger, for the learned
        #: router to retrain on once a judge scores the answer. Graphs set it on the
        #: producers their judges judge; it costs one ledger row per answer.
        self.keep_features = False

    def __repr__(self) -> str:
        """Name and state keys: what a user composing graphs needs to see."""
        kind = type(self).__name__
        return f"{kind}(name={self.node!r}, reads={self.reads}, writes={self.writes})"

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The prompt's variables, taken from ``state``."""
        raise NotImplementedError

    def update(self, value: Any, state: Mapping[str, Any]) -> dict[str, Any]:
        """The state update for the parsed answer ``value``."""
        return {self.writes[0]: value}

    def verdict(self, value: Any) -> str:
        """A judge's verdict for the report (producers: empty)."""
        return ""

    def skip(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """An update that makes the model call unnecessary (default: never)."""
        return None

    def invoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Ask the model, then write the answer and its report entry into the state."""
        asked = self._ask(input, config)
        if not isinstance(asked, _Asking):
            return asked
        try:
            answer = self.answerer.answer(asked.question)
        except NoModelAvailable as exc:
            return self._failed(asked, exc)
        return self._answered(asked, answer)

    async def ainvoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Async :meth:`invoke`."""
        asked = self._ask(input, config)
        if not isinstance(asked, _Asking):
            return asked
        try:
            answer = await self.answerer.aanswer(asked.question)
        except NoModelAvailable as exc:
            if asked.escalation > 0:
                await self._afile_evidence(asked, None)
            return self._failed(asked, exc, filed=True)
        await self._afile_evidence(asked, answer)
        return self._answered(asked, answer, filed=True)

    async def _afile_evidence(self, asked: _Asking, answer: Answer | None) -> None:
        """:meth:`_file_evidence` in a worker thread: ledger writes must not block the loop."""
        if self.answerer.ledger is not None:
            await asyncio.to_thread(self._file_evidence, asked, answer)

    def _ask(
        self, state: Mapping[str, Any], config: RunnableConfig | None
    ) -> _Asking | dict[str, Any]:
        """The question for this run of the node, or the update when it need not ask."""
        skipped = self.skip(state)
        if skipped is not None:
            return skipped
        runtime = get_runtime(RunContext)
        context = runtime.context if isinstance(runtime.context, RunContext) else RunContext()
        report = _report(state)
        step = cast(int | None, state.get("step"))
        floor = None if self.judge else escalation_floor(report, self.node, step)
        asked = _Asking(
            question=Question(
                operation=self.operation,
                messages=self.prompt.format_messages(**self.inputs(state)),
                schema=self.schema, tools=self.tools,
                complexity=Complexity(state.get("complexity") or Complexity.MODERATE),
                policy=self.answerer.policy(context, self.operation), min_tier=floor,
                max_tokens=self.max_tokens, max_wait=context.max_wait,
                config=_run_config(config or {}, state),
                combine=self.combine, vote_fields=self.vote_fields,
            ),
            state=state, step=step,
            escalation=0 if self.judge else runs_of(report, self.node, step),
            emit=runtime.stream_writer, started=time.perf_counter(),
        )
        asked.emit({"node": self.node, "operation": self.operation.value, "step": step,
                    "status": "started", "min_tier": floor.value if floor else None})
        return asked

    def _answered(self, asked: _Asking, answer: Answer, *, filed: bool = False) -> dict[str, Any]:
        entry = self._entry(answer, asked, detail=self.verdict(answer.value))
        if not filed:
            self._file_evidence(asked, answer)
        asked.emit(_event(entry))
        return {**self.update(answer.value, asked.state), REPORT_KEY: [entry]}

    def _file_evidence(self, asked: _Asking, answer: Answer | None) -> None:
        """What this run tells the router about answers' quality (:mod:`.feedback`).

        A rerun producer files an escalation (0) for the answer it replaces, whether or
        not the rerun finds a model; a producer that will be judged keeps its prompt's
        features. (Judges file their verdict in :meth:`JudgeNode._file_evidence`.)
        """
        ledger = self.answerer.ledger
        if ledger is None:
            return
        q = asked.question
        if asked.escalation > 0:
            replaced = latest_entry(_report(asked.state), self.node, asked.step)
            record_escalation(ledger, replaced, **_run_ids(q.config))
        if answer is not None and self.keep_features:
            keep_features(ledger, answer.call_id, q.operation, q.messages)

    def _failed(
        self, asked: _Asking, exc: NoModelAvailable, *, filed: bool = False
    ) -> dict[str, Any]:
        """An escalation that found no model keeps the earlier answer; a first run raises.

        A first run has nothing to fall back on: the error reaches the caller and the
        checkpoint keeps the work of the nodes that finished.
        """
        if asked.escalation == 0:
            raise exc
        entry = self._entry(None, asked, detail=str(exc).splitlines()[0],
                            attempts=[a.describe() for a in exc.attempts])
        if not filed:
            self._file_evidence(asked, None)
        asked.emit({**_event(entry), "status": "failed"})
        return {REPORT_KEY: [entry]}

    def _entry(
        self,
        answer: Answer | None,
        asked: _Asking,
        *,
        detail: str = "",
        attempts: list[str] | None = None,
    ) -> ReportEntry:
        floor = asked.question.min_tier
        return ReportEntry(
            node=self.node, operation=self.operation.value, step=asked.step,
            status="ok" if answer is not None else "failed",
            model=answer.model if answer else None,
            provider=answer.provider if answer else None,
            tier=answer.tier if answer else None,
            min_tier=floor.value if floor else None, escalation=asked.escalation,
            input_tokens=answer.input_tokens if answer else 0,
            output_tokens=answer.output_tokens if answer else 0,
            cost=answer.cost if answer else 0.0,
            latency=round(time.perf_counter() - asked.started, 4),
            attempts=list(answer.attempts) if answer else (attempts or []), detail=detail,
            call_id=answer.call_id if answer else "",
            ensemble=answer.ensemble if answer else "",
        )


class JudgeNode(OperationNode):
    """A node judging other nodes' output (structure, quality) for a task.

    It reads the task first, then the state keys it judges; when their producer is rerun
    on a higher tier, a judge judges again on its own tier (it never escalates). Given
    its ``producer`` (the node whose output it judges), it files its verdict on the
    producer's latest answer in the ledger as quality evidence (:meth:`evidence`).
    """

    max_tokens = 80
    judge = True
    combine = "vote"

    def __init__(
        self,
        model: ModelLike | None,
        *,
        name: str,
        reads: Sequence[str],
        writes: Sequence[str],
        producer: str | None = None,
    ) -> None:
        """Bind the judge to its model, its state keys and the producer it judges."""
        super().__init__(model, name=name, reads=reads, writes=writes)
        self.producer = producer

    def evidence(self, value: Any) -> float | None:
        """The verdict ``value`` as a score in [0, 1] for the judged answer (``None``: none)."""
        return None

    def _file_evidence(self, asked: _Asking, answer: Answer | None) -> None:
        """The verdict on the producer's latest answer in this scope, once per judgement."""
        ledger = self.answerer.ledger
        if ledger is None or answer is None or self.producer is None:
            return
        score = self.evidence(answer.value)
        if score is None:
            return
        judged = latest_entry(_report(asked.state), self.producer, asked.step)
        record_judgement(ledger, judged, score, detail=self.verdict(answer.value),
                         **_run_ids(asked.question.config))  # fmt: skip

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The task and the output being judged."""
        task, *subject = self.reads
        return {"task": render(state[task]), "subject": render_keys(state, subject) or "(empty)"}


def _event(entry: ReportEntry) -> dict[str, Any]:
    """The progress event for a finished node (the ``custom`` stream)."""
    return {
        "node": entry["node"], "operation": entry["operation"], "step": entry["step"],
        "status": "done", "model": entry["model"], "tier": entry["tier"],
        "latency": entry["latency"], "cost": entry["cost"], "escalation": entry["escalation"],
    }


def _report(state: Mapping[str, Any]) -> Sequence[ReportEntry]:
    return cast(Sequence[ReportEntry], state.get(REPORT_KEY) or ())


def _run_ids(config: RunnableConfig) -> dict[str, str | None]:
    """The run and thread an outcome belongs to, read as the router files the call."""
    return {"run_id": config_value(config, "run_id"),
            "thread_id": config_value(config, "thread_id")}


def _run_config(config: RunnableConfig, state: Mapping[str, Any]) -> RunnableConfig:
    """The node's run config with the run id the router charges run budgets to.

    A run is a thread when the caller gave one (a resumed run keeps its budget), else the
    ``run_id`` in the state, if any.
    """
    configurable = config.get("configurable", {})
    run_id = state.get("run_id") or configurable.get("thread_id")
    if run_id is None:
        return config
    return {**config, "metadata": {**config.get("metadata", {}), "run_id": str(run_id)}}
