"""May a model be called now: rate limits, health (breaker), budget (money), daily quota."""

from tierwise.guards import backend, health, limits, quota
from tierwise.guards.backend import *  # noqa: F403
from tierwise.guards.health import *  # noqa: F403
from tierwise.guards.limits import *  # noqa: F403
from tierwise.guards.quota import *  # noqa: F403

__all__ = [*backend.__all__, *health.__all__, *limits.__all__, *quota.__all__]
