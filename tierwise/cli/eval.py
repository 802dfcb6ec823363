"""``tierwise eval``: run an operation's node over a gold set on each model, as evidence.

The command is a thin shell over :mod:`tierwise.evaluation`: it resolves the data set,
samples it, checks the models, shows progress (a bar on a terminal, plain lines
otherwise, nothing with ``--json``; on stderr, so stdout stays the report) and prints a
table or one JSON object. Every verdict is stored as it arrives, so Ctrl-C loses only
the items in flight and the same command resumes.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table

from tierwise.catalog.specs import TaskType
from tierwise.cli.common import (
    _UNREACHABLE,
    ConfigOption,
    JsonOption,
    LedgerOption,
    OperationArgument,
    _ledger_target,
    _settings,
    out,
)
from tierwise.cli.terminal import shown

if TYPE_CHECKING:  # imported when the command runs: `tierwise --help` stays fast
    from tierwise.evaluation.datasets import EvalSet
    from tierwise.evaluation.harness import EvalReport, ItemResult
    from tierwise.routing.router import ModelRouter

__all__ = ["eval_command"]

DataOption = Annotated[
    str,
    typer.Option("--data", "-d", help="Data set: a file or folder, or banking77, clinc150, "
                 "snips, bfcl (optionally :split, e.g. banking77:train, bfcl:live_simple), "
                 "found under $TIERWISE_DATA or ../shared/data/intent.", show_default=False),
]
ModelsOption = Annotated[
    list[str] | None,
    typer.Option("--models", "-m", help="Catalog keys, repeated or comma-separated "
                 "(default: the operation's chain that routing would use now).",
                 show_default=False),
]
LimitOption = Annotated[
    int | None,
    typer.Option("--limit", "-n", min=1, help="Evaluate this many items: a seeded sample, "
                 "stratified by label (a larger limit extends a smaller one).",
                 show_default=False),
]
LabelsOption = Annotated[
    int | None,
    typer.Option("--labels", min=2, help="Classification: offer a seeded random subset of "
                 "this many labels and keep their items only (short prompts for small "
                 "models; recorded as its own data set).", show_default=False),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of --limit and --labels.")]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, help="Items in flight per hosted model.")
]


class _Display:
    """Progress on stderr: a rich bar on a terminal, a line per model otherwise."""

    def __init__(self, *, bar: bool) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.bar = Bar(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[score]}"), TimeElapsedColumn(), console=self.console,
        ) if bar else None  # fmt: skip
        self.task: TaskID | None = None
        self.scores: list[float] = []
        self.failures = 0

    def __enter__(self) -> _Display:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _line(self, text: str) -> None:
        self.console.print(out.scrub(text), markup=False)

    def _score(self) -> str:
        mean = f"{sum(self.scores) / len(self.scores):.2f}" if self.scores else "-"
        return f"score {mean}" + (f", {self.failures} failed" if self.failures else "")

    def start(self, model: str, total: int, resumed: int) -> None:
        self.scores, self.failures = [], 0
        if self.bar is not None:
            self.task = self.bar.add_task(model, total=total, completed=resumed,
                                          score=self._score())  # fmt: skip
        else:
            self._line(f"{model}: {total - resumed} of {total} items to evaluate"
                       + (f" ({resumed} done before)" if resumed else ""))

    def advance(self, result: ItemResult) -> None:
        if result.score is None:
            self.failures += 1
        else:
            self.scores.append(result.score)
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, score=self._score())

    def finish(self, model: str) -> None:
        if self.bar is None:
            self._line(f"{model}: {self._score()}")


def _models(values: list[str] | None) -> list[str]:
    return [m.strip() for v in values or () for m in v.split(",") if m.strip()]


def _data(spec: str, operation: TaskType, limit: int | None, labels: int | None,
          seed: int) -> EvalSet:
    """The sampled data set, or one ``error:`` line and exit code 2."""
    from tierwise.evaluation.datasets import DataError, resolve_data
    from tierwise.evaluation.harness import EVALUATED

    if operation not in EVALUATED:
        out.fail(f"no gold-label metric for {operation.value}",
                 "tierwise eval runs " + ", ".join(o.value for o in EVALUATED))
    try:
        data = resolve_data(spec)
    except DataError as exc:
        out.fail(str(exc), "pass --data with a file or folder, or a short name such as "
                 "banking77")  # fmt: skip
    if data.operation is not operation:
        out.fail(f"{data.name} is a {data.operation.value} data set, not {operation.value}",
                 f"run `tierwise eval {data.operation.value} --data {spec}`")
    data = data.with_labels(labels, seed=seed).sample(limit, seed=seed)
    if not data.items:
        out.fail(f"{data.name}: no items to evaluate", "check the file, --labels and --limit")
    return data


def eval_command(
    operation: OperationArgument,
    data: DataOption,
    models: ModelsOption = None,
    limit: LimitOption = None,
    labels: LabelsOption = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 4,
    ledger_path: LedgerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score models on a gold-labelled data set and record the results as quality evidence."""
    from tierwise.evaluation.harness import evaluate
    from tierwise.ledger import LedgerError, LedgerUnavailable, open_ledger
    from tierwise.routing.router import ModelRouter

    sample = _data(data, operation, limit, labels, seed)
    with _settings(config) as settings:
        try:
            ledger = open_ledger(_ledger_target(ledger_path, settings))
        except LedgerUnavailable as exc:
            out.fail(f"cannot open the ledger: {exc}", _UNREACHABLE, code=1)
        except LedgerError as exc:
            out.fail(str(exc), "pass --ledger pointing at a tierwise ledger file")
        with ledger:
            router = ModelRouter(settings, ledger=ledger)
            chosen = _check_models(router, _models(models), operation)
            display = _Display(bar=sys.stderr.isatty()) if not as_json else None
            try:
                with display if display is not None else nullcontext():
                    report = evaluate(sample, router=router, models=chosen,
                                      concurrency=concurrency, progress=display)
            except KeyboardInterrupt:
                out.fail("interrupted: the items that finished are recorded",
                         "run the same command again to resume", code=130)
    if as_json:
        out.json(report.as_dict())
        return
    _print(report)


def _check_models(router: ModelRouter, models: list[str], operation: TaskType) -> list[str]:
    """Named models must be catalog keys usable now; none named: the routing chain."""
    from tierwise.evaluation.harness import default_models

    catalog = router.settings.catalog.models
    if not models:
        models = default_models(router, operation)
        if not models:
            out.fail(f"no model can answer {operation.value} now",
                     "run `tierwise doctor`, or name models with --models")
        return models
    unknown = [m for m in models if m not in catalog]
    if unknown:
        out.fail(f"unknown model {unknown[0]!r}", "see `tierwise models` for the catalog keys")
    snapshot = router.snapshot()
    for model in models:  # what the model cannot do first: it holds whatever runs
        if operation is TaskType.TOOL_USE_FORMATTING and not catalog[model].tools:
            out.fail(f"model {model} has no tool calling, so it cannot format tool calls",
                     "pick models with tool calling (`tierwise models` shows them)")
        if model not in snapshot.available:
            why = snapshot.reasons.get(model, "not available")
            out.fail(f"model {model} cannot be called now: {why}", "run `tierwise doctor`")
    return list(dict.fromkeys(models))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _print(report: EvalReport) -> None:
    table = Table(title=f"{report.operation.value} on {report.dataset} "
                        f"({report.items} items)")  # fmt: skip
    for column in ("model", "n", "score (95% CI)", "cost", "per item", "p50 / p95",
                   "failures"):
        table.add_column(column)
    for m in report.models:
        table.add_row(
            shown(m.model), str(m.n),
            "-" if m.mean is None else f"{m.mean:.2f} ({m.low:.2f}-{m.high:.2f})",
            f"${m.cost:.6f}", "-" if m.cost_per_item is None else f"${m.cost_per_item:.6f}",
            f"{_ms(m.p50_latency)} / {_ms(m.p95_latency)}", str(m.failures),
        )
    out.table(table)
    out.line(f"recorded {sum(m.recorded for m in report.models)} verdicts in "
             f"{report.seconds:.1f}s; {sum(m.resumed for m in report.models)} were already "
             "recorded")
