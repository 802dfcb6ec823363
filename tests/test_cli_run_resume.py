"""`tierwise run` killed and resumed, checkpointed in a SQLite file or in PostgreSQL.

The interrupt tests start the command as a real process, checkpointed in a SQLite file and
in PostgreSQL (a schema of its own), kill it (SIGKILL) while two scoring calls hang, and
check from the simulator's request log that the resumed run sent none of the calls that had
finished. The resume hint names the same store (a URL without its password); a PostgreSQL
store that is set as the default, unreachable or malformed behaves as the command promises.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.test_cli_run import (
    INSTRUCTION,
    STEPS,
    asks,
    assert_one_error,
    chat_requests,
    env,
    operations,
    run,
)
from tierwise.catalog.specs import TaskType
from tierwise.testing import ChatRequest, Reply, Simulator

__all__ = ["env"]  # the fixture, imported for these tests


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoints(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's runs checkpoint: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return str(tmp_path / "cp.sqlite")
    return str(request.getfixturevalue("postgres_url"))


# --------------------------------------------------------------------------- interrupt


def test_a_killed_run_resumes_without_repeating_finished_model_calls(
    env: Simulator, tmp_path: Path, checkpoints: str
) -> None:
    slow = {"on": True, "seqs": set()}

    def scoring_held(request: ChatRequest) -> bool:
        if slow["on"] and asks(TaskType.QUALITY_SCORING)(request):
            slow["seqs"].add(request.seq)  # type: ignore[attr-defined]
            return True
        return False

    held = env.script("*", Reply.json({"score": 9, "reasons": ["late"]}), first_byte=20.0,
                      when=scoring_held)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise.cli", "run", INSTRUCTION, "--thread", "T",
         "--checkpoints", checkpoints],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}, cwd=tmp_path,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + 30
    try:
        while not (held.served >= 2 and any("✓ [step 2] assess" in line for line in lines)):
            assert proc.poll() is None, (lines, proc.stderr.read())  # type: ignore[union-attr]
            assert time.monotonic() < deadline, lines
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    reader.join(timeout=5)
    assert proc.returncode == -signal.SIGKILL
    assert any(line.startswith("✓ classify") for line in lines)
    assert not any("✓ [step 1] score" in line or "rationale" in line for line in lines)

    before = chat_requests(env)
    finished = [r for r in before if r.seq not in slow["seqs"]]
    assert operations(finished) == {
        TaskType.CLASSIFICATION: 1, TaskType.INSTRUCTION_ROUTING: 1, TaskType.REWRITING: 1,
        TaskType.DECOMPOSITION: 1, TaskType.PARAMETER_EXTRACTION: 2,
        TaskType.STRUCTURE_ASSESSMENT: 2,
    }
    slow["on"] = False

    resumed = run("--thread", "T", "--checkpoints", checkpoints)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming thread T (pipeline): next step" in resumed.stdout
    assert "▸ classify" not in resumed.stdout and "▸ [step 1] extract" not in resumed.stdout

    after = chat_requests(env, after=max(r.seq for r in before))
    done_bodies = {json.dumps(r.body, sort_keys=True) for r in finished}
    assert not [r for r in after if json.dumps(r.body, sort_keys=True) in done_bodies]
    assert operations(after) == {TaskType.QUALITY_SCORING: 2, TaskType.RATIONALE_GENERATION: 1}

    data = json.loads(run("--thread", "T", "--checkpoints", checkpoints, "--json").stdout)
    found = data["result"]
    assert found["route"] == "plan" and found["plan"] == STEPS
    assert [s["quality"]["score"] for s in found["steps"]] == [8, 8]
    assert found["rationale"] and not found["best_effort"]
    nodes = Counter((e["node"], e["step"]) for e in found["report"]["entries"])
    assert set(nodes.values()) == {1} and len(nodes) == 11  # every node answered once


def test_the_resume_hint_appears_only_once_the_thread_can_be_resumed(
    env: Simulator, tmp_path: Path, checkpoints: str
) -> None:
    """A kill right after the hint: the command the hint names resumes the thread."""
    for thread in ("K1", "K2"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierwise.cli", "run", INSTRUCTION, "--thread", thread,
             "--checkpoints", checkpoints],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}, cwd=tmp_path,
        )
        hint = f"resume with: tierwise run --thread {thread} --checkpoints " + shlex.quote(
            checkpoints)
        lines: list[str] = []
        try:
            for line in iter(proc.stdout.readline, ""):  # type: ignore[union-attr]
                lines.append(line)
                if hint in line:
                    proc.send_signal(signal.SIGKILL)  # at once, as a user's Ctrl-\ or OOM
                    break
        finally:
            proc.kill()
            proc.wait(timeout=10)
        assert any(hint in line for line in lines), (lines, proc.stderr.read())  # type: ignore[union-attr]
        resumed = run(*shlex.split(hint.removeprefix("resume with: tierwise run ")))
        assert resumed.exit_code == 0, resumed.output
        assert "no run with thread" not in resumed.output
        assert f"thread {thread}" in resumed.stdout




# --------------------------------------------------------------------------- PostgreSQL


def _with_password(url: str) -> str:  # trust auth accepts any password
    return url.replace("postgresql://postgres@", "postgresql://postgres:pw-not-real@")


def test_the_postgres_url_setting_is_the_default_store_and_no_password_is_shown(
    env: Simulator, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIERWISE_CHECKPOINTS")
    monkeypatch.setenv("TIERWISE_POSTGRES_URL", _with_password(postgres_url))
    first = run(INSTRUCTION, "--graph", "triage", "--thread", "t-pg")
    assert first.exit_code == 0, first.output
    assert "resume with: tierwise run --thread t-pg\n" in first.stdout  # the default store
    assert not list(tmp_path.rglob("checkpoints.sqlite"))
    sent = len(chat_requests(env))
    again = run("--thread", "t-pg")
    assert "thread t-pg is complete (triage)" in again.stdout, again.output
    assert len(chat_requests(env)) == sent

    explicit = run(INSTRUCTION, "--graph", "triage", "--thread", "t-pw", "--checkpoints",
                   _with_password(postgres_url))
    shown = _with_password(postgres_url).replace("pw-not-real", "***")
    hint = f"--checkpoints {shlex.quote(shown)}"
    assert hint in explicit.stdout.replace("\n", ""), explicit.output
    missing = run("--thread", "t-none")
    assert_one_error(missing, "no run with thread t-none in postgresql://postgres:***@")
    for result in (first, again, explicit, missing):
        assert "pw-not-real" not in result.output


@pytest.mark.parametrize(("url", "code", "needle"), [
    ("postgresql://postgres:pw-not-real@127.0.0.1:1/test", 1, "Connection refused"),
    ("postgresql://postgres:pw-not-real@127.0.0.1:port/test", 2, "invalid PostgreSQL URL"),
    ("postgresql://postgres:pw-not-real@127.0.0.1/test?bogus=1", 2, "invalid PostgreSQL URL"),
    ("mysql://root:pw-not-real@127.0.0.1/test", 2, "not a SQLite file or a postgresql:// URL"),
])
def test_a_postgres_store_that_cannot_be_used_is_one_error(
    env: Simulator, url: str, code: int, needle: str
) -> None:
    pytest.importorskip("langgraph.checkpoint.postgres", reason="the scale extra")
    result = run(INSTRUCTION, "--checkpoints", url)
    assert_one_error(result, needle, code=code)
    assert "pw-not-real" not in result.output and not chat_requests(env)
