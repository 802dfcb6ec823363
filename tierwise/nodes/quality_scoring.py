"""``quality_scoring``: a 0-10 score on the rubric (8-10 excellent, 4-7 good, 0-3 poor).

A score below the run's ``quality_threshold`` sends the scored step back to a higher tier
(see ``graphs.escalation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import JudgeNode, ModelLike
from tierwise.prompts.quality_scoring import SCORE

__all__ = ["QualityNode", "QualityScore", "quality_scoring_node"]


class QualityScore(BaseModel):
    """A rubric score and the reasons for it."""

    score: int = Field(ge=0, le=10, description="0-10: 8-10 excellent, 4-7 good, 0-3 poor.")
    reasons: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=2, description="Up to two short reasons."
    )

    def shortfall(self, threshold: float) -> str | None:
        """Why the score is below ``threshold``, or ``None`` when it is not."""
        if self.score >= threshold:
            return None
        return f"score {self.score}/10 below the threshold {threshold:g}"

    @property
    def band(self) -> Literal["excellent", "good", "poor"]:
        """The rubric band of the score."""
        return "excellent" if self.score >= 8 else "good" if self.score >= 4 else "poor"


class QualityNode(JudgeNode):
    """Scores the state values at ``subject_keys`` against ``task``."""

    operation = TaskType.QUALITY_SCORING
    schema = QualityScore
    prompt = SCORE
    vote_fields = ("score",)

    def verdict(self, value: Any) -> str:
        """The score and its band."""
        return f"score {value.score}/10 ({value.band})"

    def evidence(self, value: Any) -> float:
        """The score on [0, 1]: the judged answer's quality as the ledger keeps it."""
        return float(value.score) / 10


def quality_scoring_node(
    model: ModelLike | None = None,
    *,
    input_key: str = "task",
    subject_keys: Sequence[str] = ("parameters", "tool_call", "tool_result"),
    output_key: str = "quality",
    name: str = "score",
    producer: str | None = None,
) -> QualityNode:
    """A node scoring the values at ``subject_keys`` for the task at ``input_key``.

    Reads ``input_key`` and ``subject_keys``; writes ``output_key`` (:class:`QualityScore`)
    and a ``report`` entry. With ``producer`` (the node that wrote the subject), each
    score / 10 is filed in the router's ledger as evidence on that node's latest answer.

    Example:
        >>> quality_scoring_node(model="smollm2-135m", input_key="instruction",
        ...                      subject_keys=("rewrite",)).reads
        ('instruction', 'rewrite')
    """
    return QualityNode(model, name=name, reads=(input_key, *subject_keys), writes=(output_key,),
                       producer=producer)
