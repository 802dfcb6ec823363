"""``classification``: one label from a given label set, plus the instruction's complexity.

The complexity estimate is written to the ``complexity`` state key, which every node after
this one passes to the router: a simple instruction stays on the cheap tiers, a complex
one moves up (the tier order per complexity is the policy's, see ``routing.policy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from tierwise.catalog.specs import Complexity, TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.prompts.classification import CLASSIFY

__all__ = ["DEFAULT_LABELS", "Classification", "ClassificationNode", "classification_node"]

#: Instruction kinds the pipeline distinguishes when the caller gives no label set.
DEFAULT_LABELS = ("planning", "action", "question", "writing", "analysis")


class Classification(BaseModel):
    """A label from the node's label set and the instruction's complexity."""

    label: str = Field(description="One label from the given set.")
    complexity: Complexity = Field(description="simple, moderate or complex.")


class ClassificationNode(OperationNode):
    """Classifies ``instruction`` into one of ``labels`` and estimates its complexity."""

    operation = TaskType.CLASSIFICATION
    prompt = CLASSIFY
    max_tokens = 40
    combine = "vote"
    vote_fields = ("label",)  # the members' complexity estimates may differ: the winner's

    def __init__(self, model: ModelLike | None, *, labels: Sequence[str], input_key: str,
                 output_key: str, name: str) -> None:
        """See :func:`classification_node`."""
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct and non-empty, got {list(labels)!r}")
        super().__init__(model, name=name, reads=(input_key,), writes=(output_key, "complexity"))
        self.labels = tuple(labels)
        # The model is asked for an enum of exactly these labels, so any answer is valid.
        # A Literal built at run time is a value to mypy, not a type form: typed as Any.
        label: Any = Literal[self.labels]
        self.schema = create_model(
            "LabelledInstruction",
            label=(label, Field(description="The label.")),
            complexity=(Complexity, Field(description="simple, moderate or complex.")),
        )

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Instruction and label set."""
        return {"instruction": state[self.reads[0]], "labels": ", ".join(self.labels)}

    def update(self, value: Any, state: Mapping[str, Any]) -> dict[str, Any]:
        """The classification and, for the nodes after it, the complexity."""
        found = Classification(label=value.label, complexity=value.complexity)
        return {self.writes[0]: found, "complexity": found.complexity.value}


def classification_node(
    model: ModelLike | None = None,
    *,
    labels: Sequence[str] = DEFAULT_LABELS,
    input_key: str = "instruction",
    output_key: str = "classification",
    name: str = "classify",
) -> ClassificationNode:
    """A node classifying the text at ``input_key`` into one of ``labels``.

    Reads ``input_key``; writes ``output_key`` (:class:`Classification`), ``complexity``
    and a ``report`` entry.

    Example:
        >>> node = classification_node(labels=("bug", "feature"), model="smollm2-135m")
        >>> node.reads, node.writes
        (('instruction',), ('classification', 'complexity'))
    """
    return ClassificationNode(model, labels=labels, input_key=input_key,
                              output_key=output_key, name=name)
