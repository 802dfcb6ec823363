"""Graphs built from the nodes: the instruction pipeline, triage and extraction.

Each ``build_*`` factory returns a compiled graph with a ``name``, explicit input and
output schemas, ``RunContext`` as its context schema and no checkpointer unless given one.
"""

from tierwise.graphs.checkpoint import sqlite_checkpointer
from tierwise.graphs.pipeline import build_instruction_pipeline
from tierwise.graphs.state import PipelineResult, RoutingReport, StepOutcome
from tierwise.graphs.steps import build_extraction
from tierwise.graphs.triage import build_triage

__all__ = [
    "PipelineResult",
    "RoutingReport",
    "StepOutcome",
    "build_extraction",
    "build_instruction_pipeline",
    "build_triage",
    "sqlite_checkpointer",
]
