"""Evaluation against gold labels: data sets, metrics and the runner behind ``tierwise eval``.

The verdicts are quality evidence (:mod:`tierwise.ledger.evidence`) that the selector
and the learned router read; this package writes it and ``routing`` never imports it.
"""

from tierwise.evaluation.datasets import (
    DataError,
    EvalItem,
    EvalSet,
    load_banking77,
    load_bfcl,
    load_clinc150,
    load_csv,
    load_snips,
    resolve_data,
)
from tierwise.evaluation.harness import (
    EVALUATED,
    EvalReport,
    ItemResult,
    ModelSummary,
    Progress,
    aevaluate,
    default_models,
    evaluate,
    evaluation_policy,
)
from tierwise.evaluation.scoring import Score, score

__all__ = [
    "EVALUATED",
    "DataError",
    "EvalItem",
    "EvalReport",
    "EvalSet",
    "ItemResult",
    "ModelSummary",
    "Progress",
    "Score",
    "aevaluate",
    "default_models",
    "evaluate",
    "load_banking77",
    "load_bfcl",
    "load_clinc150",
    "load_csv",
    "load_snips",
    "evaluation_policy",
    "resolve_data",
    "score",
]
