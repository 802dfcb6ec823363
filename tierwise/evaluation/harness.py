"""The eval runner: an operation's node over a gold set, on each model, as quality evidence.

For every model, every item not yet evaluated (``EvidenceStore.done`` — so an
interrupted run resumes) runs through the operation's real node in a one-node graph,
with a run context that pins the operation to that model and lets a call wait for a
rate-limit permit (an eval would rather wait than skip). The answer is scored
(:mod:`tierwise.evaluation.scoring`) and stored at once as an ``eval``
:class:`~tierwise.ledger.evidence.Outcome` naming the call, the data set and the item,
plus the call's hashed prompt features for the learned router. The router records the
call itself (tokens, cost, latency) in the ledger, so the report's cost and latency are
read back from there by ``call_id`` and cover resumed items too.

What counts as evidence: an answer (right or wrong), and a model's *invalid output* —
schema-invalid, empty, truncated or refused, which is bad quality (score 0). A call that
never produced an answer for other reasons (rate limit, quota, timeout, 5xx, auth,
context overflow, budget, the model being unavailable) says nothing about quality: it
is counted as a failure in the report, not stored, and the item is retried next run.

Items of one model run concurrently (``concurrency``, default 4) on hosted models; the
embedded model runs one at a time (one at a time keeps the progress honest).
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Protocol

from langchain_core.messages import BaseMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field, create_model
from typing_extensions import TypedDict

from tierwise.catalog.policy import Policy, PolicyMode
from tierwise.catalog.specs import Complexity, Provider, TaskType, Tier
from tierwise.evaluation.datasets import EvalItem, EvalSet
from tierwise.evaluation.scoring import Score, score
from tierwise.guards.budget import BudgetExceeded
from tierwise.ledger import Ledger, percentile
from tierwise.ledger.evidence import EVAL, EvidenceStore, Outcome, interval
from tierwise.nodes.base import OperationNode, ReportEntry
from tierwise.nodes.classification import classification_node
from tierwise.nodes.context import RunContext
from tierwise.nodes.feedback import keep_features
from tierwise.nodes.parameter_extraction import parameter_extraction_node
from tierwise.nodes.tool_use_formatting import tool_use_formatting_node
from tierwise.providers.failures import FailureKind
from tierwise.routing.results import NoModelAvailable
from tierwise.routing.router import ModelRouter

__all__ = [
    "EVALUATED",
    "EvalReport",
    "ItemResult",
    "ModelSummary",
    "Progress",
    "aevaluate",
    "default_models",
    "evaluate",
    "evaluation_policy",
]

#: Operations with a gold-label metric and a loader.
EVALUATED = (TaskType.CLASSIFICATION, TaskType.PARAMETER_EXTRACTION,
             TaskType.TOOL_USE_FORMATTING)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item on one model in this run.

    Attributes:
        item: The item's id.
        model: Catalog key.
        score: The verdict in [0, 1]; ``None`` when the call said nothing about quality
            (see the module doc) and nothing was stored.
        detail: What was compared, or why there is no verdict.
        call_id: The routed call (ledger ``attempts.call_id``), when known.
        cost: USD of the call.
        latency: Seconds the call took.
        failure: The ``FailureKind`` value when the model gave no valid answer.
    """

    item: str
    model: str
    score: float | None
    detail: str
    call_id: str | None = None
    cost: float = 0.0
    latency: float = 0.0
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model's numbers over the sample: quality, cost, latency, failures.

    ``n``, the mean and the 95 % Wilson interval cover every stored verdict on the
    sample's items (earlier runs' included); cost and latency cover the calls behind
    them; ``failures`` are this run's items without a verdict.
    """

    model: str
    n: int
    mean: float | None
    low: float
    high: float
    cost: float
    p50_latency: float | None
    p95_latency: float | None
    failures: int
    recorded: int
    resumed: int

    @property
    def cost_per_item(self) -> float | None:
        """USD per evaluated item."""
        return self.cost / self.n if self.n else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {
            "model": self.model, "n": self.n, "score": self.mean,
            "interval": [self.low, self.high], "cost": self.cost,
            "cost_per_item": self.cost_per_item, "p50_latency": self.p50_latency,
            "p95_latency": self.p95_latency, "failures": self.failures,
            "recorded": self.recorded, "resumed": self.resumed,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class EvalReport:
    """The result of one eval: the data set, its sample size and a summary per model."""

    dataset: str
    operation: TaskType
    items: int
    models: tuple[ModelSummary, ...]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report (what ``tierwise eval --json`` prints)."""
        return {
            "dataset": self.dataset, "operation": self.operation.value, "items": self.items,
            "seconds": round(self.seconds, 3), "models": [m.as_dict() for m in self.models],
        }


class Progress(Protocol):
    """What the runner tells a progress display."""

    def start(self, model: str, total: int, resumed: int) -> None:
        """``model`` begins: ``total`` items in the sample, ``resumed`` already done."""

    def advance(self, result: ItemResult) -> None:
        """One item finished."""

    def finish(self, model: str) -> None:
        """``model`` is done."""


class _EvalState(TypedDict, total=False):
    """The keys the three evaluated nodes read and write."""

    instruction: str
    task: str
    parameters: Any
    classification: Any
    complexity: str
    tool_call: Any
    report: Annotated[list[ReportEntry], operator.add]


# ----------------------------------------------------------------- models and policy


def default_models(router: ModelRouter, operation: TaskType,
                   policy: Policy | None = None) -> list[str]:
    """The models routing would use for ``operation`` now: the policy's chain, available.

    Paid models are included only when the policy allows paid calls: an eval of the
    default chain never spends what routing would not (name them with ``models`` to).
    """
    chain = router.selector.candidates(
        operation, Complexity.MODERATE, policy or router.policy, router.snapshot(),
        needs_tools=operation is TaskType.TOOL_USE_FORMATTING,
    )
    return [spec.key for spec in chain]


def evaluation_policy(base: Policy, operation: TaskType, model: str) -> Policy:
    """A policy that answers ``operation`` with ``model`` only, keeping ``base``'s cost caps.

    The tier cap is lifted (every tier allowed) because choosing the model is the
    caller's explicit consent; the per-call, per-day and per-provider caps still hold.
    """
    return Policy(
        mode=PolicyMode.QUALITY_FIRST, max_tier=Tier.PAID,
        max_cost_per_call=base.max_cost_per_call, max_cost_per_day=base.max_cost_per_day,
        max_cost_per_provider_per_day=base.max_cost_per_provider_per_day,
    ).pinned(operation, model)


# ----------------------------------------------------------------- nodes


@lru_cache(maxsize=64)
def _slots_schema(intent: str, slots: tuple[str, ...]) -> type[BaseModel]:
    """Optional string fields named after ``intent``'s slots: the schema a model fills."""
    fields: dict[str, Any] = {
        slot: (str | None, Field(None, description=f"The {slot.replace('_', ' ')}, if the "
                                 "text gives one, as the text gives it."))
        for slot in slots
    }  # fmt: skip
    model: type[BaseModel] = create_model(f"{intent}Slots", **fields)
    return model


def _node(router: ModelRouter, data: EvalSet, item: EvalItem) -> OperationNode:
    """The operation's node for ``item`` (label set, slot schema or tools from the set)."""
    if data.operation is TaskType.CLASSIFICATION:
        return classification_node(router, labels=data.labels)
    if data.operation is TaskType.PARAMETER_EXTRACTION:
        slots = tuple(item.setup.get("slots", ()))
        schema = _slots_schema(str(item.setup.get("intent", "Text")), slots) if slots else None
        return parameter_extraction_node(router, schema=schema, context_key=None)
    if data.operation is TaskType.TOOL_USE_FORMATTING:
        return tool_use_formatting_node(router, tools=list(item.setup.get("tools", ())))
    raise ValueError(f"tierwise eval has no metric for {data.operation.value}")


def _graph(node: OperationNode) -> CompiledStateGraph[Any, Any, Any, Any]:
    """``START -> node -> END``: nodes read their run context from LangGraph's runtime."""
    name = node.node
    graph = StateGraph(_EvalState, context_schema=RunContext)
    graph.add_node(name, node)
    graph.add_edge(START, name)
    graph.add_edge(name, END)
    return graph.compile(name=f"eval_{name}")


# ----------------------------------------------------------------- one item


class _Runner:
    """Runs one model over the pending items of one data set."""

    def __init__(self, router: ModelRouter, evidence: EvidenceStore, data: EvalSet,
                 model: str, *, features: bool, max_wait: float) -> None:
        self.router = router
        self.evidence = evidence
        self.data = data
        self.model = model
        self.policy = evaluation_policy(router.policy, data.operation, model)
        self.features = features
        self.max_wait = max_wait
        self.stopped: str | None = None
        self._nodes: dict[Any, tuple[OperationNode, CompiledStateGraph[Any, Any, Any, Any]]]
        self._nodes = {}

    def _node_for(
        self, item: EvalItem
    ) -> tuple[OperationNode, CompiledStateGraph[Any, Any, Any, Any]]:
        key: Any = item.id
        if self.data.operation is TaskType.CLASSIFICATION:
            key = None
        elif self.data.operation is TaskType.PARAMETER_EXTRACTION:
            key = item.setup.get("intent")
        found = self._nodes.get(key)
        if found is None:
            node = _node(self.router, self.data, item)
            found = self._nodes[key] = (node, _graph(node))
        return found

    async def run(self, item: EvalItem) -> ItemResult:
        """Ask, score, store; never raises for a model's failure."""
        if self.stopped:
            return ItemResult(item.id, self.model, None, self.stopped, failure="stopped")
        node, graph = self._node_for(item)
        state = dict(item.inputs)
        messages = node.prompt.format_messages(**node.inputs(state))
        started = time.perf_counter()
        try:
            context = RunContext(policy=self.policy, max_wait=self.max_wait)
            out = await graph.ainvoke(state, context=context)
        except BudgetExceeded as exc:
            self.stopped = f"budget: {str(exc).splitlines()[0]}"
            return ItemResult(item.id, self.model, None, self.stopped,
                              failure=FailureKind.BUDGET_EXCEEDED.value)
        except NoModelAvailable as exc:  # it stores a verdict: the ledger, off the loop
            latency = time.perf_counter() - started
            return await asyncio.to_thread(self._failed, item, exc, messages, latency)
        entry = out["report"][-1]
        call_id = entry.get("call_id") or None
        value, cost, latency = out.get(node.writes[0]), entry["cost"], entry["latency"]
        verdict = score(node.operation, value, item.gold, item.setup)
        await asyncio.to_thread(self._store, item, verdict, call_id, messages)
        return ItemResult(item.id, self.model, verdict.value, verdict.detail, call_id,
                          cost, latency)

    def _failed(self, item: EvalItem, exc: NoModelAvailable, messages: list[BaseMessage],
                latency: float) -> ItemResult:
        call_id = exc.call_id or None
        sent = [a for a in exc.attempts if a.sent and a.failure is not None]
        last = sent[-1] if sent else (exc.attempts[-1] if exc.attempts else None)
        kind = last.failure if last is not None and last.failure else FailureKind.UNAVAILABLE
        detail = last.describe() if last is not None else str(exc).splitlines()[0]
        cost = sum(a.cost for a in exc.attempts)
        if kind is FailureKind.INVALID_OUTPUT:
            verdict = Score(0.0, f"invalid output: {last.detail if last else ''}"[:200])
            self._store(item, verdict, call_id, messages)
            return ItemResult(item.id, self.model, 0.0, verdict.detail, call_id, cost,
                              latency, kind.value)
        return ItemResult(item.id, self.model, None, detail[:200], call_id, cost, latency,
                          kind.value)

    def _store(self, item: EvalItem, verdict: Score, call_id: str | None,
               messages: list[BaseMessage]) -> None:
        self.evidence.record([Outcome(
            self.data.operation.value, self.model, verdict.value, EVAL, call_id=call_id,
            dataset=self.data.name, item=item.id, detail=verdict.detail,
        )])  # fmt: skip
        if self.features and call_id:
            keep_features(self.router.ledger, call_id, self.data.operation, messages)


# ----------------------------------------------------------------- the eval


async def aevaluate(
    data: EvalSet,
    *,
    router: ModelRouter,
    models: Sequence[str] | None = None,
    concurrency: int = 4,
    progress: Progress | None = None,
    features: bool = True,
    max_wait: float = 10.0,
) -> EvalReport:
    """Evaluate ``data`` on each of ``models`` and store the verdicts in the router's ledger.

    Args:
        data: The (sampled) data set.
        router: Routes the calls; its ledger holds the attempts and the evidence.
        models: Catalog keys (default: :func:`default_models`).
        concurrency: Items in flight per hosted model (the embedded model: one).
        progress: Told about each model and item.
        features: Also store each call's hashed prompt features (learned router).
        max_wait: Seconds a call may wait for a rate-limit permit (the run context's
            ``max_wait``): an eval would rather wait than skip an item.

    Returns:
        One :class:`ModelSummary` per model, over every stored verdict of the sample.

    Raises:
        ValueError: the router has no ledger, or a model is not in the catalog.
    """
    ledger = router.ledger
    if ledger is None:
        raise ValueError("tierwise eval stores its evidence in the ledger: give the router one")
    chosen = list(models) if models else default_models(router, data.operation)
    catalog = router.settings.catalog.models
    unknown = [m for m in chosen if m not in catalog]
    if unknown:
        raise ValueError(f"unknown catalog model(s): {', '.join(unknown)}")
    started = time.perf_counter()
    summaries = []
    for model in chosen:
        evidence = await asyncio.to_thread(lambda: ledger.evidence)  # the ledger: off the loop
        done = await asyncio.to_thread(evidence.done, data.name, data.operation.value, model)
        pending = [item for item in data.items if item.id not in done]
        resumed = len(data.items) - len(pending)
        if progress is not None:
            progress.start(model, len(data.items), resumed)
        runner = _Runner(router, evidence, data, model, features=features,
                         max_wait=max_wait)
        bound = 1 if catalog[model].provider is Provider.EMBEDDED else max(1, concurrency)
        results = await _run_all(runner, pending, bound, progress)
        if progress is not None:
            progress.finish(model)
        summaries.append(await asyncio.to_thread(_summary, ledger, data, model, results, resumed))
    return EvalReport(data.name, data.operation, len(data.items), tuple(summaries),
                      time.perf_counter() - started)


def evaluate(data: EvalSet, *, router: ModelRouter, models: Sequence[str] | None = None,
             concurrency: int = 4, progress: Progress | None = None,
             features: bool = True, max_wait: float = 10.0) -> EvalReport:
    """Sync :func:`aevaluate`.

    Example:
        >>> from tierwise.evaluation.datasets import EvalItem, EvalSet
        >>> empty = EvalSet("none", TaskType.CLASSIFICATION, (), ("a", "b"))
        >>> callable(evaluate) and len(empty)
        0
    """
    return asyncio.run(aevaluate(data, router=router, models=models, concurrency=concurrency,
                                 progress=progress, features=features, max_wait=max_wait))


async def _run_all(runner: _Runner, items: Sequence[EvalItem], bound: int,
                   progress: Progress | None) -> list[ItemResult]:
    """Run ``items`` with at most ``bound`` in flight; each is stored as it finishes."""
    gate = asyncio.Semaphore(bound)
    results: list[ItemResult] = []

    async def one(item: EvalItem) -> ItemResult:
        async with gate:
            return await runner.run(item)

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    try:
        for finished in asyncio.as_completed(tasks):
            result = await finished
            results.append(result)
            if progress is not None:
                progress.advance(result)
    finally:
        for task in tasks:
            task.cancel()
    return results


def _summary(ledger: Ledger, data: EvalSet, model: str, results: Sequence[ItemResult],
             resumed: int) -> ModelSummary:
    """Numbers over every stored verdict on the sample's items, calls read from the ledger."""
    ids = {item.id for item in data.items}
    outcomes = {
        o.item: o
        for o in ledger.evidence.outcomes(operation=data.operation.value, model=model,
                                          source=EVAL, dataset=data.name)
        if o.item in ids
    }  # fmt: skip
    n = len(outcomes)
    total = sum(o.score for o in outcomes.values())
    low, high = interval(total, n)
    calls: dict[str, tuple[float, float]] = {}
    call_ids = {o.call_id for o in outcomes.values() if o.call_id}
    if call_ids:
        since = min(o.time for o in outcomes.values()) - 3600.0
        for row in ledger.rows(since=since, operation=data.operation.value):
            if row.call_id in call_ids:
                cost, latency = calls.get(row.call_id, (0.0, 0.0))
                calls[row.call_id] = (cost + row.cost, latency + row.latency)
    per_item = {item: calls[o.call_id] for item, o in outcomes.items() if o.call_id in calls}
    for r in results:  # this run's own numbers where the ledger has none (failures too)
        per_item.setdefault(r.item, (r.cost, r.latency))
    latencies = sorted(latency for item, (_, latency) in per_item.items() if item in outcomes)
    return ModelSummary(
        model=model, n=n, mean=total / n if n else None, low=low, high=high,
        cost=sum(cost for cost, _ in per_item.values()),
        p50_latency=percentile(latencies, 0.5), p95_latency=percentile(latencies, 0.95),
        failures=sum(1 for r in results if r.score is None), recorded=sum(
            1 for r in results if r.score is not None), resumed=resumed,
    )

