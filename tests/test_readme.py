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
