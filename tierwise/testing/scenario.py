"""Scenario files: a simulator's scripts, limits and Ollama tags as TOML or JSON.

Used by ``tierwise simulate --scenario FILE`` so a user can point their own application at
a simulator that fails the way they want to test, without writing Python. Format::

    timeout = 5.0                      # client timeout printed in the settings snippet
    ollama_models = ["llama3.2:3b"]    # extra /api/tags entries

    [[script]]
    model = "gemini-2.5-flash"         # "*" for every model
    provider = "gemini"                # optional
    replies = [{ fault = "rate_limited", retry_after = 2 }, { text = "hello" }]
    times = 10                         # optional; also: fraction, seed, first_byte, per_chunk

    [[limit]]
    model = "llama-3.3-70b-versatile"
    rpm = 30
    tpm = 12000
    window_scale = 1.0                 # also: window = "fixed", provider

A reply is one of ``{text = "..."}``, ``{json = {...}}``, ``{tool_call = "name", args =
{...}}``, ``{default = true}`` or ``{fault = "<kind>", ...}`` with the fault's options
(``retry_after``, ``headers``, ``status``, ``seconds``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tierwise.catalog.specs import Provider
from tierwise.testing.script import Behaviour, Fault, FaultKind, Reply
from tierwise.testing.simulator import Simulator

__all__ = [
    "ScenarioError",
    "apply_scenario",
    "from_scenario",
    "read_scenario",
    "simulator_options",
]


class ScenarioError(ValueError):
    """A scenario file is unreadable or invalid; the message names the file and the key."""


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = None
    json_value: Any = Field(None, alias="json")
    tool_call: str | None = None
    args: dict[str, Any] | None = None
    default: bool = False
    fault: FaultKind | None = None
    retry_after: float | None = 1.0
    headers: bool = True
    status: int | None = None
    seconds: float = 60.0
    usage: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _Step:
        given = [
            name
            for name, present in (
                ("text", self.text is not None),
                ("json", "json_value" in self.model_fields_set),
                ("tool_call", self.tool_call is not None),
                ("default", self.default),
                ("fault", self.fault is not None),
            )
            if present
        ]
        if len(given) != 1:
            raise ValueError(
                "a reply needs exactly one of text, json, tool_call, default, fault"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def behaviour(self) -> Behaviour:
        if self.text is not None:
            return Reply.text(self.text, usage=self.usage)
        if "json_value" in self.model_fields_set:
            return Reply.json(self.json_value, usage=self.usage)
        if self.tool_call is not None:
            return Reply.tool_call(self.tool_call, self.args, usage=self.usage)
        if self.default:
            return Reply.default()
        assert self.fault is not None
        return _fault(self)


def _fault(step: _Step) -> Fault:
    kind = step.fault
    if kind is FaultKind.RATE_LIMITED:
        return Fault.rate_limited(step.retry_after, headers=step.headers)
    if kind is FaultKind.HTTP_ERROR:
        return Fault.http_error(step.status or 500)
    if kind is FaultKind.TIMEOUT:
        return Fault.timeout(step.seconds)
    if kind is FaultKind.MIDSTREAM_ERROR:
        return Fault.midstream_error(step.status or 500)
    factories = {
        FaultKind.DROP: Fault.drop,
        FaultKind.MALFORMED_JSON: Fault.malformed_json,
        FaultKind.MALFORMED_CHUNK: Fault.malformed_chunk,
        FaultKind.TRUNCATED_STREAM: Fault.truncated_stream,
        FaultKind.EMPTY: Fault.empty,
        FaultKind.SCHEMA_VIOLATION: Fault.schema_violation,
    }
    assert kind is not None
    return factories[kind]()


class _Script(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    provider: Provider | None = None
    reply: _Step | None = None
    replies: list[_Step] = Field(default_factory=list)
    times: int | None = Field(None, ge=0)
    fraction: float | None = Field(None, ge=0, le=1)
    seed: int = 0
    first_byte: float = Field(0.0, ge=0)
    per_chunk: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _has_replies(self) -> _Script:
        if (self.reply is None) == (not self.replies):
            raise ValueError("give either reply or replies")
        return self


class _Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    provider: Provider | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    rpd: int | None = Field(None, gt=0)
    window_scale: float = Field(1.0, gt=0)
    window: Literal["sliding", "fixed"] = "sliding"


class _Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: float | None = Field(None, gt=0)
    ollama_models: list[str] = Field(default_factory=list)
    catalog_limits: bool = False
    catalog_window_scale: float = Field(1.0, gt=0)
    script: list[_Script] = Field(default_factory=list)
    limit: list[_Limit] = Field(default_factory=list)


def read_scenario(path: str | Path) -> dict[str, Any]:
    """The raw data of a ``.toml`` or ``.json`` scenario file."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ScenarioError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a table/object")
    return data


def _validate(data: Mapping[str, Any], source: str) -> _Scenario:
    try:
        return _Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ScenarioError(f"{source}: {key}: {err['msg']}") from None


def simulator_options(data: Mapping[str, Any], source: str = "<scenario>") -> dict[str, Any]:
    """The ``Simulator(...)`` keyword arguments a scenario sets (timeout)."""
    scenario = _validate(data, source)
    return {} if scenario.timeout is None else {"timeout": scenario.timeout}


def apply_scenario(sim: Simulator, source: str | Path | Mapping[str, Any]) -> None:
    """Add a scenario's scripts, limits and Ollama tags to ``sim``."""
    if isinstance(source, Mapping):
        data, name = source, "<scenario>"
    else:
        data, name = read_scenario(source), str(source)
    scenario = _validate(data, name)
    if scenario.timeout is not None:
        sim.timeout = scenario.timeout
    sim.add_ollama_models(*scenario.ollama_models)
    if scenario.catalog_limits:
        sim.limit_catalog(window_scale=scenario.catalog_window_scale)
    for limit in scenario.limit:
        sim.limit(
            limit.model,
            rpm=limit.rpm,
            tpm=limit.tpm,
            rpd=limit.rpd,
            window_scale=limit.window_scale,
            window=limit.window,
            provider=limit.provider,
        )
    for entry in scenario.script:
        steps = [entry.reply] if entry.reply is not None else entry.replies
        sim.script(
            entry.model,
            *(s.behaviour() for s in steps),
            times=entry.times,
            fraction=entry.fraction,
            seed=entry.seed,
            first_byte=entry.first_byte,
            per_chunk=entry.per_chunk,
            provider=entry.provider,
        )


def from_scenario(path: str | Path, **kwargs: Any) -> Simulator:
    """A (not yet started) simulator set up from a scenario file; ``kwargs`` win over it."""
    data = read_scenario(path)
    sim = Simulator(**{**simulator_options(data, str(path)), **kwargs})
    apply_scenario(sim, data)
    return sim
