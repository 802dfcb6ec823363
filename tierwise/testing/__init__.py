"""The provider simulator and pytest fixtures, for testing routed workflows offline.

``Simulator`` is a real HTTP server on 127.0.0.1 speaking the OpenAI (OpenRouter, Mistral,
Hugging Face), Groq, Gemini and Ollama wire protocols; ``Reply`` and ``Fault`` script what
each model answers; ``sim.settings()`` points tierwise at it. This package imports nothing
from ``tierwise.graphs`` or ``tierwise.nodes``.
"""

from tierwise._exports import declared
from tierwise.testing.chat import Answer as Answer
from tierwise.testing.chat import ChatRequest as ChatRequest
from tierwise.testing.chat import Message as Message
from tierwise.testing.chat import Tool as Tool
from tierwise.testing.chat import ToolCall as ToolCall
from tierwise.testing.engine import RecordedRequest as RecordedRequest
from tierwise.testing.env import isolated_environment as isolated_environment
from tierwise.testing.limits import ModelLimiter as ModelLimiter
from tierwise.testing.scenario import ScenarioError as ScenarioError
from tierwise.testing.scenario import from_scenario as from_scenario
from tierwise.testing.schema import minimal_instance as minimal_instance
from tierwise.testing.schema import violating_instance as violating_instance
from tierwise.testing.script import Fault as Fault
from tierwise.testing.script import FaultKind as FaultKind
from tierwise.testing.script import Reply as Reply
from tierwise.testing.script import Rule as Rule
from tierwise.testing.serve import serve as serve
from tierwise.testing.simulator import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from tierwise.testing.simulator import Simulator as Simulator

__all__ = sorted(declared(__file__))
