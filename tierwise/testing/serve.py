"""Running the simulator standalone (``tierwise simulate``), for pointing any app at it.

Prints the URL and what to put in ``tierwise.toml`` or the environment, then serves in the
foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tierwise.testing.engine import RecordedRequest
from tierwise.testing.scenario import from_scenario
from tierwise.testing.simulator import Simulator

__all__ = ["DEFAULT_PORT", "main", "serve"]

DEFAULT_PORT = 8700


def serve(
    scenario: Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    verbose: bool = False,
) -> None:
    """Serve until Ctrl-C (or until ``stop`` is set), after printing how to connect.

    Args:
        scenario: A TOML/JSON scenario file (scripts, limits, Ollama tags), or None.
        host: Interface to bind (loopback by default).
        port: TCP port; 0 picks a free one (printed).
        out: Where to print (default stdout).
        stop: Set it to stop serving (for embedding; the CLI waits for Ctrl-C).
        verbose: Print one line per request (provider, model, status, outcome).
    """
    out = out or sys.stdout
    sim = (
        from_scenario(scenario, host=host, port=port)
        if scenario is not None
        else Simulator(host=host, port=port)
    )
    if verbose:
        sim.on_request(lambda r: print(_log_line(r), file=out, flush=True))
    with sim:
        print(f"tierwise provider simulator listening on {sim.url}", file=out)
        if scenario is not None:
            print(f"scenario: {scenario}", file=out)
        print("\n# tierwise.toml\n" + sim.toml_snippet(), file=out)
        print("# environment (dummy keys)", file=out)
        for name, value in sim.environment().items():
            print(f"export {name}={value}", file=out)
        print("\nGET /_sim/requests lists what was received. Ctrl-C to stop.", file=out, flush=True)
        waiter = stop or threading.Event()
        try:
            while not waiter.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("stopped", file=out)


def _log_line(record: RecordedRequest) -> str:
    provider = record.provider.value if record.provider else "-"
    status = record.status if record.status is not None else "---"
    stream = " stream" if record.stream else ""
    what = record.model or record.path
    return f"#{record.seq} {provider} {what} -> {status} {record.outcome}{stream}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tierwise.testing [--scenario FILE] [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(
        prog="tierwise simulate", description="Run the tierwise provider simulator."
    )
    parser.add_argument("--scenario", type=Path, help="TOML or JSON scenario file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every request")
    args = parser.parse_args(argv)
    serve(args.scenario, args.host, args.port, verbose=args.verbose)
    return 0
