"""The README's offline examples run as written, so the user's first read does not rot."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
OFFLINE = [block for block in BLOCKS if "Simulator()" in block]


def test_readme_has_offline_examples() -> None:
    assert OFFLINE


@pytest.mark.parametrize("code", OFFLINE, ids=lambda c: c.splitlines()[0][:40])
def test_readme_example_runs(code: str, isolated_env: None) -> None:
    exec(compile(code, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command() -> None:
    """CI must run what a user runs: command 2 of the README's first screen, verbatim."""
    lines = README.splitlines()
    command = lines[lines.index("# 2. install and run the tests") + 1]
    ci = Path(__file__).resolve().parents[1] / ".ci" / "run"
    if not ci.is_file():
        pytest.skip("no .ci/run in this checkout")
    assert command in ci.read_text("utf-8").splitlines()
