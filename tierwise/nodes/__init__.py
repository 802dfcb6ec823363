"""Node factories, one module per cognitive operation: output schema + factory.

Every factory takes the model (a ``ModelRouter``, a plain chat model or a catalog key)
and keyword-only options, and returns a node whose ``reads`` and ``writes`` name the
state keys it uses, so it drops into any ``StateGraph`` whose state has them plus
``report: Annotated[list[ReportEntry], operator.add]``.
"""

from tierwise._exports import declared
from tierwise.nodes.base import ModelLike as ModelLike
from tierwise.nodes.base import OperationNode as OperationNode
from tierwise.nodes.base import ReportEntry as ReportEntry
from tierwise.nodes.classification import Classification as Classification
from tierwise.nodes.classification import classification_node as classification_node
from tierwise.nodes.context import RunContext as RunContext
from tierwise.nodes.decomposition import Plan as Plan
from tierwise.nodes.decomposition import decomposition_node as decomposition_node
from tierwise.nodes.instruction_routing import RouteDecision as RouteDecision
from tierwise.nodes.instruction_routing import instruction_routing_node as instruction_routing_node
from tierwise.nodes.parameter_extraction import Parameters as Parameters
from tierwise.nodes.parameter_extraction import (
    parameter_extraction_node as parameter_extraction_node,
)
from tierwise.nodes.quality_scoring import quality_scoring_node as quality_scoring_node
from tierwise.nodes.rationale_generation import Rationale as Rationale
from tierwise.nodes.rationale_generation import (
    rationale_generation_node as rationale_generation_node,
)
from tierwise.nodes.rewriting import Rewrite as Rewrite
from tierwise.nodes.rewriting import rewriting_node as rewriting_node
from tierwise.nodes.scores import QualityScore as QualityScore
from tierwise.nodes.structure_assessment import StructureAssessment as StructureAssessment
from tierwise.nodes.structure_assessment import (
    structure_assessment_node as structure_assessment_node,
)
from tierwise.nodes.tool_use_formatting import ToolCall as ToolCall
from tierwise.nodes.tool_use_formatting import ToolResult as ToolResult
from tierwise.nodes.tool_use_formatting import tool_execution_node as tool_execution_node
from tierwise.nodes.tool_use_formatting import tool_use_formatting_node as tool_use_formatting_node

__all__ = sorted(declared(__file__))
