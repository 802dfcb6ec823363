"""The ``tierwise ab report`` and ``tierwise recommend`` commands: what the record says.

Both read the ledger and its quality evidence and compute with
:mod:`tierwise.insights.ab` / :mod:`tierwise.insights.recommend`; nothing here decides
anything. ``tierwise.cli.app`` registers them (``app.add_typer(ab_app, name="ab")`` and
``app.command("recommend")(recommend_command)``). The shared options, the
scrubbed output and the ledger/settings helpers come from :mod:`tierwise.cli.common`,
which imports nothing of the commands, so any import order works.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tierwise.catalog.specs import TaskType
from tierwise.cli.common import (
    App,
    ConfigOption,
    JsonOption,
    LedgerOption,
    _open_ledger,
    _settings,
    _since,
    out,
)
from tierwise.cli.terminal import shown

__all__ = ["ab_app", "recommend_command"]

ab_app = App(
    name="ab",
    help="A/B tests between two models of one operation (policy.operations.<op>.ab).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SinceOption = Annotated[
    str, typer.Option("--since", help="Window: 30m, 24h, 7d, or a date (2026-11-01).")
]
OperationOption = Annotated[
    TaskType | None, typer.Option("--operation", "-o", help="Only this operation.")
]


@ab_app.command("report")
def ab_report_command(
    test: Annotated[
        str | None, typer.Option("--test", "-t", help="Only this test (default: every test).")
    ] = None,
    operation: OperationOption = None,
    since: SinceOption = "7d",
    ledger_path: LedgerOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the arms: success, quality, cost, latency, with p-values and a verdict."""
    from tierwise.insights.ab import ab_reports

    start = _since(since)
    with _settings(config) as settings:  # the configured tests name each arm's model
        models = {o.ab.name: {"a": o.ab.a, "b": o.ab.b}
                  for o in settings.policy.operations.values() if o.ab is not None}  # fmt: skip
    with _open_ledger(ledger_path) as ledger:
        reports = ab_reports(ledger, operation=operation.value if operation else None,
                             since=start, models=models)  # fmt: skip
    if test is not None:
        known = sorted({r.test for r in reports})
        reports = [r for r in reports if r.test == test]
        if not reports:
            out.fail(f"no calls of A/B test {test!r} since {since}",
                     f"tests with calls: {', '.join(known)}" if known
                     else "no A/B test has calls in this window; widen --since")  # fmt: skip
    if as_json:
        out.json([r.to_dict() for r in reports])
        return
    if not reports:
        out.line(f"no A/B test calls recorded since {since}")
        return
    for report in reports:
        a, b = report.a, report.b
        table = Table(title=f"A/B test {shown(report.test)} · {report.operation} · "
                      f"last {shown(since)}")  # fmt: skip
        for column in ("metric", f"a: {a.model}", f"b: {b.model}", "b - a", "test", "p",
                       "verdict"):  # fmt: skip
            table.add_column(shown(column))
        for m in report.metrics:
            arm_a, arm_b = _arm_cells(m.metric, report.a, report.b)
            more = (f"\n[dim]~{m.more_per_arm} more calls/arm[/]"
                    if not m.decided and m.more_per_arm else "")  # fmt: skip
            table.add_row(
                m.metric + (" [dim](primary)[/]" if m.metric == report.primary else ""),
                arm_a, arm_b, _difference(m.metric, m.difference), m.test or "-",
                "-" if m.p_value is None else _p(m.p_value),
                m.verdict + more,
            )
        out.table(table)
        style = "green" if report.decided else "yellow"
        out.line(f"[bold {style}]{shown(report.summary())}[/]")


def _arm_cells(metric: str, a: object, b: object) -> tuple[str, str]:
    from tierwise.insights.ab import ArmStats

    def cell(arm: object) -> str:
        assert isinstance(arm, ArmStats)
        if metric == "success_rate":
            if arm.success_rate is None or arm.success_interval is None:
                return "-"
            low, high = arm.success_interval
            return f"{arm.success_rate:.0%} [{low:.0%}-{high:.0%}] n={arm.calls}"
        if metric == "quality":
            if arm.quality is None or arm.quality_interval is None:
                return "no evidence"
            low, high = arm.quality_interval
            return f"{arm.quality:.2f} [{low:.2f}-{high:.2f}] n={arm.scored}"
        if metric == "cost_per_call":
            return "-" if arm.cost_per_call is None else f"${arm.cost_per_call:.6f}"
        return _latencies(arm.latency_p50, arm.latency_p95) + " (p50/p95)"

    return cell(a), cell(b)


def _latencies(p50: float | None, p95: float | None) -> str:
    if p50 is None or p95 is None:
        return "-"
    return f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms"


def _difference(metric: str, difference: float | None) -> str:
    if difference is None:
        return "-"
    if metric == "success_rate":
        return f"{difference * 100:+.1f} pts"
    if metric == "cost_per_call":
        return f"{'+' if difference >= 0 else '-'}${abs(difference):.6f}"
    if metric == "latency":
        return f"{difference * 1000:+.0f} ms (mean)"
    return f"{difference:+.3f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def recommend_command(
    operation: OperationOption = None,
    since: SinceOption = "7d",
    ledger_path: LedgerOption = None,
    min_n: Annotated[
        int, typer.Option("--min-n", help="Outcomes (or sent calls) a model needs to be ranked.")
    ] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which model should lead each operation's tiers, from the ledger and quality evidence."""
    from tierwise.insights.recommend import RULE, recommend, toml_snippet

    if min_n < 1:
        out.fail(f"invalid --min-n {min_n}", "use a number of calls of at least 1, e.g. 20")
    start = _since(since)
    with _settings(config) as settings, _open_ledger(ledger_path, settings) as ledger:
        recs = recommend(ledger, settings.catalog, since=start, min_n=min_n,
                         operation=operation.value if operation else None)  # fmt: skip
    snippet = toml_snippet(recs)
    if as_json:
        out.json({"rule": RULE, "since": since, "min_n": min_n, "snippet": snippet,
                  "operations": [r.to_dict() for r in recs]})  # fmt: skip
        return
    if not recs:
        out.line(f"no calls or quality evidence recorded since {since}")
        return
    out.line(f"[dim]rule: {shown(RULE)}[/]")
    for rec in recs:
        table = Table(title=f"{rec.operation} · last {shown(since)}")
        for column in ("tier", "model", "quality", "success", "$ / success", "p50",
                       "quality / $", "quality / s"):  # fmt: skip
            table.add_column(column)
        for m in rec.models:
            if m.quality is not None and m.quality_interval is not None:
                low, high = m.quality_interval
                n = m.evidence if m.basis == "measured quality" else m.attempts
                kind = "" if m.basis == "measured quality" else " (success)"
                quality = f"{m.quality:.2f} [{low:.2f}-{high:.2f}] n={n}{kind}"
            else:
                quality = f"[dim]too little record (n={m.evidence})[/]"
            table.add_row(
                m.tier, shown(m.model) + ("" if m.in_chain else " [dim](not in chain)[/]"), quality,
                "-" if m.success_rate is None else f"{m.success_rate:.0%} of {m.attempts}",
                "-" if m.cost_per_success is None else f"${m.cost_per_success:.6f}",
                "-" if m.p50_latency is None else f"{m.p50_latency * 1000:.0f} ms",
                "free" if m.cost_per_success == 0 else (
                    "-" if m.quality_per_dollar is None else f"{m.quality_per_dollar:,.0f}"),
                "-" if m.quality_per_second is None else f"{m.quality_per_second:.2f}",
            )
        out.table(table)
        for tier in rec.tiers:
            change = tier.change()
            if change is None:
                out.line(f"  {tier.tier}: keep — {shown(tier.reason)}")
            else:
                mark = "[green]" if tier.significant else "[yellow]"
                out.line(f"  {tier.tier}: {mark}{shown(change)}[/] — {shown(tier.reason)}")
    if snippet is None:
        out.line("no chain change suggested")
        return
    out.line("to apply, add to tierwise.toml:")
    out.line(shown(snippet))
