"""Scripting semantics, schema-derived answers, scenario files, the HTTP layer and fixtures."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, Field, ValidationError

from tierwise.catalog.settings import load_settings
from tierwise.catalog.specs import Provider
from tierwise.testing import (
    ChatRequest,
    Fault,
    Reply,
    ScenarioError,
    Simulator,
    from_scenario,
    isolated_environment,
    minimal_instance,
    serve,
    violating_instance,
)

_CLIENT = httpx.Client(timeout=5)


def chat(
    sim: Simulator,
    content: str = "hi",
    model: str = "m",
    path: str = "/v1/chat/completions",
    **extra: Any,
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return _CLIENT.post(sim.url + path, json=body)


def text(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


# ---------------------------------------------------------------------------- rules


def test_sequence_plays_once_then_default(simulator: Simulator) -> None:
    rule = simulator.script("m", Fault.server_error(503), Reply.text("ok"))
    statuses = [chat(simulator).status_code for _ in range(3)]
    assert statuses == [503, 200, 200]
    assert [r.outcome for r in simulator.requests] == ["http_error", "ok", "ok"]
    assert rule.served == 2 and rule.exhausted
    assert text(chat(simulator)) == "simulated answer from m"


def test_single_behaviour_repeats_and_times_limits_it(simulator: Simulator) -> None:
    simulator.script("m", Reply.text("always"))
    simulator.script("m", Fault.drop(), times=2)  # newer rules win while they last
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(text(chat(simulator)))
        except httpx.RemoteProtocolError:
            outcomes.append("dropped")
    assert outcomes == ["dropped", "dropped", "always", "always"]


def test_fraction_is_seeded_and_deterministic(simulator: Simulator) -> None:
    def pattern() -> list[int]:
        simulator.reset()
        simulator.script("m", Fault.server_error(), fraction=0.3, seed=42)
        return [chat(simulator).status_code for _ in range(40)]

    first, second = pattern(), pattern()
    assert first == second
    assert 0 < first.count(500) < 40 and set(first) == {200, 500}


def test_wildcard_provider_and_predicate(simulator: Simulator) -> None:
    simulator.script("*", Reply.text("wild"))
    simulator.script("*", Reply.text("magic"), when=lambda r: "magic" in r.messages[-1].text)
    simulator.script("m", Reply.text("groq only"), provider="groq")

    assert text(chat(simulator, model="any")) == "wild"
    assert text(chat(simulator, "some magic", model="any")) == "magic"
    assert text(chat(simulator, path="/openai/v1/chat/completions")) == "groq only"
    assert text(chat(simulator)) == "wild"  # provider openai: the groq rule does not apply


def test_reply_function_sees_the_request(simulator: Simulator) -> None:
    seen: list[ChatRequest] = []

    def answer(request: ChatRequest) -> Any:
        seen.append(request)
        if "fail" in request.messages[-1].text:
            return Fault.server_error(503)
        if "json" in request.messages[-1].text:
            return {"echo": request.model}
        return f"you said {request.messages[-1].text}"

    simulator.script("m", Reply.function(answer))
    assert text(chat(simulator, "hello")) == "you said hello"
    assert json.loads(text(chat(simulator, "json please"))) == {"echo": "m"}
    assert chat(simulator, "fail").status_code == 503
    assert seen[0].provider is Provider.OPENAI and seen[0].prompt_tokens >= 1


def test_failing_reply_function_is_a_500_not_a_crash(simulator: Simulator) -> None:
    def broken(request: ChatRequest) -> str:
        raise RuntimeError("boom")

    simulator.script("m", Reply.function(broken), times=1)
    failed = chat(simulator)
    assert failed.status_code == 500 and "boom" in failed.json()["error"]["message"]
    assert simulator.requests[-1].outcome == "script_error"
    assert chat(simulator).status_code == 200  # the server is still serving


def test_tool_call_defaults_to_forced_or_first_tool_with_minimal_args(
    simulator: Simulator,
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                    "required": ["q"],
                },
            },
        }
    ]
    simulator.script("m", Reply.tool_call())
    message = chat(simulator, tools=tools).json()["choices"][0]["message"]
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"q": "sim"}
    assert text(chat(simulator)) == "simulated answer from m"  # no tools offered: text


def test_json_mode_and_schema_defaults(simulator: Simulator) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    structured = chat(
        simulator,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert json.loads(text(structured)) == {"x": 0}
    assert json.loads(text(chat(simulator, response_format={"type": "json_object"}))) == {}
    # JSON mode carries no schema; one stated in the prompt is answered like a model would
    stated = chat(simulator, f"Reply as JSON matching {json.dumps(schema)}.",
                  response_format={"type": "json_object"})
    assert json.loads(text(stated)) == {"x": 0}


def test_reset_forgets_everything(simulator: Simulator) -> None:
    simulator.script("m", Fault.server_error())
    simulator.limit("m", rpm=1)
    chat(simulator)
    simulator.reset()
    assert simulator.requests == []
    assert [chat(simulator).status_code for _ in range(3)] == [200, 200, 200]


def test_rule_arguments_are_checked(simulator: Simulator) -> None:
    with pytest.raises(ValueError):
        simulator.script("m")
    with pytest.raises(ValueError):
        simulator.script("m", Reply.text("x"), fraction=1.5)
    with pytest.raises(TypeError):
        simulator.script("m", "not a reply")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault.server_error(404)


def test_per_chunk_latency_paces_the_stream(simulator: Simulator) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    url = simulator.url + "/v1/chat/completions"
    simulator.script("m", Reply.text("a b c d"), per_chunk=2.0, times=1)
    with httpx.Client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.post(url, json=body)  # the first chunk comes at once, the next never in time
    simulator.script("m", Reply.text("a b c d"), per_chunk=0.01, times=1)
    with httpx.Client(timeout=1.0) as client:
        assert client.post(url, json=body).text.endswith("data: [DONE]\n\n")


# ---------------------------------------------------------------------------- schemas


class Kind(BaseModel):
    label: Literal["a", "b"]


class Deep(BaseModel):
    """Nested models, refs, optionals, bounds and lists."""

    name: str = Field(min_length=5)
    score: float = Field(gt=0, le=10)
    count: int = Field(ge=3)
    kinds: list[Kind] = Field(min_length=2)
    child: Kind
    note: str | None
    maybe: int = 7


def test_minimal_instance_validates_against_pydantic_schemas() -> None:
    value = minimal_instance(Deep.model_json_schema())
    Deep.model_validate(value)
    assert "maybe" not in value and value["name"] == "simsi" and value["count"] == 3


def test_minimal_instance_gemini_openapi_style() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"when": {"type": "STRING", "format": "date"}, "ok": {"type": "BOOLEAN"}},
        "required": ["when", "ok"],
    }
    assert minimal_instance(schema) == {"when": "1970-01-01", "ok": False}


def test_violating_instance_fails_validation() -> None:
    with pytest.raises(ValidationError):
        Deep.model_validate(violating_instance(Deep.model_json_schema()))
    with pytest.raises(ValidationError):
        Kind.model_validate(violating_instance(Kind.model_json_schema()))


# ---------------------------------------------------------------------------- protocols


def test_gemini_and_ollama_routes(simulator: Simulator) -> None:
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    for version in ("v1", "v1beta"):
        url = f"{simulator.url}/{version}/models/gemini-2.5-flash:generateContent"
        reply = _CLIENT.post(url, json=gemini).json()
        assert reply["candidates"][0]["finishReason"] == "STOP"
        assert reply["usageMetadata"]["totalTokenCount"] > 0
    stream_url = f"{simulator.url}/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    events = [
        json.loads(line[6:])
        for line in _CLIENT.post(stream_url, json=gemini).text.splitlines()
        if line.startswith("data: ")
    ]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    lines = _CLIENT.post(
        simulator.url + "/api/chat",
        json={"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}]},
    ).text.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(p["message"]["role"] == "assistant" for p in parsed)
    assert parsed[-1]["done"] and parsed[-1]["eval_count"] > 0
    assert [r.provider for r in simulator.requests] == [Provider.GEMINI] * 3 + [Provider.OLLAMA]
    assert simulator.requests[2].query == {"alt": "sse"}


def test_ollama_tags_lists_catalog_and_configured_models(simulator: Simulator) -> None:
    simulator.script("custom:1b", Reply.text("x"), provider="ollama")
    names = {m["name"] for m in _CLIENT.get(simulator.url + "/api/tags").json()["models"]}
    assert "custom:1b" in names
    assert "openhermes:7b-mistral-v2.5-q4_K_M" in names  # from the packaged catalog
    only = Simulator(ollama_models=["a:1"])
    with only:
        assert [m["name"] for m in _CLIENT.get(only.url + "/api/tags").json()["models"]] == ["a:1"]


def test_bad_requests_and_unknown_paths(simulator: Simulator) -> None:
    bad = _CLIENT.post(simulator.url + "/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and "bad request" in bad.json()["error"]["message"]
    assert simulator.requests[-1].outcome == "bad_request"
    assert _CLIENT.get(simulator.url + "/nowhere").status_code == 404
    assert _CLIENT.get(simulator.url + "/_sim/health").status_code == 200
    assert _CLIENT.get(simulator.url + "/_sim/stats").json()["requests"] >= 3


# ---------------------------------------------------------------------------- HTTP layer


def _raw(sim: Simulator, payload: bytes, responses: int) -> bytes:
    with socket.create_connection((sim.host, sim.port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < responses or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _request(body: bytes, *, chunked: bool = False, close: bool = False) -> bytes:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    if close:
        head += b"connection: close\r\n"
    if chunked:
        half = len(body) // 2
        encoded = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            half,
            body[:half],
            len(body) - half,
            body[half:],
        )
        return head + b"transfer-encoding: chunked\r\n\r\n" + encoded
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def test_keep_alive_chunked_bodies_and_connection_close(simulator: Simulator) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    two = _raw(simulator, _request(body) + _request(body, chunked=True), responses=2)
    assert two.count(b"HTTP/1.1 200 OK") == 2 and b"connection: keep-alive" in two
    closed = _raw(simulator, _request(body, close=True), responses=1)
    assert b"connection: close" in closed
    assert len(simulator.requests) == 3


@pytest.mark.parametrize(
    "payload",
    [b"garbage\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: x\r\n\r\n"],
)
def test_malformed_http_gets_400(simulator: Simulator, payload: bytes) -> None:
    with socket.create_connection((simulator.host, simulator.port), timeout=5) as sock:
        sock.sendall(payload)
        assert sock.recv(1000).startswith(b"HTTP/1.1 400 ")
    assert simulator.requests == []


# ---------------------------------------------------------------------------- settings & env


def test_settings_point_every_provider_at_the_simulator(simulator: Simulator) -> None:
    settings = simulator.settings(timeout=0.5)
    url = simulator.url
    assert settings.base_url(Provider.OPENAI) == url + "/v1"
    assert settings.base_url(Provider.OPENROUTER) == url + "/api/v1"
    assert settings.base_url(Provider.MISTRAL) == url + "/mistral/v1"
    assert settings.base_url(Provider.HUGGINGFACE) == url + "/hf/v1"
    for provider in (Provider.GROQ, Provider.GEMINI, Provider.OLLAMA):
        assert settings.base_url(provider) == url
    assert settings.timeout(Provider.GROQ) == 0.5
    assert simulator.settings().timeout(Provider.GEMINI) == 5.0
    key = settings.credentials.key(Provider.GROQ)
    assert key is not None and key.get_secret_value() == "sim-groq"


def test_toml_snippet_loads_as_tierwise_config(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "tierwise.toml"
    path.write_text(simulator.toml_snippet(), "utf-8")
    settings = load_settings(path, credentials=simulator.credentials())
    assert settings.base_url(Provider.MISTRAL) == simulator.url + "/mistral/v1"
    assert simulator.environment()["OLLAMA_HOST"] == simulator.url


@pytest.fixture
def dirty_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_BASE_URL",
        "OLLAMA_HOST",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "HTTPS_PROXY",
        "GROQ_API_KEY",
        "LANGSMITH_TRACING",
    ):
        monkeypatch.setenv(name, "http://elsewhere.invalid")


def test_isolated_env_fixture(dirty_env: None, isolated_env: None) -> None:
    for name in (
        "OPENAI_BASE_URL",
        "OLLAMA_HOST",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "HTTPS_PROXY",
        "GROQ_API_KEY",
        "LANGSMITH_TRACING",
    ):
        assert name not in os.environ
    assert os.environ["NO_PROXY"] == "127.0.0.1,localhost"


def test_isolated_environment_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.invalid")
    with isolated_environment():
        assert "OPENAI_BASE_URL" not in os.environ
    assert os.environ["OPENAI_BASE_URL"] == "http://elsewhere.invalid"


# ---------------------------------------------------------------------------- scenario & serve

SCENARIO = """
timeout = 2.5
ollama_models = ["extra:7b"]

[[script]]
model = "m"
replies = [{ fault = "rate_limited", retry_after = 3 }, { text = "hello" }, { json = {a = 1} }]

[[script]]
model = "g"
provider = "groq"
reply = { fault = "http_error", status = 503 }

[[limit]]
model = "lim"
rpm = 1
"""


def test_scenario_file(tmp_path: Path, isolated_env: None) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO, "utf-8")
    with from_scenario(path) as sim:
        assert sim.timeout == 2.5
        first = chat(sim)
        assert first.status_code == 429 and first.headers["retry-after"] == "3"
        assert text(chat(sim)) == "hello"
        assert json.loads(text(chat(sim))) == {"a": 1}
        assert chat(sim, model="g", path="/openai/v1/chat/completions").status_code == 503
        assert [chat(sim, model="lim").status_code for _ in range(2)] == [200, 429]
        tags = _CLIENT.get(sim.url + "/api/tags").json()["models"]
        assert "extra:7b" in {m["name"] for m in tags}

    as_json = tmp_path / "scenario.json"
    as_json.write_text(json.dumps({"script": [{"model": "*", "reply": {"default": True}}]}))
    from_scenario(as_json)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[script]]\nmodel = "m"\nreply = { text = "a", fault = "drop" }', "exactly one"),
        ('[[script]]\nmodel = "m"\nreply = { fault = "explode" }', "script.0.reply.fault"),
        ("[[limit]]\nmodel = 3", "limit.0.model"),
        ("nonsense = [", "not valid TOML"),
    ],
)
def test_scenario_errors_name_the_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, "utf-8")
    with pytest.raises(ScenarioError, match=message.replace(".", r"\.")):
        from_scenario(path)


def test_serve_prints_how_to_connect_and_stops(isolated_env: None) -> None:
    out, stop = io.StringIO(), threading.Event()
    kwargs = {"port": 0, "out": out, "stop": stop, "verbose": True}
    thread = threading.Thread(target=serve, kwargs=kwargs)
    thread.start()
    try:
        for _ in range(500):
            if "Ctrl-C" in out.getvalue():
                break
            stop.wait(0.01)
        printed = out.getvalue()
        url = printed.split("listening on ", 1)[1].split()[0]
        assert "[providers.groq]" in printed and "export GROQ_API_KEY=sim-groq" in printed
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert _CLIENT.post(url + "/v1/chat/completions", json=body).status_code == 200
        [summary] = _CLIENT.get(url + "/_sim/requests").json()
        assert (summary["provider"], summary["model"], summary["status"]) == ("openai", "m", 200)
        assert "#1 openai m -> 200 ok" in out.getvalue()
        assert _CLIENT.post(url + "/_sim/reset").status_code == 200
        assert _CLIENT.get(url + "/_sim/requests").json() == []
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


# ---------------------------------------------------------------------------- lifecycle


async def test_async_context_manager(isolated_env: None) -> None:
    async with Simulator() as sim, httpx.AsyncClient() as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        replies = await asyncio.gather(
            *(client.post(sim.url + "/v1/chat/completions", json=body) for _ in range(5))
        )
        assert {r.status_code for r in replies} == {200}
        assert len(sim.requests) == 5
    assert not sim.running


def test_busy_port_and_url_before_start() -> None:
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    with sim:
        with pytest.raises(OSError):
            Simulator(port=sim.port).start()
        sim.start()  # idempotent
    sim.stop()  # idempotent


@pytest.fixture
def fresh() -> Iterator[Simulator]:
    with Simulator() as sim:
        yield sim


def test_stop_ends_held_connections(fresh: Simulator) -> None:
    fresh.script("m", Fault.timeout(60))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            chat(fresh)
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    for _ in range(500):
        if fresh.requests:
            break
        threading.Event().wait(0.01)
    fresh.stop()
    thread.join(5)
    assert not thread.is_alive() and len(errors) == 1
