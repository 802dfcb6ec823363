"""A native crash of the embedded model is a provider failure, never the caller's death.

The worker is made to raise SIGILL on itself (``TIERWISE_EMBEDDED_CRASH``), as a llama.cpp
build for another CPU does: the caller gets `EmbeddedModelCrashed`, the router falls back,
``tierwise run`` prints one line naming the crash and ``tierwise doctor`` reports it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python")

from tierwise.catalog.policy import Policy  # noqa: E402
from tierwise.catalog.settings import Settings  # noqa: E402
from tierwise.catalog.specs import Catalog, default_catalog_data  # noqa: E402
from tierwise.providers.embedded import EmbeddedChatModel  # noqa: E402
from tierwise.providers.embedded_process import (  # noqa: E402
    EmbeddedModelCrashed,
    crash_reason,
    shutdown_workers,
)
from tierwise.providers.embedded_worker import CRASH_ENV  # noqa: E402
from tierwise.providers.failures import FailureKind, classify  # noqa: E402
from tierwise.providers.llama_build import REINSTALL_COMMAND  # noqa: E402
from tierwise.routing.router import ModelRouter  # noqa: E402
from tierwise.routing.selector import Snapshot  # noqa: E402
from tierwise.testing import Reply, Simulator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def crashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Workers started from here on raise SIGILL when asked to generate."""
    shutdown_workers()
    monkeypatch.setenv(CRASH_ENV, "SIGILL")
    yield
    shutdown_workers()  # forget the crash marks and the crashing workers


def test_a_crash_is_a_classified_failure_and_marks_the_model_unusable(crashing: None) -> None:
    model = EmbeddedChatModel(max_tokens=4)
    with pytest.raises(EmbeddedModelCrashed, match="illegal instruction") as caught:
        model.invoke("Hi")
    assert classify(caught.value).kind is FailureKind.UNAVAILABLE
    crash = crash_reason(model.load_key())
    assert crash is not None and "SIGILL" in crash.what and REINSTALL_COMMAND in crash.fix
    # Unusable for the rest of the process: no new worker is started to crash again.
    os.environ.pop(CRASH_ENV)
    with pytest.raises(EmbeddedModelCrashed, match="illegal instruction"):
        model.invoke("Hi")


def test_a_crash_in_a_stream_and_in_async_calls_is_raised_too(crashing: None) -> None:
    model = EmbeddedChatModel(max_tokens=4)
    with pytest.raises(EmbeddedModelCrashed):
        list(model.stream("Hi"))
    with pytest.raises(EmbeddedModelCrashed):
        asyncio.run(model.ainvoke("Hi"))


def test_the_router_falls_back_from_the_crashed_embedded_model(
    crashing: None, simulator: Simulator, sim_settings: Settings
) -> None:
    # A catalog whose classification chain puts the embedded model before an Ollama model
    # (served by the simulator).
    data = default_catalog_data()
    data["chains"]["classification"]["local"] = ["smollm2-135m", "starling-lm-7b-alpha"]
    settings = replace(sim_settings, catalog=Catalog.from_mapping(data))
    simulator.script(settings.catalog.spec("starling-lm-7b-alpha"), Reply.text("billing"))
    router = ModelRouter(
        settings,
        policy=Policy(mode="local_only"),
        snapshot=Snapshot(available=frozenset({"smollm2-135m", "starling-lm-7b-alpha"})),
        ledger=None,
    )
    result = router.invoke("classification", "Label this: my invoice is wrong")
    assert result.model == "starling-lm-7b-alpha"
    first = result.attempts[0]
    assert first.model == "smollm2-135m" and first.failure is FailureKind.UNAVAILABLE
    assert "illegal instruction" in first.detail


def _tierwise(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "OLLAMA_HOST": "http://127.0.0.1:9",  # nothing listens: no Ollama
        "COLUMNS": "200",
        CRASH_ENV: "SIGILL",
    }
    return subprocess.run(
        [sys.executable, "-m", "tierwise.cli", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )


def test_tierwise_run_survives_the_crash_and_names_it(tmp_path: Path) -> None:
    proc = _tierwise("run", "Plan a three-day team offsite in Lisbon", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr  # an error exit, not death by a signal
    errors = [line for line in (proc.stdout + proc.stderr).splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1
    assert "smollm2-135m" in errors[0] and "illegal instruction (SIGILL)" in errors[0]
    assert "Traceback" not in proc.stderr


def test_tierwise_doctor_reports_the_crash_and_the_fix(tmp_path: Path) -> None:
    proc = _tierwise("doctor", tmp_path=tmp_path)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "crashed: illegal instruction (SIGILL)" in out
    assert "embedded │ crashed │" in out  # the status column says so, not "unavailable"
    assert "--no-cache-dir" in out  # the reinstall command is the fix it names
    assert "one-token generation ok" not in out
