"""The provider simulator and pytest fixtures, for testing routed workflows offline.

``Simulator`` is a real HTTP server on 127.0.0.1 speaking the OpenAI (OpenRouter, Mistral,
Hugging Face), Groq, Gemini and Ollama wire protocols; ``Reply`` and ``Fault`` script what
each model answers; ``sim.settings()`` points tierwise at it. This package imports nothing
from ``tierwise.graphs`` or ``tierwise.nodes``.
"""

from tierwise.testing.chat import Answer, ChatRequest, Message, Tool, ToolCall
from tierwise.testing.engine import RecordedRequest
from tierwise.testing.env import isolated_environment
from tierwise.testing.limits import ModelLimiter
from tierwise.testing.scenario import ScenarioError, from_scenario
from tierwise.testing.schema import minimal_instance, violating_instance
from tierwise.testing.script import Fault, FaultKind, Reply, Rule
from tierwise.testing.serve import serve
from tierwise.testing.simulator import DEFAULT_TIMEOUT, Simulator

__all__ = [
    "DEFAULT_TIMEOUT",
    "Answer",
    "ChatRequest",
    "Fault",
    "FaultKind",
    "Message",
    "ModelLimiter",
    "RecordedRequest",
    "Reply",
    "Rule",
    "ScenarioError",
    "Simulator",
    "Tool",
    "ToolCall",
    "from_scenario",
    "isolated_environment",
    "minimal_instance",
    "serve",
    "violating_instance",
]
