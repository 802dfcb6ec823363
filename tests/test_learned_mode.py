"""Policy mode ``learned``: the trained router picks the primary model per prompt.

The router is real (LangChain clients over HTTP to the simulator), the learned router a
real trained file; the test data make one model right on one kind of prompt and the
other on the other kind, so the pick is checkable per prompt. Also: the share of calls
sent to the expensive model follows ``strong_share``; the daily budget calibrates it
from the ledger's call volume; no trained file keeps the catalog order.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, TaskType
from tierwise.learning.learned_router import LearnedRouter
from tierwise.ledger import Ledger
from tierwise.providers.clients import ProviderFactory
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.routing.steering import Steering, prompt_text
from tierwise.testing import Reply, Simulator

OP = TaskType.REWRITING
CHEAP, STRONG = "lm-cheap", "lm-strong"
EASY = ["rephrase the note about lunch", "shorten the lunch note", "fix the lunch note typo"]
HARD = ["restate the theorem about primes", "clarify the prime theorem proof",
        "rewrite the prime theorem lemma"]  # fmt: skip


def catalog() -> Catalog:
    models = {
        CHEAP: {"provider": "groq", "model": "learned-cheap", "tier": "free",
                "context_window": 8192},
        STRONG: {"provider": "openai", "model": "learned-strong", "tier": "paid",
                 "context_window": 8192,
                 "price": {"input_per_mtok": 5.0, "output_per_mtok": 15.0}},
    }  # fmt: skip
    tiers = {"free": [CHEAP], "local": [], "paid": [STRONG]}
    return Catalog.from_mapping({"models": models, "chains": {op.value: tiers for op in TaskType}})


def trained(path: Path) -> Path:
    """A router that learned: the cheap model fails on prime theorems, the strong never."""
    texts = [prompt_text_for(t) for t in (EASY + HARD) * 30]
    cheap = [1.0 if t in EASY else 0.0 for t in (EASY + HARD) * 30]
    router = LearnedRouter(epochs=80).fit(texts, {CHEAP: cheap, STRONG: [1.0] * len(texts)})
    # calibrated on the traffic the tests send (half easy, half hard), not on a random
    # tenth of the training rows, so that a 50 % share falls between the two kinds
    router.calibrate([prompt_text_for(t) for t in EASY + HARD]).save(path)
    return path


def prompt_text_for(text: str) -> str:
    from langchain_core.messages import HumanMessage

    return prompt_text([HumanMessage(text)], OP)


@pytest.fixture
def rig(simulator: Simulator, tmp_path: Path) -> Iterator[tuple[ModelRouter, Path]]:
    cat = catalog()
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=cat))
    for key in (CHEAP, STRONG):
        simulator.script(cat.spec(key), Reply.text(f"answer from {key}"))
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(settings, snapshot=Snapshot.everything(cat),
                             factory=ProviderFactory(settings), ledger=ledger)  # fmt: skip
        yield router, trained(tmp_path / "router.npz")


def test_the_learned_router_picks_per_prompt_and_keeps_the_other_as_fallback(
    rig: tuple[ModelRouter, Path],
) -> None:
    router, path = rig
    policy = Policy(mode="learned", router_model=str(path), cost_weight=0.0)
    assert router.invoke(OP, HARD[0], policy=policy, complexity="simple").model == STRONG
    # a big cost weight: the cheap model is right often enough on easy prompts
    thrifty = policy.model_copy(update={"cost_weight": 2000.0})
    assert router.invoke(OP, EASY[0], policy=thrifty, complexity="simple").model == CHEAP
    assert router.invoke(OP, HARD[0], policy=thrifty, complexity="simple").model == CHEAP
    # the balanced chain for simple tasks is free then paid: without a pick it stays so
    fallback = router.invoke(OP, HARD[0], complexity="simple",
                             policy=Policy(mode="learned", router_model=str(path.with_name("no"))))
    assert fallback.model == CHEAP


def test_strong_share_sets_how_many_calls_go_to_the_expensive_model(
    rig: tuple[ModelRouter, Path],
) -> None:
    router, path = rig
    prompts = (EASY + HARD) * 4
    for share, expected in ((0.5, {STRONG: 12, CHEAP: 12}), (1.0, {STRONG: 24})):
        policy = Policy(mode="learned", router_model=str(path), strong_share=share)
        picks = Counter(router.invoke(OP, p, policy=policy, complexity="simple").model
                        for p in prompts)  # fmt: skip
        assert picks == Counter(expected)
    half = Policy(mode="learned", router_model=str(path), strong_share=0.5)
    assert {router.invoke(OP, p, policy=half, complexity="simple").model for p in HARD} == {STRONG}


def test_a_daily_budget_calibrates_the_share_from_the_call_volume(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        steering = Steering(ledger)
        budget = Policy(mode="learned", max_cost_per_day=1.0)
        assert steering.share(budget, strong_cost=0.01) == 0.5  # no traffic yet: the default
        from tierwise.catalog.specs import Provider, Tier
        from tierwise.ledger import Attempt, LedgerRow

        ok = Attempt(CHEAP, Provider.GROQ, Tier.FREE, None, 0.1)
        for _ in range(400):
            ledger.record(LedgerRow.from_attempt(ok, operation="rewriting", complexity="simple",
                                                 policy="learned"))  # fmt: skip
        steering = Steering(ledger)  # a fresh volume reading
        assert steering.share(budget, strong_cost=0.01) == pytest.approx(0.25)  # $1 / (400 x 1¢)
        assert steering.share(budget.model_copy(update={"strong_share": 0.9}), 0.01) == 0.9
        assert steering.share(Policy(mode="learned"), 0.01) == 0.5


def test_tracers_see_why_the_first_model_leads(rig: tuple[ModelRouter, Path]) -> None:
    from typing import Any

    from langchain_core.callbacks import BaseCallbackHandler

    class Seen(BaseCallbackHandler):
        def __init__(self) -> None:
            self.metadata: list[dict[str, Any]] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.metadata.append(kwargs.get("metadata") or {})

    router, path = rig
    seen = Seen()
    policy = Policy(mode="learned", router_model=str(path), cost_weight=0.0)
    result = router.invoke(OP, HARD[0], policy=policy, complexity="simple",
                           config={"callbacks": [seen]})  # fmt: skip
    assert result.model == STRONG
    assert seen.metadata[-1]["tierwise_steering"] == f"learned router chose {STRONG} (λ=0)"
    router.invoke(OP, HARD[0], complexity="simple", config={"callbacks": [seen]})
    assert "tierwise_steering" not in seen.metadata[-1]  # nothing steered


def test_an_unfamiliar_prompt_keeps_the_chain_order_and_says_why(
    rig: tuple[ModelRouter, Path],
) -> None:
    from typing import Any

    from langchain_core.callbacks import BaseCallbackHandler

    class Seen(BaseCallbackHandler):
        def __init__(self) -> None:
            self.metadata: list[dict[str, Any]] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            self.metadata.append(kwargs.get("metadata") or {})

    router, path = rig
    seen = Seen()
    policy = Policy(mode="learned", router_model=str(path), cost_weight=0.0)
    # nothing like the training prompts: the chain (free, then paid) stays as it is
    result = router.invoke(OP, "Quelle est la capitale du Kirghizistan ?", policy=policy,
                           complexity="simple", config={"callbacks": [seen]})  # fmt: skip
    assert result.model == CHEAP
    why = seen.metadata[-1]["tierwise_steering"]
    assert "unlike the router's training data" in why and "chain order kept" in why
