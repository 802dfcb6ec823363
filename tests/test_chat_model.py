"""RoutedChatModel inside LangChain: chains, tools, structured output, fallback, streaming,
callbacks, stop sequences and a ``create_agent`` loop, all against the provider simulator.

Each test asserts on the simulator's request log (which model really answered) as well as
on the ``tierwise`` provenance the answer carries.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import ModelSpec
from tierwise.routing.chat_model import RoutedChatModel, StreamInterrupted
from tierwise.routing.router import ModelRouter
from tierwise.testing import ChatRequest, Fault, Reply, Simulator

#: tool_use_formatting under the default policy (free first): two Groq models, then local.
OPERATION = "tool_use_formatting"
PRIMARY, FALLBACK = "groq-llama-3.3-70b", "groq-llama-3.1-8b"
ANSWER = "Hello! How are you today? Fine, thank you."


class Person(BaseModel):
    """Someone named in the text."""

    name: str = Field(description="the person's name")
    age: int = Field(description="the person's age in years")


@pytest.fixture
def model(sim_settings: Settings) -> RoutedChatModel:
    return RoutedChatModel(router=ModelRouter(sim_settings), operation=OPERATION)


def spec(settings: Settings, key: str) -> ModelSpec:
    return settings.catalog.spec(key)


def served(simulator: Simulator) -> list[tuple[str, str]]:
    """(model, outcome) of every model call the simulator received, in order."""
    return [(r.model, r.outcome) for r in simulator.requests if r.model]


def text(chunks: list[AIMessageChunk]) -> str:
    return "".join(c.text for c in chunks)


# ------------------------------------------------------------------ LCEL, tools, schemas


def test_lcel_chain_routes_to_the_primary(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.text(ANSWER))
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    chain = prompt | model | StrOutputParser()

    assert chain.invoke({"question": "How are you?"}) == ANSWER
    assert served(simulator) == [("llama-3.3-70b-versatile", "ok")]
    messages = simulator.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "How are you?"


def test_answer_carries_provenance(model: RoutedChatModel, simulator: Simulator) -> None:
    reply = model.invoke("hi")
    provenance = reply.response_metadata["tierwise"]
    assert provenance["model"] == PRIMARY
    assert provenance["tier"] == "free"
    assert provenance["provider"] == "groq"
    assert provenance["attempts"] == [f"{PRIMARY} (free): ok"]
    assert reply.response_metadata["model_name"] == "llama-3.3-70b-versatile"
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0


def test_with_structured_output_routes_and_validates(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.json({"name": "Ada", "age": 36}))
    structured = model.with_structured_output(Person)

    assert structured.invoke("Ada is 36.") == Person(name="Ada", age=36)
    # Groq's structured output is a forced function call named after the schema.
    body = simulator.requests[-1].body
    assert simulator.requests[-1].model == "llama-3.3-70b-versatile"
    assert [t["function"]["name"] for t in body["tools"]] == ["Person"]


def test_with_structured_output_include_raw(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.json({"name": "Ada", "age": 36}))
    result = model.with_structured_output(Person, include_raw=True).invoke("Ada is 36.")

    assert result["parsed"] == Person(name="Ada", age=36)
    assert result["parsing_error"] is None
    raw = result["raw"]
    assert isinstance(raw, AIMessage)
    assert raw.tool_calls[0]["args"] == {"name": "Ada", "age": 36}
    assert raw.response_metadata["tierwise"]["model"] == PRIMARY


def test_structured_output_that_violates_the_schema_falls_back(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.schema_violation())
    simulator.script(spec(sim_settings, FALLBACK), Reply.json({"name": "Bo", "age": 7}))
    result = model.with_structured_output(Person, include_raw=True).invoke("Bo is 7.")

    assert result["parsed"] == Person(name="Bo", age=7)
    attempts = result["raw"].response_metadata["tierwise"]["attempts"]
    assert attempts[0].startswith(f"{PRIMARY} (free): invalid_output")
    assert attempts[-1] == f"{FALLBACK} (free): ok"


def test_bind_tools_routes_with_the_tools_offered(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        return "sunny"

    simulator.script(spec(sim_settings, PRIMARY), Reply.tool_call("get_weather", {"city": "Oslo"}))
    reply = model.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Oslo?")

    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert reply.response_metadata["tierwise"]["model"] == PRIMARY
    body = simulator.requests[-1].body
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_tool_choice_none_offers_no_tool(model: RoutedChatModel, simulator: Simulator) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        return "sunny"

    reply = model.bind_tools([get_weather], tool_choice="none").invoke("Weather in Oslo?")
    assert not reply.tool_calls
    assert "tools" not in simulator.requests[-1].body


def test_model_kwarg_pins_one_catalog_model(model: RoutedChatModel, simulator: Simulator) -> None:
    by_key = model.invoke("hi", model=FALLBACK)
    by_provider_id = model.invoke("hi", model="llama-3.1-8b-instant")

    assert by_key.response_metadata["tierwise"]["model"] == FALLBACK
    assert by_provider_id.response_metadata["tierwise"]["model"] == FALLBACK
    assert served(simulator) == [("llama-3.1-8b-instant", "ok")] * 2
    with pytest.raises(ValueError, match="neither a catalog key"):
        model.invoke("hi", model="no-such-model")


# ------------------------------------------------------------------ fallback and streaming


def test_fallback_through_the_chat_model(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.server_error(503))
    simulator.script(spec(sim_settings, FALLBACK), Reply.text("from the fallback"))
    reply = model.invoke("hi")

    assert reply.content == "from the fallback"
    assert served(simulator) == [
        ("llama-3.3-70b-versatile", "http_error"),
        ("llama-3.1-8b-instant", "ok"),
    ]
    attempts = reply.response_metadata["tierwise"]["attempts"]
    assert attempts[0].startswith(f"{PRIMARY} (free): unavailable")
    assert attempts[1] == f"{FALLBACK} (free): ok"


async def test_async_fallback_through_the_chat_model(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.rate_limited(30))
    simulator.script(spec(sim_settings, FALLBACK), Reply.text("from the fallback"))
    reply = await model.ainvoke("hi")

    assert reply.content == "from the fallback"
    assert reply.response_metadata["tierwise"]["attempts"][0].startswith(
        f"{PRIMARY} (free): rate_limited"
    )


def test_stream_failure_before_the_first_token_is_invisible(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.server_error(503))
    simulator.script(spec(sim_settings, FALLBACK), Reply.text(ANSWER))
    chunks = list(model.stream("hi"))

    assert text(chunks) == ANSWER
    assert len([c for c in chunks if c.text]) > 1  # really streamed
    assert served(simulator) == [
        ("llama-3.3-70b-versatile", "http_error"),
        ("llama-3.1-8b-instant", "ok"),
    ]
    full = sum(chunks[1:], chunks[0])
    assert full.response_metadata["tierwise"]["model"] == FALLBACK
    assert full.usage_metadata is not None and full.usage_metadata["output_tokens"] > 0


def test_stream_failure_after_tokens_raises_stream_interrupted(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.midstream_error())
    received: list[AIMessageChunk] = []
    with pytest.raises(StreamInterrupted, match=PRIMARY):
        for chunk in model.stream("Tell me a long story about a dragon."):
            received.append(chunk)

    assert text(received)  # the consumer had already shown tokens: they are void now
    assert served(simulator) == [("llama-3.3-70b-versatile", "midstream_error")]


async def test_astream_failure_after_tokens_raises_stream_interrupted(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.midstream_error())
    received: list[AIMessageChunk] = []
    with pytest.raises(StreamInterrupted):
        async for chunk in model.astream("Tell me a long story about a dragon."):
            received.append(chunk)
    assert text(received)


async def test_astream_fallback_before_the_first_token(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Fault.drop())
    simulator.script(spec(sim_settings, FALLBACK), Reply.text(ANSWER))
    chunks = [chunk async for chunk in model.astream("hi")]
    assert text(chunks) == ANSWER


def test_streaming_flag_makes_invoke_stream(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.text(ANSWER))
    reply = model.model_copy(update={"streaming": True}).invoke("hi")

    assert reply.content == ANSWER
    assert reply.response_metadata["tierwise"]["model"] == PRIMARY
    assert simulator.requests[-1].stream


# ------------------------------------------------------------------ stop sequences


def test_stop_cuts_the_answer(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.text(ANSWER))
    assert model.invoke("hi", stop=["you"]).content == "Hello! How are "
    assert model.invoke("hi", stop=["zzz"]).content == ANSWER
    pinned = model.model_copy(update={"stop": ["Fine", "today"]})
    assert pinned.invoke("hi").content == "Hello! How are you "


@pytest.mark.parametrize("stop", [["are you"], ["How are you today? Fine"], ["thank you."]])
def test_stop_cuts_the_stream_across_chunks(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings, stop: list[str]
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.text(ANSWER))
    chunks = list(model.stream("hi", stop=stop))
    assert text(chunks) == ANSWER[: ANSWER.index(stop[0])]
    assert chunks[-1].chunk_position == "last"


def test_stop_holds_back_a_partial_match_that_is_not_one(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.text(ANSWER))
    assert text(list(model.stream("hi", stop=["thank you!"]))) == ANSWER


# ------------------------------------------------------------------ callbacks and tracing


class Recorder(BaseCallbackHandler):
    """Records chat model runs and the tokens each run reports."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.tokens: dict[UUID, list[str]] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.runs.append({
            "run_id": run_id, "parent": parent_run_id, "tags": tags or [],
            "metadata": metadata or {}, "name": serialized.get("name") if serialized else None,
        })

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        self.tokens.setdefault(run_id, []).append(token)


def _check_provider_run(run: dict[str, Any], parent: UUID | None) -> None:
    assert run["parent"] == parent
    assert run["metadata"]["tierwise_model"] == PRIMARY
    assert run["metadata"]["tierwise_tier"] == "free"
    assert run["metadata"]["tierwise_operation"] == OPERATION
    assert run["metadata"]["tierwise_provider"] == "groq"
    assert run["metadata"]["tierwise_complexity"] == "moderate"
    assert run["metadata"]["tierwise_estimated_cost"] == 0.0  # a free model
    assert {"tierwise:free", "nostream", "mine"} <= set(run["tags"])
    assert run["metadata"]["who"] == "test"  # the caller's metadata is inherited


def test_provider_call_is_a_child_run_with_routing_metadata(model: RoutedChatModel) -> None:
    recorder = Recorder()
    model.invoke("hi", config={"callbacks": [recorder], "tags": ["mine"],
                               "metadata": {"who": "test"}})

    routed, provider = recorder.runs
    assert routed["parent"] is None and routed["name"] == "RoutedChatModel"
    assert routed["metadata"]["ls_provider"] == "tierwise"
    assert routed["metadata"]["ls_model_name"] == f"tierwise:{OPERATION}"
    assert provider["name"] == "ChatGroq"
    _check_provider_run(provider, routed["run_id"])


async def test_async_provider_call_is_a_child_run(model: RoutedChatModel) -> None:
    recorder = Recorder()
    await model.ainvoke("hi", config={"callbacks": [recorder], "tags": ["mine"],
                                      "metadata": {"who": "test"}})
    routed, provider = recorder.runs
    _check_provider_run(provider, routed["run_id"])


def test_streamed_tokens_are_reported_once(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    """Each run reports its own tokens once; the provider's run is tagged ``nostream``.

    In a chain, the streamed provider call hangs off the chain: LangChain's ``stream()``
    gives the model no run to nest it under.
    """
    simulator.script(spec(sim_settings, PRIMARY), Reply.text(ANSWER))
    recorder = Recorder()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
    chunks = list(chain.stream({"q": "hi"}, config={"callbacks": [recorder], "tags": ["mine"],
                                                     "metadata": {"who": "test"}}))

    routed, provider = recorder.runs
    assert routed["name"] == "RoutedChatModel"
    _check_provider_run(provider, routed["parent"])
    assert "".join(recorder.tokens[routed["run_id"]]) == ANSWER == text(chunks)
    assert "".join(recorder.tokens[provider["run_id"]]) == ANSWER


def test_structured_output_reports_one_chat_model_run(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    simulator.script(spec(sim_settings, PRIMARY), Reply.json({"name": "Ada", "age": 36}))
    recorder = Recorder()
    model.with_structured_output(Person).invoke(
        "Ada is 36.", config={"callbacks": [recorder], "tags": ["mine"],
                              "metadata": {"who": "test"}}
    )
    (provider,) = recorder.runs
    assert provider["parent"] is not None  # the RoutedStructuredOutput run
    _check_provider_run(provider, provider["parent"])


# ------------------------------------------------------------------ create_agent


def _agent_reply(request: ChatRequest) -> Reply | str:
    """A one-tool agent model: call the tool, then answer with what it returned."""
    if request.last_is_tool_result:
        return f"The weather in Oslo: {request.messages[-1].text}."
    return Reply.tool_call("get_weather", {"city": "Oslo"})


def test_create_agent_runs_a_tool_loop(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    create_agent = pytest.importorskip("langchain.agents").create_agent
    calls: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        calls.append(city)
        return "sunny, 21 °C"

    simulator.script(spec(sim_settings, PRIMARY), Reply.function(_agent_reply))
    agent = create_agent(model, [get_weather], system_prompt="You answer weather questions.")
    result = agent.invoke({"messages": [HumanMessage("What is the weather in Oslo?")]})

    assert calls == ["Oslo"]
    kinds = [type(m).__name__ for m in result["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    tool_message = result["messages"][2]
    assert isinstance(tool_message, ToolMessage) and tool_message.content == "sunny, 21 °C"
    final = result["messages"][-1]
    assert final.content == "The weather in Oslo: sunny, 21 °C."
    assert final.response_metadata["tierwise"]["model"] == PRIMARY
    assert served(simulator) == [("llama-3.3-70b-versatile", "ok")] * 2
    first_call = next(r for r in simulator.requests if r.model)
    assert [t["function"]["name"] for t in first_call.body["tools"]] == ["get_weather"]


def test_create_agent_streams_each_token_once(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    """``stream_mode="messages"``: the routed model's tokens, not the provider's as well."""
    create_agent = pytest.importorskip("langchain.agents").create_agent

    @tool
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        return "sunny"

    simulator.script(spec(sim_settings, PRIMARY), Reply.function(_agent_reply))
    agent = create_agent(model, [get_weather])
    streamed = [
        message
        for message, meta in agent.stream(
            {"messages": [HumanMessage("Weather in Oslo?")]}, stream_mode="messages"
        )
        if isinstance(message, AIMessageChunk) and meta["langgraph_node"] == "model"
    ]
    assert "".join(m.text for m in streamed) == "The weather in Oslo: sunny."
    # Consumers group chunks by message id: one id per model call (tool call, answer).
    ids = list(dict.fromkeys(m.id for m in streamed))
    assert len(ids) == 2
    assert "".join(m.text for m in streamed if m.id == ids[1]) == "The weather in Oslo: sunny."


async def test_create_agent_async(
    model: RoutedChatModel, simulator: Simulator, sim_settings: Settings
) -> None:
    create_agent = pytest.importorskip("langchain.agents").create_agent

    @tool
    async def get_weather(city: str) -> str:
        """Get the weather in a city."""
        return "rainy"

    simulator.script("*", Reply.function(_agent_reply))
    simulator.script(spec(sim_settings, PRIMARY), Fault.server_error(503), times=1)
    agent = create_agent(model, [get_weather])
    result = await agent.ainvoke({"messages": [HumanMessage("Weather in Oslo?")]})

    # Each model call of the loop is routed on its own: the first falls back, the second
    # finds the primary healthy again.
    tool_call, final = result["messages"][1], result["messages"][-1]
    assert tool_call.response_metadata["tierwise"]["model"] == FALLBACK
    assert final.content == "The weather in Oslo: rainy."
    assert final.response_metadata["tierwise"]["model"] == PRIMARY


# ------------------------------------------------------------------ event loops


def test_one_model_from_two_event_loops(model: RoutedChatModel) -> None:
    first = asyncio.run(model.ainvoke("hi"))
    second = asyncio.run(model.ainvoke("hi"))
    assert first.response_metadata["tierwise"]["model"] == PRIMARY
    assert second.response_metadata["tierwise"]["attempts"] == [f"{PRIMARY} (free): ok"]
