"""Quality evidence and what the router does with it: measured quality, A/B arms, call ids.

Issue 8: evals, judges and escalations leave verdicts (``Outcome``) in the ledger file;
once a model has enough of them on an operation, the selector orders the tier by the
measured quality instead of the catalog's rubric (only on a clear difference). An A/B
test puts the arm's model first for a whole thread and records the arm on every attempt.
Every attempt of one routed call carries the call's id. Old (version 1) ledgers migrate.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierwise.catalog.policy import ABTest, OperationOverride, Policy
from tierwise.catalog.settings import ConfigError, load_settings
from tierwise.catalog.specs import Catalog, TaskType, Tier, load_default_catalog
from tierwise.ledger import SCHEMA_VERSION, Ledger, LedgerRow
from tierwise.ledger.evidence import EVAL, JUDGE, EvidenceStore, Measured, Outcome, interval
from tierwise.providers.clients import ProviderFactory
from tierwise.routing.router import ModelRouter
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot
from tierwise.routing.steering import arm_of, lead
from tierwise.testing import Reply, Simulator

OP = TaskType.CLASSIFICATION
CATALOG = load_default_catalog()


# --------------------------------------------------------------------------- the store


def test_interval_is_wilson_and_stays_in_bounds() -> None:
    low, high = interval(45, 50)
    assert (round(low, 3), round(high, 3)) == (0.786, 0.957)
    assert interval(0, 10)[0] == 0.0 and interval(10, 10)[1] == 1.0
    assert interval(0, 0) == (0.0, 1.0)


def test_outcome_rejects_scores_outside_zero_one_and_unknown_sources() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Outcome("classification", "m", 7.0, JUDGE)
    with pytest.raises(ValueError, match="allowed: eval, judge, escalation"):
        Outcome("classification", "m", 1.0, "vibes")


def test_store_aggregates_per_operation_and_model_with_min_n(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "ledger.sqlite3")
    store.record([Outcome("classification", "a", s, EVAL, dataset="d", item=str(i))
                  for i, s in enumerate([1, 1, 1, 0])])  # fmt: skip
    store.record([Outcome("classification", "b", 0.5, JUDGE)] * 2)
    quality = store.quality(min_n=3)
    assert set(quality) == {("classification", "a")}
    a = quality[("classification", "a")]
    assert (a.n, a.mean) == (4, 0.75) and a.low < 0.75 < a.high
    assert store.done("d", "classification", "a") == {"0", "1", "2", "3"}
    assert store.done("d", "classification", "b") == set()
    assert [o.score for o in store.outcomes(model="b")] == [0.5, 0.5]
    store.close()


def test_training_rows_join_features_and_average_verdicts(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "ledger.sqlite3")
    store.record_features("c1", "rewriting", [5, 9, 9])
    store.record([Outcome("rewriting", "m", 0.8, JUDGE, call_id="c1"),
                  Outcome("rewriting", "m", 0.0, "escalation", call_id="c1"),
                  Outcome("rewriting", "m", 1.0, JUDGE, call_id="no-features")])  # fmt: skip
    rows = store.training_rows()
    assert [(r.call_id, r.model, r.ids, r.score) for r in rows] == [
        ("c1", "m", (5, 9, 9), pytest.approx(0.4))
    ]
    store.close()


def test_a_version_1_ledger_gains_call_and_arm_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE attempts (id INTEGER PRIMARY KEY, time REAL NOT NULL, run_id TEXT, "
        "thread_id TEXT, node TEXT, operation TEXT NOT NULL, complexity TEXT NOT NULL, "
        "policy TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, tier TEXT NOT NULL, "
        "outcome TEXT NOT NULL, sent INTEGER NOT NULL, latency REAL NOT NULL, "
        "time_to_first_token REAL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT "
        "NULL, cost REAL NOT NULL, escalation INTEGER NOT NULL, repair INTEGER NOT NULL, "
        "detail TEXT NOT NULL)"
    )
    conn.execute("CREATE TABLE writers (writer TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
                 "pid INTEGER NOT NULL, updated REAL NOT NULL) WITHOUT ROWID")  # fmt: skip
    conn.execute("INSERT INTO attempts VALUES (1, 1.0, NULL, NULL, NULL, 'rewriting', 'simple', "
                 "'balanced', 'openai', 'gpt-4o', 'paid', 'ok', 1, 0.5, NULL, 10, 5, 0.01, 0, 0, "
                 "'')")  # fmt: skip
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Ledger(path) as ledger:
        (row,) = ledger.rows()
        assert (row.model, row.call_id, row.arm) == ("gpt-4o", None, None)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


# --------------------------------------------------------------------------- the selector

FREE = [s.key for s in CATALOG.chain(OP, Tier.FREE)]  # gemini-2.5-flash-free 8, groq 6, hf 5


def free_chain(*measured: Measured) -> list[str]:
    snapshot = Snapshot.everything(CATALOG).measured(measured)
    chain = Selector(CATALOG).candidates(OP, "simple", Policy(), snapshot)
    return [s.key for s in chain if s.key in FREE]


def test_measured_quality_moves_a_model_above_a_peer_only_on_a_clear_difference() -> None:
    assert free_chain() == FREE
    clearly = Measured(OP.value, FREE[1], 200, 0.95, 0.91, 0.97)  # above the first's 8/10
    assert free_chain(clearly) == [FREE[1], FREE[0], FREE[2]]
    overlapping = Measured(OP.value, FREE[1], 20, 0.85, 0.64, 0.95)  # could be below 0.8
    assert free_chain(overlapping) == FREE
    poor = Measured(OP.value, FREE[0], 100, 0.3, 0.22, 0.4)  # the first, measured bad
    assert free_chain(poor) == [FREE[1], FREE[2], FREE[0]]
    other_operation = Measured("rewriting", FREE[1], 200, 0.95, 0.91, 0.97)
    assert free_chain(other_operation) == FREE


def test_the_reason_names_the_measured_quality() -> None:
    snapshot = Snapshot.everything(CATALOG).measured(
        [Measured(OP.value, FREE[1], 200, 0.95, 0.91, 0.97)]
    )
    explanation = Selector(CATALOG).explain(OP, "simple", Policy(), snapshot)
    why = {p.spec.key: p.reason for p in explanation.chosen}
    assert "measured 0.95 (0.91-0.97, n=200) in place of the rubric 6/10" in why[FREE[1]]
    assert f"moved above {FREE[0]} by measured quality" in why[FREE[1]]
    assert f"moved below {FREE[1]} by measured quality" in why[FREE[0]]


# --------------------------------------------------------------------------- the router

A, B = "ev-a", "ev-b"


def two_model_catalog() -> Catalog:
    models = {
        A: {"provider": "groq", "model": "evidence-a", "tier": "free", "context_window": 8192,
            "scores": {op.value: 7 for op in TaskType}},
        B: {"provider": "openrouter", "model": "evidence/b:free", "tier": "free",
            "context_window": 8192, "scores": {op.value: 7 for op in TaskType}},
    }  # fmt: skip
    tiers = {"free": [A, B], "local": [], "paid": []}
    return Catalog.from_mapping({"models": models, "chains": {op.value: tiers for op in TaskType}})


@pytest.fixture
def rig(simulator: Simulator, tmp_path: Path) -> Iterator[tuple[Simulator, ModelRouter, Ledger]]:
    catalog = two_model_catalog()
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    for key in (A, B):
        simulator.script(catalog.spec(key), Reply.text(key))
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(
            settings, policy=Policy(), snapshot=Snapshot.everything(catalog),
            factory=ProviderFactory(settings), ledger=ledger, standings_ttl=0.0,
            evidence_min_n=10,
        )  # fmt: skip
        yield simulator, router, ledger


def test_eval_evidence_changes_which_model_the_router_calls_first(
    rig: tuple[Simulator, ModelRouter, Ledger],
) -> None:
    _, router, ledger = rig
    assert router.invoke(OP, "label this").model == A
    ledger.evidence.record([Outcome(OP.value, A, 0.0, EVAL, item=str(i)) for i in range(30)])
    ledger.evidence.record([Outcome(OP.value, B, 1.0, EVAL, item=str(i)) for i in range(30)])
    result = router.invoke(OP, "label this")
    assert result.model == B and result.fallbacks == 0
    assert router.invoke("rewriting", "say it better").model == A  # other operations untouched


def test_every_attempt_of_a_call_carries_its_call_id(
    rig: tuple[Simulator, ModelRouter, Ledger],
) -> None:
    sim, router, ledger = rig
    from tierwise.testing import Fault

    sim.script(router.settings.catalog.spec(A), Fault.server_error(503))
    first = router.invoke(OP, "one")
    second = router.invoke(OP, "two")
    assert ledger.flush()
    rows = ledger.rows()
    assert first.call_id and first.call_id != second.call_id
    by_call = Counter(r.call_id for r in rows)
    assert by_call[first.call_id] == 2 and by_call[second.call_id] == 2  # A failed, B answered
    assert first.provenance()["call_id"] == first.call_id


def test_ab_arms_are_sticky_per_thread_and_recorded_on_every_attempt(
    rig: tuple[Simulator, ModelRouter, Ledger],
) -> None:
    _, router, ledger = rig
    test = ABTest(name="labels", a=A, b=B, share_b=0.5)
    policy = Policy(operations={OP: OperationOverride(ab=test)})
    seen: dict[str, set[str]] = {}
    for thread in range(40):
        for _ in range(2):
            config: Any = {"configurable": {"thread_id": f"t{thread}"}}
            result = router.invoke(OP, "label", policy=policy, config=config)
            expected = arm_of(test, f"t{thread}")
            assert result.arm == f"labels:{expected}"
            assert result.model == (A if expected == "a" else B)
            seen.setdefault(f"t{thread}", set()).add(result.model)
    assert all(len(models) == 1 for models in seen.values())  # sticky
    assert {m for models in seen.values() for m in models} == {A, B}  # both arms used
    assert ledger.flush()
    arms = Counter(r.arm for r in ledger.rows())
    assert set(arms) == {"labels:a", "labels:b"} and sum(arms.values()) == 80
    # escalations ask for a tier, not a model: no arm
    escalated = router.invoke(OP, "label", policy=policy, min_tier="free")
    assert escalated.arm is None


def test_share_b_is_respected_over_many_threads() -> None:
    test = ABTest(name="t", a="x", b="y", share_b=0.2)
    share = sum(arm_of(test, f"thread-{i}") == "b" for i in range(5000)) / 5000
    assert 0.18 < share < 0.22


def test_lead_moves_one_model_first_and_keeps_the_rest() -> None:
    chain = CATALOG.chain(OP, Tier.FREE)
    assert [s.key for s in lead(chain, FREE[2])] == [FREE[2], FREE[0], FREE[1]]
    assert lead(chain, "not-there") == chain


def test_policy_naming_unknown_ab_or_ensemble_models_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "tierwise.toml"
    config.write_text('[policy.operations.classification.ab]\nname = "t"\na = "gpt-4o"\n'
                      'b = "nope"\n')  # fmt: skip
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    message = str(error.value)
    assert "policy.operations.classification.ab.b" in message and "unknown model 'nope'" in message
    assert str(config) in message


def test_an_arm_whose_model_cannot_answer_keeps_its_calls_as_failures(
    rig: tuple[Simulator, ModelRouter, Ledger],
) -> None:
    """Intention to treat: arm b's calls stay arm b's when its model is not a candidate."""
    from tierwise.insights.ab import calls_by_test

    _, router, ledger = rig
    test = ABTest(name="gone", a=A, b="retired-model", share_b=0.5)
    policy = Policy(operations={OP: OperationOverride(ab=test)})
    for thread in range(30):
        config: Any = {"configurable": {"thread_id": f"g{thread}"}}
        result = router.invoke(OP, "label", policy=policy, config=config)
        assert result.arm == f"gone:{arm_of(test, f'g{thread}')}"
        assert result.model == A  # the chain answered; the arm's model could not
    assert ledger.flush()
    calls = calls_by_test(ledger.rows(), {"gone": {"a": A, "b": "retired-model"}})
    by_arm: dict[str, list[bool]] = {}
    for call in calls[("gone", OP.value)]:
        by_arm.setdefault(call.arm, []).append(call.success)
    assert set(by_arm) == {"a", "b"} and sum(map(len, by_arm.values())) == 30
    assert all(by_arm["a"]) and not any(by_arm["b"])


def test_training_rows_count_a_failed_validation_as_a_zero(tmp_path: Path) -> None:
    """An invalid answer in the ledger is a verdict on that model for the learned router."""
    from tierwise.catalog.specs import Provider
    from tierwise.ledger import Attempt
    from tierwise.providers.failures import FailureKind

    def attempt(model: str, failure: FailureKind | None) -> Attempt:
        return Attempt(model, Provider.GROQ, Tier.FREE, failure, 0.1)

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        def record(call: str, *attempts: Attempt) -> None:
            for a in attempts:
                ledger.record(LedgerRow.from_attempt(a, operation="rewriting",
                                                     complexity="simple", policy="balanced",
                                                     call_id=call))  # fmt: skip
            ledger.evidence.record_features(call, "rewriting", [1, 2])

        invalid = FailureKind.INVALID_OUTPUT
        record("fell-back", attempt("x", invalid), attempt("y", None))
        record("repaired", attempt("x", invalid), attempt("x", None))
        record("judged", attempt("x", invalid), attempt("y", None))
        ledger.evidence.record([Outcome("rewriting", "y", 0.9, JUDGE, call_id="judged")])
        assert ledger.flush()
        rows = {(r.call_id, r.model): r.score for r in ledger.evidence.training_rows()}
    assert rows == {("fell-back", "x"): 0.0, ("judged", "x"): 0.0, ("judged", "y"): 0.9}


def test_all_time_quality_is_kept_up_to_date_incrementally(tmp_path: Path) -> None:
    """The router's every-2-s read adds only new outcomes; it must equal a full scan."""
    store = EvidenceStore(tmp_path / "ledger.sqlite3")
    other = EvidenceStore(tmp_path / "ledger.sqlite3")  # another process appending
    for round_ in range(3):
        batch = range(10 * round_, 10 * round_ + 10)
        other.record([Outcome("classification", f"m{i % 3}", (i * 7 % 10) / 10,
                              EVAL if i % 2 else JUDGE) for i in batch])  # fmt: skip
        incremental = store.quality(min_n=1)
        full = store.quality(min_n=1, since=0.0)
        assert incremental == full
        assert store.quality(min_n=1, sources=[EVAL]) == store.quality(
            min_n=1, sources=[EVAL], since=0.0)
    assert sum(m.n for m in store.quality(min_n=1).values()) == 30
    store.close()
    other.close()
