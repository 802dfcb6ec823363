"""tierwise: route every cognitive operation of a LangGraph workflow to the model that fits it.

The top level holds what most programs need; everything else is exported by its
subpackage (``tierwise.routing``, ``tierwise.nodes``, ``tierwise.catalog``, ...). Names
are imported on first use, so ``import tierwise`` and the CLI start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tierwise._exports import lazy

if TYPE_CHECKING:  # the public names, once; imported on first use (see tierwise._exports)
    from tierwise.catalog.policy import Policy as Policy
    from tierwise.catalog.settings import load_settings as load_settings
    from tierwise.catalog.specs import ModelSpec as ModelSpec
    from tierwise.catalog.specs import TaskType as TaskType
    from tierwise.graphs import PipelineResult as PipelineResult
    from tierwise.graphs import build_extraction as build_extraction
    from tierwise.graphs import build_instruction_pipeline as build_instruction_pipeline
    from tierwise.graphs import build_triage as build_triage
    from tierwise.nodes.context import RunContext as RunContext
    from tierwise.routing.chat_model import RoutedChatModel as RoutedChatModel
    from tierwise.routing.default import default_router as default_router
    from tierwise.routing.request import RouteRequest as RouteRequest
    from tierwise.routing.results import NoModelAvailable as NoModelAvailable
    from tierwise.routing.results import RoutedResult as RoutedResult
    from tierwise.routing.router import ModelRouter as ModelRouter

__all__, __getattr__, __dir__ = lazy(globals())
