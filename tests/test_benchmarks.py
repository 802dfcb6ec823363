"""Smoke test of ``python -m benchmarks``: it runs, and writes the table with its rows.

Only the cheap benchmarks, with ``--quick``, into a temporary folder; nothing here reads a
timing value. The tierwise-only part (the pipeline against a hand-written graph) always
runs; the selection benchmark against LiteLLM's Router needs the ``bench`` extra.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "| benchmark | measurement | tierwise | LangChain | LiteLLM Router | target | target met? |"
)
HAVE_LITELLM = importlib.util.find_spec("litellm") is not None


def run_benchmarks(out: Path, *names: str) -> str:
    only = [arg for name in names for arg in ("--only", name)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *only, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
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
    assert "| router   | APGR  | CPT(50%) | CPT(80%) |" in done.stdout
    names = {line.split("|")[1].strip() for line in done.stdout.splitlines() if line[:1] == "|"}
    assert {"learned", "random", "oracle"} <= names
