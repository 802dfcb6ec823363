"""Contract tests: the real LangChain clients, built by ProviderFactory, against the simulator.

Every hosted protocol is exercised over real HTTP on 127.0.0.1: invoke, stream, tool calls,
structured output with the provider's default method and usage metadata, sync and async;
then the fault matrix checks that each client raises what PROVIDERS.md says with SDK
retries really off (exactly one request reaches the simulator).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import groq
import httpx
import httpx2
import ollama
import openai
import pytest
from google.genai import errors as genai_errors
from langchain_core.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from tierwise.catalog.specs import ModelSpec, Provider, Tier
from tierwise.providers.clients import ProviderFactory
from tierwise.testing import Fault, Reply, Simulator


def _spec(provider: Provider, model: str) -> ModelSpec:
    tier = Tier.LOCAL if provider is Provider.OLLAMA else Tier.FREE
    return ModelSpec(
        key=f"sim-{provider.value}",
        provider=provider,
        model=model,
        tier=tier,
        context_window=32768,
    )


SPECS = {
    "openai": _spec(Provider.OPENAI, "gpt-4o-mini"),
    "openrouter": _spec(Provider.OPENROUTER, "meta-llama/llama-3.3-70b-instruct:free"),
    "mistral": _spec(Provider.MISTRAL, "mistral-small-latest"),
    "huggingface": _spec(Provider.HUGGINGFACE, "meta-llama/Llama-3.1-8B-Instruct"),
    "groq": _spec(Provider.GROQ, "llama-3.3-70b-versatile"),
    "gemini": _spec(Provider.GEMINI, "gemini-2.5-flash"),
    "ollama": _spec(Provider.OLLAMA, "llama3.2:3b"),
}
PATHS = {
    "openai": "/v1/chat/completions",
    "openrouter": "/api/v1/chat/completions",
    "mistral": "/mistral/v1/chat/completions",
    "huggingface": "/hf/v1/chat/completions",
    "groq": "/openai/v1/chat/completions",
    "gemini": "/v1/models/gemini-2.5-flash:generateContent",
    "ollama": "/api/chat",
}
ALL = list(SPECS)
PROTOCOLS = ["openai", "groq", "gemini", "ollama"]


class Person(BaseModel):
    """A person."""

    name: str
    age: int = Field(ge=1)
    tags: list[str]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


_FACTORIES: dict[tuple[str, float | None], ProviderFactory] = {}


def client(sim: Simulator, name: str, timeout: float | None = None) -> BaseChatModel:
    """The cached client (building one costs tens of ms; tierwise reuses them too)."""
    key = (sim.url, timeout)
    if key not in _FACTORIES:
        _FACTORIES[key] = ProviderFactory(sim.settings(timeout=timeout))
    return _FACTORIES[key].chat_model(SPECS[name])


def _sdk_error(exc: BaseException) -> BaseException:
    """What the SDK raised: tierwise's clients hand callers a redacted wrapper around it."""
    from tierwise.providers.redaction import RedactedError

    assert isinstance(exc, RedactedError)
    return exc.original


def finish_reason(message: BaseMessage) -> str | None:
    meta = message.response_metadata
    reason = meta.get("finish_reason") or meta.get("done_reason")
    return str(reason) if reason else None


def join(chunks: list[Any]) -> Any:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


# ---------------------------------------------------------------------------- contract, sync


@pytest.mark.parametrize("name", ALL)
def test_invoke_default_answer_and_recording(simulator: Simulator, name: str) -> None:
    spec = SPECS[name]
    reply = client(simulator, name).invoke("hello there")

    assert reply.content == f"simulated answer from {spec.model}"
    assert finish_reason(reply) is not None
    [record] = simulator.requests_for(spec)
    assert (record.provider, record.model, record.status, record.outcome) == (
        spec.provider,
        spec.model,
        200,
        "ok",
    )
    assert record.path == PATHS[name]
    assert "hello there" in json.dumps(record.body)
    assert not {"authorization", "x-goog-api-key", "api-key"} & set(record.headers)
    assert "sim-" not in json.dumps(dict(record.headers))


@pytest.mark.parametrize("name", ALL)
def test_invoke_scripted_text_and_usage(simulator: Simulator, name: str) -> None:
    simulator.script(SPECS[name], Reply.text("hello from the script", usage=(11, 4)))
    reply = client(simulator, name).invoke("hi")

    assert reply.content == "hello from the script"
    assert isinstance(reply, AIMessage) and reply.usage_metadata is not None
    usage = reply.usage_metadata
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (11, 4, 15)


@pytest.mark.parametrize("name", ALL)
def test_stream_text_usage_and_finish(simulator: Simulator, name: str) -> None:
    simulator.script(SPECS[name], Reply.text("one two three four five six", usage=(7, 6)))
    chunks = list(client(simulator, name).stream("count"))
    full = join(chunks)

    assert len([c for c in chunks if c.content]) > 1
    assert full.content == "one two three four five six"
    assert full.usage_metadata["input_tokens"] == 7
    assert full.usage_metadata["output_tokens"] == 6
    assert finish_reason(full) is not None
    [record] = simulator.requests_for(SPECS[name])
    assert record.stream


@pytest.mark.parametrize("name", ALL)
def test_tool_call_then_text_after_tool_result(simulator: Simulator, name: str) -> None:
    simulator.script(SPECS[name], Reply.tool_call("get_weather", {"city": "Paris"}))
    model = client(simulator, name).bind_tools([get_weather])

    first = model.invoke("weather in Paris?")
    assert isinstance(first, AIMessage)
    [call] = first.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})

    result = ToolMessage("sunny", tool_call_id=call["id"] or "x", name="get_weather")
    second = model.invoke([HumanMessage("weather in Paris?"), first, result])
    assert isinstance(second, AIMessage) and not second.tool_calls
    assert second.content == f"simulated answer from {SPECS[name].model}"
    assert "get_weather" in json.dumps(simulator.requests_for(SPECS[name])[0].body)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_stream_tool_call(simulator: Simulator, name: str) -> None:
    simulator.script(SPECS[name], Reply.tool_call("get_weather", {"city": "Oslo"}))
    full = join(list(client(simulator, name).bind_tools([get_weather]).stream("weather?")))

    [call] = full.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Oslo"})


@pytest.mark.parametrize("name", ALL)
def test_structured_output_default_method(simulator: Simulator, name: str) -> None:
    structured = client(simulator, name).with_structured_output(Person)

    assert structured.invoke("make a person") == Person(name="sim", age=1, tags=[])
    simulator.script(SPECS[name], Reply.json({"name": "Ada", "age": 36, "tags": ["math"]}))
    assert structured.invoke("make Ada") == Person(name="Ada", age=36, tags=["math"])

    body = simulator.requests_for(SPECS[name])[0].body
    if name == "groq":  # function calling, forced
        assert body["tool_choice"]["function"]["name"] == "Person"
    elif name == "gemini":
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert "Person" in json.dumps(body["generationConfig"])
    elif name == "ollama":
        assert body["format"]["title"] == "Person"
    else:
        assert body["response_format"]["type"] == "json_schema"


# ---------------------------------------------------------------------------- contract, async


@pytest.mark.parametrize("name", ALL)
async def test_async_invoke_stream_tools_structured(simulator: Simulator, name: str) -> None:
    spec = SPECS[name]
    model = client(simulator, name)
    simulator.script(spec, Reply.text("async hello world", usage=(5, 3)), times=2)

    reply = await model.ainvoke("hi")
    assert reply.content == "async hello world"
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] == 8

    full = join([c async for c in model.astream("hi")])
    assert full.content == "async hello world"
    assert full.usage_metadata["total_tokens"] == 8 and finish_reason(full) is not None

    simulator.script(spec, Reply.tool_call("get_weather", {"city": "Rome"}), times=1)
    called = await model.bind_tools([get_weather]).ainvoke("weather?")
    assert isinstance(called, AIMessage)
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [
        ("get_weather", {"city": "Rome"})
    ]

    person = await model.with_structured_output(Person).ainvoke("a person")
    assert person == Person(name="sim", age=1, tags=[])
    assert len(simulator.requests_for(spec)) == 4


# ---------------------------------------------------------------------------- fault matrix


def _header(exc: BaseException, name: str) -> str | None:
    """The first response header ``name`` found walking ``exc`` and its causes."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            value = headers.get(name)
            return str(value) if value is not None else None
        seen = seen.__cause__
    return None


def _check_rate_limited(name: str, exc: BaseException, retry_after: str | None) -> None:
    if name == "openai":
        assert isinstance(exc, openai.RateLimitError) and isinstance(exc, ModelRateLimitError)
        assert exc.status_code == 429
    elif name == "groq":
        assert isinstance(exc, groq.RateLimitError) and exc.status_code == 429
    elif name == "gemini":
        assert isinstance(exc, ModelRateLimitError)
        cause = exc.__cause__
        assert isinstance(cause, genai_errors.ClientError) and cause.code == 429
        details = json.dumps(cause.details)
        if retry_after is None:
            assert "RetryInfo" not in details
        else:
            assert f'"retryDelay": "{retry_after}s"' in details
    else:
        assert isinstance(exc, ollama.ResponseError) and exc.status_code == 429
        return  # the ollama client exposes no headers
    assert _header(exc, "retry-after") == retry_after


SERVER_ERRORS = {
    "openai": (openai.InternalServerError, ModelAPIError),
    "groq": (groq.InternalServerError,),
    "gemini": (genai_errors.ServerError, ModelAPIError),
    "ollama": (ollama.ResponseError,),
}
TIMEOUTS = {
    "openai": (openai.APITimeoutError, ModelTimeoutError),
    "groq": (groq.APITimeoutError,),
    "gemini": (httpx2.ReadTimeout,),
    "ollama": (httpx.ReadTimeout,),
}
DROPS = {
    "openai": (openai.APIConnectionError, ModelConnectionError),
    "groq": (groq.APIConnectionError,),
    "gemini": (httpx2.RemoteProtocolError,),
    "ollama": (httpx.RemoteProtocolError,),
}
MIDSTREAM = {
    "openai": (openai.APIError,),
    "groq": (groq.APIError,),
    "gemini": (genai_errors.APIError, ModelAPIError),
    "ollama": (ollama.ResponseError,),
}
FAULTS = [
    "429_retry_after",
    "429_bare",
    "500",
    "503",
    "read_timeout",
    "dropped",
    "malformed_json",
    "malformed_chunk",
    "midstream_error",
    "truncated_stream",
]
FAULT_OF = {
    "429_retry_after": Fault.rate_limited(2),
    "429_bare": Fault.rate_limited(None),
    "500": Fault.server_error(500),
    "503": Fault.server_error(503),
    "read_timeout": Fault.timeout(10),
    "dropped": Fault.drop(),
    "malformed_json": Fault.malformed_json(),
    "malformed_chunk": Fault.malformed_chunk(),
    "midstream_error": Fault.midstream_error(),
    "truncated_stream": Fault.truncated_stream(),
}
STREAMED = {"malformed_chunk", "midstream_error", "truncated_stream"}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", PROTOCOLS)
def test_fault_matrix(simulator: Simulator, name: str, fault: str) -> None:
    spec = SPECS[name]
    model = client(simulator, name, timeout=0.3)
    simulator.script(spec, FAULT_OF[fault])

    def call() -> BaseMessage:
        if fault in STREAMED:
            return join(list(model.stream("hello")))  # type: ignore[no-any-return]
        return model.invoke("hello")

    if fault == "truncated_stream":
        partial = call()
        assert partial.content and finish_reason(partial) is None
        assert not partial.response_metadata.get("done")
    else:
        with pytest.raises(Exception) as info:
            call()
        exc = _sdk_error(info.value)
        if fault == "429_retry_after":
            _check_rate_limited(name, exc, "2")
        elif fault == "429_bare":
            _check_rate_limited(name, exc, None)
        elif fault in ("500", "503"):
            assert isinstance(exc, SERVER_ERRORS[name])
            status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
            assert status == int(fault)
        elif fault == "read_timeout":
            assert isinstance(exc, TIMEOUTS[name])
        elif fault == "dropped":
            assert isinstance(exc, DROPS[name])
            assert not isinstance(exc, (openai.APITimeoutError, groq.APITimeoutError))
        elif fault == "malformed_json":
            assert isinstance(exc, json.JSONDecodeError)
        elif fault == "malformed_chunk":
            if name == "gemini":  # google-genai wraps the JSONDecodeError
                assert isinstance(exc, genai_errors.UnknownApiResponseError)
                assert isinstance(exc.__cause__, json.JSONDecodeError)
            else:
                assert isinstance(exc, json.JSONDecodeError)
        elif fault == "midstream_error":
            assert isinstance(exc, MIDSTREAM[name])
            if name == "ollama":
                assert isinstance(exc, ollama.ResponseError) and exc.status_code == -1
    # SDK retries are off: exactly one request reached the simulator.
    [record] = simulator.requests_for(spec)
    expected = FAULT_OF[fault].kind.value
    assert record.outcome == expected


@pytest.mark.parametrize("name", PROTOCOLS)
def test_latency_before_first_byte_beyond_timeout(simulator: Simulator, name: str) -> None:
    simulator.script(SPECS[name], Reply.text("late"), first_byte=2.0)
    with pytest.raises(Exception) as info:
        client(simulator, name, timeout=0.2).invoke("hi")
    assert isinstance(_sdk_error(info.value), TIMEOUTS[name])


@pytest.mark.parametrize("name", PROTOCOLS)
def test_empty_answer_and_schema_violation(simulator: Simulator, name: str) -> None:
    spec = SPECS[name]
    simulator.script(spec, Fault.empty(), times=1)
    empty = client(simulator, name).invoke("hi")
    assert empty.content == "" and not getattr(empty, "tool_calls", None)

    simulator.script(spec, Fault.schema_violation(), times=1)
    with pytest.raises(Exception) as info:
        client(simulator, name).with_structured_output(Person).invoke("a person")
    assert "validation error" in str(info.value).lower()
    assert [r.outcome for r in simulator.requests_for(spec)] == ["empty", "schema_violation"]


def test_routers_on_simulator_settings_never_write_the_users_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ModelRouter(sim.settings())`` records into a temporary ledger, not the user's."""
    from tierwise.routing.router import ModelRouter
    from tierwise.testing import Reply, Simulator

    monkeypatch.delenv("TIERWISE_LEDGER", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with Simulator() as sim:
        sim.script("*", Reply.text("hello"))
        router = ModelRouter(sim.settings())
        assert router.invoke("rewriting", "say hello").message.content == "hello"
    assert router.ledger is not None
    assert router.ledger.path.parent.name.startswith("tierwise-sim-")
    assert list(tmp_path.rglob("*")) == [], "a file was written under the user's home"
