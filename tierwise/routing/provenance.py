"""What a routed call tells others: one ledger row per attempt, and metadata for tracers.

Rows go to the ledger the router was given, else to the process's shared default ledger:
the settings' ledger file, else the PostgreSQL database of ``[state] postgres_url``, else
the default file.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Settings
from tierwise.catalog.specs import ModelSpec
from tierwise.ledger import (
    Attempt,
    Ledger,
    LedgerError,
    LedgerRow,
    is_postgres_url,
    shared_ledger,
)
from tierwise.routing.request import RouteRequest, config_value

__all__ = ["default_ledger", "ledger_target", "recorder", "run_config"]

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


def ledger_target(settings: Settings) -> str | Path | None:
    """Where the default ledger is: ``settings.ledger``, else ``postgres_url``, else ``None``.

    ``None`` is the default file (``$TIERWISE_LEDGER`` or the user data dir). A ledger
    file the settings name wins over the shared database: the simulator's settings name
    a temporary one so simulated calls never reach the real ledger.
    """
    return settings.ledger or settings.state.postgres_url


def default_ledger(settings: Settings) -> Ledger | None:
    """The shared ledger a router records into by default; ``None`` if it cannot be opened.

    A library must not refuse to route because a home directory is read-only or a ledger
    file is damaged: the router then keeps no record (day caps and quotas need one) and
    says so once, as a warning.
    """
    target = ledger_target(settings)
    try:
        return shared_ledger(target)
    except (OSError, sqlite3.Error, LedgerError) as exc:
        fix = ("check [state] postgres_url" if is_postgres_url(target)
               else "set TIERWISE_LEDGER to a writable file")  # fmt: skip
        logger.warning("tierwise: no ledger, calls are not recorded and day caps are not "
                       "enforced: %s (%s)", exc, fix)
        return None
