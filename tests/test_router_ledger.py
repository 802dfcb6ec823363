"""ModelRouter with a ledger, against the provider simulator: costs, budgets, quotas, rows.

Issue 6's "what it must show" for costs and budgets, through the real router and the real
LangChain clients: the cost in the ledger is tokens × catalog price for every provider's
usage format (streamed and not); a day cap is never exceeded over 500 calls and the
skipped calls fall back to the cheaper tiers; when nothing is allowed ``BudgetExceeded``
names the cap and what is left, and nothing is sent; a free model's daily request quota
holds across a restart and across processes; every attempt — failed, refused, repaired —
is one row.

Every test builds a small catalog (the same chain for every operation) of models named
for this module, writes its ledger under ``tmp_path`` and reads it back only after
``flush()`` / ``close()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, Field

import tierwise.ledger.store as ledger_module
from tests.backends import both_backends
from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Settings, load_settings
from tierwise.catalog.specs import Catalog, ModelSpec, Provider, TaskType, Tier
from tierwise.guards.budget import _MIN_ANSWER_TOKENS as MIN_ANSWER_TOKENS
from tierwise.guards.budget import DEFAULT_ANSWER_TOKENS, BudgetExceeded
from tierwise.ledger import Ledger, LedgerRow, day_start, open_ledger
from tierwise.providers.answer_limit import answer_limit
from tierwise.providers.clients import ProviderFactory
from tierwise.providers.failures import FailureKind
from tierwise.routing.request import DEFAULT_MAX_OUTPUT_TOKENS
from tierwise.routing.results import RoutedResult, StreamChunk, StreamEnd, StreamEvent
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import ChatRequest, Fault, Reply, Simulator

# --------------------------------------------------------------------------- test rig

#: Every model of this module. Prices are deliberately uneven (exactness is checked) and
#: a paid model exists on every wire protocol: OpenAI-compatible (OpenRouter, OpenAI),
#: Groq, Gemini and Ollama (a metered self-hosted endpoint: the catalog accepts a price
#: on any paid-tier model, whatever its provider).
MODELS: dict[str, dict[str, Any]] = {
    "or-paid": {
        "provider": "openrouter", "model": "ledger/or-paid", "tier": "paid",
        "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
    },
    "or-paid-b": {
        "provider": "openrouter", "model": "ledger/or-paid-b", "tier": "paid",
        "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
    },
    "openai-paid": {
        "provider": "openai", "model": "ledger-openai-paid", "tier": "paid",
        "price": {"input_per_mtok": 1.1, "output_per_mtok": 4.4},
    },
    "groq-paid": {
        "provider": "groq", "model": "ledger-groq-paid", "tier": "paid",
        "price": {"input_per_mtok": 0.59, "output_per_mtok": 0.79},
    },
    "gemini-paid": {
        "provider": "gemini", "model": "ledger-gemini-paid", "tier": "paid",
        "price": {"input_per_mtok": 0.3, "output_per_mtok": 2.5},
    },
    "ollama-paid": {
        "provider": "ollama", "model": "ledger-paid:8b", "tier": "paid",
        "price": {"input_per_mtok": 0.07, "output_per_mtok": 0.33},
    },
    "or-fc-paid": {  # structured output by function calling: the router parses (and repairs)
        "provider": "openrouter", "model": "ledger/or-fc-paid", "tier": "paid",
        "structured_output": "function_calling",
        "price": {"input_per_mtok": 5.0, "output_per_mtok": 5.0},
    },
    "or-free": {"provider": "openrouter", "model": "ledger/or-free:free"},
    "groq-free": {"provider": "groq", "model": "ledger-groq-free"},
    "gemini-free": {"provider": "gemini", "model": "ledger-gemini-free"},
    "ollama-local": {"provider": "ollama", "model": "ledger-local:1b", "tier": "local"},
}
PAID_PER_PROTOCOL = ("or-paid", "openai-paid", "groq-paid", "gemini-paid", "ollama-paid")
QUALITY_FIRST = Policy(mode="quality_first")  # paid → free → local, for every complexity
PROMPT = "Summarise the quarterly report in one sentence."
_FACTORIES: dict[str, ProviderFactory] = {}


def catalog_data(*keys: str, limits: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """TOML-shaped catalog data whose every operation's chain is ``keys`` (grouped by tier)."""
    models: dict[str, dict[str, Any]] = {}
    tiers: dict[str, list[str]] = {"local": [], "free": [], "paid": []}
    for key in keys:
        fields = {"tier": "free", "context_window": 131072, **MODELS[key]}
        if limits and key in limits:
            fields["limits"] = limits[key]
        models[key] = fields
        tiers[fields["tier"]].append(key)
    return {"models": models, "chains": {op.value: tiers for op in TaskType}}


def make_settings(sim: Simulator, catalog: Catalog) -> Settings:
    return sim.settings(dataclasses.replace(sim.settings(), catalog=catalog))


@dataclasses.dataclass
class Rig:
    """A test catalog, settings pointing at the simulator, and a shared client factory."""

    sim: Simulator
    catalog: Catalog
    settings: Settings
    factory: ProviderFactory

    def router(
        self, ledger: Ledger | None, policy: Policy = QUALITY_FIRST, **kw: Any
    ) -> ModelRouter:
        kw.setdefault("factory", self.factory)
        return ModelRouter(
            self.settings, policy=policy, snapshot=Snapshot.everything(self.catalog),
            ledger=ledger, **kw,
        )

    def spec(self, key: str) -> ModelSpec:
        return self.catalog.spec(key)

    def script(self, key: str, *behaviours: Reply | Fault, **kwargs: Any) -> None:
        self.sim.script(self.spec(key), *behaviours, **kwargs)

    def sent(self, key: str) -> int:
        """How many requests for catalog model ``key`` reached the simulator."""
        return len(self.sim.requests_for(self.spec(key)))


def make_rig(sim: Simulator, *keys: str, limits: dict[str, dict[str, int]] | None = None) -> Rig:
    """A rig whose chain is ``keys``; clients are built once per simulator and shared.

    A client depends on the endpoint and the model id only, and every key of
    :data:`MODELS` names one model id, so one factory serves every catalog here.
    """
    catalog = Catalog.from_mapping(catalog_data(*keys, limits=limits))
    settings = make_settings(sim, catalog)
    factory = _FACTORIES.setdefault(sim.url, ProviderFactory(settings))
    return Rig(sim, catalog, settings, factory)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(path: Path, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A SQLite ledger; a PostgreSQL one for the second run of a ``both_backends`` test."""
    postgres = getattr(request, "param", "sqlite") == "postgres"
    with open_ledger(request.getfixturevalue("postgres_url") if postgres else path) as opened:
        yield opened


def rows_of(ledger: Ledger) -> list[LedgerRow]:
    """Every row, after committing this process's pending ones."""
    assert ledger.flush()
    return ledger.rows()


def final(events: list[Any]) -> RoutedResult:
    end = events[-1]
    assert isinstance(end, StreamEnd), events
    return end.result


def estimate_of(rig: Rig, scratch: Path, key: str, prompt: str, **call: Any) -> float:
    """The router's own cost estimate for this call, read from a refusal.

    A day cap of $0 (in a scratch ledger) refuses the pinned paid model before anything
    is sent, and the refusal carries the estimate the budget was checked with.
    """
    only = Policy(mode="quality_first", max_cost_per_day=0.0,
                  operations={"rewriting": {"pin": key}})  # fmt: skip
    with Ledger(scratch) as ledger, pytest.raises(BudgetExceeded) as refused:
        rig.router(ledger, only).invoke("rewriting", prompt, **call)
    assert refused.value.cap == "per_day" and refused.value.model == key
    return refused.value.estimate


def child_env() -> dict[str, str]:
    """Children import the same tierwise as this test process, wherever pytest runs."""
    root = str(Path(ledger_module.__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}  # fmt: skip


# --------------------------------------------------------------------------- 1. exact costs

#: (prompt tokens, completion tokens) each call's provider reports, one per driver.
USAGE = [(1234, 567), (2000, 1), (7, 3001), (98765, 4321)]


@pytest.mark.parametrize("key", PAID_PER_PROTOCOL)
def test_ledger_cost_is_reported_tokens_times_catalog_price(
    simulator: Simulator, path: Path, key: str
) -> None:
    rig = make_rig(simulator, key)
    spec = rig.spec(key)
    rig.script(key, *(Reply.text(f"answer number {i}", usage=u) for i, u in enumerate(USAGE)))

    with Ledger(path) as ledger:
        router = rig.router(ledger)

        async def both_async() -> list[RoutedResult]:
            answered = await router.ainvoke("rewriting", PROMPT)
            return [answered, final([e async for e in router.astream("rewriting", PROMPT)])]

        results = [
            router.invoke("rewriting", PROMPT),
            final(list(router.stream("rewriting", PROMPT))),
            *asyncio.run(both_async()),
        ]
        rows = rows_of(ledger)
        today = day_start(rows[0].time)
        recorded_today = ledger.spent(since=today)

    assert [(r.input_tokens, r.output_tokens) for r in rows] == USAGE
    for row, (tokens_in, tokens_out), result in zip(rows, USAGE, results, strict=True):
        price = spec.price
        by_hand = (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / 1e6
        assert row.cost == pytest.approx(price.cost(tokens_in, tokens_out), rel=1e-12)
        assert row.cost == pytest.approx(by_hand, rel=1e-12)
        assert result.attempts[-1].cost == row.cost  # what the caller sees is what is stored
        assert (row.model, row.provider, row.tier) == (key, spec.provider.value, "paid")
        assert (row.outcome, row.sent) == ("ok", True)
    assert [r.time_to_first_token is not None for r in rows[1::2]] == [True, True]  # streams
    total = sum(spec.price.cost(i, o) for i, o in USAGE)
    assert recorded_today == pytest.approx(total, rel=1e-12)
    with Ledger(path) as reopened:  # committed, not only counted in memory
        assert reopened.spent(since=today) == pytest.approx(total, rel=1e-12)


def test_a_price_override_in_the_config_file_is_what_the_ledger_charges(
    simulator: Simulator, tmp_path: Path, ledger: Ledger
) -> None:
    config = tmp_path / "tierwise.toml"
    config.write_text(textwrap.dedent("""
        [models.gpt-4o.price]
        input_per_mtok = 0.123
        output_per_mtok = 4.56
        [chains.rewriting]
        paid = ["gpt-4o"]
    """))
    settings = simulator.settings(load_settings(config, credentials=simulator.credentials()))
    spec = settings.catalog.spec("gpt-4o")
    simulator.script(spec, Reply.text("overridden", usage=(1000, 100)))
    router = ModelRouter(settings, policy=QUALITY_FIRST, ledger=ledger,
                         snapshot=Snapshot.everything(settings.catalog))  # fmt: skip

    assert router.invoke("rewriting", PROMPT).model == "gpt-4o"

    (row,) = rows_of(ledger)
    assert row.cost == pytest.approx((1000 * 0.123 + 100 * 4.56) / 1e6, rel=1e-12)


def test_a_failed_answer_that_reports_usage_is_charged_too(
    simulator: Simulator, ledger: Ledger
) -> None:
    rig = make_rig(simulator, "or-paid", "groq-free")
    rig.script("or-paid", Fault.empty())  # a well-formed answer with no content: billed
    rig.script("groq-free", Reply.text("fine"))

    result = rig.router(ledger).invoke("rewriting", PROMPT)

    assert result.model == "groq-free"
    failed, answered = rows_of(ledger)
    assert (failed.model, failed.outcome, failed.sent) == ("or-paid", "invalid_output", True)
    assert failed.input_tokens > 0 and failed.output_tokens == 0
    assert failed.cost == pytest.approx(rig.spec("or-paid").price.cost(failed.input_tokens, 0))
    assert (answered.outcome, answered.cost) == ("ok", 0.0)


# --------------------------------------------------------------------------- 2. the day cap

#: Why the cap holds in these tests. Before a candidate is sent, the budget guard checks
#: ``spent today (ledger, every process) + estimates held by calls in flight + this call's
#: estimate <= cap``; after the call its real cost is recorded and its hold released. The
#: sum of recorded costs can therefore only pass the cap if a call costs more than its
#: estimate. The router estimates ``price(prompt, max_tokens or 512)`` with
#: prompt = chars // 4 + 4 per message (+ tool and schema definitions), and the simulator
#: bills prompt = ceil(chars / 4) and completion = ceil(reply chars / 4); every reply
#: below is at most ``max_tokens or 512`` tokens long — so no call costs more than its
#: estimate, which each row is checked for. (A real provider's tokenizer may count more
#: than chars / 4, and the router does not cap the answer at ``max_tokens``: there the
#: last call before the cap can overshoot by its own misestimate.)
DAY_CAP = 1.00
CALLS = 500


def prompts(seed: int = 6) -> list[tuple[str, int | None, int]]:
    """(prompt, max_tokens passed, completion tokens the reply will have) per call."""
    rng = random.Random(seed)
    calls = []
    for i in range(CALLS):
        max_tokens = rng.choice([None, None, None, 64, 256, 1024])
        completion = rng.randint(1, max_tokens or DEFAULT_MAX_OUTPUT_TOKENS)
        size = rng.choice([40, 400, 2000, 8000])
        filler = "".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(1, size)))
        calls.append((f"{completion} tokens, call {i}: {filler}", max_tokens, completion))
    return calls


def answer_of_requested_length(request: ChatRequest) -> str:
    """A reply of exactly the completion tokens the prompt names (4 chars per token)."""
    return "word" * int(request.messages[-1].text.split(" ", 1)[0])


def router_estimate(spec: ModelSpec, prompt: str, max_tokens: int | None) -> float:
    """The router's documented estimate for a one-message call without tools."""
    return spec.price.cost(len(prompt) // 4 + 4, max_tokens or DEFAULT_MAX_OUTPUT_TOKENS)


def smallest_hold(spec: ModelSpec, prompt: str, max_tokens: int | None) -> float:
    """The least a reservation under a day cap holds: the prompt and the shortest answer
    it may cap the call to (what is left must cover it, or the paid model is skipped)."""
    answer = min(max_tokens or DEFAULT_ANSWER_TOKENS, MIN_ANSWER_TOKENS)
    return spec.price.cost(len(prompt) // 4 + 4, answer)


def check_cap_held(
    rig: Rig, rows: list[LedgerRow], results: list[RoutedResult], cap: float = DAY_CAP
) -> Counter[str]:
    """Total ≤ cap, every call ≤ its estimate, and every skip of the paid model was money."""
    total = sum(r.cost for r in rows)
    assert total <= cap + 1e-9, f"${total:.6f} recorded against a ${cap} day cap"
    for row in rows:
        if row.sent:
            assert row.cost == pytest.approx(
                rig.spec(row.model).price.cost(row.input_tokens, row.output_tokens), rel=1e-12)
    answered_by = Counter(result.tier.value for result in results)
    for result in results:
        if result.model != "or-paid":  # the only reason to skip it is the cap
            skipped = result.attempts[0]
            assert (skipped.model, skipped.failure, skipped.sent) == (
                "or-paid", FailureKind.BUDGET_EXCEEDED, False)
            assert f"per_day cap of ${cap:g}" in skipped.detail
            assert result.tier in (Tier.FREE, Tier.LOCAL)
    assert answered_by["paid"] > 30 and answered_by["free"] + answered_by["local"] > 30
    return answered_by


@pytest.mark.parametrize("key", PAID_PER_PROTOCOL)
def test_a_capped_answer_limit_reaches_every_wire_format(
    simulator: Simulator, ledger: Ledger, key: str
) -> None:
    """Under a day cap the hold sizes the answer: each protocol must send that limit
    (``max_tokens``, Gemini's ``maxOutputTokens``, Ollama's ``num_predict``), or a long
    answer is billed past the cap."""
    rig = make_rig(simulator, key)
    simulator.script("*", Reply.function(answer_of_requested_length))
    spec = rig.spec(key)
    prompt = "3000 tokens, please."
    cap = spec.price.cost(len(prompt) // 4 + 4, 300)  # room for ~300 answer tokens
    router = rig.router(ledger, Policy(mode="quality_first", max_cost_per_day=cap))

    result = router.invoke("rewriting", prompt)

    [sent] = simulator.requests_for(spec)
    limit = ChatRequest(spec.provider, spec.model, body=sent.body or {}).max_output_tokens
    assert limit is not None and 64 <= limit <= 300
    assert result.attempts[-1].output_tokens == limit  # the simulator stops at the limit
    assert ledger.spent(since=day_start()) <= cap + 1e-12


def test_an_ollama_answer_limit_keeps_the_models_own_options() -> None:
    """A per-call ``options`` replaces ChatOllama's own: they must travel with it."""
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama

    model = ChatOllama(model="m", temperature=0.2, num_ctx=4096)
    sent = model._chat_params([HumanMessage("hi")], **answer_limit(model, Provider.OLLAMA, 300))
    assert sent["options"] == {"temperature": 0.2, "num_ctx": 4096, "num_predict": 300}


def test_a_day_cap_is_never_exceeded_over_500_calls_and_skips_fall_back(
    simulator: Simulator, ledger: Ledger
) -> None:
    rig = make_rig(simulator, "or-paid", "groq-free", "ollama-local")
    simulator.script("*", Reply.function(answer_of_requested_length))
    router = rig.router(ledger, Policy(mode="balanced", max_cost_per_day=DAY_CAP))
    paid = rig.spec("or-paid")

    results: list[RoutedResult] = []
    fitted: list[bool] = []  # did the paid model's estimate fit what was left?
    for prompt, max_tokens, _ in prompts():
        left = DAY_CAP - ledger.spent(since=day_start())
        fitted.append(smallest_hold(paid, prompt, max_tokens) <= left + 1e-9)
        results.append(router.invoke(  # complex under balanced: paid first
            "rewriting", prompt, max_tokens=max_tokens, complexity="complex"))
    rows = rows_of(ledger)

    answered_by = check_cap_held(rig, rows, results)
    for (prompt, max_tokens, completion), row in zip(
        prompts(), [r for r in rows if r.sent], strict=True
    ):  # the simulator never bills more than the router held: answers stop at the limit
        assert row.input_tokens <= len(prompt) // 4 + 4
        assert row.output_tokens <= min(completion, max_tokens or DEFAULT_ANSWER_TOKENS)
        if row.model != "or-paid":
            assert row.output_tokens == completion
    # Exactly the calls for which not even a short answer fitted were skipped: none too
    # early (a call that did not fit whole was capped instead), and after the first skip a
    # small call that still fitted went to the paid model.
    assert [r.model == "or-paid" for r in results] == fitted
    first_skip = fitted.index(False)
    spent = sum(r.cost for r in rows)
    assert DAY_CAP - spent < max(  # the cap was used up, not left idle
        smallest_hold(paid, p, m) for p, m, _ in prompts()[first_skip:])
    assert rig.sent("or-paid") == answered_by["paid"]
    assert rig.sent("groq-free") + rig.sent("ollama-local") == CALLS - answered_by["paid"]
    print(f"\nday cap ${DAY_CAP}: {dict(answered_by)}; recorded ${spent:.6f}; "
          f"first skip at call {first_skip + 1}")


def test_a_day_cap_holds_for_concurrent_calls(simulator: Simulator, ledger: Ledger) -> None:
    rig = make_rig(simulator, "or-paid", "groq-free", "ollama-local")
    simulator.script("*", Reply.function(answer_of_requested_length), first_byte=0.002)
    cap = 0.4
    router = rig.router(ledger, Policy(mode="quality_first", max_cost_per_day=cap))
    calls = prompts(seed=7)[:250]

    async def all_calls() -> list[RoutedResult]:
        results: list[RoutedResult] = []
        for start in range(0, len(calls), 50):  # 50 in flight at a time
            results += await asyncio.gather(*(
                router.ainvoke("rewriting", prompt, max_tokens=max_tokens)
                for prompt, max_tokens, _ in calls[start:start + 50]))  # fmt: skip
        return results

    results = asyncio.run(all_calls())

    answered_by = check_cap_held(rig, rows_of(ledger), results, cap)
    assert sum(answered_by.values()) == len(calls)
    assert router.budget.status(router.policy)[0].spent <= cap + 1e-9


# --------------------------------------------------------------------------- 3. nothing allowed


def seed_row(ledger: Ledger, cost: float, *, provider: str = "openrouter",
             run_id: str | None = None) -> None:  # fmt: skip
    """Spend recorded earlier today by another call (another model, maybe another run)."""
    ledger.record(LedgerRow(
        time.time(), run_id, None, None, "rewriting", "moderate", "quality_first", provider,
        "earlier-call", "paid", "ok", True, 0.5, None, 1000, 1000, cost, False, False, ""))


CAPS = {
    "per_day": Policy(mode="quality_first", max_cost_per_day=0.05),
    "per_run": Policy(mode="quality_first", max_cost_per_run=0.05),
    "per_provider_day:openrouter": Policy(
        mode="quality_first", max_cost_per_provider_per_day={"openrouter": 0.05}
    ),
}


@pytest.mark.parametrize("cap", list(CAPS))
def test_when_every_candidate_is_over_a_cap_budget_exceeded_names_it_and_nothing_is_sent(
    simulator: Simulator, ledger: Ledger, cap: str
) -> None:
    rig = make_rig(simulator, "or-paid", "or-paid-b")
    seed_row(ledger, 0.0498, run_id="run-7")  # leaves $0.0002 under each cap
    if cap != "per_day":  # spend that does not count against this cap
        seed_row(ledger, 5.0, provider="groq", run_id="another-run")
    config: RunnableConfig = {"configurable": {"run_id": "run-7", "thread_id": "t-7"}}

    with pytest.raises(BudgetExceeded) as refused:
        rig.router(ledger, CAPS[cap]).invoke("rewriting", PROMPT, config=config)

    error = refused.value
    assert (error.cap, error.model) == (cap, "or-paid")  # the first candidate's refusal
    assert error.limit == 0.05 and error.left == pytest.approx(0.0002)
    assert f"{cap} cap of $0.05 would be exceeded" in str(error)
    assert "$0.0002 left" in str(error)
    assert error.estimate > error.left
    assert simulator.requests == [], "a refused candidate reached the provider"
    refusals = [r for r in rows_of(ledger) if r.model != "earlier-call"]
    assert [(r.model, r.outcome, r.sent, r.cost, r.run_id) for r in refusals] == [
        ("or-paid", "budget_exceeded", False, 0.0, "run-7"),
        ("or-paid-b", "budget_exceeded", False, 0.0, "run-7"),
    ]


def test_a_per_call_cap_that_excludes_every_candidate_raises_budget_exceeded(
    simulator: Simulator, ledger: Ledger
) -> None:
    rig = make_rig(simulator, "or-paid", "or-paid-b")
    policy = Policy(mode="quality_first", max_cost_per_call=0.001)

    with pytest.raises(BudgetExceeded) as refused:  # 1000 tokens at $10/M are $0.01
        rig.router(ledger, policy).invoke("rewriting", PROMPT, max_tokens=1000)

    assert refused.value.cap == "per_call"
    assert "per_call cap of $0.001 would be exceeded for or-paid" in str(refused.value)
    assert simulator.requests == []
    assert [(r.model, r.outcome) for r in rows_of(ledger)] == [
        ("or-paid", "budget_exceeded"), ("or-paid-b", "budget_exceeded")]


def test_a_candidate_over_the_cap_is_skipped_for_a_cheaper_one(
    simulator: Simulator, ledger: Ledger
) -> None:
    rig = make_rig(simulator, "or-paid", "gemini-free")
    seed_row(ledger, 0.0498)
    rig.script("gemini-free", Reply.text("free answer"))

    result = rig.router(ledger, CAPS["per_day"]).invoke("rewriting", PROMPT)

    assert (result.model, result.message.content) == ("gemini-free", "free answer")
    assert rig.sent("or-paid") == 0
    assert [(a.model, a.failure, a.sent) for a in result.attempts] == [
        ("or-paid", FailureKind.BUDGET_EXCEEDED, False), ("gemini-free", None, True)]


# --------------------------------------------------------------------------- 4. RPD quota

RPD = {"gemini-free": {"rpd": 3}}


def test_a_free_models_daily_quota_survives_a_restart(simulator: Simulator, path: Path) -> None:
    rig = make_rig(simulator, "gemini-free", "ollama-local", limits=RPD)
    rig.script("gemini-free", Reply.text("from gemini"))
    rig.script("ollama-local", Reply.text("from ollama"))

    ledger = Ledger(path)
    router = rig.router(ledger, Policy(mode="free_first"))
    assert [router.invoke("rewriting", PROMPT).model for _ in range(3)] == ["gemini-free"] * 3
    ledger.close()
    del router  # the limiter that also counted the 3 requests is gone with it

    with Ledger(path) as restarted:
        fresh = ModelRouter(rig.settings, policy=Policy(mode="free_first"), ledger=restarted,
                            snapshot=Snapshot.everything(rig.catalog))  # fmt: skip
        result = fresh.invoke("rewriting", PROMPT)
        rows = rows_of(restarted)

    assert result.model == "ollama-local"
    skipped = result.attempts[0]
    assert (skipped.model, skipped.failure, skipped.sent) == (
        "gemini-free", FailureKind.QUOTA_EXHAUSTED, False)  # a quota, not a budget
    assert "daily request quota of gemini-free" in skipped.detail
    assert "3 of 3 requests" in skipped.detail
    assert rig.sent("gemini-free") == 3 and rig.sent("ollama-local") == 1
    assert [(r.model, r.outcome, r.sent) for r in rows[3:]] == [
        ("gemini-free", "quota_exhausted", False), ("ollama-local", "ok", True)]


#: Another process: its own ledger instance and router on the same file and simulator.
#: It imports and builds everything first, then makes as many calls as it is told on stdin.
_CHILD = textwrap.dedent("""
    import json, sys
    from tierwise.catalog.settings import Credentials, ProviderConfig, Settings
    from tierwise.catalog.specs import Catalog
    from tierwise.ledger import Ledger
    from tierwise.catalog.policy import Policy
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.snapshot import Snapshot
    from tierwise.testing.protocols import BASE_PATHS

    path, url, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    catalog = Catalog.from_mapping(data)
    settings = Settings(
        catalog=catalog, policy=Policy(mode="free_first"),
        credentials=Credentials(gemini_api_key="sim-gemini", ollama_host=url, _env_file=None),
        providers={p: ProviderConfig(base_url=url + base, timeout=5.0)
                   for p, base in BASE_PATHS.items()},
    )
    calls = int(sys.stdin.readline())
    with Ledger(path) as ledger:
        router = ModelRouter(settings, ledger=ledger, snapshot=Snapshot.everything(catalog))
        for _ in range(calls):
            result = router.invoke("rewriting", "from the other process")
            print(json.dumps([result.model] + [a.describe() for a in result.attempts]))
""")


def start_child(sim: Simulator, path: Path) -> subprocess.Popen[str]:
    data = catalog_data("gemini-free", "ollama-local", limits=RPD)
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), sim.url, json.dumps(data)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(),
    )  # fmt: skip


def calls_of(child: subprocess.Popen[str], calls: int) -> list[list[str]]:
    """Let ``child`` make ``calls`` calls and exit (closing its ledger); what answered."""
    out, err = child.communicate(f"{calls}\n", timeout=120)
    assert child.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_free_models_daily_quota_holds_across_processes(
    simulator: Simulator, path: Path
) -> None:
    rig = make_rig(simulator, "gemini-free", "ollama-local", limits=RPD)
    rig.script("gemini-free", Reply.text("from gemini"))
    rig.script("ollama-local", Reply.text("from ollama"))
    first, second = start_child(simulator, path), start_child(simulator, path)

    with Ledger(path) as ledger:
        router = rig.router(ledger, Policy(mode="free_first"))
        assert router.invoke("rewriting", PROMPT).model == "gemini-free"  # request 1 of 3
        answered = calls_of(first, 2)  # requests 2 and 3, from another process
        assert [answer[0] for answer in answered] == ["gemini-free", "gemini-free"]
        time.sleep(ledger.refresh_interval)  # other processes' rows are seen within this

        # This router's own limiter has seen 1 request of 3; only the ledger knows of 3.
        result = router.invoke("rewriting", PROMPT)
        assert result.model == "ollama-local"
        assert result.attempts[0].failure is FailureKind.QUOTA_EXHAUSTED  # not a budget
        assert "3 of 3 requests" in result.attempts[0].detail

        (later,) = calls_of(second, 1)  # and a process that started before all that
        assert later[0] == "ollama-local" and "quota_exhausted" in later[1]

    assert rig.sent("gemini-free") == 3
    with Ledger(path) as reopened:
        assert reopened.requests("gemini-free", since=day_start()) == 3
        assert reopened.requests("gemini-free", since=day_start(), sent_only=False) == 5


# --------------------------------------------------------------------------- 5. every attempt


@pytest.mark.parametrize("driver", ["invoke", "stream"])
def test_every_attempt_is_a_row_with_the_calls_run_thread_node_and_escalation(
    simulator: Simulator, ledger: Ledger, driver: str
) -> None:
    rig = make_rig(simulator, "or-free", "gemini-free")
    rig.script("or-free", Fault.server_error(503))
    rig.script("gemini-free", Reply.text("from the fallback", usage=(40, 6)))
    config: RunnableConfig = {
        "configurable": {"thread_id": "t1", "run_id": "r1"},
        "metadata": {"langgraph_node": "rewrite_step"},
    }
    router = rig.router(ledger, Policy(mode="free_first"))
    call: dict[str, Any] = {"config": config, "min_tier": "free", "complexity": "simple"}

    if driver == "invoke":
        result = router.invoke("classification", PROMPT, **call)
    else:
        result = final(list(router.stream("classification", PROMPT, **call)))

    assert result.model == "gemini-free"
    failed, answered = rows_of(ledger)
    for row in (failed, answered):
        assert (row.run_id, row.thread_id, row.node) == ("r1", "t1", "rewrite_step")
        assert (row.operation, row.complexity, row.policy) == (
            "classification", "simple", "free_first")
        assert row.escalation is True and row.repair is False and row.sent is True
    assert (failed.model, failed.provider, failed.tier) == ("or-free", "openrouter", "free")
    assert failed.outcome == "unavailable" and "503" in failed.detail
    assert (answered.model, answered.outcome, answered.detail) == ("gemini-free", "ok", "")
    assert (answered.input_tokens, answered.output_tokens) == (40, 6)
    assert answered.latency > 0 and failed.latency > 0
    assert (answered.time_to_first_token is not None) is (driver == "stream")


def test_ids_from_metadata_and_no_escalation_without_min_tier(
    simulator: Simulator, ledger: Ledger
) -> None:
    rig = make_rig(simulator, "or-free")
    config: RunnableConfig = {"metadata": {"run_id": "r2", "thread_id": "t2"}}

    rig.router(ledger, Policy(mode="free_first")).invoke("rewriting", PROMPT, config=config)

    (row,) = rows_of(ledger)
    assert (row.run_id, row.thread_id, row.node, row.escalation) == ("r2", "t2", None, False)


class Verdict(BaseModel):
    """The schema of the repair tests (function calling: the router parses the answer)."""

    answer: str = Field(description="the answer")


def repair_script(tokens: int) -> tuple[Reply, Reply]:
    """A tool call that breaks the schema, then a good one; each bills ``tokens`` each way."""
    return (Reply.json({"wrong": 1}, usage=(tokens, tokens)),
            Reply.json({"answer": "fixed"}, usage=(tokens, tokens)))  # fmt: skip


def test_a_schema_repair_is_a_second_charged_row(
    simulator: Simulator, ledger: Ledger, tmp_path: Path
) -> None:
    rig = make_rig(simulator, "or-fc-paid", "or-free")
    scratch = tmp_path / "scratch.sqlite3"
    estimate = estimate_of(rig, scratch, "or-fc-paid", PROMPT, schema=Verdict, max_tokens=50)
    per_token = 5.0 / 1e6
    tokens = int(0.3 * estimate / per_token)  # each request costs 0.6 of the estimate
    rig.script("or-fc-paid", *repair_script(tokens))
    policy = Policy(mode="quality_first", max_cost_per_day=3 * estimate)

    result = rig.router(ledger, policy).invoke("rewriting", PROMPT, schema=Verdict, max_tokens=50)

    assert result.value == Verdict(answer="fixed") and result.model == "or-fc-paid"
    first, repaired = rows_of(ledger)
    assert (first.outcome, first.repair, repaired.outcome, repaired.repair) == (
        "invalid_output", False, "ok", True)
    assert first.cost == repaired.cost == pytest.approx(2 * tokens * per_token)
    assert first.cost + repaired.cost <= 3 * estimate


def test_a_schema_repair_that_would_cross_the_cap_is_not_sent(
    simulator: Simulator, ledger: Ledger, tmp_path: Path
) -> None:
    rig = make_rig(simulator, "or-fc-paid", "or-free")
    scratch = tmp_path / "scratch.sqlite3"
    estimate = estimate_of(rig, scratch, "or-fc-paid", PROMPT, schema=Verdict, max_tokens=50)
    tokens = int(0.3 * estimate / (5.0 / 1e6))
    rig.script("or-fc-paid", *repair_script(tokens))
    rig.script("or-free", Reply.json({"answer": "free"}))
    cap = 1.5 * estimate  # room for the call, not for the call and its repair
    policy = Policy(mode="quality_first", max_cost_per_day=cap)

    result = rig.router(ledger, policy).invoke("rewriting", PROMPT, schema=Verdict, max_tokens=50)

    assert result.model == "or-free" and result.value == Verdict(answer="free")
    assert rig.sent("or-fc-paid") == 1
    rows = rows_of(ledger)
    assert [(r.model, r.outcome, r.sent, r.repair) for r in rows] == [
        ("or-fc-paid", "invalid_output", True, False),
        ("or-fc-paid", "budget_exceeded", False, True),
        ("or-free", "ok", True, False),
    ]
    assert "no schema repair: per_day cap" in rows[1].detail
    assert sum(r.cost for r in rows) <= cap


class Lookup(BaseModel):
    """Look a record up. Its long parameter descriptions are prompt tokens too."""

    record: str = Field(description="Which record to fetch. " + "Be precise. " * 150)
    fields: list[str] = Field(description="Which of its fields to return. " + "Only those. " * 150)


def test_bound_tool_definitions_count_in_the_estimate(simulator: Simulator, ledger: Ledger) -> None:
    rig = make_rig(simulator, "or-paid", "or-free")
    simulator.script("*", Reply.tool_call())  # the simulator bills the tool schema as prompt
    cap = 0.051  # 20 calls at ~$0.0025 leave ~$0.0011: enough for a 4-word prompt, not more
    router = rig.router(ledger, Policy(mode="quality_first", max_cost_per_day=cap))

    results = [
        router.invoke("parameter_extraction", "Fetch record 7.", tools=[Lookup],
                      tool_choice="Lookup", max_tokens=16)  # fmt: skip
        for _ in range(40)
    ]

    rows = rows_of(ledger)
    sent = [r for r in rows if r.model == "or-paid" and r.sent]
    assert sent and sent[0].input_tokens > 600  # the definitions, not the 4-word prompt
    assert sum(r.cost for r in rows) <= cap
    assert {r.model for r in results[len(sent):]} == {"or-free"}


# --------------------------------------------------------------------------- abandoned calls


def test_a_stream_closed_early_releases_its_held_estimate(
    simulator: Simulator, ledger: Ledger, tmp_path: Path
) -> None:
    rig = make_rig(simulator, "or-paid", "or-free")
    estimate = estimate_of(rig, tmp_path / "scratch.sqlite3", "or-paid", PROMPT)
    rig.script("or-paid", Reply.text("one two three four five six seven", usage=(5, 5)))
    router = rig.router(ledger, Policy(mode="quality_first", max_cost_per_day=1.5 * estimate))

    events = cast(Generator[StreamEvent, None, None], router.stream("rewriting", PROMPT))
    assert isinstance(next(events), StreamChunk)  # the paid model is answering...
    events.close()  # ...and the consumer has heard enough

    # Had the first call's estimate stayed held, this one would not fit any more.
    assert router.invoke("rewriting", PROMPT).model == "or-paid"


def test_a_cancelled_call_releases_its_held_estimate(
    simulator: Simulator, ledger: Ledger, tmp_path: Path
) -> None:
    rig = make_rig(simulator, "or-paid", "or-free")
    estimate = estimate_of(rig, tmp_path / "scratch.sqlite3", "or-paid", PROMPT)
    rig.script("or-paid", Reply.text("fast", usage=(5, 5)))
    rig.script("or-paid", Reply.text("slow"), first_byte=2.0, times=1)  # newer: served first
    router = rig.router(ledger, Policy(mode="quality_first", max_cost_per_day=1.5 * estimate))

    async def cancel_then_call() -> RoutedResult:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(router.ainvoke("rewriting", PROMPT), timeout=0.3)
        return await router.ainvoke("rewriting", PROMPT)

    assert asyncio.run(cancel_then_call()).model == "or-paid"


# --------------------------------------------------------------------------- 6. no ledger


def test_without_a_ledger_nothing_is_written_and_calls_work(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "default-ledger.sqlite3"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    rig = make_rig(simulator, "or-paid", "or-free")
    rig.script("or-paid", Reply.text("paid answer", usage=(100, 10)))
    router = rig.router(None, Policy(mode="quality_first"))
    assert router.ledger is None

    answered = router.invoke("rewriting", PROMPT)
    streamed = final(list(router.stream("rewriting", PROMPT)))

    assert answered.model == streamed.model == "or-paid"
    assert answered.attempts[-1].cost == pytest.approx(rig.spec("or-paid").price.cost(100, 10))
    # A day cap nothing can count fails closed: the paid model is skipped, not paid for.
    capped = rig.router(None, Policy(mode="quality_first", max_cost_per_day=100.0))
    fallback = capped.invoke("rewriting", PROMPT)
    assert fallback.model == "or-free"
    assert fallback.attempts[0].failure is FailureKind.BUDGET_EXCEEDED
    assert "no ledger to count spend in" in fallback.attempts[0].detail
    assert list(tmp_path.iterdir()) == [], "a ledger file was written"


@both_backends
async def test_async_routed_calls_with_the_ledger_never_block_the_event_loop(
    simulator: Simulator, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    """Ledger rows, budget holds and the ledger's record are read and written off the loop.

    The suite's blockbuster (LangGraph Server's detector) fails this test on any blocking
    call tierwise makes on the running loop: here every ledger path of a routed call —
    rows recorded (journal write), a day cap's holds (SQLite transactions, commits),
    standings and measured quality (SQLite reads), failures, a stream.
    """
    assert "no_blocking_on_the_event_loop" in request.fixturenames  # the detector is on
    rig = make_rig(simulator, "or-paid", "groq-free", "ollama-local")
    rig.script("or-paid", Fault.server_error(), times=2)  # two fall back
    router = rig.router(ledger, Policy(mode="quality_first", max_cost_per_day=5.0),
                        standings_ttl=0.0)  # fmt: skip
    results = await asyncio.gather(*(router.ainvoke("rewriting", f"{PROMPT} {i}")
                                      for i in range(10)))  # fmt: skip
    events = [event async for event in router.astream("rewriting", PROMPT)]
    assert isinstance(events[-1], StreamEnd)
    assert sum(r.model == "or-paid" for r in results) == 8
    rows = await asyncio.to_thread(rows_of, ledger)  # the test's own reads: off the loop too
    assert len(rows) == 10 + 2 + 1  # every attempt recorded, the failures included
    spent = await asyncio.to_thread(ledger.spent, since=day_start())
    assert spent == pytest.approx(sum(r.cost for r in rows)) and spent > 0
