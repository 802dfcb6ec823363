"""Graphs built from the nodes: the instruction pipeline, triage and extraction.

Each ``build_*`` factory returns a compiled graph with a ``name``, explicit input and
output schemas, ``RunContext`` as its context schema and no checkpointer unless given one.
"""

from tierwise._exports import declared
from tierwise.graphs.checkpoint import sqlite_checkpointer as sqlite_checkpointer
from tierwise.graphs.pipeline import build_instruction_pipeline as build_instruction_pipeline
from tierwise.graphs.state import PipelineResult as PipelineResult
from tierwise.graphs.state import RoutingReport as RoutingReport
from tierwise.graphs.state import StepOutcome as StepOutcome
from tierwise.graphs.steps import build_extraction as build_extraction
from tierwise.graphs.triage import build_triage as build_triage

__all__ = sorted(declared(__file__))
