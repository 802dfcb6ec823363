"""Smoke test of ``python -m benchmarks``: it runs, and writes the table with its rows.

Only the cheap benchmarks, with ``--quick``, into a temporary folder; nothing here reads a
timing value. The run is made as a user whose own ledger (``$TIERWISE_LEDGER``, and the
default one under ``$HOME``) has every benchmark model failing: the benchmarks must not
read it (their routers would skip a demoted primary) nor write to it, and the checkout's
``git status`` must be the same afterwards. The tierwise-only part (the pipeline against
a hand-written graph) always runs; the selection benchmark against LiteLLM's Router needs
the ``bench`` extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "| benchmark | measurement | tierwise | LangChain | LiteLLM Router | target | target met? |"
)
HAVE_LITELLM = importlib.util.find_spec("litellm") is not None


def failing_user(home: Path) -> dict[str, str]:
    """The environment of a user whose ledgers saw every benchmark model fail, a lot."""
    from benchmarks.router_overhead import bench_catalog
    from tierwise.catalog.specs import load_default_catalog
    from tierwise.ledger import Ledger, LedgerRow

    env = {**os.environ, "HOME": str(home), "TIERWISE_LEDGER": str(home / "exported.sqlite3")}
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "TIERWISE_ROUTER", "TIERWISE_CONFIG"):
        env.pop(name, None)
    models = [*bench_catalog(), *load_default_catalog()]
    now = time.time()
    for path in (home / "exported.sqlite3", home / ".local/share/tierwise/ledger.sqlite3"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with Ledger(path) as ledger:
            for spec in models:
                for op in ("classification", "instruction_routing", "decomposition", "rewriting"):
                    for i in range(12):
                        ledger.record(LedgerRow(
                            time=now - i, run_id=None, thread_id=None, node=None, operation=op,
                            complexity="simple", policy="balanced", provider=spec.provider,
                            model=spec.key, tier=spec.tier, outcome="unavailable", sent=True,
                            latency=0.01, time_to_first_token=None, input_tokens=0,
                            output_tokens=0, cost=0.0, escalation=False, repair=False,
                            detail="503 from an earlier run",
                        ))  # fmt: skip
            assert ledger.flush()
    return env


def fingerprint(home: Path) -> dict[str, str]:
    """Every file under ``home`` (the user's ledgers) by content hash."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file()}  # fmt: skip


def git_status() -> str | None:
    """``git status --porcelain`` of the checkout, or None outside a git checkout."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=True)  # fmt: skip
    return done.stdout


def run_benchmarks(out: Path, *names: str) -> str:
    only = [arg for name in names for arg in ("--only", name)]
    home = out.parent / "home"
    env = failing_user(home)
    before, status = fingerprint(home), git_status()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *only, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert fingerprint(home) == before  # the user's ledgers: not one byte written
    assert git_status() == status  # the checkout: as it was
    table = (out / "latest.md").read_text(encoding="utf-8")
    assert HEADER in table
    assert "Command: `python -m benchmarks --quick" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "latest.png").stat().st_size > 0
        assert "![benchmarks](latest.png)" in table
    return table


def rows(table: str, benchmark: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in table.splitlines()
        if line.startswith(f"| {benchmark} |")
    ]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One run for the whole module: the peer benchmark only with the ``bench`` extra."""
    names = ("selection", "pipeline") if HAVE_LITELLM else ("pipeline",)
    return run_benchmarks(tmp_path_factory.mktemp("results"), *names)


def test_pipeline_benchmark_writes_its_row(table: str) -> None:
    (row,) = rows(table, "5. pipeline overhead")
    assert row[1].startswith("one run of the plan route")
    assert "hand-written" in row[2] and "hand-written LangGraph graph" in row[3]
    assert row[6].split(" ")[0] in ("yes", "**no**")
    assert "## 5. pipeline overhead" in table


# find_spec, never importorskip: importing LiteLLM here, without the benchmarks' offline
# settings, would make it try to fetch its price map from the network.
@pytest.mark.skipif(not HAVE_LITELLM, reason="LiteLLM comes with the bench extra")
def test_selection_benchmark_compares_with_litellm(table: str) -> None:
    (row,) = rows(table, "1. selection cost")
    assert "memoised" in row[2]
    assert "simple-shuffle" in row[4] and "usage-based-routing-v2" in row[4]
    assert row[6] in ("yes", "**no**")


def test_routing_quality_scores_a_labelled_file_with_a_saved_router(tmp_path: Path) -> None:
    """``benchmarks.routing_quality --file --router`` prints RouteLLM's table (no timings read)."""
    from tierwise.learning.learned_router import LearnedRouter

    rows_ = [(f"question {i} about {'apples' if i % 2 else 'integrals'}", i % 2 == 1)
             for i in range(60)]  # fmt: skip
    data = tmp_path / "set.csv"
    data.write_text("prompt,weak,strong\n" + "".join(f"{p},{w},True\n" for p, w in rows_))
    router = tmp_path / "router.npz"
    LearnedRouter(epochs=40).fit([p for p, _ in rows_], {
        "weak": [float(w) for _, w in rows_], "strong": [1.0] * len(rows_)}).save(router)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.routing_quality", "--file", str(data),
         "--router", str(router)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "| router    | APGR  | CPT(50%) | CPT(80%) |" in done.stdout
    names = {line.split("|")[1].strip() for line in done.stdout.splitlines() if line[:1] == "|"}
    assert {"learned", "random", "oracle"} <= names


def test_the_default_results_folder_is_ignored_by_git() -> None:
    from benchmarks.__main__ import RESULTS

    if git_status() is None:
        pytest.skip("not a git checkout: nothing to keep clean")
    done = subprocess.run(["git", "check-ignore", str(RESULTS / "latest.md")], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, "a plain `python -m benchmarks` would dirty the checkout"


def test_scratch_state_moves_every_state_path_and_restores_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platformdirs

    from benchmarks._isolation import scratch_state
    from tierwise.ledger import default_ledger_path
    from tierwise.routing.steering import default_router_path

    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "mine.sqlite3"))
    monkeypatch.setenv("TIERWISE_CONFIG", str(tmp_path / "tierwise.toml"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    with scratch_state() as root:
        assert default_ledger_path().is_relative_to(root)
        assert default_router_path().is_relative_to(root)
        assert Path(platformdirs.user_config_dir("tierwise")).is_relative_to(root)
        assert Path(platformdirs.user_data_dir("tierwise")).is_relative_to(root)
        assert "TIERWISE_CONFIG" not in os.environ
    assert not root.exists()
    assert os.environ["TIERWISE_LEDGER"] == str(tmp_path / "mine.sqlite3")
    assert os.environ["TIERWISE_CONFIG"] == str(tmp_path / "tierwise.toml")
    assert "XDG_DATA_HOME" not in os.environ


def test_the_router_benchmarks_routers_have_no_ledger_unless_given() -> None:
    """A ledger's record would demote the failing primary the failover figures need."""
    from benchmarks.router_overhead import PRIMARY, Bench

    bench = Bench("http://127.0.0.1:9", timeout=1.0)
    assert bench.router(PRIMARY).ledger is None
