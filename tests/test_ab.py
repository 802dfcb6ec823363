"""A/B reports (``tierwise ab report``) and the statistics under them.

The statistics are checked against closed forms and hand computations (no scipy). The
report is checked on a ledger written by a real ModelRouter against the provider
simulator, with a policy A/B test on ``classification`` whose arm b is scripted better
(fewer 5xx answers, better judge scores, no added latency): after a handful of threads the
report says there is not enough data yet and how much more it needs; after 200 threads
it says b is better, with enough data to decide.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tierwise.catalog.policy import ABTest, Policy
from tierwise.catalog.specs import Catalog, default_catalog_data
from tierwise.cli.insights import ab_app, recommend_command
from tierwise.guards.health import HealthBoard
from tierwise.insights.ab import (
    A_BETTER,
    B_BETTER,
    NO_DATA,
    NO_DIFFERENCE,
    NOT_YET,
    Call,
    ab_reports,
    compare,
)
from tierwise.insights.statistics import (
    interval,
    mean_var,
    normal_sf,
    regularized_beta,
    sample_size_means,
    sample_size_proportions,
    t_sf,
    two_proportion_z_test,
    welch_t_test,
    welch_t_test_samples,
)
from tierwise.ledger import Ledger
from tierwise.ledger.evidence import JUDGE, Outcome
from tierwise.ledger.evidence import interval as evidence_interval
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Fault, Simulator

# --------------------------------------------------------------------------- statistics


def test_two_proportion_z_test_matches_the_hand_computation() -> None:
    # 60/100 vs 45/100: pooled p = 0.525, se = sqrt(.525 * .475 * (1/100 + 1/100))
    se = math.sqrt(0.525 * 0.475 * 0.02)
    assert se == pytest.approx(0.0706222, abs=1e-6)
    result = two_proportion_z_test(60, 100, 45, 100)
    assert result.difference == pytest.approx(-0.15)
    assert result.statistic == pytest.approx(-0.15 / se) == pytest.approx(-2.1240, abs=1e-4)
    assert result.p_value == pytest.approx(0.03367, abs=5e-5)  # 2 * (1 - Phi(2.124))
    assert result.significant() and not result.significant(alpha=0.01)
    assert two_proportion_z_test(45, 100, 60, 100).difference == pytest.approx(0.15)
    # nothing to tell apart
    assert two_proportion_z_test(0, 10, 0, 10).p_value == 1.0
    assert two_proportion_z_test(10, 10, 20, 20).p_value == 1.0
    assert two_proportion_z_test(0, 0, 5, 10).p_value == 1.0


def test_normal_tail() -> None:
    assert normal_sf(0.0) == 0.5
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-7)
    assert normal_sf(-1.0) == pytest.approx(1 - 0.1586553, abs=1e-7)


def test_t_distribution_against_closed_forms() -> None:
    for t in (0.0, 0.3, 1.0, 2.5, 12.0, -1.7):
        # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-12)
        assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # printed t tables: two-sided 5 % and one-sided 5 % points
    assert 2 * t_sf(2.228139, 10) == pytest.approx(0.05, abs=1e-6)
    assert t_sf(1.812461, 10) == pytest.approx(0.05, abs=1e-6)
    assert 2 * t_sf(2.570582, 5) == pytest.approx(0.05, abs=1e-6)
    # large df tends to the normal; infinite df is the normal
    assert t_sf(1.96, 1e6) == pytest.approx(normal_sf(1.96), abs=1e-6)
    assert t_sf(1.96, math.inf) == normal_sf(1.96)
    with pytest.raises(ValueError):
        t_sf(1.0, 0)


def test_t_tail_against_numerical_integration_of_the_density() -> None:
    """An independent check of the continued fraction, at non-integer df."""
    for df in (3.7, 24.99):
        grid = np.linspace(0.0, 400.0, 2_000_001)
        log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(grid * grid / df))
        for t in (0.5, 2.0, 4.0):
            mask = grid >= t
            tail = float(np.trapezoid(pdf[mask], grid[mask]))
            assert t_sf(t, df) == pytest.approx(tail, rel=1e-4), (df, t)


def test_regularized_beta() -> None:
    assert regularized_beta(0.0, 2, 3) == 0.0 and regularized_beta(1.0, 2, 3) == 1.0
    # I_x(1, b) = 1 - (1 - x)^b and I_x(a, 1) = x^a
    assert regularized_beta(0.3, 1.0, 4.0) == pytest.approx(1 - 0.7**4, abs=1e-12)
    assert regularized_beta(0.3, 2.5, 1.0) == pytest.approx(0.3**2.5, abs=1e-12)
    assert regularized_beta(0.8, 5.0, 2.0) == pytest.approx(1 - regularized_beta(0.2, 2.0, 5.0))
    with pytest.raises(ValueError):
        regularized_beta(1.5, 1, 1)


def test_welch_t_test_on_a_textbook_example() -> None:
    # Wikipedia, "Welch's t-test", example 1: t = 2.46, df = 24.99, p = 0.021 (two-sided)
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
          21.4]  # fmt: skip
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
          24.4]  # fmt: skip
    # by hand: means 20.8200 / 22.9867, variances 7.7060 / 3.4355 (n - 1)
    (m1, v1), (m2, v2) = mean_var(a1), mean_var(a2)
    assert (m1, m2) == (pytest.approx(20.82), pytest.approx(22.986667))
    se2 = v1 / 15 + v2 / 15
    df = se2**2 / ((v1 / 15) ** 2 / 14 + (v2 / 15) ** 2 / 14)
    result = welch_t_test_samples(a1, a2)
    assert result.statistic == pytest.approx((m2 - m1) / math.sqrt(se2))
    assert result.statistic == pytest.approx(2.4554, abs=1e-4)
    assert result.df == pytest.approx(df) == pytest.approx(24.99, abs=0.01)
    assert result.p_value == pytest.approx(0.02138, abs=1e-4)
    assert welch_t_test_samples(a2, a1).statistic == pytest.approx(-result.statistic)
    # degenerate arms
    assert welch_t_test(1.0, 0.0, 1, 2.0, 1.0, 10).p_value == 1.0
    assert welch_t_test(1.0, 0.0, 5, 1.0, 0.0, 5).p_value == 1.0
    assert welch_t_test(1.0, 0.0, 5, 2.0, 0.0, 5).p_value == 0.0


def test_sample_sizes() -> None:
    # means: sigma = 1, delta = 0.5 -> 2 (1.95996 + 0.84162)^2 / 0.25 = 62.79 -> 63 per group
    assert sample_size_means(0.5, 1.0, 1.0) == pytest.approx(62.79, abs=0.01)
    assert sample_size_means(-0.5, 1.0, 1.0) == sample_size_means(0.5, 1.0, 1.0)
    assert sample_size_means(0.0, 1.0, 1.0) == math.inf
    # proportions 0.60 vs 0.45 by hand (Fleiss, no continuity correction):
    # (1.959964 sqrt(2 * .525 * .475) + 0.841621 sqrt(.24 + .2475))^2 / .15^2 = 172.8
    by_hand = (1.959964 * math.sqrt(2 * 0.525 * 0.475)
               + 0.841621 * math.sqrt(0.6 * 0.4 + 0.45 * 0.55)) ** 2 / 0.15**2  # fmt: skip
    assert sample_size_proportions(0.6, 0.45) == pytest.approx(by_hand, rel=1e-5)
    assert math.ceil(sample_size_proportions(0.6, 0.45)) == 173
    assert sample_size_proportions(0.5, 0.5) == math.inf
    # more power or a stricter alpha need more calls
    assert sample_size_proportions(0.6, 0.45, power=0.9) > 173
    assert sample_size_proportions(0.6, 0.45, alpha=0.01) > 173
    with pytest.raises(ValueError):
        sample_size_means(0.5, 1, 1, power=1.0)


def test_wilson_interval_is_the_evidence_one() -> None:
    assert interval is evidence_interval
    assert [round(x, 3) for x in interval(45, 50)] == [0.786, 0.957]


# --------------------------------------------------------------------------- compare()


def calls(arm: str, n: int, success: float, *, cost: float = 0.0, latency: float = 0.1,
          seed: int = 0) -> list[Call]:  # fmt: skip
    rng = random.Random(seed)
    return [
        Call(f"{arm}{i}", "t", "classification", arm, f"model-{arm}", rng.random() < success,
             True, cost, latency * (1 + 0.1 * rng.random()))
        for i in range(n)
    ]  # fmt: skip


def test_compare_decides_when_significant_and_says_how_much_more_otherwise() -> None:
    big = compare("t", "classification", calls("a", 400, 0.6) + calls("b", 400, 0.9, seed=1), {})
    assert big.primary == "success_rate"
    assert (big.verdict, big.decided) == (B_BETTER, True)
    assert big.summary().startswith("b better on success_rate") and "enough data" in big.summary()
    metric = big.primary_metric
    assert metric.more_per_arm == 0 and metric.p_value is not None and metric.p_value < 0.001

    small = compare("t", "classification", calls("a", 8, 0.6) + calls("b", 8, 0.75, seed=1), {})
    metric = small.primary_metric
    assert (metric.verdict, metric.decided) == (NOT_YET, False)
    assert metric.needed_per_arm is not None and metric.more_per_arm is not None
    assert metric.needed_per_arm == math.ceil(sample_size_proportions(metric.a or 0, metric.b or 0))
    assert metric.more_per_arm == metric.needed_per_arm - 8
    assert "not enough data yet" in small.summary()
    assert f"about {metric.more_per_arm} more calls per arm" in small.summary()

    # a is better on cost; the same cost on both arms is "no difference that matters"
    priced = compare("t", "classification", calls("a", 50, 0.9, cost=0.001)
                     + calls("b", 50, 0.9, cost=0.002, seed=1), {})  # fmt: skip
    by = {m.metric: m for m in priced.metrics}
    assert by["cost_per_call"].verdict == A_BETTER and by["cost_per_call"].decided
    assert by["quality"].verdict == NO_DATA
    assert by["latency"].verdict in (NO_DIFFERENCE, NOT_YET)


def test_compare_calls_a_tiny_difference_too_small_to_matter_once_powered() -> None:
    # a 2-point difference at 80 % needs about 6300 calls per arm to rule out
    a, b = calls("a", 7000, 0.80, seed=3), calls("b", 7000, 0.80, seed=4)
    metric = compare("t", "classification", a + b, {}).primary_metric
    assert abs(metric.difference or 0) < 0.02
    assert (metric.verdict, metric.decided) == (NO_DIFFERENCE, True)
    few = compare("t", "classification", a[:40] + b[:40], {}).primary_metric
    if abs(few.difference or 0) < 0.02:  # depends on the draw; then more data is asked for
        assert (few.verdict, few.decided) == (NOT_YET, False) and (few.more_per_arm or 0) > 0
    empty = compare("t", "classification", a, {})
    assert empty.verdict == NO_DATA and not empty.decided and empty.summary().startswith("no data")


# --------------------------------------------------------------------------- the workload

OP = "classification"
ARM_A, ARM_B = "gemini-2.5-flash-free", "groq-llama-3.1-8b"
TEST = ABTest(name="cls-ab", a=ARM_A, b=ARM_B, share_b=0.5)
QUALITY = {ARM_A: 0.55, ARM_B: 0.85}  # chance of a judge's "good" per answering model


def unlimited_catalog() -> Catalog:
    """The packaged catalog without free-tier rate limits (200 calls in a few seconds)."""
    data = default_catalog_data()
    for fields in data["models"].values():
        fields.pop("limits", None)
    return Catalog.from_mapping(data)


@dataclasses.dataclass
class Workload:
    sim: Simulator
    router: ModelRouter
    ledger: Ledger
    rng: random.Random
    done: int = 0

    def run(self, threads: int) -> None:
        verdicts: list[Outcome] = []
        for i in range(self.done, self.done + threads):
            result = self.router.invoke(
                OP, f"Is this spam? message #{i}", complexity="simple",
                config={"configurable": {"thread_id": f"thread-{i}"}},
            )  # fmt: skip
            assert result.call_id and result.arm in (f"{TEST.name}:a", f"{TEST.name}:b")
            good = self.rng.random() < QUALITY.get(result.model, 0.5)
            verdicts.append(Outcome(OP, result.model, 1.0 if good else 0.0, JUDGE,
                                    call_id=result.call_id))  # fmt: skip
        self.ledger.evidence.record(verdicts)  # a judge's verdicts, one transaction
        self.done += threads


@pytest.fixture
def workload(simulator: Simulator, tmp_path: Path) -> Iterator[Workload]:
    catalog = unlimited_catalog()
    settings = simulator.settings(dataclasses.replace(simulator.settings(), catalog=catalog))
    a, b = catalog.spec(ARM_A), catalog.spec(ARM_B)
    # arm a: 30 % server errors (the call falls back) and 10 ms slower; arm b: 3 % errors
    simulator.script(a, Fault.server_error(503), fraction=0.30, seed=11, first_byte=0.01)
    simulator.script(b, Fault.server_error(503), fraction=0.03, seed=12)
    policy = Policy(mode="free_first", operations={OP: {"ab": TEST}})
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(
            settings, policy=policy, snapshot=Snapshot.everything(catalog), ledger=ledger,
            health=HealthBoard(failure_threshold=10**6), demotion=None,
        )  # fmt: skip
        yield Workload(simulator, router, ledger, random.Random(7))


def app() -> typer.Typer:
    """The two commands as tierwise.cli.app registers them."""
    root = typer.Typer()
    root.add_typer(ab_app, name="ab")
    root.command("recommend")(recommend_command)
    return root


def test_report_on_a_scripted_workload_says_not_yet_then_b_better(workload: Workload) -> None:
    workload.run(12)
    (early,) = ab_reports(workload.ledger)
    assert (early.test, early.operation) == (TEST.name, OP)
    assert early.a.calls + early.b.calls == 12
    assert early.primary == "quality" and not early.decided
    assert early.verdict == NOT_YET
    early_quality = early.primary_metric
    assert early_quality.more_per_arm is not None and early_quality.more_per_arm > 0
    assert "not enough data yet" in early.summary()
    assert "more calls per arm" in early.summary()

    workload.run(188)
    (report,) = ab_reports(workload.ledger, test=TEST.name, operation=OP)
    a, b = report.a, report.b
    assert (a.model, b.model) == (ARM_A, ARM_B)
    assert a.calls + b.calls == 200 and min(a.calls, b.calls) >= 70  # sticky 50/50 hash
    assert a.answered == a.calls and b.answered == b.calls  # fallbacks answered a's failures
    assert a.scored == a.calls and b.scored == b.calls  # every call judged, joined by call_id
    by = {m.metric: m for m in report.metrics}
    assert report.primary == "quality"
    assert (report.verdict, report.decided) == (B_BETTER, True)
    assert by["quality"].p_value is not None and by["quality"].p_value < 0.05
    assert (by["success_rate"].verdict, by["success_rate"].decided) == (B_BETTER, True)
    assert a.success_rate is not None and b.success_rate is not None
    assert 0.55 < a.success_rate < 0.85 and b.success_rate > 0.9
    assert by["latency"].verdict == B_BETTER  # the 10 ms first byte and a's fallbacks
    assert by["cost_per_call"].verdict == NO_DIFFERENCE  # free models: $0 on both arms
    assert report.summary().startswith("b better on quality")
    assert report.summary().endswith("enough data to decide")
    # the early estimate is an estimate (from 12 calls); it asked for more than there were
    assert early_quality.needed_per_arm is not None and early_quality.needed_per_arm > 6

    # the CLI over the same ledger
    path = str(workload.ledger.path)
    workload.ledger.flush()
    result = CliRunner().invoke(app(), ["ab", "report", "--ledger", path, "--test", TEST.name])
    assert result.exit_code == 0, result.output
    assert f"A/B test {TEST.name} · {OP}" in result.output
    assert f"a: {ARM_A}" in result.output and "b better on quality" in result.output
    as_json = CliRunner().invoke(app(), ["ab", "report", "--ledger", path, "--json",
                                         "--operation", OP, "--since", "1h"])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    (data,) = json.loads(as_json.stdout)
    assert data["verdict"] == B_BETTER and data["decided"] is True
    assert data["arms"]["b"]["model"] == ARM_B
    assert {m["metric"] for m in data["metrics"]} == {
        "success_rate", "quality", "cost_per_call", "latency"}
    # nothing in a window that ends before the calls; another operation has no test
    other = CliRunner().invoke(app(), ["ab", "report", "--ledger", path, "-o", "rewriting"])
    assert other.exit_code == 0 and "no A/B test calls recorded" in other.output


def test_cli_errors_are_one_line_and_exit_2(workload: Workload, tmp_path: Path) -> None:
    workload.run(4)
    path = str(workload.ledger.path)
    workload.ledger.flush()
    cases: list[tuple[list[str], str]] = [
        (["ab", "report", "--ledger", path, "--test", "nope"], "no calls of A/B test 'nope'"),
        (["ab", "report", "--ledger", path, "--since", "yesterday"], "invalid --since"),
        (["ab", "report", "--ledger", str(tmp_path / "missing.sqlite3")], "no ledger at"),
        (["recommend", "--ledger", path, "--min-n", "0"], "invalid --min-n 0"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app(), args)
        assert result.exit_code == 2, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], result.output
    hint = CliRunner().invoke(app(), ["ab", "report", "--ledger", path, "--test", "nope"])
    assert f"tests with calls: {TEST.name}" in hint.output


def test_report_json_is_serialisable() -> None:
    report = compare("t", OP, calls("a", 30, 0.5) + calls("b", 30, 0.7, seed=2),
                     {"a1": 1.0, "a2": 0.0, "b1": 1.0, "b3": 1.0})  # fmt: skip
    data: dict[str, Any] = report.to_dict()
    assert json.loads(json.dumps(data)) == json.loads(json.dumps(data, default=str))
    assert data["primary"] == "quality" and data["arms"]["a"]["scored"] == 2
