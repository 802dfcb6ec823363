"""``tool_use_formatting``: a tool call that validates against the tool's JSON schema.

The router validates every candidate's tool call against the bound tools' schemas and
falls back on a call that does not fit, so a call in the state is always valid. When the
tools are LangChain tools (or plain functions), :func:`tool_execution_node` runs the call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.tools import tool as as_tool
from langgraph.config import get_stream_writer
from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.nodes.render import render
from tierwise.prompts.tool_use_formatting import FORMAT_TOOL_CALL

__all__ = [
    "ToolCall",
    "ToolCallNode",
    "ToolExecutionNode",
    "ToolResult",
    "runnable_tools",
    "tool_execution_node",
    "tool_use_formatting_node",
]


class ToolCall(BaseModel):
    """One call of one tool."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class ToolResult(BaseModel):
    """What executing a :class:`ToolCall` gave: its output, or the error it raised."""

    name: str
    output: str | None = None
    error: str | None = None
    latency: float = 0.0


class ToolCallNode(OperationNode):
    """Formats one call of one of ``tools`` for the task, from its parameters."""

    operation = TaskType.TOOL_USE_FORMATTING
    schema = None
    prompt = FORMAT_TOOL_CALL
    max_tokens = 120
    combine = "vote"  # the most common tool call (name and arguments)

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The task and its extracted parameters."""
        task, parameters = self.reads
        return {"task": render(state[task]), "parameters": render(state.get(parameters))}

    def skip(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Nothing to format when no tools were given."""
        return {} if not self.tools else None

    def update(self, value: Any, state: Mapping[str, Any]) -> dict[str, Any]:
        """The first tool call of the answer."""
        message: AIMessage = value
        call = message.tool_calls[0]
        return {self.writes[0]: ToolCall(name=call["name"], args=call["args"], id=call["id"])}


def tool_use_formatting_node(
    model: ModelLike | None = None,
    *,
    tools: Sequence[Any],
    input_key: str = "task",
    parameters_key: str = "parameters",
    output_key: str = "tool_call",
    name: str = "format_tool_call",
) -> ToolCallNode:
    """A node formatting one call of one of ``tools`` for the task at ``input_key``.

    Tools are LangChain tools, functions or OpenAI tool dicts. Reads ``input_key`` and
    ``parameters_key``; writes ``output_key`` (:class:`ToolCall`)
    and a ``report`` entry. With no tools it writes nothing and calls no model.

    Example:
        >>> def book_venue(city: str, people: int) -> str:
        ...     '''Book a venue.'''
        ...     return "booked"
        >>> tool_use_formatting_node(model="smollm2-135m", tools=[book_venue]).reads
        ('task', 'parameters')
    """
    return ToolCallNode(model, name=name, reads=(input_key, parameters_key),
                        writes=(output_key,), tools=tools)


def runnable_tools(tools: Sequence[Any]) -> dict[str, BaseTool]:
    """The tools that can be executed, by name: LangChain tools and plain functions."""
    found: dict[str, BaseTool] = {}
    for item in tools:
        if isinstance(item, BaseTool):
            found[item.name] = item
        elif callable(item) and not isinstance(item, Mapping | type):
            converted = as_tool(item)
            found[converted.name] = converted
    return found


class ToolExecutionNode(Runnable[Any, dict[str, Any]]):
    """Runs the tool call in ``tool_call`` when its tool is executable; no model involved.

    A tool that raises does not stop the graph: the error is the step's result, so the
    structure and quality checks after it see it and the report keeps it.
    """

    def __init__(self, tools: Sequence[Any], *, input_key: str, output_key: str,
                 name: str) -> None:
        """See :func:`tool_execution_node`."""
        self.tools = runnable_tools(tools)
        self.name = name
        self.reads = (input_key,)
        self.writes = (output_key,)

    def invoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Execute the call, if there is one and its tool can run."""
        call = self._call(input)
        if call is None:
            return {}
        started = time.perf_counter()
        try:
            output, error = self.tools[call.name].invoke(call.args, config), None
        except Exception as exc:  # noqa: BLE001 - a failing tool is a result, not a crash
            output, error = None, f"{type(exc).__name__}: {exc}"
        return self._done(input, call, output, error, started)

    async def ainvoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Async :meth:`invoke`."""
        call = self._call(input)
        if call is None:
            return {}
        started = time.perf_counter()
        try:
            output, error = await self.tools[call.name].ainvoke(call.args, config), None
        except Exception as exc:  # noqa: BLE001 - a failing tool is a result, not a crash
            output, error = None, f"{type(exc).__name__}: {exc}"
        return self._done(input, call, output, error, started)

    def _call(self, state: Mapping[str, Any]) -> ToolCall | None:
        call: ToolCall | None = state.get(self.reads[0])
        if call is None or call.name not in self.tools:
            return None
        get_stream_writer()({"node": self.name, "operation": "tool", "status": "started",
                             "step": state.get("step"), "tool": call.name})
        return call

    def _done(self, state: Mapping[str, Any], call: ToolCall, output: Any, error: str | None,
              started: float) -> dict[str, Any]:
        result = ToolResult(name=call.name, output=None if error else render(output),
                            error=error, latency=round(time.perf_counter() - started, 4))
        get_stream_writer()({"node": self.name, "operation": "tool", "status": "done",
                             "step": state.get("step"), "tool": call.name,
                             "latency": result.latency, "error": error})
        return {self.writes[0]: result}


def tool_execution_node(
    tools: Sequence[Any],
    *,
    input_key: str = "tool_call",
    output_key: str = "tool_result",
    name: str = "execute_tool",
) -> ToolExecutionNode:
    """A node executing the tool call at ``input_key`` with the matching tool.

    Reads ``input_key``; writes ``output_key`` (:class:`ToolResult`). Tools given as
    OpenAI dicts are only formatted, never executed.

    Example:
        >>> def add(a: int, b: int) -> int:
        ...     '''Add two numbers.'''
        ...     return a + b
        >>> sorted(tool_execution_node([add]).tools)
        ['add']
    """
    return ToolExecutionNode(tools, input_key=input_key, output_key=output_key, name=name)
