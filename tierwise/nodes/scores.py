"""The quality verdict: a 0-10 rubric score with reasons.

The quality scoring node answers with it, and an ensemble's judge combiner reads it; it
lives apart from both so that neither imports the other (the node module depends on the
node base, which combines ensembles).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

__all__ = ["QualityScore"]


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
