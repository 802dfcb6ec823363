"""Routing data in RouteLLM's column format: loading, decontamination, the train/test split.

A RouteLLM response file (``gsm8k_responses.csv``, ``mmlu/responses/mmlu_<subject>.csv``)
is a CSV with a ``prompt`` column and one column per model saying whether that model
answered correctly (``True``/``False``); ``<model>_response`` columns hold the answers and
are ignored here. Numeric score columns (e.g. MT-Bench style 1-10 judgements) are
accepted too and scaled to ``[0, 1]``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "BENCHMARKS",
    "LabelledSet",
    "contaminated",
    "find_data",
    "load_benchmark",
    "load_labelled",
    "split",
]

FloatArray = npt.NDArray[np.float64]

BENCHMARKS = {
    "gsm8k": ("gsm8k/gsm8k_responses.csv", "gsm8k/contaminated_prompts.jsonl"),
    "mmlu": ("mmlu/responses", "mmlu/contaminated_prompts.jsonl"),
}
"""RouteLLM's sets under ``<data>/routellm/``: responses (file or folder), contamination."""

_TRUE = {"true"}
_FALSE = {"false"}
_COST = "_cost"
_ALLOWED = "True/False, or a number >= 0 (an empty cell is an unknown outcome)"


@dataclass(frozen=True)
class LabelledSet:
    """Prompts with each model's outcome in ``[0, 1]`` (NaN: unknown for that prompt).

    Attributes:
        prompts: The prompt texts, in file order.
        outcomes: Per model column, one value per prompt.
        sources: The file each prompt was read from.
        removed: Prompts dropped as contaminated so far.
        costs: Per model with a ``<model>_cost`` column, its USD cost per prompt (NaN:
            unknown).
    """

    prompts: tuple[str, ...]
    outcomes: Mapping[str, FloatArray]
    sources: tuple[str, ...] = ()
    removed: int = 0
    costs: Mapping[str, FloatArray] = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of prompts (rows)."""
        return len(self.prompts)

    @property
    def models(self) -> tuple[str, ...]:
        """The model columns, in file order."""
        return tuple(self.outcomes)

    def mean(self, model: str) -> float:
        """Mean known outcome of ``model`` (NaN cells left out)."""
        return float(np.nanmean(self.outcomes[model]))

    def take(self, rows: Sequence[int] | npt.NDArray[np.int64]) -> LabelledSet:
        """The given rows, in that order (``removed`` is kept)."""
        index = np.asarray(rows, dtype=np.int64)
        return LabelledSet(
            prompts=tuple(self.prompts[i] for i in index),
            outcomes={m: v[index] for m, v in self.outcomes.items()},
            sources=tuple(self.sources[i] for i in index) if self.sources else (),
            removed=self.removed,
            costs={m: v[index] for m, v in self.costs.items()},
        )

    def without(self, prompts: Iterable[str]) -> LabelledSet:
        """Drop rows whose prompt equals one of ``prompts`` exactly, as RouteLLM does.

        RouteLLM (``routellm/evals/benchmarks.py``) filters with
        ``~all_data["prompt"].isin(contaminated_prompts)``: exact string equality, no
        stripping or case folding; the same comparison is made here.
        """
        banned = set(prompts)
        kept = [i for i, p in enumerate(self.prompts) if p not in banned]
        rest = self.take(kept)
        return LabelledSet(
            rest.prompts, rest.outcomes, rest.sources, self.removed + len(self) - len(kept),
            rest.costs,
        )

    def pair(self, *, strong: str | None = None, weak: str | None = None) -> tuple[str, str]:
        """``(weak, strong)`` model columns of a two-model comparison.

        Without arguments the set must have exactly two models and the strong one is
        the one with the higher mean outcome. Naming one of two picks the other as the
        counterpart; with more than two models name both.

        Raises:
            ValueError: A named model is not a column, or the pair is ambiguous.
        """
        for name in (strong, weak):
            if name is not None and name not in self.outcomes:
                raise ValueError(f"no model column {name!r}; columns: {list(self.models)}")
        if strong is not None and weak is not None:
            return weak, strong
        if len(self.models) != 2:
            raise ValueError(
                f"{len(self.models)} model columns {list(self.models)}: name the strong "
                "and the weak model"
            )
        a, b = self.models
        if strong is not None:
            return (b if strong == a else a), strong
        if weak is not None:
            return weak, (b if weak == a else a)
        return (a, b) if self.mean(a) <= self.mean(b) else (b, a)

    @staticmethod
    def concat(sets: Sequence[LabelledSet]) -> LabelledSet:
        """Rows of all sets, one after the other; a model missing from a set is NaN there."""
        models: list[str] = []
        for part in sets:
            models.extend(m for m in part.models if m not in models)
        return LabelledSet(
            prompts=tuple(p for part in sets for p in part.prompts),
            outcomes={
                m: np.concatenate(
                    [part.outcomes.get(m, np.full(len(part), np.nan)) for part in sets]
                )
                if sets
                else np.zeros(0)
                for m in models
            },
            sources=tuple(s for part in sets for s in (part.sources or ("",) * len(part))),
            removed=sum(part.removed for part in sets),
            costs={
                m: np.concatenate(
                    [part.costs.get(m, np.full(len(part), np.nan)) for part in sets]
                )
                for m in dict.fromkeys(m for part in sets for m in part.costs)
            },
        )


def _cell(text: str) -> float | None:
    """A cell's score, NaN for empty, or None when it is neither boolean nor a number."""
    value = text.strip()
    if not value:
        return math.nan
    lowered = value.lower()
    if lowered in _TRUE:
        return 1.0
    if lowered in _FALSE:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _read_csv(
    path: Path,
) -> tuple[list[str], dict[str, list[float]], dict[str, list[float]]]:
    csv.field_size_limit(2**31 - 1)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot read as a UTF-8 CSV ({error})") from None
    if header is None:
        raise ValueError(f"{path}: empty file (need a 'prompt' column and model columns)")
    header = [h.strip() for h in header]
    if "prompt" not in header:
        raise ValueError(f"{path}: no 'prompt' column (columns: {header})")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {number} has {len(row)} cells for {len(header)} columns")
    at = header.index("prompt")
    prompts = [row[at] for row in rows]
    scores: dict[str, list[float]] = {}
    costs: dict[str, list[float]] = {}
    for j, name in enumerate(header):
        if j == at or name.endswith("_response") or not name:
            continue
        values = [_cell(row[j]) for row in rows]
        if name.endswith(_COST) and len(name) > len(_COST):
            for number, (row, value) in enumerate(zip(rows, values, strict=True), start=2):
                if value is None or value < 0:
                    raise ValueError(f"{path}: row {number}, column {name!r}: {row[j]!r} is "
                                     "not a cost (a number of USD >= 0, or empty)")  # fmt: skip
            costs[name[: -len(_COST)]] = [v for v in values if v is not None]
            continue
        filled = [row[j] for row in rows if row[j].strip()]
        parsed = sum(1 for v in values if v is not None and not math.isnan(v))
        if not filled or parsed * 2 <= len(filled):
            continue  # a text column (answers, ids, notes): not a model
        for number, (row, value) in enumerate(zip(rows, values, strict=True), start=2):
            if value is None or value < 0:
                raise ValueError(
                    f"{path}: row {number}, column {name!r}: {row[j]!r} is not allowed "
                    f"(allowed: {_ALLOWED})"
                )
        scores[name] = [v for v in values if v is not None]
    if not scores:
        raise ValueError(
            f"{path}: no model columns (need a column of {_ALLOWED} besides 'prompt'; "
            f"'*_response' and text columns are ignored; columns: {header})"
        )
    unknown = sorted(set(costs) - set(scores))
    if unknown:
        raise ValueError(f"{path}: cost columns for no model column: "
                         f"{[m + _COST for m in unknown]}")  # fmt: skip
    return prompts, scores, costs


def load_labelled(path: str | Path) -> LabelledSet:
    """Read a RouteLLM-format CSV, or every ``*.csv`` of a directory (sorted by name).

    Columns: ``prompt`` (required); every other column whose cells are ``True``/``False``
    (any case) or numbers is a model's outcome; ``*_response`` columns and other text
    columns are ignored; a numeric ``<model>_cost`` column is that model's cost per prompt
    in USD (:attr:`LabelledSet.costs`), not a model. Booleans become 1/0. A numeric column
    whose maximum exceeds 1 is divided by that maximum (over all files read), so a 1-10
    judgement scores 1.0 at the best grade seen; a column within ``[0, 1]`` is kept as is.
    An empty cell is an unknown outcome (NaN). Files of a directory may have different model
    columns: a model missing from a file is NaN for its rows.

    Raises:
        ValueError: Naming the file (and the row and column, or what is missing): no
            such path, no CSV in a directory, no ``prompt`` column, no model column, or
            a cell that is neither boolean nor a number >= 0 in a model column.
    """
    source = Path(path)
    if source.is_dir():
        files = sorted(source.glob("*.csv"))
        if not files:
            raise ValueError(f"{source}: no *.csv files in this directory")
    elif source.is_file():
        files = [source]
    else:
        raise ValueError(f"{source}: no such file or directory")
    parts = []
    for file in files:
        prompts, scores, costs = _read_csv(file)
        parts.append(
            LabelledSet(
                prompts=tuple(prompts),
                outcomes={m: np.array(v, dtype=np.float64) for m, v in scores.items()},
                sources=(str(file),) * len(prompts),
                costs={m: np.array(v, dtype=np.float64) for m, v in costs.items()},
            )
        )
    merged = LabelledSet.concat(parts)
    outcomes = {}
    for model, values in merged.outcomes.items():
        top = float(np.nanmax(values)) if not np.isnan(values).all() else 0.0
        outcomes[model] = values / top if top > 1.0 else values
    return LabelledSet(merged.prompts, outcomes, merged.sources, 0, merged.costs)


def contaminated(path: str | Path) -> set[str]:
    """The ``eval_prompt`` of each line of a RouteLLM ``contaminated_prompts.jsonl``.

    Args:
        path: The ``.jsonl`` file, or a directory holding ``contaminated_prompts.jsonl``.

    Raises:
        ValueError: Missing file, a line that is not JSON or has no string
            ``eval_prompt`` (the message names the file and line).
    """
    source = Path(path)
    if source.is_dir():
        source = source / "contaminated_prompts.jsonl"
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: cannot read contaminated prompts ({error})") from None
    found: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: line {number} is not JSON ({error})") from None
        prompt = record.get("eval_prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str):
            raise ValueError(f"{source}: line {number} has no string 'eval_prompt'")
        found.add(prompt)
    return found


def split(
    labelled: LabelledSet, *, test_share: float = 0.3, seed: int = 0
) -> tuple[LabelledSet, LabelledSet]:
    """Split by distinct prompt into ``(train, test)``; rows keep their file order.

    Identical prompts are grouped first (MMLU repeats some questions), so a prompt is
    never on both sides. The distinct prompts, in order of first appearance, are
    shuffled with ``numpy.random.default_rng(seed).permutation``; the first
    ``round(test_share * distinct)`` of them form the test side, with all their rows.

    Raises:
        ValueError: ``test_share`` outside ``[0, 1]``.
    """
    if not 0.0 <= test_share <= 1.0:
        raise ValueError("test_share must lie in [0, 1]")
    distinct = list(dict.fromkeys(labelled.prompts))
    order = np.random.default_rng(seed).permutation(len(distinct))
    testing = {distinct[i] for i in order[: round(test_share * len(distinct))]}
    test_rows = [i for i, p in enumerate(labelled.prompts) if p in testing]
    train_rows = [i for i, p in enumerate(labelled.prompts) if p not in testing]
    return labelled.take(train_rows), labelled.take(test_rows)


def find_data(repo: str | Path | None = None) -> Path | None:
    """The shared data folder (holding ``routellm/``), or None when it is not there.

    ``TIERWISE_DATA`` names it when set; otherwise ``<repo>/../shared/data``, where the
    repository is the one this package lives in unless ``repo`` is given.
    """
    override = os.environ.get("TIERWISE_DATA")
    if override:
        candidate = Path(override)
    else:
        root = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
        candidate = root.parent / "shared" / "data"
    return candidate if (candidate / "routellm").is_dir() else None


def load_benchmark(name: str, data: str | Path) -> LabelledSet:
    """RouteLLM's ``gsm8k`` or ``mmlu`` set with its contaminated prompts removed.

    Args:
        name: A key of :data:`BENCHMARKS`.
        data: The shared data folder (see :func:`find_data`).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    responses, dirty = BENCHMARKS[name]
    base = Path(data) / "routellm"
    return load_labelled(base / responses).without(contaminated(base / dirty))
