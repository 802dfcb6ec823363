"""Out-of-distribution splits of RouteLLM's data: leave a data set or an MMLU subject group out.

The standard split (:func:`tierwise.learning.train.train_standard`) scores the router on
held-out prompts of the data sets it trained on. Users route prompts nobody labelled, so
these splits score it on a kind of prompt it never saw: train on GSM8K and score MMLU,
the reverse, and train on three of MMLU's four subject groups and score the fourth.

The groups are MMLU's own (``categories.py`` of hendrycks/test): each subject's
subcategory mapped to STEM, humanities, social sciences or other (business, health,
miscellaneous).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tierwise.learning.routellm import LabelledSet, load_benchmark

__all__ = ["GROUPS", "Split", "group_of", "leave_one_out"]

_SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics",
    "business_ethics": "business", "clinical_knowledge": "health",
    "college_biology": "biology", "college_chemistry": "chemistry",
    "college_computer_science": "computer science", "college_mathematics": "math",
    "college_medicine": "health", "college_physics": "physics",
    "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering",
    "elementary_mathematics": "math", "formal_logic": "philosophy", "global_facts": "other",
    "high_school_biology": "biology", "high_school_chemistry": "chemistry",
    "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics",
    "high_school_macroeconomics": "economics", "high_school_mathematics": "math",
    "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math",
    "high_school_us_history": "history", "high_school_world_history": "history",
    "human_aging": "health", "human_sexuality": "culture", "international_law": "law",
    "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business",
    "marketing": "business", "medical_genetics": "health", "miscellaneous": "other",
    "moral_disputes": "philosophy", "moral_scenarios": "philosophy", "nutrition": "health",
    "philosophy": "philosophy", "prehistory": "history", "professional_accounting": "other",
    "professional_law": "law", "professional_medicine": "health",
    "professional_psychology": "psychology", "public_relations": "politics",
    "security_studies": "politics", "sociology": "culture", "us_foreign_policy": "politics",
    "virology": "health", "world_religions": "philosophy",
}  # fmt: skip
GROUPS = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other": ("other", "business", "health"),
}
"""MMLU's four subject groups and the subcategories in each."""


@dataclass(frozen=True)
class Split:
    """One out-of-distribution split: what the router trains on and what it is scored on."""

    name: str
    train: LabelledSet
    test: LabelledSet


def group_of(source: str) -> str:
    """The MMLU group of a response file (``.../mmlu_<subject>.csv``).

    Raises:
        ValueError: Not an MMLU subject file.
    """
    subject = Path(source).stem.removeprefix("mmlu_")
    sub = _SUBCATEGORY.get(subject)
    if sub is None:
        raise ValueError(f"{source}: not an MMLU subject file")
    return next(group for group, subs in GROUPS.items() if sub in subs)


def leave_one_out(data: str | Path) -> Iterator[Split]:
    """GSM8K -> MMLU, MMLU -> GSM8K, then each MMLU group scored by a router of the others."""
    gsm8k, mmlu = load_benchmark("gsm8k", data), load_benchmark("mmlu", data)
    yield Split("train GSM8K, score MMLU", gsm8k, mmlu)
    yield Split("train MMLU, score GSM8K", mmlu, gsm8k)
    groups = [group_of(source) for source in mmlu.sources]
    for group in GROUPS:
        inside = [i for i, g in enumerate(groups) if g == group]
        outside = [i for i, g in enumerate(groups) if g != group]
        yield Split(f"train MMLU other groups, score {group}", mmlu.take(outside),
                    mmlu.take(inside))  # fmt: skip
