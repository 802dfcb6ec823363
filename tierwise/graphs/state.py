"""Graph state types and the results the graphs return.

States are ``TypedDict``s whose keys are the ones the nodes in ``tierwise.nodes`` read and
write; ``report`` and ``steps`` have ``add`` reducers so parallel sub-tasks append without
clobbering each other. Results are pydantic models, so ``--json`` and LangGraph Server can
serialise them and Python callers get typed attributes.
"""

from __future__ import annotations

from operator import add
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from tierwise.nodes.base import ReportEntry
from tierwise.nodes.classification import Classification
from tierwise.nodes.decomposition import Plan
from tierwise.nodes.instruction_routing import RouteDecision
from tierwise.nodes.parameter_extraction import Parameters
from tierwise.nodes.rationale_generation import Rationale
from tierwise.nodes.rewriting import Rewrite
from tierwise.nodes.scores import QualityScore
from tierwise.nodes.structure_assessment import StructureAssessment
from tierwise.nodes.tool_use_formatting import ToolCall, ToolResult

__all__ = [
    "Escalation",
    "ExtractionOutput",
    "InstructionInput",
    "PipelineOutput",
    "PipelineResult",
    "PipelineState",
    "RoutingReport",
    "StepInput",
    "StepOutcome",
    "StepOutput",
    "StepState",
    "TriageOutput",
    "TriageState",
]


class Escalation(BaseModel):
    """One decision of a conditional escalation edge, as the report shows it."""

    node: str
    step: int | None
    decision: Literal["escalated", "kept"]
    reason: str = Field(description="What the judge found wrong.")
    from_tier: str | None
    to_tier: str | None = Field(None, description="Tier of the new answer (escalated).")
    note: str = Field("", description="Why escalation stopped (kept), or how it ended.")


class RoutingReport(BaseModel):
    """What ran where, what it cost and how long it took."""

    entries: list[dict[str, Any]] = Field(description="One per node execution, in order.")
    escalations: list[Escalation] = Field(default_factory=list)
    calls: int = Field(description="Node executions that asked a model.")
    cost: float = Field(description="USD over every attempt.")
    input_tokens: int
    output_tokens: int
    model_time: float = Field(description="Seconds spent in model calls, summed.")
    by_tier: dict[str, int] = Field(description="Answers per tier.")

    @classmethod
    def of(cls, entries: list[ReportEntry], escalations: list[Escalation]) -> RoutingReport:
        """Totals over ``entries`` (every node execution) and the escalation decisions."""
        by_tier: dict[str, int] = {}
        for e in entries:
            if e["status"] == "ok" and e["tier"]:
                by_tier[e["tier"]] = by_tier.get(e["tier"], 0) + 1
        return cls(
            entries=[dict(e) for e in entries], escalations=escalations,
            calls=len(entries), cost=sum(e["cost"] for e in entries),
            input_tokens=sum(e["input_tokens"] for e in entries),
            output_tokens=sum(e["output_tokens"] for e in entries),
            model_time=round(sum(e["latency"] for e in entries), 4), by_tier=by_tier,
        )


class StepOutcome(BaseModel):
    """One sub-task's outputs and verdicts."""

    index: int
    task: str
    parameters: Any = None
    tool_call: ToolCall | None = None
    tool_result: ToolResult | None = None
    structure: StructureAssessment | None = None
    quality: QualityScore | None = None
    best_effort: bool = Field(False, description="A judge found it wanting and no higher "
                              "tier could be tried: this is the best result obtained.")
    escalations: list[Escalation] = Field(default_factory=list)


class PipelineResult(BaseModel):
    """The instruction pipeline's final result."""

    instruction: str
    rewritten: str
    label: str | None
    complexity: str
    route: str
    plan: list[str] = Field(default_factory=list)
    steps: list[StepOutcome] = Field(default_factory=list)
    quality: QualityScore | None = Field(None, description="Score of a direct answer.")
    rationale: str | None = None
    best_effort: bool = False
    report: RoutingReport


class InstructionInput(TypedDict):
    """What the instruction pipeline and the triage graph take."""

    instruction: str
    run_id: NotRequired[str]


class StepInput(TypedDict):
    """One sub-task: what the pipeline sends (``Send``) to the step graph.

    The extraction graph takes it too (``task`` alone will do).
    """

    step: NotRequired[int]
    task: str
    instruction: NotRequired[str]
    complexity: NotRequired[str]
    run_id: NotRequired[str]


class StepState(StepInput, total=False):
    """State of one sub-task: extraction, tool call, verdicts."""

    parameters: Parameters | Any
    tool_call: ToolCall
    tool_result: ToolResult
    structure: StructureAssessment
    quality: QualityScore
    report: Annotated[list[ReportEntry], add]
    outcome: StepOutcome
    steps: Annotated[list[StepOutcome], add]


class StepOutput(TypedDict):
    """What the step graph hands the pipeline: its outcome and its report entries."""

    steps: list[StepOutcome]
    report: list[ReportEntry]


class ExtractionOutput(TypedDict):
    """What the extraction graph returns."""

    outcome: StepOutcome
    report: list[ReportEntry]


class TriageState(InstructionInput, total=False):
    """State of the triage graph."""

    classification: Classification
    complexity: str
    route: RouteDecision
    report: Annotated[list[ReportEntry], add]


class TriageOutput(TypedDict):
    """What the triage graph returns."""

    classification: Classification
    complexity: str
    route: RouteDecision
    report: list[ReportEntry]


class PipelineState(TriageState, total=False):
    """State of the instruction pipeline."""

    rewrite: Rewrite
    plan: Plan
    quality: QualityScore
    rationale: Rationale
    steps: Annotated[list[StepOutcome], add]
    result: PipelineResult


class PipelineOutput(TypedDict):
    """What the instruction pipeline returns."""

    result: PipelineResult

