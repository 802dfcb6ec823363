"""What every ``tierwise`` command shares: options, scrubbed output, settings, the ledger.

Kept apart from :mod:`tierwise.cli.app` so that command modules (``cli_eval``, ``cli_router``,
``cli_insights``) can import it whatever the import order — ``tierwise.cli.app`` imports
them to register their commands.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tierwise.catalog.policy import Policy, PolicyMode
from tierwise.catalog.settings import ConfigError, Settings, load_settings
from tierwise.catalog.specs import Complexity, TaskType, Tier

if TYPE_CHECKING:
    from tierwise.ledger.store import Ledger

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="tierwise.toml to use (default: $TIERWISE_CONFIG, "
                 "./tierwise.toml, then the user config dir)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
OperationArgument = Annotated[TaskType, typer.Argument(help="The cognitive operation.")]
ComplexityOption = Annotated[
    Complexity, typer.Option("--complexity", "-x", help="How hard the instruction is.")
]
PolicyOption = Annotated[
    PolicyMode | None,
    typer.Option("--policy", "-p", help="Policy mode (default: the configured policy)."),
]
MaxTierOption = Annotated[Tier | None, typer.Option("--max-tier", help="Highest tier allowed.")]
LedgerOption = Annotated[
    Path | None,
    typer.Option("--ledger", help="Ledger file (default: $TIERWISE_LEDGER or the user data dir)."),
]
RecordOption = Annotated[
    bool, typer.Option("--record/--no-record", help="Record the attempts in the ledger.")
]


class _Output:
    """Console output with every configured secret scrubbed out."""

    def __init__(self) -> None:
        self.console = Console(highlight=False, soft_wrap=False, width=160)
        self.scrub: Callable[[str], str] = lambda text: text

    def table(self, table: Table) -> None:
        with self.console.capture() as capture:
            self.console.print(table)
        sys.stdout.write(self.scrub(capture.get()))

    def line(self, text: str = "") -> None:
        with self.console.capture() as capture:
            self.console.print(text)
        sys.stdout.write(self.scrub(capture.get()))

    def json(self, data: Any) -> None:
        sys.stdout.write(self.scrub(json.dumps(data, indent=2, default=str)) + "\n")

    def fail(self, message: str, hint: str = "", code: int = 2) -> NoReturn:
        # soft_wrap: one line however narrow the terminal; escape: a value such as
        # "[bold]" in a bad config must be shown, not taken as rich markup.
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]error:[/] {escape(self.scrub(message))}", markup=True)
        if hint:
            err.print(f"[dim]hint:[/] {escape(self.scrub(hint))}", markup=True)
        raise typer.Exit(code=code)


out = _Output()


@contextmanager
def _settings(config: Path | None) -> Iterator[Settings]:
    """Load settings, turning configuration problems into one readable error line."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        out.fail(str(exc), "fix the file, or run with --config pointing at another one")
    out.scrub = settings.credentials.redact
    yield settings


def _policy(settings: Settings, mode: PolicyMode | None, max_tier: Tier | None) -> Policy:
    """The configured policy with the command line's mode / tier cap applied."""
    policy = settings.policy
    if mode is None and max_tier is None:
        return policy
    fields = policy.model_dump()
    if mode is not None:
        fields["mode"], fields["max_tier"] = mode, None  # the mode's own default cap
    if max_tier is not None:
        fields["max_tier"] = max_tier
    try:
        return Policy.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        out.fail(f"invalid policy: {problem}", "see `tierwise route --help`")


def _open_ledger(path: Path | None) -> Ledger:
    from tierwise.ledger.store import Ledger, LedgerError, default_ledger_path

    target = path or default_ledger_path()
    if not target.is_file():
        out.fail(f"no ledger at {target}", "`tierwise ask` records into it, or pass --ledger")
    try:
        return Ledger(target)
    except LedgerError as exc:
        out.fail(str(exc), "pass --ledger pointing at a tierwise ledger file")


def _since(text: str) -> float:
    """``30m`` / ``24h`` / ``7d`` ago, or a date, as a unix time."""
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return time.time() - float(text[:-1]) * units[text[-1]]
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        out.fail(f"invalid --since {text!r}", "use 30m, 24h, 7d or a date like 2026-11-01")
