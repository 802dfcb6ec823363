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
    figures = json.loads(scored.output)
    assert figures["rows"] == 120 and figures["weak_quality"] == 0.5
    assert figures["learned"]["apgr"] >= 0.7 > 0.6 > figures["random"]["apgr"] > 0.4
    table = runner.invoke(app, ["router", "score", str(data), "--router", str(model),
                                "--alias", f"{WEAK}=groq-llama-3.3-70b",
                                "--alias", f"{STRONG}=gpt-4o"])  # fmt: skip
    assert table.exit_code == 0 and "APGR" in table.output and "oracle" in table.output


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
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output
