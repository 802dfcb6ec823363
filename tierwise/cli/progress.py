"""The live progress of ``tierwise run``: a table on a terminal, else one line per event.

Node names, models and error details come from outside (a model's text, a provider's
error body): every cell and line goes through :func:`~tierwise.cli.terminal.shown`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from rich.console import RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table

from tierwise.cli.common import Printer
from tierwise.cli.terminal import shown
from tierwise.providers.failures import classify

__all__ = ["AttemptWatcher", "Progress", "dollars", "milliseconds", "step_text"]


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
    attempt: bool = False  # one failed model call inside the node, not the node itself


def step_text(step: int | None) -> str:
    """A node's sub-task, as shown: ``step 2``."""
    return "" if step is None else f"step {step + 1}"


def milliseconds(seconds: float | None) -> str:
    """Seconds as ``123 ms``."""
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def dollars(cost: float | None) -> str:
    """USD as ``$0.000123``."""
    return "" if cost is None else f"${cost:.6f}"


def _note(row: _Row) -> str:
    parts = []
    if row.escalation:
        floor = f", min tier {row.min_tier}" if row.min_tier else ""
        parts.append(f"↑ escalation {row.escalation}{floor}")
    if row.status == "failed" and row.tool is None and not row.attempt:
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
            self.out.line(shown(self.out.scrub(self._plain(row))))
            sys.stdout.flush()

    def say(self, text: str) -> None:
        """Print one line of rich markup (scrubbed) above the live table, or as a line."""
        if self.quiet:
            return
        if self._live is not None:
            self._live.console.print(self.out.scrub(text))
        else:
            self.out.line(text)
            sys.stdout.flush()

    def attempt_failed(self, node: str, model: str, tier: str, detail: str) -> None:
        """A model call inside ``node`` failed; the router is trying the next candidate."""
        detail = detail if len(detail) <= 100 else detail[:99] + "…"
        line = f"  ↳ ✗ {node} · {model} ({tier}) failed, falling back: {detail}"
        if self._live is not None:
            row = _Row(node=node, operation="", step=None, status="failed", model=model,
                       tier=tier, error=f"failed, falling back: {detail}", attempt=True)
            self.rows.append(row)
            self._live.update(self._table())
        else:
            self.say(shown(self.out.scrub(line)))

    def _running(self, node: str, step: int | None) -> _Row | None:
        for row in reversed(self.rows):
            if row.node == node and row.step == step and row.status == "running":
                return row
        return None

    @staticmethod
    def _what(row: _Row) -> str:
        where = f"[{step_text(row.step)}] " if row.step is not None else ""
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
        parts += [p for p in (milliseconds(row.latency), "" if row.tool else dollars(row.cost),
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
                mark, shown(row.node), step_text(row.step),
                shown(f"tool {row.tool}" if row.tool else row.operation),
                shown(scrub(row.model or "")), row.tier or "", milliseconds(row.latency),
                "" if row.tool else dollars(row.cost), shown(scrub(_note(row))),
            )
        return table


class AttemptWatcher(BaseCallbackHandler):
    """Shows each failed model call as it happens (the router falls back after it).

    A LangChain callback in the run's config: every provider call the router makes inside
    a node carries ``tierwise_model`` / ``tierwise_tier`` metadata, so a failed one (a
    bad key, a 5xx, a timeout) is shown live, not only in the ledger. The error is
    classified and redacted first: provider error bodies may echo a key.
    """

    run_inline = True  # called in the event loop's thread, in order with the stream

    def __init__(self, progress: Progress, redact: Any) -> None:
        """Report to ``progress``; ``redact`` scrubs configured secrets."""
        self.progress = progress
        self.redact = redact
        self.calls: dict[UUID, tuple[str, str, str]] = {}

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Remember which model and node this call is."""
        meta = metadata or {}
        if "tierwise_model" in meta:
            self.calls[run_id] = (str(meta.get("langgraph_node", "?")),
                                  str(meta["tierwise_model"]), str(meta.get("tierwise_tier", "")))

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a call that answered."""
        self.calls.pop(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Show a failed call of a routed model."""
        found = self.calls.pop(run_id, None)
        if found is None:
            return
        failure = classify(error, redact=self.redact)
        self.progress.attempt_failed(*found, f"{failure.kind.value} — {failure.message}")
