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
"""

from __future__ import annotations

import json
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

from tierwise.nodes.context import RunContext
from tierwise.routing.catalog import Complexity, TaskType, Tier
from tierwise.routing.policy import OperationOverride, Policy
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
    "render",
    "render_keys",
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


@dataclass(frozen=True, slots=True)
class Answer:
    """A parsed answer and its provenance, whichever kind of model gave it."""

    value: Any
    message: AIMessage
    model: str
    provider: str
    tier: str
    attempts: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    cost: float


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

    def policy(self, context: RunContext, operation: TaskType) -> Policy:
        policy = context.policy or self.router.policy
        if self.pin is None:
            return policy
        operations = {**policy.operations, operation: OperationOverride(pin=self.pin)}
        return policy.model_copy(update={"operations": operations})

    def _kwargs(self, q: Question) -> dict[str, Any]:
        return {
            "schema": q.schema, "tools": q.tools, "tool_choice": "any" if q.tools else None,
            "complexity": q.complexity, "policy": q.policy, "min_tier": q.min_tier,
            "max_tokens": q.max_tokens, "config": q.config,
        }

    def answer(self, q: Question) -> Answer:
        return _routed_answer(self.router.invoke(q.operation, q.messages, **self._kwargs(q)))

    async def aanswer(self, q: Question) -> Answer:
        result = await self.router.ainvoke(q.operation, q.messages, **self._kwargs(q))
        return _routed_answer(result)


def _routed_answer(result: RoutedResult) -> Answer:
    return Answer(
        value=result.value, message=result.message, model=result.model,
        provider=result.provider.value, tier=result.tier.value,
        attempts=tuple(a.describe() for a in result.attempts),
        input_tokens=result.input_tokens, output_tokens=result.output_tokens,
        cost=result.cost,
    )


class _Plain:
    """Answers with one chat model: no routing, no fallback, no tiers."""

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

    ``None`` is a router over the loaded settings; a string is a catalog key that the
    default router pins for this node's operation.
    """
    if isinstance(model, ModelRouter):
        return _Routed(model)
    if isinstance(model, BaseChatModel):
        return _Plain(model)
    router = ModelRouter()
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
            return self._failed(asked, exc)
        return self._answered(asked, answer)

    def _ask(
        self, state: Mapping[str, Any], config: RunnableConfig | None
    ) -> _Asking | dict[str, Any]:
        """The question for this run of the node, or the update when it need not ask."""
        skipped = self.skip(state)
        if skipped is not None:
            return skipped
        runtime = get_runtime(RunContext)
        context = runtime.context if isinstance(runtime.context, RunContext) else RunContext()
        report = cast(Sequence[ReportEntry], state.get(REPORT_KEY) or ())
        step = cast(int | None, state.get("step"))
        floor = None if self.judge else escalation_floor(report, self.node, step)
        asked = _Asking(
            question=Question(
                operation=self.operation,
                messages=self.prompt.format_messages(**self.inputs(state)),
                schema=self.schema, tools=self.tools,
                complexity=Complexity(state.get("complexity") or Complexity.MODERATE),
                policy=self.answerer.policy(context, self.operation), min_tier=floor,
                max_tokens=self.max_tokens, config=_run_config(config or {}, state),
            ),
            state=state, step=step,
            escalation=0 if self.judge else runs_of(report, self.node, step),
            emit=runtime.stream_writer, started=time.perf_counter(),
        )
        asked.emit({"node": self.node, "operation": self.operation.value, "step": step,
                    "status": "started", "min_tier": floor.value if floor else None})
        return asked

    def _answered(self, asked: _Asking, answer: Answer) -> dict[str, Any]:
        entry = self._entry(answer, asked, detail=self.verdict(answer.value))
        asked.emit(_event(entry))
        return {**self.update(answer.value, asked.state), REPORT_KEY: [entry]}

    def _failed(self, asked: _Asking, exc: NoModelAvailable) -> dict[str, Any]:
        """An escalation that found no model keeps the earlier answer; a first run raises.

        A first run has nothing to fall back on: the error reaches the caller and the
        checkpoint keeps the work of the nodes that finished.
        """
        if asked.escalation == 0:
            raise exc
        entry = self._entry(None, asked, detail=str(exc).splitlines()[0],
                            attempts=[a.describe() for a in exc.attempts])
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
        )


class JudgeNode(OperationNode):
    """A node judging other nodes' output (structure, quality) for a task.

    It reads the task first, then the state keys it judges; when their producer is rerun
    on a higher tier, a judge judges again on its own tier (it never escalates).
    """

    max_tokens = 80
    judge = True

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


def render(value: Any) -> str:
    """A state value as prompt text: pydantic models and containers as compact JSON."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=True)
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def render_keys(state: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``key: value`` lines for the ``keys`` present in ``state``."""
    return "\n".join(f"{k}: {render(state[k])}" for k in keys if state.get(k) is not None)
