"""The project's own standards, checked by the test command: ruff and mypy --strict.

Their verdicts change between minor versions (new rules, new inference), so the test extra
pins each tool to the range the suite is run with, and a test says when the installed
tools are outside it.
"""

import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PINNED_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout", "ruff", "mypy", "langchain-tests")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", "tierwise", "tests", "benchmarks",
                  "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tool", PINNED_TOOLS)
def test_the_installed_tools_are_the_pinned_ones(tool: str) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    pins = {Requirement(spec).name: Requirement(spec) for spec in extras["test"]}
    assert tool in pins, f"the test extra does not pin {tool}"
    try:
        installed = version(tool)
    except PackageNotFoundError:
        pytest.skip(f"{tool} is not installed")
    assert pins[tool].specifier.contains(installed), (
        f"{tool} {installed} is outside the tested range {pins[tool].specifier}: "
        f'pip install -e ".[test]"')
