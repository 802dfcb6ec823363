"""tierwise: route every cognitive operation of a LangGraph workflow to the model that fits it."""

from tierwise.config import ConfigError, Credentials, ProviderConfig, Settings, load_settings
from tierwise.routing.catalog import (
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
from tierwise.routing.policy import OperationOverride, Policy, PolicyMode
from tierwise.routing.providers import ProviderFactory, probe
from tierwise.routing.selector import Selector, Snapshot

__all__ = [
    "Catalog",
    "Complexity",
    "ConfigError",
    "Credentials",
    "Limits",
    "ModelSpec",
    "OperationOverride",
    "Policy",
    "PolicyMode",
    "Price",
    "Provider",
    "ProviderConfig",
    "ProviderFactory",
    "Selector",
    "Settings",
    "Snapshot",
    "TaskType",
    "Tier",
    "load_default_catalog",
    "load_settings",
    "probe",
]
