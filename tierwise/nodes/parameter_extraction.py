"""``parameter_extraction``: typed parameters pulled out of text against a schema.

Without a schema of the caller's, parameters come back as name/value pairs; with one
(any pydantic model), the answer must validate against it, so the router falls back when
a model's extraction does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from tierwise.catalog.specs import TaskType
from tierwise.nodes.base import ModelLike, OperationNode
from tierwise.nodes.render import render
from tierwise.prompts.parameter_extraction import EXTRACT

__all__ = ["ExtractionNode", "Parameter", "Parameters", "parameter_extraction_node"]


class Parameter(BaseModel):
    """One named value found in the text."""

    name: str = Field(max_length=30, description="What the value is (city, date, ...).")
    value: str = Field(max_length=80, description="The value as the text gives it.")


class Parameters(BaseModel):
    """Name/value pairs found in the text."""

    parameters: list[Parameter] = Field(max_length=5, description="The parameters found.")


class ExtractionNode(OperationNode):
    """Extracts the parameters of ``task`` (with ``context``) into ``schema``."""

    operation = TaskType.PARAMETER_EXTRACTION
    prompt = EXTRACT
    max_tokens = 120

    def __init__(self, model: ModelLike | None, *, schema: type[BaseModel] | None,
                 input_key: str, context_key: str | None, output_key: str,
                 name: str) -> None:
        """See :func:`parameter_extraction_node`."""
        reads = (input_key,) if context_key is None else (input_key, context_key)
        super().__init__(model, name=name, reads=reads, writes=(output_key,))
        self.schema = schema or Parameters
        self.hint = "" if schema is None else f" Fill the fields of {schema.__name__}."

    def inputs(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The task text and, if configured, its context."""
        context = state.get(self.reads[1]) if len(self.reads) > 1 else None
        return {"task": render(state[self.reads[0]]), "context": render(context),
                "hint": self.hint}


def parameter_extraction_node(
    model: ModelLike | None = None,
    *,
    schema: type[BaseModel] | None = None,
    input_key: str = "task",
    context_key: str | None = "instruction",
    output_key: str = "parameters",
    name: str = "extract",
) -> ExtractionNode:
    """A node extracting the parameters of the text at ``input_key``.

    Reads ``input_key`` and ``context_key``; writes ``output_key`` (``schema``, default
    :class:`Parameters`) and a ``report`` entry.

    Example:
        >>> from pydantic import BaseModel
        >>> class Trip(BaseModel):
        ...     city: str
        ...     days: int
        >>> parameter_extraction_node(model="smollm2-135m", schema=Trip).schema.__name__
        'Trip'
    """
    return ExtractionNode(model, schema=schema, input_key=input_key, context_key=context_key,
                          output_key=output_key, name=name)
