"""LangChain's own standard test suite for chat models, run against RoutedChatModel.

``ChatModelUnitTests`` runs in full. ``ChatModelIntegrationTests`` runs against the provider
simulator once per wire protocol the router can land on — Groq, Gemini, OpenAI-compatible
(OpenRouter) and Ollama — so each test checks the wrapper over a real LangChain client and a
real HTTP exchange.

The suite makes semantic assertions (a call to ``magic_function`` with ``{"input": 3}``, a joke
with a setup and a punchline, a tool call after "use the tool"...). The simulator answers
them with :func:`_answer`, a function of the request as any model would see it: the tools
offered, the tool forced, the schema requested and the conversation. It never knows which
test is running, and the wrapper under test never sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import TaskType
from tierwise.providers.clients import ProviderFactory
from tierwise.routing.chat_model import RoutedChatModel
from tierwise.routing.router import ModelRouter
from tierwise.testing import ChatRequest, Reply, Simulator, minimal_instance

# One event loop for the module's async tests, as in an application: LangChain's clients
# (and ProviderFactory, which caches them) keep async connection pools bound to the loop
# that opened them. test_chat_model.py shows what happens across loops.
pytestmark = [
    pytest.mark.usefixtures("isolated_env"),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The test <Function .* marked with '@pytest.mark.asyncio'"),
]

#: Started for this module by :func:`_serve`; properties below read it.
SIM = Simulator()
_FACTORY: list[ProviderFactory] = []

_JOKE = {
    "setup": "Why did the cat sit on the computer?",
    "punchline": "To keep an eye on the mouse.",
}
_MODALITY = (
    "the catalog has no modality capabilities, so the router cannot pick a model that "
    "reads images, PDFs or audio (and the simulator speaks text only)"
)


# ------------------------------------------------------------------ the simulated model


def _last_user_text(request: ChatRequest) -> str:
    return next((m.text for m in reversed(request.messages) if m.role == "user"), "")


def _kind(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None:
        for option in schema.get("anyOf", ()):
            if option.get("type") not in (None, "null"):
                return _kind(option)
    return kind.lower() if isinstance(kind, str) else None


def _fill(schema: Mapping[str, Any], text: str) -> Any:
    """An instance of ``schema`` taken from ``text``, the way a model would fill it in.

    Integers are the numbers in the text, in order; strings the phrases the user quoted
    (else the user's words) — and a joke's setup and punchline are a joke.
    """
    properties: Mapping[str, Any] = schema.get("properties") or {}
    if not properties:  # a tool without parameters may come as {} (Gemini, Groq)
        return {} if _kind(schema) in (None, "object") else minimal_instance(schema)
    numbers = iter(int(n) for n in re.findall(r"-?\d+", text))
    quoted = iter(re.findall(r"'([^']+)'", text))
    filled: dict[str, Any] = {}
    for name, sub in properties.items():
        kind = _kind(sub)
        if kind in ("integer", "number"):
            filled[name] = next(numbers, 0)
        elif kind == "string":
            filled[name] = _JOKE.get(name) or next(quoted, None) or text
        else:
            filled[name] = minimal_instance(sub)
    return filled


def _answer(request: ChatRequest) -> Any:
    """What a helpful model answers: text after a tool result, else a tool call or JSON."""
    text = _last_user_text(request)
    if request.last_is_tool_result:
        return f"The tool answered: {request.messages[-1].text}"
    if request.tools:
        tool = request.tool() if request.forced_tool else next(
            (t for t in request.tools if t.name in text), request.tools[0]
        )
        assert tool is not None
        return Reply.tool_call(tool.name, _fill(tool.parameters, text))
    if request.schema is not None:
        return json.dumps(_fill(request.schema, text))
    return f"Hello! You said: {text!r}. How can I help you today?"


@pytest.fixture(scope="module", autouse=True)
def _serve() -> Iterator[Simulator]:
    with SIM:
        SIM.script("*", Reply.function(_answer))
        yield SIM


def _router(policy: Policy | None = None) -> ModelRouter:
    """A fresh router (its own rate limiter and breakers) sharing one client cache."""
    settings = SIM.settings()
    if not _FACTORY:
        _FACTORY.append(ProviderFactory(settings))
    return ModelRouter(settings, policy=policy, factory=_FACTORY[0])


# ------------------------------------------------------------------ unit tests


class TestRoutedChatModelUnit(ChatModelUnitTests):
    """All of LangChain's unit tests for chat models."""

    @property
    def chat_model_class(self) -> type[RoutedChatModel]:
        return RoutedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"router": _router(), "operation": TaskType.TOOL_USE_FORMATTING}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True


# ------------------------------------------------------------------ integration tests


class _RoutedIntegration(ChatModelIntegrationTests):
    """The integration suite; subclasses choose the operation and policy (= the protocol)."""

    operation: TaskType
    policy: Policy | None = None
    expected_model: str
    #: Another catalog model, by its provider id (``model=`` pins it for one call).
    override: str

    @property
    def chat_model_class(self) -> type[RoutedChatModel]:
        return RoutedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"router": _router(self.policy), "operation": self.operation}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return self.override






    @pytest.fixture(autouse=True)
    def _served_by_the_primary(self) -> Iterator[None]:
        """Every request of every test went to this class's model and was answered.

        So no test passed because the router quietly fell back from a wrapper mistake.
        """
        before = SIM.requests[-1].seq if SIM.requests else 0
        yield
        primary = SIM.settings().catalog.spec(self.expected_model).model
        calls = [r for r in SIM.requests if r.seq > before and r.model]  # "": the Ollama probe
        assert {(r.model, r.outcome) for r in calls} <= {(primary, "ok"), (self.override, "ok")}

    def test_routed_to_expected_model(self, model: RoutedChatModel) -> None:
        """Not a standard test: the answer's provenance names this class's model."""
        reply = model.invoke("Hello")
        assert reply.response_metadata["tierwise"]["model"] == self.expected_model
        assert reply.response_metadata["tierwise"]["attempts"] == [
            f"{self.expected_model} (free): ok" if self.policy is None
            else f"{self.expected_model} (local): ok"
        ]


class TestGroq(_RoutedIntegration):
    """tool_use_formatting, free first: Groq (structured output by function calling)."""

    operation = TaskType.TOOL_USE_FORMATTING
    expected_model = "groq-llama-3.3-70b"
    override = "llama-3.1-8b-instant"


class TestGemini(_RoutedIntegration):
    """parameter_extraction, free first: Gemini (JSON-schema structured output)."""

    operation = TaskType.PARAMETER_EXTRACTION
    expected_model = "gemini-2.5-flash-free"
    override = "gemini-2.5-flash-lite"


class TestOpenRouter(_RoutedIntegration):
    """rewriting, free first: OpenRouter through the OpenAI-compatible client."""

    operation = TaskType.REWRITING
    expected_model = "openrouter-llama-3.3-70b-free"
    override = "mistral-small-latest"


class TestOllama(_RoutedIntegration):
    """tool_use_formatting, local only: Ollama."""

    operation = TaskType.TOOL_USE_FORMATTING
    policy = Policy(mode="local_only")
    expected_model = "llama3.1-8b"
    override = "mistral:7b"
