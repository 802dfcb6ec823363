"""Dynamic model selection: the ledger's rolling record moves failing or slow models down.

Issue 6 item 3, "monitoring feeding selection": per (operation, model), the success rate,
p50 / p95 latency and cost per successful call of the latest calls in the ledger reach
the selector as coarse :class:`Standing` entries of its :class:`Snapshot`. A model that is
failing or slow moves below its same-tier peers (never across tiers), the reason shows in
``Selector.explain()`` and ``tierwise route``, and the model moves back up when it heals.

The unit tests hand-build the record; the router tests run the real router, ledger and
LangChain clients against the provider simulator; the CLI test writes a ledger with a bad
history and reads ``tierwise route --ledger`` back.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from typer.testing import CliRunner

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import CREDENTIAL_ENV
from tierwise.catalog.specs import Catalog, TaskType, Tier, load_default_catalog
from tierwise.cli.app import app
from tierwise.guards.health import HealthBoard
from tierwise.ledger import OK, Ledger, LedgerRow, Performance
from tierwise.providers.clients import ProviderFactory
from tierwise.routing.availability import DEFAULT_DEMOTION, read_standings
from tierwise.routing.demotion import DemotionRule
from tierwise.routing.router import ModelRouter
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import FAILING, SLOW, Snapshot, Standing
from tierwise.testing import Fault, Reply, Simulator

CATALOG = load_default_catalog()
OP = TaskType.CLASSIFICATION
FREE = [s.key for s in CATALOG.chain(OP, Tier.FREE)]  # gemini-2.5-flash-free, groq-..., hf-...
LOCAL = [s.key for s in CATALOG.chain(OP, Tier.LOCAL)]
FREE_FIRST = Policy(mode="free_first")
RULE = DemotionRule()


class Record(NamedTuple):
    """A hand-built window (what ``Ledger.performance`` returns per model)."""

    success_rate: float | None
    p95_latency: float | None
    n: int
    cost_per_success: float | None = None


def healthy(n: int = 20, p95: float = 0.5) -> Record:
    return Record(1.0, p95, n)


def record(**models: Record) -> dict[tuple[str, str], Record]:
    """``{(classification, key): window}``; keyword names use ``_`` for ``-`` and ``.``."""
    keys = {k.replace("-", "_").replace(".", "_"): k for k in CATALOG.models}
    return {(OP.value, keys[name]): window for name, window in models.items()}


def keys(chain: Any) -> list[str]:
    return [spec.key for spec in chain]


# --------------------------------------------------------------------------- the rule


def test_failing_model_needs_the_minimum_sample_and_two_failures_in_five() -> None:
    gemini, groq = FREE[0], FREE[1]
    assert RULE.standings(CATALOG, record(gemini_2_5_flash_free=Record(0.0, None, 4))) == set()
    one_in_five = record(gemini_2_5_flash_free=Record(0.8, 0.5, 5), groq_llama_3_1_8b=healthy())
    assert RULE.standings(CATALOG, one_in_five) == set()
    two_in_five = record(gemini_2_5_flash_free=Record(0.6, 0.5, 5), groq_llama_3_1_8b=healthy())
    assert RULE.standings(CATALOG, two_in_five) == {
        Standing(OP.value, gemini, FAILING, "60% success over last 5 calls")
    }
    assert groq not in {s.model for s in RULE.standings(CATALOG, two_in_five)}


def test_slow_model_is_judged_against_its_fastest_same_tier_peer() -> None:
    gemini, groq = FREE[0], FREE[1]
    slow = record(gemini_2_5_flash_free=healthy(p95=4.1), groq_llama_3_1_8b=healthy(p95=0.6))
    assert RULE.standings(CATALOG, slow) == {
        Standing(OP.value, gemini, SLOW, f"p95 4 s vs {groq} 0.6 s")
    }
    # twice as slow but only 0.3 s more: not slow (slow_margin 1 s)
    close = record(gemini_2_5_flash_free=healthy(p95=0.6), groq_llama_3_1_8b=healthy(p95=0.3))
    assert RULE.standings(CATALOG, close) == set()
    # a peer without enough calls is no yardstick
    thin = record(gemini_2_5_flash_free=healthy(p95=4.1), groq_llama_3_1_8b=healthy(n=4, p95=0.1))
    assert RULE.standings(CATALOG, thin) == set()
    both = record(gemini_2_5_flash_free=Record(0.4, 4.1, 20), groq_llama_3_1_8b=healthy(p95=0.6))
    (standing,) = RULE.standings(CATALOG, both)
    assert standing.level == FAILING
    assert standing.why == f"40% success over last 20 calls; p95 4 s vs {groq} 0.6 s"


def test_paid_note_carries_the_cost_per_successful_call_and_lone_models_are_not_judged() -> None:
    chain = [s.key for s in CATALOG.chain(TaskType.REWRITING, Tier.PAID)]
    assert len(chain) == 2
    window = {
        (TaskType.REWRITING.value, chain[0]): Record(0.5, 1.0, 10, 0.0042),
        (TaskType.REWRITING.value, chain[1]): healthy(),
        # instruction_routing has one paid model: nobody to move below
        (TaskType.INSTRUCTION_ROUTING.value, "gemini-2.5-pro"): Record(0.0, None, 20),
    }
    (standing,) = RULE.standings(CATALOG, window)
    assert standing.model == chain[0]
    assert standing.why == "50% success over last 10 calls; $0.0042 per successful call"


def test_rule_rejects_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError):
        DemotionRule(window=3, min_calls=5)
    with pytest.raises(ValueError):
        DemotionRule(slow_ratio=0.5)


# --------------------------------------------------------------------------- the selector


def test_selector_moves_a_demoted_model_below_its_same_tier_peers_only() -> None:
    gemini, groq, hf = FREE
    selector = Selector(CATALOG)
    everything = Snapshot.everything(CATALOG)
    before = selector.explain(OP, "simple", FREE_FIRST, everything)
    assert keys(before.candidates)[:3] == FREE

    failing = Standing(OP.value, gemini, FAILING, "40% success over last 20 calls")
    slow = Standing(OP.value, groq, SLOW, "p95 4 s vs hf-llama-3.1-8b 0.6 s")
    ranked = everything.ranked({failing, slow})
    ex = selector.explain(OP, "simple", FREE_FIRST, ranked)
    chain = keys(ex.candidates)
    assert chain[:3] == [hf, groq, gemini]  # slow above failing; both below the healthy peer
    assert chain[3:] == keys(before.candidates)[3:]  # the local tier (and embedded) unmoved
    reasons = {p.spec.key: p.reason for p in ex.chosen}
    assert reasons[gemini].endswith(f"; moved below {hf}, {groq}: 40% success over last 20 calls")
    assert reasons[groq].endswith(f"; moved below {hf}: p95 4 s vs hf-llama-3.1-8b 0.6 s")
    assert reasons[hf].endswith(f"; moved above {groq}, {gemini} (are demoted)")
    assert "first of the classification free chain" in reasons[gemini]  # catalog place kept

    # another operation's standings change nothing here; demoted models are never excluded
    other = everything.ranked({Standing("rewriting", gemini, FAILING, "0% success")})
    assert keys(selector.candidates(OP, "simple", FREE_FIRST, other)) == keys(before.candidates)


def test_a_failing_tier_never_moves_below_another_tier() -> None:
    every_free = Snapshot.everything(CATALOG).ranked(
        Standing(OP.value, key, FAILING, "0% success over last 20 calls") for key in FREE
    )
    chain = keys(Selector(CATALOG).candidates(OP, "simple", FREE_FIRST, every_free))
    assert chain[:3] == FREE and chain[3] == LOCAL[0]  # equal levels: catalog order
    explained = Selector(CATALOG).explain(OP, "simple", FREE_FIRST, every_free)
    assert "no healthier free peer to move below" in explained.chosen[0].reason


def test_demotion_within_what_is_left_and_pins_are_kept() -> None:
    gemini, groq, hf = FREE
    snapshot = Snapshot(available=frozenset(CATALOG.models) - {hf}).ranked(
        [Standing(OP.value, gemini, FAILING, "0% success over last 9 calls")]
    )
    ex = Selector(CATALOG).explain(OP, "simple", FREE_FIRST, snapshot)
    assert keys(ex.candidates)[:2] == [groq, gemini]
    assert hf not in ex.chosen[1].reason  # only usable peers are named
    pinned = Policy(mode="free_first", operations={OP.value: {"pin": gemini}})
    assert keys(Selector(CATALOG).candidates(OP, "simple", pinned, snapshot)) == [gemini]


def test_standings_are_coarse_and_keep_the_memo_hitting() -> None:
    groq = FREE[1]
    selector = Selector(CATALOG)
    # the same judgement from slightly different figures: equal standings, equal snapshots
    a = RULE.standings(CATALOG, record(
        gemini_2_5_flash_free=Record(0.40, 4.12, 20), groq_llama_3_1_8b=healthy(p95=0.61)))
    b = RULE.standings(CATALOG, record(
        gemini_2_5_flash_free=Record(0.40, 4.07, 20), groq_llama_3_1_8b=healthy(p95=0.64)))
    assert a == b
    snap_a, snap_b = Snapshot.everything(CATALOG).ranked(a), Snapshot.everything(CATALOG).ranked(b)
    assert snap_a is not snap_b and snap_a == snap_b and hash(snap_a) == hash(snap_b)
    first = selector.candidates(OP, "simple", FREE_FIRST, snap_a)
    hits = selector._explain.cache_info().hits
    assert selector.candidates(OP, "simple", FREE_FIRST, snap_b) is first
    assert selector._explain.cache_info().hits == hits + 1
    assert keys(first)[:2] == [groq, FREE[2]]
    # standings survive the circuit breaker's snapshot
    board = HealthBoard()
    for _ in range(3):
        board.record_failure(groq, "unavailable")
    provider_of = {k: s.provider.value for k, s in CATALOG.models.items()}
    cooled = board.snapshot(snap_a, provider_of)
    assert cooled.standings == snap_a.standings and groq in cooled.cooling


# --------------------------------------------------------------------------- the ledger


def row(model: str, outcome: str, latency: float, *, cost: float = 0.0, t: float,
        operation: str = OP.value, sent: bool = True) -> LedgerRow:  # fmt: skip
    spec = CATALOG.spec(model)
    return LedgerRow(
        time=t, run_id=None, thread_id=None, node=None, operation=operation,
        complexity="simple", policy="free_first", provider=spec.provider.value, model=model,
        tier=spec.tier.value, outcome=outcome, sent=sent, latency=latency,
        time_to_first_token=None, input_tokens=10, output_tokens=5, cost=cost,
        escalation=False, repair=False, detail="",
    )  # fmt: skip


def test_ledger_performance_is_the_latest_window_since_a_time(tmp_path: Path) -> None:
    now = time.time()
    gemini, groq = FREE[0], FREE[1]
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        for i in range(10):  # old failures, then 10 recent calls: 4 good ones
            ledger.record(row(gemini, "unavailable", 0.1, t=now - 3600 + i))
        for i in range(10):
            good = i % 5 in (0, 1)
            outcome = OK if good else "timeout"
            ledger.record(row(gemini, outcome, 1.0 + i, cost=0.01, t=now - 10 + i))
        ledger.record(row(groq, "rate_limited", 0.0, t=now, sent=False))  # never sent
        assert ledger.flush()
        recent = ledger.performance(last_n=20, since=now - 60)
        assert set(recent) == {(OP.value, gemini)}
        window = recent[(OP.value, gemini)]
        assert window.n == 10 and window.success_rate == pytest.approx(0.4)
        # successes at latencies 1, 2, 6, 7 s (calls 0, 1, 5, 6)
        assert window.p50_latency == pytest.approx(4.0)
        assert window.p95_latency == pytest.approx(6.85)
        assert window.cost_per_success == pytest.approx(0.1 / 4)
        assert ledger.performance(last_n=5, since=now - 60)[(OP.value, gemini)].n == 5
        assert ledger.performance(last_n=50, since=0)[(OP.value, gemini)].n == 20
        assert ledger.performance(since=0, operation="rewriting") == {}
        assert ledger.performance(since=now + 1) == {}
        # by pairs (one indexed query each, as the router reads it): the same windows
        pairs = [(OP.value, gemini), (OP.value, groq), ("rewriting", gemini)]
        assert ledger.performance(pairs, last_n=20, since=now - 60) == recent
        assert ledger.performance(pairs, last_n=5, since=now - 60) == {
            (OP.value, gemini): ledger.performance(last_n=5, since=now - 60)[(OP.value, gemini)]
        }
        assert ledger.performance(pairs, since=now + 1) == {}
        assert ledger.performance(pairs, since=0, operation="rewriting") == {}
        standings = read_standings(RULE, ledger, CATALOG, now)
    assert standings == {
        Standing(OP.value, gemini, FAILING, "40% success over last 10 calls")
    }
    assert Performance(None, None, None, None, 0).n == 0


# --------------------------------------------------------------------------- the router

FAST, SLOW_MODEL, LOCAL_MODEL = "dyn-fast", "dyn-slow", "dyn-local"
MODELS: dict[str, dict[str, Any]] = {
    SLOW_MODEL: {"provider": "openrouter", "model": "dynamic/first:free"},  # catalog first
    FAST: {"provider": "groq", "model": "dynamic-second"},
    LOCAL_MODEL: {"provider": "ollama", "model": "dynamic-local:1b", "tier": "local"},
}


def small_catalog() -> Catalog:
    models = {k: {"tier": "free", "context_window": 131072, **v} for k, v in MODELS.items()}
    tiers = {"free": [SLOW_MODEL, FAST], "local": [LOCAL_MODEL], "paid": []}
    return Catalog.from_mapping(
        {"models": models, "chains": {op.value: tiers for op in TaskType}}
    )


@dataclasses.dataclass
class Rig:
    sim: Simulator
    catalog: Catalog
    router: ModelRouter
    ledger: Ledger

    def sent(self, key: str) -> int:
        return len(self.sim.requests_for(self.catalog.spec(key)))

    def call(self) -> str:
        result = self.router.invoke(OP, "Is this spam? WIN A PRIZE", complexity="simple")
        assert self.ledger.flush()  # the router reads committed rows
        return result.model

    def chain(self) -> list[str]:
        snapshot = self.router.snapshot()
        return keys(self.router.selector.candidates(OP, "simple", FREE_FIRST, snapshot))

    def reasons(self) -> dict[str, str]:
        ex = self.router.selector.explain(OP, "simple", FREE_FIRST, self.router.snapshot())
        return {p.spec.key: p.reason for p in ex.chosen}


HORIZON = 2.5
TEST_RULE = DemotionRule(window=10, min_calls=5, horizon=HORIZON, slow_margin=0.05)


@pytest.fixture
def rig(simulator: Simulator, tmp_path: Path) -> Iterator[Rig]:
    catalog = small_catalog()
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(
            settings, policy=FREE_FIRST, snapshot=Snapshot.everything(catalog),
            factory=ProviderFactory(settings), ledger=ledger,
            # the breaker would cool the failing model (exclude it) after 3 errors in a
            # row; this test is about the order among usable models, so it stays out
            health=HealthBoard(failure_threshold=1000),
            demotion=TEST_RULE, standings_ttl=0.0,
        )  # fmt: skip
        yield Rig(simulator, catalog, router, ledger)


def test_failing_slow_model_drops_below_its_peer_and_recovers_when_it_heals(rig: Rig) -> None:
    spec = rig.catalog.spec(SLOW_MODEL)
    rig.sim.script(spec, Reply.text("spam"), first_byte=0.12)  # slow when it answers...
    rig.sim.script(spec, Fault.server_error(503), fraction=0.7, seed=8)  # ...and mostly fails
    assert rig.chain() == [SLOW_MODEL, FAST, LOCAL_MODEL]

    demoted_after = None
    for call in range(1, 16):
        rig.call()
        if rig.chain()[0] == FAST:
            demoted_after = call
            break
    assert demoted_after is not None, "the failing model was never demoted"
    assert rig.sent(SLOW_MODEL) >= TEST_RULE.min_calls  # no judgement on fewer calls
    assert rig.chain() == [FAST, SLOW_MODEL, LOCAL_MODEL]  # the local tier stays last

    # demoted: the healthy peer answers first, the bad model is no longer called
    sent = rig.sent(SLOW_MODEL)
    assert [rig.call() for _ in range(5)] == [FAST] * 5
    assert rig.sent(SLOW_MODEL) == sent
    reason = rig.reasons()[SLOW_MODEL]
    assert f"moved below {FAST}: " in reason and "% success over last" in reason, reason
    # slow as well: ~120 ms against the peer's few ms
    assert re.search(rf"p95 [\d.]+ m?s vs {FAST} [\d.]+ ms", reason), reason
    assert f"moved above {SLOW_MODEL} (is demoted)" in rig.reasons()[FAST]

    # it heals; its bad calls age out of the horizon, and it is back in its catalog place
    rig.sim.reset()
    time.sleep(HORIZON + 0.2)
    assert rig.chain() == [SLOW_MODEL, FAST, LOCAL_MODEL]
    assert "moved" not in rig.reasons()[SLOW_MODEL]
    assert [rig.call() for _ in range(6)] == [SLOW_MODEL] * 6  # and stays there: all good
    assert rig.chain() == [SLOW_MODEL, FAST, LOCAL_MODEL]


def test_failures_pushed_out_by_successes_bring_the_model_back(rig: Rig) -> None:
    """Recovery without waiting: a demoted model called as the fallback refills its window."""
    first, second = rig.catalog.spec(SLOW_MODEL), rig.catalog.spec(FAST)
    rig.sim.script(first, Fault.server_error(500), times=5)
    for _ in range(5):
        assert rig.call() == FAST
    assert rig.chain()[:2] == [FAST, SLOW_MODEL]
    assert rig.call() == FAST
    # the peer breaks: calls fall back to the healed model, whose successes push its
    # failures out of the window (and the peer's failures demote the peer)
    rig.sim.script(second, Fault.server_error(500))
    answered = [rig.call() for _ in range(12)]
    assert set(answered) == {SLOW_MODEL}
    assert rig.chain()[:2] == [SLOW_MODEL, FAST]
    reasons = rig.reasons()
    assert "moved" not in reasons[SLOW_MODEL] and "success" not in reasons[SLOW_MODEL]
    assert "; demoted (already below its healthier peers): " in reasons[FAST], reasons[FAST]
    assert "% success over last" in reasons[FAST]


def test_router_reads_the_ledger_at_most_every_ttl_and_reuses_snapshots(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.sim.script(rig.catalog.spec(SLOW_MODEL), Fault.server_error(500), times=5)
    for _ in range(5):
        rig.call()
    reads = []
    real = rig.ledger.performance

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(rig.ledger, "performance", counted)
    rig.router.availability._standings_ttl = 60.0
    rig.router.availability._standings = None
    first = rig.router.snapshot()
    assert first.standings and len(reads) == 1
    assert reads[0]["last_n"] == TEST_RULE.window
    for _ in range(3):
        rig.call()  # each call takes a snapshot
        assert rig.router.snapshot() is first
    assert len(reads) == 1  # one query for all of them
    # re-read with equal standings: the very same snapshot object
    cached = rig.router.availability._standings
    assert cached is not None
    rig.router.availability._standings = (time.monotonic() - 61.0, cached[1])
    assert rig.router.snapshot() is first and len(reads) == 2


def test_router_without_ledger_or_rule_has_no_standings(simulator: Simulator) -> None:
    catalog = small_catalog()
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    base = Snapshot.everything(catalog)
    assert ModelRouter(settings, snapshot=base).snapshot() is base
    assert ModelRouter(settings, snapshot=base, demotion=None).demotion is None
    assert ModelRouter(settings, snapshot=base).demotion is DEFAULT_DEMOTION


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in sorted({n for names in CREDENTIAL_ENV.values() for n in names}):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TIERWISE_CONFIG", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(
        "tierwise.catalog.settings.platformdirs.user_config_dir",
        lambda *a, **k: str(tmp_path / "xdg"),
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-real")
    monkeypatch.setenv("GROQ_API_KEY", "test-key-not-real")
    return tmp_path


def test_route_with_a_ledger_shows_why_a_model_moved_down(cli_env: Path) -> None:
    gemini, groq = FREE[0], FREE[1]
    path = cli_env / "history.sqlite3"
    now = time.time()
    with Ledger(path) as ledger:
        for i in range(20):
            ledger.record(row(gemini, OK if i % 5 < 2 else "unavailable", 4.0, t=now - 30 + i))
            ledger.record(row(groq, OK, 0.6, t=now - 30 + i))
    args = ["route", OP.value, "-x", "simple", "--policy", "free_first"]

    plain = CliRunner().invoke(app, [*args, "--json"])
    assert plain.exit_code == 0, plain.output
    assert [c["key"] for c in json.loads(plain.stdout)["candidates"]][:2] == [gemini, groq]

    result = CliRunner().invoke(app, [*args, "--json", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    candidates = json.loads(result.stdout)["candidates"]
    assert [c["key"] for c in candidates][:2] == [groq, gemini]
    why = {c["key"]: c["reason"] for c in candidates}[gemini]
    assert why.endswith(
        f"moved below {groq}: 40% success over last 20 calls; p95 4 s vs {groq} 0.6 s"
    ), why

    table = CliRunner().invoke(app, [*args, "--ledger", str(path)])
    assert table.exit_code == 0, table.output
    assert "40% success over last 20 calls" in " ".join(table.stdout.split())

    missing = CliRunner().invoke(app, [*args, "--ledger", str(cli_env / "nope.sqlite3")])
    assert missing.exit_code != 0 and "no ledger" in missing.output
