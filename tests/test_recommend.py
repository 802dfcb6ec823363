"""Chain recommendations (``tierwise recommend``) from the ledger and quality evidence.

The workload runs a real ModelRouter against the provider simulator: an A/B test splits
``classification`` between the free tier's current first choice (gemini-2.5-flash-free,
scripted 30 ms slower) and the second (groq-llama-3.1-8b, as good or better by the
judge's scripted verdicts). The recommendation must move groq up, say why and how sure,
and give a ``tierwise.toml`` snippet that ``load_settings`` accepts and that yields the
suggested chain. Unit tests cover the rule's other branches on hand-built records.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tierwise.catalog.policy import ABTest, Policy
from tierwise.catalog.settings import load_settings
from tierwise.catalog.specs import Catalog, Tier, default_catalog_data, load_default_catalog
from tierwise.cli.insights import ab_app, recommend_command
from tierwise.guards.health import HealthBoard
from tierwise.insights.recommend import (
    MEASURED,
    RULE,
    SUCCESS_RATE,
    recommend,
    recommend_operation,
    toml_snippet,
)
from tierwise.ledger import OK, Ledger, LedgerRow
from tierwise.ledger.evidence import EVAL, JUDGE, Outcome
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Reply, Simulator

OP = "classification"
CATALOG = load_default_catalog()
FIRST, SECOND, THIRD = (s.key for s in CATALOG.chain(OP, Tier.FREE))  # gemini, groq, hf
QUALITY = {FIRST: 0.80, SECOND: 0.85}


def unlimited_catalog() -> Catalog:
    """The packaged catalog without free-tier rate limits (many calls in a few seconds)."""
    data = default_catalog_data()
    for fields in data["models"].values():
        fields.pop("limits", None)
    return Catalog.from_mapping(data)


def app() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(ab_app, name="ab")
    root.command("recommend")(recommend_command)
    return root


@pytest.fixture
def ledger(simulator: Simulator, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger after 80 A/B-split calls: the second free model faster, quality as good."""
    catalog = unlimited_catalog()
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    simulator.script(catalog.spec(FIRST), Reply.default(), first_byte=0.03)  # 30 ms later
    policy = Policy(mode="free_first",
                    operations={OP: {"ab": ABTest(name="gather", a=FIRST, b=SECOND)}})
    rng = random.Random(5)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(
            settings, policy=policy, snapshot=Snapshot.everything(catalog), ledger=ledger,
            health=HealthBoard(failure_threshold=10**6), demotion=None,
        )  # fmt: skip
        verdicts = []
        for i in range(80):
            result = router.invoke(OP, f"Is this spam? #{i}", complexity="simple",
                                   config={"configurable": {"thread_id": f"t{i}"}})  # fmt: skip
            good = rng.random() < QUALITY[result.model]
            verdicts.append(Outcome(OP, result.model, float(good), JUDGE,
                                    call_id=result.call_id))  # fmt: skip
        ledger.evidence.record(verdicts)
        ledger.flush()
        yield ledger


def test_faster_equally_good_model_is_moved_up_with_a_valid_snippet(
    ledger: Ledger, tmp_path: Path
) -> None:
    (rec,) = recommend(ledger, CATALOG, min_n=20)
    assert rec.operation == OP
    free = next(t for t in rec.tiers if t.tier == "free")
    assert free.current == (FIRST, SECOND, THIRD)
    assert free.suggested == (SECOND, FIRST, THIRD)
    assert free.change() == f"move {SECOND} above {FIRST} in {OP}'s free tier"
    assert free.basis == MEASURED and free.decided_by == "latency"
    assert free.significant and free.p_value is not None and free.p_value < 0.001
    assert "as good (quality intervals overlap) and faster" in free.reason
    models = {m.model: m for m in rec.models}
    first, second = models[FIRST], models[SECOND]
    assert first.evidence + second.evidence == 80 and min(first.evidence, second.evidence) >= 20
    assert first.quality_interval is not None and second.quality_interval is not None
    assert first.p50_latency is not None and second.p50_latency is not None
    assert first.p50_latency > second.p50_latency + 0.02
    assert second.cost_per_success == 0.0 and second.quality_per_dollar is None  # free
    assert second.quality_per_second is not None and second.quality_per_second > (
        first.quality_per_second or 0)
    assert THIRD not in models  # no record: listed nowhere, kept in place
    assert [t.tier for t in rec.changes] == ["free"]

    snippet = rec.snippet
    assert snippet == f'[chains.{OP}]\nfree = ["{SECOND}", "{FIRST}", "{THIRD}"]'
    config = tmp_path / "tierwise.toml"
    config.write_text(snippet + "\n", encoding="utf-8")
    settings = load_settings(config)
    chain = settings.catalog.chains[OP]
    assert chain.free == free.suggested
    assert chain.local == CATALOG.chains[OP].local and chain.paid == CATALOG.chains[OP].paid
    # with the change applied, the same record suggests nothing more
    (again,) = recommend(ledger, settings.catalog, min_n=20)
    assert again.snippet is None
    assert next(t for t in again.tiers if t.tier == "free").reason.startswith(
        f"{SECOND} is already first")


def test_cli_recommend(ledger: Ledger, tmp_path: Path) -> None:
    config = tmp_path / "tierwise.toml"
    config.write_text("", encoding="utf-8")
    base = ["recommend", "--ledger", str(ledger.path), "--config", str(config)]
    result = CliRunner().invoke(app(), base)
    assert result.exit_code == 0, result.output
    assert f"move {SECOND} above {FIRST} in {OP}'s free tier" in result.output
    assert "to apply, add to tierwise.toml:" in result.output
    assert f"[chains.{OP}]" in result.output  # printed, not eaten as rich markup
    assert f'free = ["{SECOND}", "{FIRST}", "{THIRD}"]' in result.output

    as_json = CliRunner().invoke(app(), [*base, "--json", "--operation", OP, "--min-n", "20"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["rule"] == RULE
    assert data["snippet"].startswith(f"[chains.{OP}]")
    (op,) = data["operations"]
    assert op["changes"] == [f"move {SECOND} above {FIRST} in {OP}'s free tier"]

    # too strict a minimum: nothing ranked, nothing suggested
    strict = CliRunner().invoke(app(), [*base, "--min-n", "1000"])
    assert strict.exit_code == 0 and "no chain change suggested" in strict.output
    other = CliRunner().invoke(app(), [*base, "-o", "rewriting"])
    assert other.exit_code == 0 and "no calls or quality evidence" in other.output


# --------------------------------------------------------------------------- the rule


def row(model: str, ok: bool = True, *, latency: float = 0.5, cost: float = 0.0,
        operation: str = "rewriting") -> LedgerRow:  # fmt: skip
    spec = CATALOG.spec(model)
    return LedgerRow(
        time=time.time(), run_id=None, thread_id=None, node=None, operation=operation,
        complexity="moderate", policy="balanced", provider=spec.provider.value, model=model,
        tier=spec.tier.value, outcome=OK if ok else "server_error", sent=True,
        latency=latency, time_to_first_token=None, input_tokens=100, output_tokens=50,
        cost=cost, escalation=False, repair=False, detail="",
    )  # fmt: skip


def scores(model: str, n: int, good: float, *, seed: int, operation: str = "rewriting",
           source: str = JUDGE) -> list[Outcome]:  # fmt: skip
    rng = random.Random(seed)
    return [Outcome(operation, model, float(rng.random() < good), source) for _ in range(n)]


PAID = [s.key for s in CATALOG.chain("rewriting", Tier.PAID)]  # claude-3-haiku, claude-opus-4


def test_better_quality_beats_a_cheaper_incumbent() -> None:
    cheap, dear = PAID
    rows = [row(cheap, cost=0.0002) for _ in range(60)] + [row(dear, cost=0.01) for _ in range(60)]
    outcomes = scores(cheap, 60, 0.55, seed=1) + scores(dear, 60, 0.95, seed=2, source=EVAL)
    rec = recommend_operation("rewriting", CATALOG, rows, outcomes, min_n=20)
    paid = next(t for t in rec.tiers if t.tier == "paid")
    assert paid.suggested == (dear, cheap)
    assert paid.decided_by == "quality" and paid.significant
    assert "better quality" in paid.reason
    models = {m.model: m for m in rec.models}
    assert models[dear].quality_per_dollar is not None and models[cheap].quality_per_dollar
    assert models[cheap].quality_per_dollar > models[dear].quality_per_dollar  # per $: cheap


def test_cheaper_model_of_equal_quality_leads() -> None:
    cheap, dear = PAID
    rows = [row(cheap, cost=0.0002, latency=0.9) for _ in range(40)]
    rows += [row(dear, cost=0.01, latency=0.2) for _ in range(40)]
    outcomes = scores(cheap, 40, 0.9, seed=3) + scores(dear, 40, 0.9, seed=3)
    # the cheaper model is first already: kept, even though the dear one is faster
    paid = next(t for t in recommend_operation("rewriting", CATALOG, rows, outcomes).tiers
                if t.tier == "paid")  # fmt: skip
    assert paid.suggested is None and paid.reason.startswith(f"{cheap} is already first")
    # reversed chain in a user catalog: the cheap model is moved up, decided by cost
    data = default_catalog_data()
    data["chains"]["rewriting"]["paid"] = [dear, cheap]
    reordered = Catalog.from_mapping(data)
    paid = next(t for t in recommend_operation("rewriting", reordered, rows, outcomes).tiers
                if t.tier == "paid")  # fmt: skip
    assert paid.suggested == (cheap, dear) and paid.decided_by == "cost" and paid.significant
    assert "cheaper" in paid.reason


def test_success_rate_stands_in_without_evidence_and_thin_records_are_not_ranked() -> None:
    free = [s.key for s in CATALOG.chain("rewriting", Tier.FREE)]  # openrouter llama, mistral
    rows = [row(free[0], ok=i % 3 != 0) for i in range(60)] + [row(free[1]) for _ in range(60)]
    rec = recommend_operation("rewriting", CATALOG, rows, [], min_n=20)
    tier = next(t for t in rec.tiers if t.tier == "free")
    assert tier.basis == SUCCESS_RATE
    assert tier.suggested == (free[1], free[0]) and tier.decided_by == "quality"
    assert tier.significant  # 67 % vs 100 % over 60 sent attempts each
    # the incumbent with too little record: nothing to compare against, nothing suggested
    thin = rows[:5] + [row(free[1]) for _ in range(60)]
    tier = next(t for t in recommend_operation("rewriting", CATALOG, thin, []).tiers
                if t.tier == "free")  # fmt: skip
    assert tier.suggested is None and "too little record" in tier.reason


def test_an_evaluated_model_outside_the_chain_is_added_first() -> None:
    local = CATALOG.chains["rewriting"].local  # one model
    outsider = "phi4-mini"
    assert outsider not in local and CATALOG.spec(outsider).tier.value == "local"
    outcomes = scores(local[0], 30, 0.4, seed=4) + scores(outsider, 30, 0.9, seed=5)
    rec = recommend_operation("rewriting", CATALOG, [], outcomes, min_n=20)
    tier = next(t for t in rec.tiers if t.tier == "local")
    assert tier.suggested == (outsider, *local)
    assert tier.change() == f"add {outsider} first in rewriting's local tier"
    snippet = toml_snippet([rec])
    assert snippet == f'[chains.rewriting]\nlocal = ["{outsider}", "{local[0]}"]'
