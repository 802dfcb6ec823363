"""Bad input and model text a terminal must not obey: one error and one hint, never a traceback.

Each case runs the real command against the provider simulator (keys and endpoints from a
``tierwise.toml`` and the environment, home and data dirs in tmp). A read-only place is a
directory without write permission, or, for root (who may write anywhere permissions
allow), a path under ``/sys``, which refuses new files to everyone.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tierwise.cli.app import app
from tierwise.ledger import Ledger
from tierwise.testing import Reply, Simulator

Setup = Callable[[Path], list[str]]


def read_only_dir(tmp_path: Path) -> Path:
    """A directory no file can be created in, whoever runs the test."""
    if os.geteuid() == 0:
        return Path("/sys/tierwise-read-only")
    place = tmp_path / "read-only"
    place.mkdir(mode=0o555)
    return place


@pytest.fixture
def sim_env(simulator: Simulator, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """The simulator answering every model; home, data and config in tmp."""
    config = tmp_path / "tierwise.toml"
    config.write_text(simulator.toml_snippet())
    for name, value in simulator.environment().items():
        if name.endswith("_KEY") or name == "HF_TOKEN":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TIERWISE_CONFIG", str(config))
    monkeypatch.setenv("TIERWISE_CHECKPOINTS", str(tmp_path / "checkpoints.sqlite"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tierwise.providers.clients.embedded_installed", lambda: False)
    yield simulator  # unscripted, every model answers a minimal valid object


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_error_and_hint(result: Result, code: int, *needles: str) -> None:
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, result.output
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.exit_code == code, result.output


def _ledger_bytes(tmp_path: Path) -> bytes:
    good = tmp_path / "good.sqlite3"
    Ledger(good).close()
    return good.read_bytes()


def random_ledger(tmp_path: Path) -> list[str]:
    (tmp_path / "l.sqlite3").write_bytes(os.urandom(8192))
    return ["ask", "rewriting", "hi", "--ledger", str(tmp_path / "l.sqlite3")]


def truncated_ledger(tmp_path: Path) -> list[str]:
    data = _ledger_bytes(tmp_path)
    (tmp_path / "l.sqlite3").write_bytes(data[: len(data) // 2])
    return ["ask", "rewriting", "hi", "--ledger", str(tmp_path / "l.sqlite3")]


def newer_ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "l.sqlite3"
    path.write_bytes(_ledger_bytes(tmp_path))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    return ["ask", "rewriting", "hi", "--ledger", str(path)]


def directory_ledger(tmp_path: Path) -> list[str]:
    (tmp_path / "l.sqlite3").mkdir()
    return ["ask", "rewriting", "hi", "--ledger", str(tmp_path / "l.sqlite3")]


def read_only_ledger(tmp_path: Path) -> list[str]:
    return ["ask", "rewriting", "hi", "--ledger", str(read_only_dir(tmp_path) / "l.sqlite3")]


def read_only_data_dir_ask(tmp_path: Path) -> list[str]:
    os.environ["XDG_DATA_HOME"] = str(read_only_dir(tmp_path))  # restored by monkeypatch
    del os.environ["TIERWISE_LEDGER"]
    return ["ask", "rewriting", "hi"]


def read_only_data_dir_run(tmp_path: Path) -> list[str]:
    os.environ["XDG_DATA_HOME"] = str(read_only_dir(tmp_path))
    del os.environ["TIERWISE_CHECKPOINTS"], os.environ["TIERWISE_LEDGER"]
    return ["run", "plan a trip"]


def read_only_checkpoints(tmp_path: Path) -> list[str]:
    return ["run", "plan a trip", "--no-record",
            "--checkpoints", str(read_only_dir(tmp_path) / "c.sqlite")]


def non_utf8_config(tmp_path: Path) -> list[str]:
    (tmp_path / "tierwise.toml").write_bytes(b'[policy]\nmode = "caf\xe9"\n')
    return ["ask", "rewriting", "hi"]


def negative_provider_cap(tmp_path: Path) -> list[str]:
    config = tmp_path / "tierwise.toml"
    config.write_text(config.read_text() + "\n[policy]\nmax_cost_per_provider_per_day = "
                      "{ groq = -1.0 }\n")
    return ["ask", "rewriting", "hi"]


@pytest.mark.parametrize(("setup", "code", "needles"), [
    (random_ledger, 2, ["cannot record into the ledger", "not a database"]),
    (truncated_ledger, 2, ["cannot record into the ledger"]),
    (newer_ledger, 2, ["newer tierwise"]),
    (directory_ledger, 2, ["cannot record into the ledger"]),
    (read_only_ledger, 2, ["cannot record into the ledger"]),
    (read_only_data_dir_ask, 2, ["cannot record into the ledger"]),
    (read_only_data_dir_run, 2, ["cannot record into the ledger"]),
    (read_only_checkpoints, 2, ["cannot use the checkpoints file"]),
    (non_utf8_config, 2, ["not UTF-8"]),
    (negative_provider_cap, 2, ["max_cost_per_provider_per_day.groq", "greater than or equal"]),
], ids=lambda v: getattr(v, "__name__", None))
def test_bad_input_is_one_error_and_one_hint(
    sim_env: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: Setup,
    code: int, needles: list[str],
) -> None:
    for name in ("XDG_DATA_HOME", "TIERWISE_CHECKPOINTS", "TIERWISE_LEDGER"):
        monkeypatch.setenv(name, os.environ[name])  # setups may change them
    args = setup(tmp_path)
    result = invoke(*args)
    assert_error_and_hint(result, code, *needles)
    assert not sim_env.requests_for(), "a model was called despite the bad input"
    if (tmp_path / "read-only").exists():
        (tmp_path / "read-only").chmod(0o755)


def test_a_damaged_checkpoint_is_one_error_and_nothing_else_is_touched(
    sim_env: Simulator, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints.sqlite"
    first = invoke("run", "plan a trip", "--graph", "triage", "--thread", "T")
    assert first.exit_code == 0, first.output
    kept = tmp_path / "kept.sqlite"
    shutil.copy(checkpoints, kept)
    with sqlite3.connect(checkpoints) as db:
        assert db.execute("UPDATE checkpoints SET checkpoint = X'c1ffee00'").rowcount > 0
    result = invoke("run", "--thread", "T")
    assert_error_and_hint(result, 2, "the checkpoint of thread T", "cannot be read")
    # the other threads' checkpoints and the ledger are still there
    with sqlite3.connect(kept) as db:
        assert db.execute("SELECT count(*) FROM checkpoints").fetchone()[0] > 0


def test_a_one_megabyte_prompt_never_reports_an_infinite_wait(sim_env: Simulator) -> None:
    result = invoke("ask", "classification", "word " * 200_000, "--no-record",
                    "--policy", "free_first", "--complexity", "simple")
    assert_error_and_hint(result, 1, "no model could answer classification")
    assert "infs" not in result.output
    assert "tokens exceed the whole window" in result.output


def test_a_router_in_a_read_only_home_records_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tierwise.routing.router import ModelRouter

    monkeypatch.delenv("TIERWISE_LEDGER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(read_only_dir(tmp_path) / "data"))
    with caplog.at_level(logging.WARNING, logger="tierwise.routing.router"):
        router = ModelRouter()
    assert router.ledger is None
    assert "no ledger, calls are not recorded" in caplog.text
    if (tmp_path / "read-only").exists():
        (tmp_path / "read-only").chmod(0o755)


# --------------------------------------------------------------------------- model text

HOSTILE = ("Sure. [link=https://evil.example]click[/link] [bold]loud[/] [/] "
           "\x1b[2J\x1b]0;pwned\x07 done")


def test_ask_shows_model_text_escaped_never_obeyed(sim_env: Simulator) -> None:
    sim_env.reset()
    sim_env.script("*", Reply.text(HOSTILE))
    result = invoke("ask", "rewriting", "hi", "--no-record")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "[link=https://evil.example]click[/link] [bold]loud[/] [/]" in out
    assert "\\x1b[2J\\x1b]0;pwned\\x07 done" in out
