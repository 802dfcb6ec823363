"""`tierwise ask` records into the ledger; `stats` and `budget` read it back."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli.app import app
from tierwise.testing import Fault, Reply, Simulator


@pytest.fixture
def sim_config(tmp_path: Path, isolated_env: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "ledger.sqlite3"))
    with Simulator() as sim:
        config = tmp_path / "tierwise.toml"
        config.write_text(
            '[policy]\nmode = "free_first"\nmax_cost_per_day = 2.5\n\n' + sim.toml_snippet()
        )
        for name, value in sim.environment().items():
            if name.endswith("_KEY"):
                monkeypatch.setenv(name, value)
        yield sim, config


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_ask_then_stats_and_budget(sim_config) -> None:
    sim, config = sim_config
    sim.script("meta-llama/llama-3.3-70b-instruct:free", Fault.server_error(503))
    sim.script("mistral-small-latest", Reply.text("The meeting is Monday.", usage=(12, 5)))
    for _ in range(3):
        result = invoke("ask", "rewriting", "meeting monday", "--config", str(config))
        assert result.exit_code == 0, result.output

    result = invoke("stats", "--json", "--operation", "rewriting")
    assert result.exit_code == 0, result.output
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    assert rows["mistral-small-free"]["successes"] == 3
    assert rows["mistral-small-free"]["output_tokens"] == 15
    assert rows["openrouter-llama-3.3-70b-free"]["success_rate"] == 0
    assert rows["openrouter-llama-3.3-70b-free"]["fallbacks_caused"] >= 1
    assert "tierwise stats" in invoke("stats").stdout

    result = invoke("budget", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    caps = {cap["cap"]: cap for cap in json.loads(result.stdout)}
    assert caps["per_day"]["limit"] == 2.5 and caps["per_day"]["spent"] == 0
    assert caps["rpd:openrouter-llama-3.3-70b-free"]["spent"] >= 1


def test_ask_no_record_writes_no_ledger(sim_config, tmp_path: Path) -> None:
    _, config = sim_config
    result = invoke("ask", "rewriting", "x y", "--no-record", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "ledger.sqlite3").exists()
    result = invoke("stats")
    assert result.exit_code != 0 and "no ledger" in result.output


def test_stats_rejects_a_bad_window(sim_config) -> None:
    _, config = sim_config
    assert invoke("ask", "rewriting", "x y", "--config", str(config)).exit_code == 0
    result = invoke("stats", "--since", "yesterday")
    assert result.exit_code != 0 and "invalid --since" in result.output
