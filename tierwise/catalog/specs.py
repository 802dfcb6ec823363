"""The model catalog: tiers, operations, model specs and each operation's tiered chain.

The catalog is data (``catalog.toml`` shipped in this package) validated into frozen
pydantic models, so a bad entry is rejected when it is loaded, never when a call is
already under way. Everything here is immutable and hashable: the selector caches its
answers on catalog, policy and snapshot identity.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from datetime import date
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Catalog",
    "Complexity",
    "Limits",
    "ModelSpec",
    "Price",
    "Provider",
    "StructuredMethod",
    "TaskType",
    "Tier",
    "load_default_catalog",
]


class Tier(StrEnum):
    """Cost tier of a model; the declaration order is cheapest first."""

    LOCAL = "local"
    FREE = "free"
    PAID = "paid"

    @property
    def rank(self) -> int:
        """0 for local, 1 for free, 2 for paid — for comparisons against tier caps."""
        return _TIER_RANK[self]


_TIER_RANK = {tier: rank for rank, tier in enumerate(Tier)}


class TaskType(StrEnum):
    """The nine cognitive operations a workflow node can perform."""

    INSTRUCTION_ROUTING = "instruction_routing"
    REWRITING = "rewriting"
    DECOMPOSITION = "decomposition"
    TOOL_USE_FORMATTING = "tool_use_formatting"
    STRUCTURE_ASSESSMENT = "structure_assessment"
    QUALITY_SCORING = "quality_scoring"
    RATIONALE_GENERATION = "rationale_generation"
    PARAMETER_EXTRACTION = "parameter_extraction"
    CLASSIFICATION = "classification"


class Complexity(StrEnum):
    """How hard an instruction is; it decides which tier is tried first."""

    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


class Provider(StrEnum):
    """Where a model runs. OpenRouter, Mistral, HF and OpenAI speak the OpenAI protocol."""

    EMBEDDED = "embedded"
    OLLAMA = "ollama"
    GEMINI = "gemini"
    GROQ = "groq"
    OPENROUTER = "openrouter"
    MISTRAL = "mistral"
    HUGGINGFACE = "huggingface"
    OPENAI = "openai"


class StructuredMethod(StrEnum):
    """How a model is asked for schema-shaped output (LangChain's ``method=``)."""

    JSON_SCHEMA = "json_schema"
    FUNCTION_CALLING = "function_calling"
    JSON_MODE = "json_mode"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Price(_Frozen):
    """USD per million tokens, with the date the figure was read."""

    input_per_mtok: float = Field(0.0, ge=0, description="USD per 1M prompt tokens.")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per 1M completion tokens.")
    as_of: date | None = Field(None, description="When the price was checked.")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in USD of a call with these token counts."""
        return (
            input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        ) / 1_000_000


class Limits(_Frozen):
    """Provider limits for one model and key; ``None`` means no limit is known."""

    rpm: int | None = Field(None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(None, gt=0, description="Tokens per minute.")
    rpd: int | None = Field(None, gt=0, description="Requests per day.")


class ModelSpec(_Frozen):
    """One callable model: where it runs, what it costs, what it can do, how good it is."""

    key: str = Field(description="Catalog id, unique; what chains and policies name.")
    provider: Provider
    model: str = Field(min_length=1, description="The provider's own model id / tag.")
    tier: Tier
    context_window: int = Field(gt=0, description="Prompt + completion tokens.")
    tools: bool = Field(True, description="Supports tool / function calling.")
    structured_output: StructuredMethod = StructuredMethod.JSON_SCHEMA
    price: Price = Price()
    limits: Limits = Limits()
    scores: Mapping[TaskType, Annotated[float, Field(ge=0, le=10)]] = Field(
        default_factory=dict, description="The seed's 0-10 rubric score per operation."
    )
    speed: float = Field(5.0, ge=0, le=10, description="0-10, higher is faster.")
    note: str = Field("", description="Why this entry looks the way it does.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.tier is not Tier.PAID and (
            self.price.input_per_mtok or self.price.output_per_mtok
        ):
            raise ValueError(
                f"a {self.tier} model cannot have a price (price.input_per_mtok = "
                f"{self.price.input_per_mtok:g}, price.output_per_mtok = "
                f"{self.price.output_per_mtok:g}); allowed: 0, or tier = 'paid'"
            )
        return self

    def __hash__(self) -> int:
        """Hash on the key alone: pydantic's frozen hash would walk every field."""
        return hash(self.key)

    def score(self, operation: TaskType) -> float | None:
        """Rubric score for ``operation``, or ``None`` when unknown."""
        return self.scores.get(operation)


class Chain(_Frozen):
    """One operation's models, per tier, best first within the tier."""

    local: tuple[str, ...] = ()
    free: tuple[str, ...] = ()
    paid: tuple[str, ...] = ()

    def tier(self, tier: Tier) -> tuple[str, ...]:
        """Model keys of ``tier`` in preference order."""
        chain: tuple[str, ...] = getattr(self, tier.value)
        return chain


class Catalog(_Frozen):
    """Every known model and, per operation, its local → free → paid chain."""

    models: Mapping[str, ModelSpec]
    chains: Mapping[TaskType, Chain]
    embedded: str | None = Field(
        None, description="Key of the embedded model used as the last resort."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        for key, spec in self.models.items():
            if spec.key != key:
                raise ValueError(f"model {key!r} carries key {spec.key!r}")
        missing_ops = [op.value for op in TaskType if op not in self.chains]
        if missing_ops:
            raise ValueError(f"no chain for operation(s): {', '.join(missing_ops)}")
        for op, chain in self.chains.items():
            for tier in Tier:
                for key in chain.tier(tier):
                    member = self.models.get(key)
                    if member is None:
                        raise ValueError(
                            f"chains.{op}.{tier}: unknown model {key!r}; allowed: "
                            f"{', '.join(sorted(self.models))}"
                        )
                    if member.tier is not tier:
                        same_tier = sorted(k for k, m in self.models.items() if m.tier is tier)
                        raise ValueError(
                            f"chains.{op}.{tier}: {key!r} is a {member.tier} model; allowed: "
                            f"{tier} models ({', '.join(same_tier)})"
                        )
        if self.embedded is not None:
            embedded = self.models.get(self.embedded)
            if embedded is None or embedded.provider is not Provider.EMBEDDED:
                raise ValueError(f"embedded model {self.embedded!r} is not an embedded entry")
        return self

    def __hash__(self) -> int:
        """Identity hash: catalogs are compared by identity (selector cache keys)."""
        return id(self)

    def __eq__(self, other: object) -> bool:
        """Identity equality, consistent with :meth:`__hash__`."""
        return self is other

    def __iter__(self) -> Iterator[ModelSpec]:  # type: ignore[override]
        """Every model spec in the catalog."""
        return iter(self.models.values())

    def spec(self, key: str) -> ModelSpec:
        """The model with catalog id ``key``; ``KeyError`` names the known ids."""
        try:
            return self.models[key]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise KeyError(f"unknown model {key!r}; known: {known}") from None

    def chain(self, operation: TaskType, tier: Tier) -> tuple[ModelSpec, ...]:
        """The specs of ``operation``'s chain in ``tier``, best first."""
        return tuple(self.models[k] for k in self.chains[operation].tier(tier))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Catalog:
        """Build from the TOML layout: ``[models.<key>]`` tables and ``[chains.<op>]``."""
        models = {
            key: {"key": key, **fields} for key, fields in dict(data.get("models", {})).items()
        }
        return cls.model_validate(
            {"models": models, "chains": data.get("chains", {}), "embedded": data.get("embedded")}
        )


def default_catalog_data() -> dict[str, Any]:
    """The packaged ``catalog.toml`` as plain data, for merging user overrides into."""
    text = resources.files("tierwise.catalog").joinpath("catalog.toml").read_text("utf-8")
    return tomllib.loads(text)


def load_default_catalog() -> Catalog:
    """The catalog shipped with tierwise, without user overrides."""
    return Catalog.from_mapping(default_catalog_data())
