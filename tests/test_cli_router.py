"""``tierwise router train`` / ``score``: the learned router from files and from usage.

The router trains from a RouteLLM-format file (columns renamed to catalog keys with
``--alias``) and from the ledger's judged calls (hashed prompt features + verdicts);
``--incremental`` continues it on the outcomes recorded since it was written; ``score``
prints RouteLLM's figures for any labelled file. Bad input is one ``error:`` line.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tierwise.cli.app import app
from tierwise.learning.learned_router import LearnedRouter, feature_ids
from tierwise.ledger import Ledger
from tierwise.ledger.evidence import JUDGE, Outcome

runner = CliRunner()
WEAK, STRONG = "small/model", "big/model"


def labelled_file(path: Path, rows: int = 120) -> Path:
    """The weak model is right on questions about apples only; the strong always."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", WEAK, STRONG, f"{WEAK}_response"])
        for i in range(rows):
            topic = "apples" if i % 2 else "integrals"
            writer.writerow([f"question {i} about {topic}", topic == "apples", True, "..."])
    return path


def test_train_from_a_file_with_aliases_then_score_it(tmp_path: Path) -> None:
    data = labelled_file(tmp_path / "set.csv")
    model = tmp_path / "router.npz"
    result = runner.invoke(app, [
        "router", "train", "--data", str(data), "--alias", f"{WEAK}=groq-llama-3.3-70b",
        "--alias", f"{STRONG}=gpt-4o", "--out", str(model), "--no-ledger-outcomes", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == 120 and summary["models"] == ["groq-llama-3.3-70b", "gpt-4o"]
    router = LearnedRouter.load(model)
    assert router.predict("question 7 about integrals")["groq-llama-3.3-70b"] < 0.5
    assert router.predict("question 7 about apples")["groq-llama-3.3-70b"] > 0.5

    scored = runner.invoke(app, [
        "router", "score", str(data), "--router", str(model), "--json",
        "--alias", f"{WEAK}=groq-llama-3.3-70b", "--alias", f"{STRONG}=gpt-4o",
    ])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    figures = json.loads(scored.output)["pair"]
    assert figures["rows"] == 120 and figures["weak_quality"] == 0.5
    assert figures["learned"]["apgr"] >= 0.7 > 0.6 > figures["random"]["apgr"] > 0.4
    table = runner.invoke(app, ["router", "score", str(data), "--router", str(model),
                                "--alias", f"{WEAK}=groq-llama-3.3-70b",
                                "--alias", f"{STRONG}=gpt-4o"])  # fmt: skip
    assert table.exit_code == 0 and "APGR" in table.output and "oracle" in table.output


def test_score_with_holdout_trains_on_the_file_and_scores_the_rest(tmp_path: Path) -> None:
    data = labelled_file(tmp_path / "set.csv")
    result = runner.invoke(app, ["router", "score", str(data), "--holdout", "0.3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["trained_on"] == 84 and payload["pair"]["rows"] == 36
    assert payload["seen_in_training"] == 0 and payload["without_head"] == []
    assert payload["pair"]["learned"]["apgr"] > payload["pair"]["random"]["apgr"] + 0.1
    table = runner.invoke(app, ["router", "score", str(data), "--holdout", "0.3"])
    assert table.exit_code == 0 and "trained on 84 prompts" in table.output
    both = runner.invoke(app, ["router", "score", str(data), "--holdout", "0.3",
                               "--router", str(tmp_path / "r.npz")])  # fmt: skip
    assert both.exit_code == 2 and "leave out --router" in both.output


def test_score_says_when_the_router_has_no_head_for_the_models(tmp_path: Path) -> None:
    data = labelled_file(tmp_path / "set.csv")
    other = LearnedRouter(semantic=False).fit(["a b", "c d"] * 10, {"x": [1.0, 0.0] * 10})
    model = other.save(tmp_path / "other.npz")
    result = runner.invoke(app, ["router", "score", str(data), "--router", str(model), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["without_head"] == [WEAK, STRONG]
    table = runner.invoke(app, ["router", "score", str(data), "--router", str(model)])
    assert table.exit_code == 0 and "no head for" in table.output
    assert "--holdout" in table.output


def test_train_from_the_ledger_and_continue_incrementally(tmp_path: Path) -> None:
    ledger_file, model = tmp_path / "ledger.sqlite3", tmp_path / "router.npz"
    with Ledger(ledger_file) as ledger:
        for i in range(60):
            call = f"c{i}"
            good = i % 2 == 0
            text = "summarise the meeting notes" if good else "prove the lemma on primes"
            ledger.evidence.record_features(call, "rewriting", feature_ids(text).tolist())
            ledger.evidence.record([Outcome("rewriting", "m-free", float(good), JUDGE,
                                            call_id=call, time=time.time() - 3600)])  # fmt: skip
    result = runner.invoke(app, ["router", "train", "--ledger", str(ledger_file),
                                 "--out", str(model), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 60
    first = LearnedRouter.load(model).predict("prove the lemma on primes")["m-free"]
    assert first < 0.5

    os.utime(model, (time.time() - 60, time.time() - 60))  # after the first hour's outcomes
    with Ledger(ledger_file) as ledger:  # since then: the model got good at lemmas
        for i in range(60, 120):
            call = f"c{i}"
            ledger.evidence.record_features(
                call, "rewriting", feature_ids("prove the lemma on primes").tolist()
            )
            ledger.evidence.record([Outcome("rewriting", "m-free", 1.0, JUDGE, call_id=call)])
    again = runner.invoke(app, ["router", "train", "--incremental", "--ledger",
                                str(ledger_file), "--out", str(model), "--json"])  # fmt: skip
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert summary["incremental"] and summary["rows"] == 60  # only the new outcomes
    later = LearnedRouter.load(model).predict("prove the lemma on primes")["m-free"]
    assert later > first
    assert np.isfinite(later)


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nhi,yes\n")
    cases = [
        (["router", "train", "--alias", "no-equals-sign"], "invalid --alias"),
        (["router", "train", "--data", str(bad), "--no-ledger-outcomes"], str(bad)),
        (["router", "train", "--no-ledger-outcomes", "--out", str(tmp_path / "r.npz")],
         "nothing to train on"),
        (["router", "train", "--incremental", "--out", str(tmp_path / "none.npz")],
         "--incremental needs a trained router"),
        (["router", "score", str(bad), "--router", str(tmp_path / "none.npz")], "error:"),
        (["router", "score", str(bad), "--cost", "m"], "invalid --cost"),
        (["router", "score", str(bad), "--cost", "m=-1"], "invalid --cost"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output


# Three models, four prompts; A is free, B costs $1 and C $3 per call (hand-computed below).
#   prompt       A  B  C     the oracle's cheapest right model
#   easy         1  1  1     A
#   medium       0  1  1     B
#   hard         0  0  1     C
#   impossible   0  0  0     (none: A, the cheapest)
TINY = [("easy sum of two and two", 1, 1, 1), ("medium integral of x", 0, 1, 1),
        ("hard proof of the lemma", 0, 0, 1), ("impossible riddle of the sphinx", 0, 0, 0)]


def tiny_file(path: Path, *, cost_columns: bool) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "A", "B", "C"] + (["B_cost", "C_cost", "A_cost"]
                                                     if cost_columns else []))
        for prompt, a, b, c in TINY:
            writer.writerow([prompt, bool(a), bool(b), bool(c)]
                            + (["1", "3", "0"] if cost_columns else []))
    return path


def test_multi_model_score_hand_computed(tmp_path: Path) -> None:
    """Single models: A (0, 25 %), B (1, 50 %), C (3, 75 %); range $0-$3.

    random = frontier of the three points, concave already:
        AIQ = [(0.25 + 0.5) / 2 * 1 + (0.5 + 0.75) / 2 * 2] / 3 = 1.625 / 3 = 0.541667
    oracle: lam < 1/3 -> (A, B, C, A): cost 1.0, quality 75 %; 1/3 < lam < 1 -> the hard
    prompt goes to A: cost 0.25, quality 50 %; lam > 1 -> all A: (0, 25 %). Frontier
    (0, .25) (.25, .5) (1, .75), flat to 3:
        AIQ = [.375 * .25 + .625 * .75 + .75 * 2] / 3 = 2.0625 / 3 = 0.6875
    """
    router = LearnedRouter(semantic=False).fit([p for p, *_ in TINY], {
        "A": [a for _, a, _, _ in TINY], "B": [b for *_, b, _ in TINY],
        "C": [c for *_, c in TINY]}, calibrate=False)  # fmt: skip
    model = router.save(tmp_path / "r.npz")
    by_column = tiny_file(tmp_path / "cols.csv", cost_columns=True)
    by_option = tiny_file(tmp_path / "plain.csv", cost_columns=False)
    options = ["--cost", "A=0", "--cost", "B=1", "--cost", "C=3"]
    for file, extra in ((by_column, []), (by_option, options)):
        result = runner.invoke(app, ["router", "score", str(file), "--router", str(model),
                                     "--json", *extra])  # fmt: skip
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["pair"] is None  # three models: no strong/weak pair named
        multi = payload["multi"]
        assert multi["rows"] == 4 and multi["cost_range"] == [0.0, 3.0]
        assert multi["models"] == {"A": {"cost": 0.0, "quality": 0.25},
                                   "B": {"cost": 1.0, "quality": 0.5},
                                   "C": {"cost": 3.0, "quality": 0.75}}  # fmt: skip
        assert multi["random"]["frontier"] == [[0.0, 0.25], [1.0, 0.5], [3.0, 0.75]]
        assert abs(multi["random"]["aiq"] - 1.625 / 3) < 1e-12
        assert multi["oracle"]["frontier"] == [[0.0, 0.25], [0.25, 0.5], [1.0, 0.75]]
        assert abs(multi["oracle"]["aiq"] - 0.6875) < 1e-12
        learned = multi["learned"]
        assert 0.0 < learned["aiq"] <= multi["oracle"]["aiq"] + 1e-12
        assert learned["points"][0][0] == 0.0  # the sweep starts at cost weight 0
    table = runner.invoke(app, ["router", "score", str(by_option), "--router", str(model),
                                *options])  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "AIQ" in table.output and "0.688" in table.output and "0.542" in table.output
    missing = runner.invoke(app, ["router", "score", str(by_option), "--router", str(model)])
    assert missing.exit_code == 2 and "--cost MODEL=USD" in missing.output
    unknown = runner.invoke(app, ["router", "score", str(by_option), "--router", str(model),
                                  "--cost", "Z=1", "--cost", "A=0"])  # fmt: skip
    assert unknown.exit_code == 2 and "no model column" in unknown.output
