"""What ``tierwise run`` prints at the end: the result, its steps and the routing report.

Everything a model wrote (the rewrite, the plan, parameters, tool results, rationale,
judges' reasons) is shown through :func:`~tierwise.cli.terminal.shown`: control characters
escaped, rich markup neutralised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic_core import to_jsonable_python
from rich.console import RenderableType
from rich.table import Table

from tierwise.cli.common import Printer
from tierwise.cli.progress import dollars, milliseconds, step_text
from tierwise.cli.terminal import shown

__all__ = ["GRAPHS", "GraphName", "render_output", "show"]

#: The graphs ``tierwise run --graph`` can run.
GRAPHS = ("pipeline", "triage", "extraction")
GraphName = Literal["pipeline", "triage", "extraction"]


def _short(value: Any, width: int = 200) -> str:
    from tierwise.nodes.render import render

    text = " ".join(render(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _parameters(value: Any) -> str:
    """Name/value pairs as ``name=value; ...``; any other parameters as compact JSON."""
    if value is None:
        return "-"
    plain = to_jsonable_python(value)
    pairs = plain.get("parameters") if isinstance(plain, dict) and len(plain) == 1 else None
    if isinstance(pairs, list) and all(isinstance(p, dict) and {"name", "value"} <= set(p)
                                       for p in pairs):
        return "; ".join(f"{p['name']}={_short(p['value'], 80)}" for p in pairs) or "-"
    return _short(plain)


def _tool(outcome: Any) -> str:
    call, result = outcome.tool_call, outcome.tool_result
    if call is None:
        return "-"
    args = ", ".join(f"{k}={_short(v, 40)}" for k, v in call.args.items())
    text = f"{call.name}({args})"
    if result is not None:
        text += f" → error: {result.error}" if result.error else f" → {_short(result.output)}"
    return text


def _structure(found: Any) -> str:
    if found is None:
        return "-"
    if found.passed:
        return "ok"
    what = "malformed" if not found.well_formed else "incomplete"
    return f"{what}: {'; '.join(found.defects)}" if found.defects else what


def _score(found: Any) -> str:
    if found is None:
        return "-"
    reasons = f" ({'; '.join(found.reasons)})" if found.reasons else ""
    return f"{found.score}/10{reasons}"


def _steps_table(steps: Sequence[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True)
    for column in ("#", "task", "parameters", "tool call → result", "structure", "score",
                   "best effort"):
        table.add_column(column, overflow="fold")
    for s in steps:
        table.add_row(
            str(s.index + 1), shown(s.task), shown(_parameters(s.parameters)),
            shown(_tool(s)), shown(_structure(s.structure)), shown(_score(s.quality)),
            "[yellow]yes[/]" if s.best_effort else "",
        )
    return table


def _report_tables(report: Any) -> list[RenderableType]:
    """The routing report: one row per node execution, totals, escalation decisions."""
    table = Table(title="routing report", title_justify="left")
    for column in ("node", "step", "operation", "model", "tier", "latency", "cost", "note"):
        table.add_column(column, overflow="fold")
    for e in report.entries:
        note = []
        if e.get("escalation"):
            floor = f", min tier {e['min_tier']}" if e.get("min_tier") else ""
            note.append(f"↑ escalation {e['escalation']}{floor}")
        if e.get("status") == "failed":
            note.append(f"failed: {e.get('detail', '')}")
        elif e.get("detail"):
            note.append(str(e["detail"]))  # a judge's verdict
        if e.get("ensemble"):
            note.append(f"ensemble: {e['ensemble']}")  # how the members' answers combined
        table.add_row(
            shown(e["node"]), step_text(e.get("step")), e.get("operation", ""),
            shown(e.get("model") or "-"), e.get("tier") or "-", milliseconds(e.get("latency")),
            dollars(e.get("cost")), shown("; ".join(note)),
        )
    tiers = ", ".join(f"{tier} {n}" for tier, n in sorted(report.by_tier.items())) or "-"
    totals = (f"[bold]totals[/]: {report.calls} model calls · ${report.cost:.6f} · "
              f"{report.input_tokens}/{report.output_tokens} tokens in/out · "
              f"{report.model_time:.2f} s in models · answers by tier: {tiers}")
    out: list[RenderableType] = [table, totals]
    if report.escalations:
        esc = Table(title="escalations", title_justify="left")
        for column in ("node", "step", "decision", "why", "tiers", "note"):
            esc.add_column(column, overflow="fold")
        for x in report.escalations:
            tiers_moved = f"{x.from_tier or '-'} → {x.to_tier or '-'}"
            esc.add_row(shown(x.node), step_text(x.step), x.decision, shown(x.reason),
                        tiers_moved, shown(x.note))
        out.append(esc)
    else:
        out.append("no escalations")
    return out


def render_output(graph: GraphName, output: Mapping[str, Any]) -> list[RenderableType]:
    """The result of a run of ``graph`` and its routing report, as lines and tables."""
    from tierwise.graphs.state import RoutingReport

    parts: list[RenderableType] = []
    if graph == "pipeline":
        r = output["result"]
        head = (f"[bold]result[/]: route [bold]{shown(r.route)}[/] · label "
                f"{shown(r.label or '-')} · complexity {shown(r.complexity)}")
        parts.append(head + (" · [yellow]best effort[/]" if r.best_effort else ""))
        parts.append(f"[bold]instruction[/]: {shown(r.instruction)}")
        parts.append(f"[bold]rewritten[/]:   {shown(r.rewritten)}")
        if r.steps:
            parts.append(_steps_table(r.steps, "plan" if r.route == "plan" else "action"))
        if r.quality is not None:
            parts.append(f"[bold]quality[/]: {shown(_score(r.quality))}")
        parts.append(f"[bold]rationale[/]: {shown(r.rationale or '-')}")
        if r.best_effort:
            parts.append("[yellow]best effort[/]: a judge found part of this wanting and no "
                         "higher tier could be tried; the best answers obtained are shown")
        report = r.report
    elif graph == "triage":
        found = output.get("classification")
        parts.append(
            f"[bold]result[/]: label [bold]{shown(found.label if found else '-')}[/] · "
            f"complexity {shown(str(output.get('complexity') or '-'))} · route "
            f"[bold]{shown(output['route'].route)}[/]"
        )
        report = RoutingReport.of(list(output.get("report") or []), [])
    else:
        o = output["outcome"]
        parts.append(f"[bold]result[/]: {shown(o.task)}"
                     + (" · [yellow]best effort[/]" if o.best_effort else ""))
        parts.append(_steps_table([o], "extraction"))
        report = RoutingReport.of(list(output.get("report") or []), list(o.escalations))
    return parts + _report_tables(report)


def show(out: Printer, graph: GraphName, output: Mapping[str, Any]) -> None:
    """Print the result of a run of ``graph`` and its routing report."""
    for part in render_output(graph, output):
        if isinstance(part, Table):
            out.table(part)
        else:
            out.line(str(part))
