"""Open a ``tierwise report`` page in headless Chromium: screenshot, DOM and console errors.

Usage::

    tierwise report --out report.html --since 7d
    python scripts/check_report.py report.html [--screenshot report.png]

What it checks, in a real browser engine:

* the page renders (a screenshot is written and its path printed — look at it);
* the DOM Chromium builds holds the three chart ``<svg>`` elements and no ``<script>``;
* the browser log (``--enable-logging=stderr --v=0``) has no ``Uncaught`` error and no
  failed resource load (the page must fetch nothing).

It exits 0 when everything holds, 1 when something does not, 2 for a bad argument.

It needs nothing but a Chromium binary (Debian: ``apt-get install -y chromium``), which it
starts twice with a fresh profile. The test suite makes the deeper check with Playwright
(``tests/test_report.py``: chart boxes, every table against the ledger); this script is
for a report of your own. When no Chromium is found (``chromium``, ``chromium-browser``,
``google-chrome``, ``google-chrome-stable`` on ``PATH``) the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT = 60.0
#: Browser log lines that mean the page is broken: a script error or a fetch attempt.
PROBLEMS = re.compile(r"Uncaught|Failed to load resource|net::ERR_", re.IGNORECASE)
CHARTS = 3


def find_browser() -> str | None:
    """The first Chromium-like browser on ``PATH``, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def run_browser(browser: str, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run headless ``browser`` on ``url`` with ``flags``, logging to stderr."""
    command = [browser, "--headless", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1400,2600", "--enable-logging=stderr", "--v=0",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", *flags]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium refuses to run as root with the sandbox
    with tempfile.TemporaryDirectory(prefix="tierwise-chromium-") as profile:
        return subprocess.run(
            [*command, f"--user-data-dir={profile}", url],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )


def main(argv: list[str] | None = None) -> int:
    """Check one report; the exit status is the verdict (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML file `tierwise report` wrote")
    parser.add_argument("--screenshot", type=Path, help="PNG to write (default: next to it)")
    args = parser.parse_args(argv)
    report: Path = args.report.resolve()
    if not report.is_file():
        print(f"error: no report at {report}", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print(f"chromium not found ({', '.join(BROWSERS)} are not on PATH), skipped")
        return 0
    screenshot: Path = (args.screenshot or report.with_suffix(".png")).resolve()
    url = report.as_uri()
    try:
        shot = run_browser(browser, url, f"--screenshot={screenshot}")
        dom = run_browser(browser, url, "--dump-dom")
    except subprocess.TimeoutExpired:
        print(f"error: {browser} did not finish within {TIMEOUT:.0f} s", file=sys.stderr)
        return 1
    problems = [line for run in (shot, dom) for line in run.stderr.splitlines()
                if PROBLEMS.search(line)]  # fmt: skip
    if not screenshot.is_file():
        problems.append(f"no screenshot was written (exit status {shot.returncode})")
    charts = dom.stdout.count("<svg")
    if charts != CHARTS and "No data yet" not in dom.stdout:
        problems.append(f"the DOM holds {charts} <svg> charts, expected {CHARTS}")
    if "<script" in dom.stdout.lower():
        problems.append("the DOM holds a <script> element")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"screenshot: {screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
