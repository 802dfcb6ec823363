"""``quality_scoring``: a 0-10 score on the rubric (8-10 excellent, 4-7 good, 0-3 poor).

A score below the run's ``quality_threshold`` sends the scored step back to a higher tier
(see ``graphs.escalation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import JudgeNode, ModelLike
from tierwise.nodes.scores import QualityScore
from tierwise.prompts.quality_scoring import SCORE

__all__ = ["QualityNode", "quality_scoring_node"]


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
