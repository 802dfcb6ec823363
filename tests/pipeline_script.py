"""Test rig for the node and pipeline tests: a small catalog on the simulator, scripted answers.

The catalog has one model per tier and protocol that matters here (an Ollama model for
local, OpenRouter and Groq for free, OpenRouter for paid, the same chain for every
operation), so an assertion about *where* a request went reads as a tier. The real
LangChain clients talk HTTP to the session's simulator.

:class:`Brain` is one ``Reply.function`` for every model: it recognises the operation of a
request by its system prompt (taken from ``tierwise.prompts``, so a reworded prompt does
not break the tests), answers from a per-operation script and logs what it was asked.
Answers carry fixed token counts, so costs and report totals are exact.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import openai
from langchain_core.prompts import ChatPromptTemplate, SystemMessagePromptTemplate
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import Catalog, ModelSpec, Provider, TaskType
from tierwise.nodes.parameter_extraction import Parameter, Parameters
from tierwise.prompts.classification import CLASSIFY
from tierwise.prompts.decomposition import DECOMPOSE
from tierwise.prompts.instruction_routing import ROUTE
from tierwise.prompts.parameter_extraction import EXTRACT
from tierwise.prompts.quality_scoring import SCORE
from tierwise.prompts.rationale_generation import EXPLAIN
from tierwise.prompts.rewriting import REWRITE
from tierwise.prompts.structure_assessment import ASSESS
from tierwise.prompts.tool_use_formatting import FORMAT_TOOL_CALL
from tierwise.providers.clients import ProviderFactory
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import ChatRequest, Fault, RecordedRequest, Reply, Simulator

# --------------------------------------------------------------------------- operations

PROMPTS: dict[TaskType, ChatPromptTemplate] = {
    TaskType.CLASSIFICATION: CLASSIFY,
    TaskType.INSTRUCTION_ROUTING: ROUTE,
    TaskType.REWRITING: REWRITE,
    TaskType.DECOMPOSITION: DECOMPOSE,
    TaskType.PARAMETER_EXTRACTION: EXTRACT,
    TaskType.TOOL_USE_FORMATTING: FORMAT_TOOL_CALL,
    TaskType.STRUCTURE_ASSESSMENT: ASSESS,
    TaskType.QUALITY_SCORING: SCORE,
    TaskType.RATIONALE_GENERATION: EXPLAIN,
}


def _marker(prompt: ChatPromptTemplate) -> str:
    """The fixed start of a prompt's system message (up to its first variable)."""
    first = prompt.messages[0]
    assert isinstance(first, SystemMessagePromptTemplate), "every prompt starts with a system"
    template = first.prompt.template
    marker = str(template).split("{", 1)[0].strip()
    assert len(marker) >= 10, f"system prompt starts with a variable: {template!r}"
    return marker


MARKERS: dict[TaskType, str] = {op: _marker(p) for op, p in PROMPTS.items()}
assert len(set(MARKERS.values())) == len(MARKERS), "two operations share a system prompt"


def operation_of(text: str) -> TaskType | None:
    """The operation whose system prompt ``text`` (a system message or a body) contains."""
    found = [op for op, marker in MARKERS.items() if marker in text]
    return max(found, key=lambda op: len(MARKERS[op])) if found else None


def is_operation(operation: TaskType) -> Callable[[ChatRequest], bool]:
    """A ``when=`` predicate: the request is for ``operation``."""
    return lambda request: bool(request.messages) and operation_of(
        request.messages[0].text
    ) is operation


# --------------------------------------------------------------------------- catalog

MODELS: dict[str, dict[str, Any]] = {
    "tw-local": {"provider": "ollama", "model": "tw-local:1b", "tier": "local"},
    "tw-free-a": {"provider": "openrouter", "model": "tw/free-a:free", "tier": "free"},
    "tw-free-b": {
        "provider": "groq", "model": "tw-free-b", "tier": "free",
        "structured_output": "function_calling",
    },
    "tw-paid": {
        "provider": "openrouter", "model": "tw/paid", "tier": "paid",
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    },
}  # fmt: skip
CHAIN = {"local": ["tw-local"], "free": ["tw-free-a", "tw-free-b"], "paid": ["tw-paid"]}
CATALOG = Catalog.from_mapping({
    "models": {key: {"context_window": 32768, **fields} for key, fields in MODELS.items()},
    "chains": {op.value: CHAIN for op in TaskType},
})  # fmt: skip
TIER_OF: dict[tuple[Provider, str], str] = {
    (spec.provider, spec.model): spec.tier.value for spec in CATALOG
}

#: Token counts of every scripted answer: (prompt, completion).
USAGE = (40, 10)
#: What one answer of the paid model costs.
PAID_ANSWER_COST = CATALOG.spec("tw-paid").price.cost(*USAGE)

#: Client timeout of this rig's settings (distinct from other modules' rigs).
TIMEOUT = 4.5
_FACTORIES: dict[str, ProviderFactory] = {}


@dataclasses.dataclass
class Rig:
    """Settings on the simulator with the test catalog, and routers over them."""

    sim: Simulator
    settings: Settings
    factory: ProviderFactory

    def router(self, policy: Policy | None = None) -> ModelRouter:
        """A router over the test catalog: every model available, no probing, no ledger.

        Without a ledger no model is demoted by its record, so where a request goes
        depends only on the policy, the complexity and the scripted failures.
        """
        return ModelRouter(
            self.settings, policy=policy or Policy(), factory=self.factory,
            snapshot=Snapshot.everything(CATALOG), ledger=None,
        )

    def spec(self, key: str) -> ModelSpec:
        return CATALOG.spec(key)

    def requests(
        self, *, tier: str | None = None, operation: TaskType | None = None
    ) -> list[RecordedRequest]:
        """Chat requests that reached the simulator, by tier of the model and operation."""
        return [
            r for r in self.sim.requests
            if r.body is not None
            and (tier is None or tier_of_request(r) == tier)
            and (operation is None or operation_of(_text(r.body)) is operation)
        ]


def _text(body: Any) -> str:
    """Every string in a request body, one a line (the messages' text, whatever the protocol)."""
    if isinstance(body, str):
        return body
    if isinstance(body, Mapping):
        return "\n".join(_text(v) for v in body.values())
    if isinstance(body, list):
        return "\n".join(_text(v) for v in body)
    return ""


def make_rig(sim: Simulator) -> Rig:
    """The rig on ``sim``; clients are shared by every test (building one costs ~40 ms)."""
    settings = sim.settings(dataclasses.replace(sim.settings(), catalog=CATALOG), timeout=TIMEOUT)
    factory = _FACTORIES.setdefault(sim.url, ProviderFactory(settings))
    return Rig(sim, settings, factory)


def plain_chat_model(sim: Simulator) -> ChatOpenAI:
    """A ChatOpenAI on the simulator's OpenAI route, model ``tw/plain``: no router, no tiers."""
    return ChatOpenAI(
        model="tw/plain",
        api_key=SecretStr("sim-openai"),
        base_url=sim.settings().base_url(Provider.OPENAI),
        max_retries=0,
        timeout=TIMEOUT,
        http_async_client=openai.DefaultAsyncHttpxClient(),  # its own pool, for asyncio.run
    )


def tier_of_request(request: RecordedRequest | ChatRequest) -> str | None:
    """Tier of the catalog model a request was for (``None``: not a catalog model)."""
    if request.provider is None:
        return None
    return TIER_OF.get((request.provider, request.model))


# --------------------------------------------------------------------------- the script

INSTRUCTION = "Plan a three-day offsite in Lisbon for 12 people in May"
REWRITTEN = "Plan a three-day team offsite in Lisbon, Portugal, for 12 people in May."
STEPS = [
    "Book a meeting venue in Lisbon for 12 people",
    "Reserve hotel rooms for 12 people for three nights",
    "Book a team dinner on the last evening",
]
PARAMETERS = [
    Parameters(parameters=[Parameter(name="city", value="Lisbon"),
                           Parameter(name="people", value="12")]),
    Parameters(parameters=[Parameter(name="rooms", value="12"),
                           Parameter(name="nights", value="3")]),
    Parameters(parameters=[Parameter(name="meal", value="dinner"),
                           Parameter(name="when", value="last evening")]),
]  # fmt: skip
RATIONALE = "Venue first: hotel and dinner depend on where the team meets."
REASONS = ["specific and complete"]


@tool
def book_venue(city: str, people: int) -> str:
    """Book a meeting venue in a city for a number of people."""
    return f"booked a venue in {city} for {people}"


@dataclasses.dataclass(frozen=True)
class Call:
    """One request the brain answered."""

    operation: TaskType
    provider: Provider
    model: str
    tier: str | None
    text: str  # the user message
    arrived: float
    count: int  # how many requests of this operation (and step, if any) so far, this one included
    step: int | None  # index in STEPS whose task the request is about, if any


#: An answer: a JSON value, a Reply / Fault, or a function of the call giving one.
Script = Any


def step_of(text: str) -> int | None:
    """Index of the sub-task of :data:`STEPS` that ``text`` mentions."""
    return next((i for i, s in enumerate(STEPS) if s in text), None)


def default_script() -> dict[TaskType, Script]:
    """Answers for the plan route: three sub-tasks, all good."""
    return {
        TaskType.CLASSIFICATION: {"label": "planning", "complexity": "moderate"},
        TaskType.INSTRUCTION_ROUTING: {"route": "plan"},
        TaskType.REWRITING: {"instruction": REWRITTEN},
        TaskType.DECOMPOSITION: {"steps": STEPS},
        TaskType.PARAMETER_EXTRACTION: lambda call: PARAMETERS[call.step or 0].model_dump(),
        TaskType.TOOL_USE_FORMATTING: Reply.tool_call(
            "book_venue", {"city": "Lisbon", "people": 12}, usage=USAGE
        ),
        TaskType.STRUCTURE_ASSESSMENT: {"well_formed": True, "complete": True, "defects": []},
        TaskType.QUALITY_SCORING: {"score": 9, "reasons": REASONS},
        TaskType.RATIONALE_GENERATION: {"rationale": RATIONALE},
    }


class Brain:
    """Answers every simulated model by operation, and logs every call.

    Example::

        brain = Brain(sim, {TaskType.QUALITY_SCORING: lambda c: {"score": 2}})
    """

    def __init__(self, sim: Simulator, script: Mapping[TaskType, Script] | None = None,
                 **rule: Any) -> None:
        """Script ``sim`` (every model) to answer from the defaults updated with ``script``."""
        self.script = {**default_script(), **(script or {})}
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.rule = sim.script("*", Reply.function(self), **rule)

    def __call__(self, request: ChatRequest) -> Reply | Fault:
        system = request.messages[0].text if request.messages else ""
        operation = operation_of(system)
        if operation is None:
            raise LookupError(f"no operation has the system prompt {system[:80]!r}")
        text = "\n".join(m.text for m in request.messages[1:])
        step = step_of(text)
        with self._lock:
            count = 1 + sum(1 for c in self.calls if c.operation is operation and c.step == step)
            call = Call(operation, request.provider, request.model, tier_of_request(request),
                        text, time.monotonic(), count, step)
            self.calls.append(call)
        answer = self.script[operation]
        if callable(answer) and not isinstance(answer, Reply | Fault):
            answer = answer(call)
        if isinstance(answer, Reply | Fault):
            return answer
        return Reply.json(answer, usage=USAGE)

    def of(self, operation: TaskType, step: int | None = None) -> list[Call]:
        """The calls for ``operation`` (about sub-task ``step``, if given)."""
        return [c for c in self.calls
                if c.operation is operation and (step is None or c.step == step)]
