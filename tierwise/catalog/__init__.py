"""What exists: tiers, operations, model specs and prices, policies, settings."""

from tierwise._exports import declared
from tierwise.catalog.policy import ABTest as ABTest
from tierwise.catalog.policy import EnsembleSpec as EnsembleSpec
from tierwise.catalog.policy import OperationOverride as OperationOverride
from tierwise.catalog.policy import Policy as Policy
from tierwise.catalog.policy import PolicyMode as PolicyMode
from tierwise.catalog.settings import ConfigError as ConfigError
from tierwise.catalog.settings import Credentials as Credentials
from tierwise.catalog.settings import ProviderConfig as ProviderConfig
from tierwise.catalog.settings import Settings as Settings
from tierwise.catalog.settings import load_settings as load_settings
from tierwise.catalog.specs import Catalog as Catalog
from tierwise.catalog.specs import Complexity as Complexity
from tierwise.catalog.specs import Limits as Limits
from tierwise.catalog.specs import ModelSpec as ModelSpec
from tierwise.catalog.specs import Price as Price
from tierwise.catalog.specs import Provider as Provider
from tierwise.catalog.specs import TaskType as TaskType
from tierwise.catalog.specs import Tier as Tier
from tierwise.catalog.specs import load_default_catalog as load_default_catalog

__all__ = sorted(declared(__file__))
