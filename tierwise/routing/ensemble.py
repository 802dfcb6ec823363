"""Ensembles: one operation answered by several models in parallel, the answers combined.

An ensemble (:class:`~tierwise.catalog.policy.EnsembleSpec`) names its members; each is
asked through the router *pinned* to it, so a member gets everything a routed call gets
(rate-limit permits, budget caps, circuit breakers, schema validation, one repair) and
nothing else — no fallback to a model outside the ensemble. All members run at once and
share one ``call_id``, so the ledger files their attempts as one routed result.

Members that find no model (:class:`NoModelAvailable`) are left out of the combination,
but their attempts stay in the result (they were made, and may have cost money). The
combiner picks the winner among the members that answered:

* :func:`majority_vote` — the most common answer by a key (for pydantic values, their
  label field(s) as JSON); a tie goes to the earliest member, i.e. the policy's order;
* :func:`best_score` — the answer a judge scores highest (0-10). The judge is passed in:
  routing knows no prompts, so a node layer builds it (a ``quality_scoring`` call).

The result is one :class:`EnsembleResult`: a :class:`RoutedResult` whose value, message
and model are the winner's, whose attempts are every member's (in member order), and
which says how it was decided (:meth:`EnsembleResult.describe`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ContextThreadPoolExecutor
from pydantic import BaseModel

from tierwise.catalog.policy import EnsembleSpec, Policy
from tierwise.catalog.specs import Complexity, TaskType
from tierwise.guards.budget import BudgetExceeded
from tierwise.ledger import Attempt
from tierwise.routing.results import (
    NoModelAvailable,
    RoutedResult,
)
from tierwise.routing.router import ModelRouter
from tierwise.routing.tokens import Schema

__all__ = [
    "BestScore",
    "Choice",
    "Combiner",
    "EnsembleResult",
    "Judge",
    "MajorityVote",
    "Member",
    "Scored",
    "SyncJudge",
    "aensemble",
    "answer_key",
    "best_score",
    "ensemble",
    "field_key",
    "majority_vote",
]


@dataclass(frozen=True, slots=True)
class Scored:
    """A judge's score (0-10) and the attempts the judging took (they cost too)."""

    score: float
    attempts: tuple[Attempt, ...] = ()


#: Scores a candidate answer 0-10 (a plain number, or :class:`Scored` with its attempts).
#: Raising :class:`NoModelAvailable` means "could not judge": the candidate ranks last.
Judge = Callable[[RoutedResult], Awaitable[float | Scored]]
#: The synchronous :data:`Judge`, for :func:`ensemble`.
SyncJudge = Callable[[RoutedResult], float | Scored]


@dataclass(frozen=True, slots=True)
class Member:
    """How one member fared: its answer (``None``: it failed), its attempts and its note.

    ``note`` is its vote key or judge score, or why it failed; ``won`` marks the winner.
    """

    model: str
    result: RoutedResult | None
    attempts: tuple[Attempt, ...]
    note: str = ""
    won: bool = False
    #: The cost cap that refused it, when that is why it failed.
    refusal: BudgetExceeded | None = None

    @property
    def ok(self) -> bool:
        """True when the member answered."""
        return self.result is not None


@dataclass(frozen=True, slots=True)
class Choice:
    """A combiner's decision over the answers it was given."""

    #: Index of the winner among the answers.
    index: int
    #: Per answer, what the combiner saw in it (its vote key, its score).
    notes: tuple[str, ...]
    #: The decision in a few words (``"2 of 3 votes"``, ``"score 8"``).
    summary: str
    #: Attempts the decision itself made (judge calls).
    attempts: tuple[Attempt, ...] = ()


class Combiner(Protocol):
    """Picks the winning answer; ``answers`` are the members that answered, in order."""

    @property
    def name(self) -> str:
        """What the result calls the decision (``vote``, ``best_score``)."""
        ...

    def choose(self, answers: Sequence[RoutedResult]) -> Choice:
        """Decide synchronously."""
        ...

    async def achoose(self, answers: Sequence[RoutedResult]) -> Choice:
        """Decide without blocking the event loop."""
        ...


# --------------------------------------------------------------------------- vote


def answer_key(value: Any) -> str:
    """The whole answer as a comparable string: its tool calls or text, or pydantic JSON.

    A message (no schema) compares by what it says, not by its ids and metadata.
    """
    if isinstance(value, AIMessage):
        if value.tool_calls:
            calls = [{"name": c["name"], "args": c["args"]} for c in value.tool_calls]
            return json.dumps(calls, sort_keys=True, default=str)
        return value.text.strip()
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def field_key(*fields: str) -> Callable[[Any], str]:
    """A vote key of only ``fields`` of a pydantic answer (e.g. a classification's label).

    Answers that agree on the label but word their other fields differently then count
    as the same vote. A value without those fields falls back to :func:`answer_key`.
    """

    def key(value: Any) -> str:
        if not isinstance(value, BaseModel) or isinstance(value, AIMessage):
            return answer_key(value)
        dumped = value.model_dump(mode="json")
        if not all(f in dumped for f in fields):
            return answer_key(value)
        return json.dumps({f: dumped[f] for f in fields}, sort_keys=True)

    return key


@dataclass(frozen=True, slots=True)
class MajorityVote:
    """The most common answer by ``key``; a tie goes to the earliest member."""

    key: Callable[[Any], str] = answer_key
    name: str = "vote"

    def choose(self, answers: Sequence[RoutedResult]) -> Choice:
        """Count the keys; the winner is the first member holding the top key."""
        keys = [self.key(a.value) for a in answers]
        counts = Counter(keys)  # insertion order = first appearance = member order
        top = max(counts, key=lambda k: counts[k])
        return Choice(keys.index(top), tuple(keys),
                      f"{counts[top]} of {len(keys)} votes")  # fmt: skip

    async def achoose(self, answers: Sequence[RoutedResult]) -> Choice:
        """Counting needs no I/O."""
        return self.choose(answers)


def majority_vote(key: Callable[[Any], str] = answer_key) -> MajorityVote:
    """A combiner keeping the most common answer by ``key`` (ties: the earliest member).

    Example:
        >>> majority_vote(field_key("label")).name
        'vote'
    """
    return MajorityVote(key)


# --------------------------------------------------------------------------- best score


@dataclass(frozen=True, slots=True)
class BestScore:
    """The answer the judge scores highest; a tie goes to the earliest member.

    A candidate the judge could not score (it raised :class:`NoModelAvailable`) ranks
    below every scored one; when none could be scored the earliest member wins, as it
    would have without an ensemble.
    """

    judge: Judge | None = None
    sync_judge: SyncJudge | None = None
    name: str = "best_score"

    def choose(self, answers: Sequence[RoutedResult]) -> Choice:
        """Judge every candidate in parallel threads, then pick."""
        judge = self.sync_judge
        if judge is None:
            raise TypeError("best_score needs a sync_judge to combine synchronously")
        if len(answers) == 1:
            return _ONLY
        with ContextThreadPoolExecutor(max_workers=len(answers)) as pool:
            scored = list(pool.map(lambda a: _sync_verdict(judge, a), answers))
        return _ranked(scored)

    async def achoose(self, answers: Sequence[RoutedResult]) -> Choice:
        """Judge every candidate concurrently, then pick."""
        judge = self.judge
        if judge is None:
            raise TypeError("best_score needs an async judge to combine asynchronously")
        if len(answers) == 1:
            return _ONLY
        scored = await asyncio.gather(*(_async_verdict(judge, a) for a in answers))
        return _ranked(list(scored))


def best_score(judge: Judge | None = None, *, sync_judge: SyncJudge | None = None) -> BestScore:
    """A combiner keeping the answer ``judge`` scores highest (0-10).

    ``judge`` serves :func:`aensemble`, ``sync_judge`` serves :func:`ensemble`; give the
    one(s) your code path needs. A lone surviving answer is not judged (nothing to
    compare it with).

    Example:
        >>> async def length(result):
        ...     return min(10.0, len(str(result.value)) / 10)
        >>> best_score(length).name
        'best_score'
    """
    return BestScore(judge, sync_judge)


def _as_scored(verdict: float | Scored) -> Scored:
    return verdict if isinstance(verdict, Scored) else Scored(float(verdict))


def _sync_verdict(judge: SyncJudge, answer: RoutedResult) -> Scored | NoModelAvailable:
    try:
        return _as_scored(judge(answer))
    except NoModelAvailable as exc:
        return exc


async def _async_verdict(judge: Judge, answer: RoutedResult) -> Scored | NoModelAvailable:
    try:
        return _as_scored(await judge(answer))
    except NoModelAvailable as exc:
        return exc


#: A lone surviving answer wins unjudged.
_ONLY = Choice(0, ("not judged",), "the only answer")


def _ranked(scored: Sequence[Scored | NoModelAvailable]) -> Choice:
    """The first candidate with the top score (unscored ones rank last)."""
    scores = [s.score if isinstance(s, Scored) else None for s in scored]
    attempts = tuple(a for s in scored for a in s.attempts)
    notes = tuple(f"score {s:g}" if s is not None else "not scored" for s in scores)
    known = [s for s in scores if s is not None]
    if not known:
        return Choice(0, notes, "no answer could be scored", attempts)
    top = max(known)
    return Choice(scores.index(top), notes, f"score {top:g}", attempts)


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True, kw_only=True)
class EnsembleResult(RoutedResult):
    """The winning member's answer, every member's attempts, and how it was decided.

    ``attempts`` are the members' (in member order); ``judging`` the combiner's own
    calls (a judge's). Cost and tokens count both: they are what the answer cost.
    """

    combiner: str
    members: tuple[Member, ...]
    summary: str
    judging: tuple[Attempt, ...] = field(default=())

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over every member's and the judge's attempts."""
        return sum(a.input_tokens for a in (*self.attempts, *self.judging))

    @property
    def output_tokens(self) -> int:
        """Completion tokens over every member's and the judge's attempts."""
        return sum(a.output_tokens for a in (*self.attempts, *self.judging))

    @property
    def cost(self) -> float:
        """USD over every member's and the judge's attempts, failed ones included."""
        return sum(a.cost for a in (*self.attempts, *self.judging))

    def describe(self) -> str:
        """One line: ``vote (2 of 3 votes): *a {"label":"x"}; b {"label":"x"}; c failed``."""
        parts = [f"{'*' if m.won else ''}{m.model} {m.note}".rstrip() for m in self.members]
        return f"{self.combiner} ({self.summary}): {'; '.join(parts)}"

    def provenance(self) -> dict[str, Any]:
        """:meth:`RoutedResult.provenance` plus the ensemble's decision and judge attempts."""
        return {
            **RoutedResult.provenance(self),
            "ensemble": self.describe(),
            "judging": [a.describe() for a in self.judging],
        }


# --------------------------------------------------------------------------- running




@dataclass(frozen=True, slots=True)
class _Call:
    """What every member is asked, and how."""

    operation: TaskType
    messages: LanguageModelInput
    kwargs: dict[str, Any]
    policy: Policy
    call_id: str


def _prepare(
    router: ModelRouter,
    operation: TaskType | str,
    messages: LanguageModelInput,
    models: Sequence[str] | EnsembleSpec,
    policy: Policy | None,
    call_id: str | None,
    kwargs: dict[str, Any],
) -> tuple[_Call, tuple[str, ...]]:
    members = tuple(models.models if isinstance(models, EnsembleSpec) else models)
    if len(members) < 2 or len(set(members)) != len(members):
        raise ValueError(f"an ensemble needs two or more distinct models, got {members!r}")
    known = router.settings.catalog.models
    unknown = [m for m in members if m not in known]
    if unknown:  # a configuration error, not a member failing to answer
        raise ValueError(f"unknown ensemble model(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    call = _Call(TaskType(operation), messages, kwargs, policy or router.policy,
                 call_id or uuid.uuid4().hex)  # fmt: skip
    return call, members


def _failed(model: str, exc: NoModelAvailable | BudgetExceeded) -> Member:
    why = str(exc).splitlines()[0]
    if isinstance(exc, NoModelAvailable):  # "no model could answer <op>: <reason>"
        return Member(model, None, exc.attempts, f"failed: {why.split(': ', 1)[-1]}")
    return Member(model, None, (), f"failed: {why}", refusal=exc)


def _run_sync(router: ModelRouter, call: _Call, model: str) -> Member:
    policy = call.policy.pinned(call.operation, model)
    try:
        result = router.invoke(call.operation, call.messages, policy=policy,
                               call_id=call.call_id, **call.kwargs)  # fmt: skip
    except (NoModelAvailable, BudgetExceeded) as exc:
        return _failed(model, exc)
    return Member(model, result, result.attempts)


async def _run_async(router: ModelRouter, call: _Call, model: str) -> Member:
    policy = call.policy.pinned(call.operation, model)
    try:
        result = await router.ainvoke(call.operation, call.messages, policy=policy,
                                      call_id=call.call_id, **call.kwargs)  # fmt: skip
    except (NoModelAvailable, BudgetExceeded) as exc:
        return _failed(model, exc)
    return Member(model, result, result.attempts)


def _no_answer(call: _Call, members: Sequence[Member]) -> Exception:
    """What to raise when no member answered.

    As for one routed call: when only money stood in the way (every member was refused
    by a cost cap) the first :class:`BudgetExceeded`, else :class:`NoModelAvailable`
    listing every member's attempts.
    """
    refusals = [m.refusal for m in members if m.refusal is not None]
    if len(refusals) == len(members):
        return refusals[0]
    attempts = [a for m in members for a in m.attempts]
    reasons = "; ".join(f"{m.model} {m.note}" for m in members)
    return NoModelAvailable(call.operation, attempts, f"every ensemble member failed ({reasons})")


def _combined(
    call: _Call, combiner: Combiner, members: Sequence[Member], answered: Sequence[int],
    choice: Choice, started: float,
) -> EnsembleResult:  # fmt: skip
    notes = dict(zip(answered, choice.notes, strict=True))
    winner = answered[choice.index]
    final = tuple(
        Member(m.model, m.result, m.attempts, notes.get(i, m.note), won=i == winner,
               refusal=m.refusal)
        for i, m in enumerate(members)
    )
    best = members[winner].result
    assert best is not None
    return EnsembleResult(
        operation=call.operation, value=best.value, message=best.message, spec=best.spec,
        attempts=tuple(a for m in members for a in m.attempts),
        latency=time.perf_counter() - started, call_id=call.call_id, arm=best.arm,
        combiner=combiner.name, members=final, summary=choice.summary,
        judging=choice.attempts,
    )


def ensemble(
    router: ModelRouter,
    operation: TaskType | str,
    messages: LanguageModelInput,
    *,
    models: Sequence[str] | EnsembleSpec,
    combiner: Combiner,
    schema: Schema | None = None,
    tools: Sequence[Any] = (),
    tool_choice: str | None = None,
    complexity: Complexity | str = Complexity.MODERATE,
    policy: Policy | None = None,
    max_wait: float = 0.0,
    max_tokens: int | None = None,
    config: RunnableConfig | None = None,
    call_id: str | None = None,
) -> EnsembleResult:
    """Ask every member of the ensemble at once (threads) and combine their answers.

    The sync router is blocking, so members run in a thread pool of one thread each:
    the answer takes as long as the slowest member, not their sum. The pool copies the
    caller's context (tracing) into each thread. Arguments are :meth:`ModelRouter.invoke`'s
    (no ``min_tier``: an escalation asks one routed call, not the ensemble).

    Args:
        router: the router every member goes through (its limits, budgets, ledger).
        operation: the cognitive operation.
        messages: what to ask, the same for every member.
        models: catalog keys of the members, in the order ties are broken by.
        combiner: :func:`majority_vote` or :func:`best_score` (with a ``sync_judge``).
        schema: see :meth:`ModelRouter.invoke`.
        tools: see :meth:`ModelRouter.invoke`.
        tool_choice: see :meth:`ModelRouter.invoke`.
        complexity: see :meth:`ModelRouter.invoke`.
        policy: the run's policy; each member gets it pinned to itself.
        max_wait: see :meth:`ModelRouter.invoke`.
        max_tokens: see :meth:`ModelRouter.invoke`.
        config: see :meth:`ModelRouter.invoke`.
        call_id: the id every member's attempts are filed under (default: a new one).

    Raises:
        NoModelAvailable: no member answered; it lists every member's attempts.
        BudgetExceeded: no member answered, every one refused by a cost cap.

    Example:
        >>> from tierwise.testing import Reply, Simulator
        >>> members = ("gemini-2.5-flash-free", "groq-llama-3.1-8b", "mistral-small-free")
        >>> with Simulator() as sim:
        ...     router = ModelRouter(sim.settings(), ledger=None)
        ...     for key, label in zip(members, "abb"):
        ...         _ = sim.script(router.settings.catalog.spec(key), Reply.text(label))
        ...     result = ensemble(router, "classification", "a or b?", models=members,
        ...                       combiner=majority_vote())
        >>> result.model, result.value.content, result.summary
        ('groq-llama-3.1-8b', 'b', '2 of 3 votes')
    """
    started = time.perf_counter()
    call, names = _prepare(router, operation, messages, models, policy, call_id, {
        "schema": schema, "tools": tools, "tool_choice": tool_choice,
        "complexity": complexity, "max_wait": max_wait, "max_tokens": max_tokens,
        "config": config,
    })  # fmt: skip
    with ContextThreadPoolExecutor(max_workers=len(names)) as pool:
        members = list(pool.map(lambda model: _run_sync(router, call, model), names))
    answered = [i for i, m in enumerate(members) if m.result is not None]
    if not answered:
        raise _no_answer(call, members)
    choice = combiner.choose([r for m in members if (r := m.result) is not None])
    return _combined(call, combiner, members, answered, choice, started)


async def aensemble(
    router: ModelRouter,
    operation: TaskType | str,
    messages: LanguageModelInput,
    *,
    models: Sequence[str] | EnsembleSpec,
    combiner: Combiner,
    schema: Schema | None = None,
    tools: Sequence[Any] = (),
    tool_choice: str | None = None,
    complexity: Complexity | str = Complexity.MODERATE,
    policy: Policy | None = None,
    max_wait: float = 0.0,
    max_tokens: int | None = None,
    config: RunnableConfig | None = None,
    call_id: str | None = None,
) -> EnsembleResult:
    """Async :func:`ensemble`: the members are concurrent tasks on the running loop.

    If anything other than a member's failure to answer is raised, the other members
    are cancelled (their routes release their permits and budget holds).
    """
    started = time.perf_counter()
    call, names = _prepare(router, operation, messages, models, policy, call_id, {
        "schema": schema, "tools": tools, "tool_choice": tool_choice,
        "complexity": complexity, "max_wait": max_wait, "max_tokens": max_tokens,
        "config": config,
    })  # fmt: skip
    tasks = [asyncio.ensure_future(_run_async(router, call, model)) for model in names]
    try:
        members = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    answered = [i for i, m in enumerate(members) if m.result is not None]
    if not answered:
        raise _no_answer(call, members)
    choice = await combiner.achoose([r for m in members if (r := m.result) is not None])
    return _combined(call, combiner, members, answered, choice, started)
