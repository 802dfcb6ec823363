"""tierwise: route every cognitive operation of a LangGraph workflow to the model that fits it.

Public names are imported lazily (PEP 562), so ``import tierwise`` and the CLI start fast
and pull in LangChain and the provider SDKs only when something that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.catalog.policy import ABTest, EnsembleSpec, OperationOverride, Policy, PolicyMode
    from tierwise.catalog.settings import (
        ConfigError,
        Credentials,
        ProviderConfig,
        Settings,
        load_settings,
    )
    from tierwise.catalog.specs import (
        Catalog,
        Complexity,
        Limits,
        ModelSpec,
        Price,
        Provider,
        TaskType,
        Tier,
        load_default_catalog,
    )
    from tierwise.evaluation import aevaluate, evaluate
    from tierwise.graphs import (
        PipelineResult,
        build_extraction,
        build_instruction_pipeline,
        build_triage,
        sqlite_checkpointer,
    )
    from tierwise.learning.learned_router import LearnedRouter
    from tierwise.ledger import Attempt
    from tierwise.ledger.evidence import EvidenceStore, Outcome
    from tierwise.nodes.context import RunContext
    from tierwise.providers.clients import ProviderFactory, probe
    from tierwise.providers.failures import FailureKind
    from tierwise.routing.chat_model import RoutedChatModel, StreamInterrupted
    from tierwise.routing.ensemble import aensemble, ensemble
    from tierwise.routing.results import (
        NoModelAvailable,
        RoutedResult,
        StreamChunk,
        StreamEnd,
        StreamRestart,
    )
    from tierwise.routing.router import ModelRouter
    from tierwise.routing.selector import Selector
    from tierwise.routing.snapshot import Snapshot

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("ConfigError", "Credentials", "ProviderConfig", "Settings", "load_settings"),
        "tierwise.catalog.settings",
    ),
    **dict.fromkeys(
        ("Catalog", "Complexity", "Limits", "ModelSpec", "Price", "Provider", "TaskType",
         "Tier", "load_default_catalog"),
        "tierwise.catalog.specs",
    ),
    **dict.fromkeys(("RoutedChatModel", "StreamInterrupted"), "tierwise.routing.chat_model"),
    "FailureKind": "tierwise.providers.failures",
    **dict.fromkeys(
        ("PipelineResult", "build_extraction", "build_instruction_pipeline", "build_triage",
         "sqlite_checkpointer"),
        "tierwise.graphs",
    ),
    "RunContext": "tierwise.nodes.context",
    **dict.fromkeys(
        ("ABTest", "EnsembleSpec", "OperationOverride", "Policy", "PolicyMode"),
        "tierwise.catalog.policy",
    ),
    **dict.fromkeys(("aevaluate", "evaluate"), "tierwise.evaluation"),
    **dict.fromkeys(("aensemble", "ensemble"), "tierwise.routing.ensemble"),
    **dict.fromkeys(("EvidenceStore", "Outcome"), "tierwise.ledger.evidence"),
    "LearnedRouter": "tierwise.learning.learned_router",
    **dict.fromkeys(("ProviderFactory", "probe"), "tierwise.providers.clients"),
    "Attempt": "tierwise.ledger",
    **dict.fromkeys(
        ("NoModelAvailable", "RoutedResult", "StreamChunk", "StreamEnd", "StreamRestart"),
        "tierwise.routing.results",
    ),
    "ModelRouter": "tierwise.routing.router",
    **dict.fromkeys(("Selector", "Snapshot"), "tierwise.routing.selector"),
}

__all__ = [
    "ABTest",
    "Attempt",
    "Catalog",
    "Complexity",
    "ConfigError",
    "Credentials",
    "EnsembleSpec",
    "EvidenceStore",
    "FailureKind",
    "LearnedRouter",
    "Limits",
    "ModelRouter",
    "ModelSpec",
    "NoModelAvailable",
    "OperationOverride",
    "Outcome",
    "PipelineResult",
    "Policy",
    "PolicyMode",
    "Price",
    "Provider",
    "ProviderConfig",
    "ProviderFactory",
    "RoutedChatModel",
    "RoutedResult",
    "RunContext",
    "Selector",
    "Settings",
    "Snapshot",
    "StreamChunk",
    "StreamEnd",
    "StreamInterrupted",
    "StreamRestart",
    "TaskType",
    "Tier",
    "aensemble",
    "aevaluate",
    "build_extraction",
    "build_instruction_pipeline",
    "build_triage",
    "ensemble",
    "evaluate",
    "load_default_catalog",
    "load_settings",
    "probe",
    "sqlite_checkpointer",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
