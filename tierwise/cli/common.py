"""What every ``tierwise`` command shares: options, scrubbed output, settings, the ledger.

Kept apart from :mod:`tierwise.cli.app` so that command modules (``cli_eval``, ``cli_router``,
``cli_insights``) can import it whatever the import order — ``tierwise.cli.app`` imports
them to register their commands.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from tierwise.catalog.policy import Policy, PolicyMode
from tierwise.catalog.settings import ConfigError, Settings, load_settings
from tierwise.catalog.specs import Complexity, TaskType, Tier
from tierwise.cli.terminal import safe

if TYPE_CHECKING:
    from tierwise.ledger import Ledger

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
    str | None,
    typer.Option("--ledger", help="Ledger file or postgresql:// URL (default: [state] "
                 "postgres_url, else $TIERWISE_LEDGER or the user data dir)."),
]
RecordOption = Annotated[
    bool, typer.Option("--record/--no-record", help="Record the attempts in the ledger.")
]


#: Shown after answers that all came from the embedded model: how to get better ones.
REAL_ANSWERS = (
    "these answers came from the small embedded model; for real answers set a free key "
    "(GROQ_API_KEY or GEMINI_API_KEY) or start Ollama, then check with `tierwise doctor`"
)

# typer vendors click (``typer._click``) since 0.2x: reach its base error through a public
# class rather than the private module, so the handler works whichever click typer uses.
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _suggest(value: str, choices: Sequence[str]) -> str:
    """``did you mean 'x'? (one of: ...)`` or ``use one of: ...``."""
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    listed = ", ".join(choices)
    return f"did you mean {close[0]!r}? (one of: {listed})" if close else f"use one of: {listed}"


def usage_error(exc: Exception) -> tuple[str, str]:
    """A command-line mistake (typer/click's exception) as the one ``error:`` and ``hint:``.

    A value outside an option's or argument's choices says "did you mean" the closest one.
    """
    ctx = getattr(exc, "ctx", None)
    param = getattr(exc, "param", None)
    hint = f"see `{ctx.command_path} --help`" if ctx is not None else "see `tierwise --help`"
    descriptor = getattr(param, "type_descriptor", None)
    choices = [str(getattr(c, "value", c)) for c in getattr(descriptor, "choices", None) or ()]
    cause = exc.__cause__
    if param is not None and choices and isinstance(cause, ValidationError):
        value = str(cause.errors(include_url=False)[0].get("input", ""))
        opts = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
        label = opts[0].lstrip("-") if opts else str(param.name)
        return f"unknown {label} {value!r}", _suggest(value, choices)
    format_message = getattr(exc, "format_message", None)
    message = str(format_message() if callable(format_message) else exc)
    message = message.replace("Value error, ", "")
    head, sep, tail = message.partition(". Did you mean ")
    head = head[:1].lower() + head[1:].rstrip(".")  # one style: "error: missing argument ..."
    return (head, "did you mean " + tail) if sep else (head, hint)


def unknown_choice(what: str, value: str, choices: Sequence[str]) -> tuple[str, str]:
    """The same error and hint as :func:`usage_error` gives a misspelt choice."""
    return f"unknown {what} {value!r}", _suggest(value, choices)


class _Command(TyperCommand):
    """A command whose flags render as flags in ``--help`` (typer 0.29 adds ``<bool>``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, flags without a value placeholder."""
        return _plain_flags(super().get_params(ctx))


class _Group(TyperGroup):
    """The ``tierwise`` group: flags shown as flags, and every usage error as error + hint."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, flags without a value placeholder."""
        return _plain_flags(super().get_params(ctx))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        """Run the command; a usage error prints ``error:`` and ``hint:`` (exit 2)."""
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except _ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # the help is already shown
                out.error(*usage_error(exc))
            code = int(getattr(exc, "exit_code", 2))
            if not standalone_mode:
                raise typer.Exit(code) from None
        except typer.Abort:
            out.error("aborted", "run the command again")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _plain_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # shown as nothing, where typer would show "<bool>"
    return params


_F = TypeVar("_F", bound=Callable[..., Any])


class App(typer.Typer):
    """``typer.Typer`` whose commands are :class:`_Command` and groups :class:`_Group`."""

    def __init__(self, **kwargs: Any) -> None:
        """As ``typer.Typer``, with the tierwise group class."""
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_F], _F]:
        """As ``typer.Typer.command``, with the tierwise command class."""
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


class Printer(Protocol):
    """What the CLI's scrubbed output offers (:class:`_Output`)."""

    console: Console
    scrub: Callable[[str], str]

    def line(self, text: str = "") -> None:
        """Print ``text`` (rich markup) scrubbed of secrets."""

    def table(self, table: Table) -> None:
        """Print ``table`` scrubbed of secrets."""

    def json(self, data: Any) -> None:
        """Print ``data`` as JSON scrubbed of secrets."""


class RunFailed(Exception):
    """A readable failure of a command's step: one error line, a hint, an exit code."""

    def __init__(self, message: str, hint: str = "", code: int = 2) -> None:
        """Keep the parts the CLI prints."""
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


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

    def error(self, message: str, hint: str = "") -> None:
        """Print ``error: message`` and ``hint: hint`` on stderr, scrubbed and escaped."""
        # soft_wrap: one line however narrow the terminal; escape: a value such as
        # "[bold]" in a bad config must be shown, not taken as rich markup.
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]error:[/] {escape(safe(self.scrub(message)))}", markup=True)
        if hint:
            err.print(f"[dim]hint:[/] {escape(safe(self.scrub(hint)))}", markup=True)

    def fail(self, message: str, hint: str = "", code: int = 2) -> NoReturn:
        """Print the error and hint, then exit with ``code`` (2: bad input, 1: runtime)."""
        self.error(message, hint)
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


def _ledger_target(given: str | None, settings: Settings | None) -> str | Path:
    """``--ledger``, else the configured PostgreSQL database, else the default file."""
    from tierwise.ledger import default_ledger_path, is_postgres_url

    if given is not None:
        return given if is_postgres_url(given) else Path(given).expanduser()
    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            out.fail(str(exc), "fix the file, or pass --ledger")
    return settings.ledger or settings.state.postgres_url or default_ledger_path()


def _open_ledger(given: str | None, settings: Settings | None = None) -> Ledger:
    """The ledger to read (``tierwise stats`` and co.); one error line if it cannot be."""
    from tierwise.ledger import LedgerError, LedgerUnavailable, open_ledger

    target = _ledger_target(given, settings)
    if isinstance(target, Path) and not target.is_file():
        out.fail(f"no ledger at {target}", "`tierwise ask` records into it, or pass --ledger")
    try:
        return open_ledger(target)
    except LedgerUnavailable as exc:
        out.fail(f"cannot open the ledger: {exc}", _UNREACHABLE, code=1)
    except LedgerError as exc:
        out.fail(str(exc), "pass --ledger pointing at a tierwise ledger file")


_UNREACHABLE = ("start PostgreSQL or fix [state] postgres_url / TIERWISE_POSTGRES_URL, "
                "or pass --ledger with a ledger file")  # fmt: skip


@contextmanager
def _recording_ledger(
    given: str | None, record: bool, settings: Settings | None = None
) -> Iterator[Ledger | None]:
    """The ledger ``ask`` and ``run`` record into (``None`` with ``--no-record``).

    A file that is not a ledger, a newer one, a directory or an unwritable place is one
    error line (exit 2), before any model is called; so is PostgreSQL not answering
    (exit 1).
    """
    if not record:
        yield None
        return
    from tierwise.ledger import LedgerError, LedgerUnavailable, open_ledger

    target = _ledger_target(given, settings)
    try:
        ledger = open_ledger(target)
    except LedgerUnavailable as exc:
        out.fail(f"cannot record into the ledger: {exc}", f"{_UNREACHABLE}, or --no-record",
                 code=1)  # fmt: skip
    except (LedgerError, OSError, sqlite3.Error) as exc:
        reason = str(exc) if isinstance(exc, LedgerError) else f"{target}: {exc}"
        out.fail(f"cannot record into the ledger: {reason}",
                 "pass --ledger with a writable tierwise ledger file, or --no-record")
    with ledger:
        yield ledger


def failed_call(exc: Exception) -> str:
    """A router's failure as one line: the reason, then what went wrong with each model."""
    first = str(exc).splitlines()[0]
    tried = "; ".join(a.describe() for a in getattr(exc, "attempts", ()))
    return f"{first} ({tried})" if tried else first


def _since(text: str) -> float:
    """``30m`` / ``24h`` / ``7d`` ago, or a date, as a unix time."""
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return time.time() - float(text[:-1]) * units[text[-1]]
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        out.fail(f"invalid --since {text!r}", "use 30m, 24h, 7d or a date like 2026-11-01")
