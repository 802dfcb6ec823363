"""What a routed call returns: the answer, every attempt behind it, and the stream events.

These are plain frozen dataclasses so that graph nodes can copy them into state, the
ledger can store them and the CLI can print them without knowing how routing works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk

from tierwise.catalog.specs import ModelSpec, Provider, TaskType, Tier
from tierwise.ledger.rows import Attempt

__all__ = [
    "NoModelAvailable",
    "RoutedResult",
    "StreamChunk",
    "StreamEnd",
    "StreamEvent",
    "StreamRestart",
]


@dataclass(frozen=True, slots=True)
class RoutedResult:
    """A valid answer and its provenance.

    ``value`` is the parsed object when a schema was given, otherwise the message itself
    (whose ``tool_calls`` hold the tool calls when tools were bound).
    """

    operation: TaskType
    value: Any
    message: AIMessage
    spec: ModelSpec
    attempts: tuple[Attempt, ...]
    latency: float
    #: Names this call in the ledger (``attempts.call_id``) and in quality evidence.
    call_id: str = ""
    #: ``"<test>:<arm>"`` when an A/B test chose the primary model, else ``None``.
    arm: str | None = None

    @property
    def model(self) -> str:
        """Catalog key of the model that answered."""
        return self.spec.key

    @property
    def provider(self) -> Provider:
        """Provider of the model that answered."""
        return self.spec.provider

    @property
    def tier(self) -> Tier:
        """Tier of the model that answered."""
        return self.spec.tier

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over every attempt that reached a provider."""
        return sum(a.input_tokens for a in self.attempts)

    @property
    def output_tokens(self) -> int:
        """Completion tokens over every attempt that reached a provider."""
        return sum(a.output_tokens for a in self.attempts)

    @property
    def cost(self) -> float:
        """USD over every attempt, failed ones included."""
        return sum(a.cost for a in self.attempts)

    @property
    def fallbacks(self) -> int:
        """How many candidates failed or were skipped before the answer."""
        return sum(1 for a in self.attempts if a.failure is not None)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready summary for graph state, logs and reports."""
        return {
            "operation": self.operation.value,
            "model": self.spec.key,
            "provider": self.spec.provider.value,
            "tier": self.spec.tier.value,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "latency": self.latency,
            "attempts": [a.describe() for a in self.attempts],
            "call_id": self.call_id,
        }


class NoModelAvailable(RuntimeError):
    """No candidate could answer; the message lists every attempt and why it failed."""

    def __init__(
        self, operation: TaskType, attempts: Sequence[Attempt], reason: str, call_id: str = ""
    ) -> None:
        """Summarise ``attempts`` (already scrubbed of secrets) under ``reason``.

        ``call_id`` names the failed call in the ledger, as :attr:`RoutedResult.call_id`
        names an answered one.
        """
        self.operation = operation
        self.attempts = tuple(attempts)
        self.call_id = call_id
        lines = [f"no model could answer {operation.value}: {reason}"]
        lines += [f"  - {a.describe()}" for a in self.attempts]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of the answer from ``spec``."""

    chunk: AIMessageChunk
    spec: ModelSpec


@dataclass(frozen=True, slots=True)
class StreamRestart:
    """The model that was streaming failed after emitting tokens.

    Everything received since the last restart must be discarded: the answer starts
    over on the next candidate (never two models' text glued together).
    """

    failed: Attempt
    discarded: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The stream is complete; ``result`` holds the whole answer and its provenance."""

    result: RoutedResult


StreamEvent = StreamChunk | StreamRestart | StreamEnd
