"""``structure_assessment``: is an output well-formed and complete, with the defects named.

The assessment is a judgement the pipeline acts on: an incomplete or malformed output
sends the step that produced it back to a higher tier (see ``graphs.escalation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import JudgeNode, ModelLike
from tierwise.prompts.structure_assessment import ASSESS

__all__ = ["AssessmentNode", "StructureAssessment", "structure_assessment_node"]


class StructureAssessment(BaseModel):
    """Whether the output has the right shape, and what is wrong with it."""

    well_formed: bool = Field(description="The output has the expected shape and types.")
    complete: bool = Field(description="Nothing the task needs is missing.")
    defects: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=3, description="Each defect, briefly."
    )

    @property
    def passed(self) -> bool:
        """Well-formed and complete."""
        return self.well_formed and self.complete

    def problem(self) -> str | None:
        """What is wrong (``malformed`` / ``incomplete``, with the defects), or ``None``."""
        if self.passed:
            return None
        what = "malformed" if not self.well_formed else "incomplete"
        return f"{what}: {'; '.join(self.defects)}" if self.defects else what


class AssessmentNode(JudgeNode):
    """Assesses the structure of the state values at ``subject_keys`` for ``task``."""

    operation = TaskType.STRUCTURE_ASSESSMENT
    schema = StructureAssessment
    prompt = ASSESS
    vote_fields = ("well_formed", "complete")

    def verdict(self, value: Any) -> str:
        """``passed``, or what is wrong."""
        return value.problem() or "passed"

    def evidence(self, value: Any) -> float:
        """1 when the judged answer passed (well-formed and complete), else 0."""
        return 1.0 if value.passed else 0.0


def structure_assessment_node(
    model: ModelLike | None = None,
    *,
    input_key: str = "task",
    subject_keys: Sequence[str] = ("parameters", "tool_call", "tool_result"),
    output_key: str = "structure",
    name: str = "assess",
    producer: str | None = None,
) -> AssessmentNode:
    """A node assessing whether the values at ``subject_keys`` are well-formed and complete.

    Reads ``input_key`` and ``subject_keys``; writes ``output_key``
    (:class:`StructureAssessment`) and a ``report`` entry. With ``producer`` (the node
    that wrote the subject), each verdict (1 passed, 0 not) is filed in the router's
    ledger as evidence on that node's latest answer.

    Example:
        >>> structure_assessment_node(model="smollm2-135m", subject_keys=("draft",)).reads
        ('task', 'draft')
    """
    return AssessmentNode(model, name=name, reads=(input_key, *subject_keys),
                          writes=(output_key,), producer=producer)
