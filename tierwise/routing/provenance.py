"""What a routed call tells others: one ledger row per attempt, and metadata for tracers.

Rows go to the ledger the router was given, else to the process's shared default ledger.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from langchain_core.runnables import RunnableConfig

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import ModelSpec
from tierwise.ledger import Attempt, Ledger, LedgerError, LedgerRow, shared_ledger
from tierwise.routing.request import RouteRequest, config_value

__all__ = ["default_ledger", "recorder", "run_config"]

logger = logging.getLogger(__name__)


def recorder(
    ledger: Ledger | None, request: RouteRequest, policy: Policy, arm: str | None
) -> Callable[[Attempt], None]:
    """A function writing one ledger row per attempt of ``request`` (no-op: no ledger)."""
    if ledger is None:
        return lambda attempt: None
    operation, complexity = request.operation.value, request.complexity.value
    run_id = request.run_id
    thread_id = config_value(request.config, "thread_id")
    node = config_value(request.config, "langgraph_node")
    escalation = request.min_tier is not None
    call_id = request.call_id

    def record(attempt: Attempt) -> None:
        ledger.record(LedgerRow.from_attempt(
            attempt, operation=operation, complexity=complexity, policy=policy,
            run_id=run_id, thread_id=thread_id, node=node, escalation=escalation,
            call_id=call_id, arm=arm,
        ))

    return record

def run_config(
    spec: ModelSpec, request: RouteRequest, estimated_cost: float, steering: str
) -> RunnableConfig:
    """The caller's run config plus routing metadata, so tracers show the decision.

    With an A/B test or the learned router, ``tierwise_steering`` says which arm or
    pick (and the cost weight) put the first model first.

    The cost is the estimate the budget checked before the call (prompt tokens plus
    the expected answer at the catalog's prices); the real cost is in the ledger and
    in :meth:`RoutedResult.provenance`.
    """
    base: RunnableConfig = request.config or {}
    metadata = {
        **base.get("metadata", {}),
        "tierwise_operation": request.operation.value,
        "tierwise_model": spec.key,
        "tierwise_tier": spec.tier.value,
        "tierwise_provider": spec.provider.value,
        "tierwise_complexity": request.complexity.value,
        "tierwise_estimated_cost": round(estimated_cost, 8),
    }
    if steering:
        metadata["tierwise_steering"] = steering
    tags = [*base.get("tags", []), f"tierwise:{spec.tier.value}"]
    return {**base, "metadata": metadata, "tags": tags}


def default_ledger(settings: Settings) -> Ledger | None:
    """The shared ledger a router records into by default; ``None`` if it cannot be opened.

    A library must not refuse to route because a home directory is read-only or a ledger
    file is damaged: the router then keeps no record (day caps and quotas need one) and
    says so once, as a warning.
    """
    try:
        return shared_ledger(settings.ledger)
    except (OSError, sqlite3.Error, LedgerError) as exc:
        logger.warning("tierwise: no ledger, calls are not recorded and day caps are not "
                       "enforced: %s (set TIERWISE_LEDGER to a writable file)", exc)
        return None
