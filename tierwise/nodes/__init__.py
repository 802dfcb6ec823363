"""Node factories, one module per cognitive operation: output schema + factory.

Every factory takes the model (a ``ModelRouter``, a plain chat model or a catalog key)
and keyword-only options, and returns a node whose ``reads`` and ``writes`` name the
state keys it uses, so it drops into any ``StateGraph`` whose state has them plus
``report: Annotated[list[ReportEntry], operator.add]``.
"""

from tierwise.nodes.base import ModelLike, OperationNode, ReportEntry
from tierwise.nodes.classification import Classification, classification_node
from tierwise.nodes.context import RunContext
from tierwise.nodes.decomposition import Plan, decomposition_node
from tierwise.nodes.instruction_routing import RouteDecision, instruction_routing_node
from tierwise.nodes.parameter_extraction import Parameters, parameter_extraction_node
from tierwise.nodes.quality_scoring import quality_scoring_node
from tierwise.nodes.rationale_generation import Rationale, rationale_generation_node
from tierwise.nodes.rewriting import Rewrite, rewriting_node
from tierwise.nodes.scores import QualityScore
from tierwise.nodes.structure_assessment import StructureAssessment, structure_assessment_node
from tierwise.nodes.tool_use_formatting import (
    ToolCall,
    ToolResult,
    tool_execution_node,
    tool_use_formatting_node,
)

__all__ = [
    "Classification",
    "ModelLike",
    "OperationNode",
    "Parameters",
    "Plan",
    "QualityScore",
    "Rationale",
    "ReportEntry",
    "Rewrite",
    "RouteDecision",
    "RunContext",
    "StructureAssessment",
    "ToolCall",
    "ToolResult",
    "classification_node",
    "decomposition_node",
    "instruction_routing_node",
    "parameter_extraction_node",
    "quality_scoring_node",
    "rationale_generation_node",
    "rewriting_node",
    "structure_assessment_node",
    "tool_execution_node",
    "tool_use_formatting_node",
]
