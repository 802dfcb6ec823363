"""Test a tierwise workflow offline, against the provider simulator: a test file to copy.

What it shows:
    * pointing everything at ``tierwise.testing.Simulator`` -- a real HTTP server on
      127.0.0.1 speaking the OpenAI/OpenRouter/Mistral/Hugging Face, Groq, Gemini and Ollama
      protocols -- with ``ModelRouter(simulator.settings())``: no key, no network, no cost;
    * scripting what each cognitive operation answers, matched on the prompt text of the
      request (any model may be the one asked), with ``Reply.json`` / ``Reply.tool_call``;
    * injecting faults into single models: a 429 with ``Retry-After`` on one free model
      and a 503 on another, and asserting from the routing report that the router fell
      back to the next model of each chain (and did not ask the rate-limited one again);
    * asserting on the pipeline's typed result: route, parameters, the tool call and what
      the tool returned.

How to run it:
    python -m pytest examples/offline_testing.py     # with pytest: the ``simulator`` fixture
    python examples/offline_testing.py               # without: each test on a new simulator

Copy it into your tests as ``test_offline.py``. With tierwise installed, pytest loads the
``simulator`` fixture on its own (an isolated environment: no real keys, endpoints,
proxies or tracing); the fixture is reset for every test.
"""

from __future__ import annotations

from typing import Any

from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel

from tierwise import ModelRouter, ModelSpec, PipelineResult, build_instruction_pipeline
from tierwise.prompts.classification import CLASSIFY
from tierwise.prompts.instruction_routing import ROUTE
from tierwise.prompts.parameter_extraction import EXTRACT
from tierwise.prompts.quality_scoring import SCORE
from tierwise.prompts.rationale_generation import EXPLAIN
from tierwise.prompts.rewriting import REWRITE
from tierwise.prompts.structure_assessment import ASSESS
from tierwise.prompts.tool_use_formatting import FORMAT_TOOL_CALL
from tierwise.testing import Fault, Reply, Simulator, isolated_environment

INSTRUCTION = "book luigis for 4 tonight 8pm"
REWRITTEN = "Book a table for 4 people at Luigi's tonight at 8pm."
BOOKING = {"restaurant": "Luigi's", "people": 4, "time": "20:00"}


# ---------------------------------------------------------------- the workflow under test
class Booking(BaseModel):
    """The parameters every step must extract."""

    restaurant: str
    people: int
    time: str


def book_table(restaurant: str, people: int, time: str) -> str:
    """Book a table at a restaurant."""
    return f"booked {restaurant} for {people} at {time}"


def build_pipeline(simulator: Simulator) -> Any:
    """The pipeline your app builds, but on a router whose every provider is the simulator."""
    router = ModelRouter(simulator.settings())
    return build_instruction_pipeline(router=router, tools=[book_table], parameters=Booking)


# ---------------------------------------------------------------- scripting helpers
def answer(simulator: Simulator, prompt: ChatPromptTemplate, reply: Reply) -> None:
    """Whichever model is asked, answer ``reply`` to requests made from ``prompt``.

    A request is recognised by the fixed start of the prompt's first message; tierwise's
    own prompts are the constants in ``tierwise.prompts``.
    """
    opening = prompt.messages[0].prompt.template.split("{", 1)[0]
    simulator.script("*", reply, when=lambda request: bool(request.messages)
                     and request.messages[0].text.startswith(opening))


def script_booking(simulator: Simulator) -> None:
    """One answer per cognitive operation the pipeline asks for on the ``tool`` route."""
    answer(simulator, CLASSIFY, Reply.json({"label": "action", "complexity": "simple"}))
    answer(simulator, ROUTE, Reply.json({"route": "tool"}))
    answer(simulator, REWRITE, Reply.json({"instruction": REWRITTEN}))
    answer(simulator, EXTRACT, Reply.json(BOOKING))
    answer(simulator, FORMAT_TOOL_CALL, Reply.tool_call("book_table", BOOKING))
    answer(simulator, ASSESS, Reply.json({"well_formed": True, "complete": True}))
    answer(simulator, SCORE, Reply.json({"score": 9, "reasons": ["all details kept"]}))
    answer(simulator, EXPLAIN, Reply.json({"rationale": "One booking is one tool call."}))


def chain(simulator: Simulator, operation: str) -> tuple[ModelSpec, ...]:
    """The models the router tries for ``operation``, primary first (``tierwise route``)."""
    router = ModelRouter(simulator.settings())
    return router.selector.candidates(operation, "simple", router.policy, router.snapshot())


def run(simulator: Simulator) -> PipelineResult:
    """Run the pipeline on the instruction; its typed result."""
    pipeline = build_pipeline(simulator)
    result: PipelineResult = pipeline.invoke({"instruction": INSTRUCTION})["result"]
    return result


# ---------------------------------------------------------------- the tests
def test_pipeline_books_the_table(simulator: Simulator) -> None:
    script_booking(simulator)
    result = run(simulator)

    assert result.label == "action" and result.complexity == "simple"
    assert result.route == "tool" and result.rewritten == REWRITTEN
    (step,) = result.steps  # the tool route runs one step
    assert step.parameters == Booking(**BOOKING)
    assert step.tool_call is not None and step.tool_call.name == "book_table"
    assert step.tool_call.args == BOOKING
    assert step.tool_result is not None
    assert step.tool_result.output == "booked Luigi's for 4 at 20:00"
    assert step.structure is not None and step.structure.passed
    assert step.quality is not None and step.quality.score == 9
    assert not result.best_effort
    # every node answered by a free model at the first attempt, for $0
    for entry in result.report.entries:
        assert entry["status"] == "ok" and entry["tier"] == "free", entry
        assert len(entry["attempts"]) == 1, entry["attempts"]
    assert result.report.cost == 0


def test_pipeline_falls_back_on_429_and_503(simulator: Simulator) -> None:
    script_booking(simulator)
    classify_chain, rewrite_chain = chain(simulator, "classification"), chain(
        simulator, "rewriting")
    limited, down = classify_chain[0], rewrite_chain[0]
    assert limited != down
    # Newer scripts win over older ones: these faults beat the answers scripted above.
    simulator.script(limited, Fault.rate_limited(retry_after=30))  # 429, "retry in 30 s"
    simulator.script(down, Fault.server_error(503))                # overloaded

    result = run(simulator)

    # the workflow's answer is the same as without the faults ...
    assert result.route == "tool" and result.rewritten == REWRITTEN
    assert result.steps[0].tool_result is not None
    assert result.steps[0].tool_result.output == "booked Luigi's for 4 at 20:00"
    # ... and the report shows the fallbacks: the failed attempt, then the next model
    nodes = {e["node"]: e for e in result.report.entries if e["step"] is None}
    classify, rewrite = nodes["classify"], nodes["rewrite"]
    assert classify["attempts"][0].startswith(f"{limited.key} (free): rate_limited")
    assert classify["model"] == classify_chain[1].key
    assert rewrite["attempts"][0].startswith(f"{down.key} (free): unavailable")
    assert rewrite["model"] == rewrite_chain[1].key
    # the 429 said "retry in 30 s": the router skipped that model afterwards, unasked
    assert [r.outcome for r in simulator.requests_for(limited)] == ["rate_limited"]
    assert simulator.requests_for(down)[0].status == 503


if __name__ == "__main__":
    # Without pytest: run each test_* function above on a fresh simulator, in an
    # environment cleared of real keys, endpoints and proxies (what the fixture does).
    for name, test in list(globals().items()):
        if name.startswith("test_") and callable(test):
            with isolated_environment(), Simulator() as sim:
                test(sim)
            print(f"passed  {name}")
