"""Gold-labelled data sets for ``tierwise eval``: loaders, name resolution, sampling.

Each loader turns one public data set (see ``shared/data/README.md``) into an
:class:`EvalSet` of :class:`EvalItem` — the node's input state, the gold answer and an id
that is stable across runs (the file's row index or the data set's own id), because the
evidence store keys finished items by it and a rerun resumes from there.

* Banking77 / CLINC150 / any ``text,label`` CSV → ``classification`` (label = gold);
* SNIPS 2017 → ``parameter_extraction`` (gold = the slot spans as (slot, value) pairs; the
  node is given a schema whose optional fields are the intent's slot names);
* BFCL v4 → ``tool_use_formatting`` (gold = the accepted values of each argument).

Sampling is deterministic: :meth:`EvalSet.sample` is *stratified round-robin* — the
strata (label, intent, function) and the items within each are shuffled with the seed,
then one item per stratum is taken in turn — so a small sample covers many labels, and a
larger ``--limit`` extends a smaller one (the items already evaluated are reused when
resuming).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from tierwise.catalog.specs import TaskType

__all__ = [
    "DATA_ENV",
    "DataError",
    "EvalItem",
    "EvalSet",
    "data_root",
    "load_banking77",
    "load_bfcl",
    "load_clinc150",
    "load_csv",
    "load_snips",
    "resolve_data",
]

DATA_ENV: Final = "TIERWISE_DATA"
"""Environment variable naming the folder that holds the shared ``intent`` data sets."""

#: Short names accepted by ``--data`` (``name`` or ``name:split``).
SHORT_NAMES: Final = ("banking77", "clinc150", "snips", "bfcl")
#: CLINC150's out-of-scope label, renamed so that a model can tell what it means.
OUT_OF_SCOPE: Final = "out_of_scope"


class DataError(ValueError):
    """A data set that cannot be found or read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One gold-labelled example.

    Attributes:
        id: Stable within the data set (row index or the set's own id): resuming needs it.
        inputs: The node's input state (``instruction`` / ``task``).
        gold: The right answer, in the form :mod:`tierwise.evaluation.scoring` expects.
        stratum: The label / intent / function name, for stratified sampling.
        setup: What the node needs for this item beyond the state: SNIPS ``slots``
            (the schema's field names), BFCL ``tools`` (OpenAI tool dicts) and ``names``
            (tool name → the data set's function name).
    """

    id: str
    inputs: Mapping[str, Any]
    gold: Any
    stratum: str = ""
    setup: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvalSet:
    """A data set for one operation.

    Attributes:
        name: What the evidence store files the outcomes under (``banking77/test``); it
            names the experiment, so a restricted label set gets its own name.
        operation: The operation the set evaluates.
        items: The examples, in file order.
        labels: Classification: the label set offered to the model.
    """

    name: str
    operation: TaskType
    items: tuple[EvalItem, ...]
    labels: tuple[str, ...] = ()

    def __len__(self) -> int:
        """Number of items."""
        return len(self.items)

    def sample(self, limit: int | None, *, seed: int = 0) -> EvalSet:
        """At most ``limit`` items, stratified round-robin (see the module doc).

        Example:
            >>> items = [EvalItem(str(i), {}, "ab"[i % 2], "ab"[i % 2]) for i in range(10)]
            >>> sample = EvalSet("t", TaskType.CLASSIFICATION, tuple(items)).sample(4)
            >>> sorted(i.stratum for i in sample.items)
            ['a', 'a', 'b', 'b']
        """
        if limit is None or limit >= len(self.items):
            return self
        if limit < 0:
            raise DataError(f"--limit must be 0 or more, got {limit}")
        strata: dict[str, list[int]] = {}
        for index, item in enumerate(self.items):
            strata.setdefault(item.stratum, []).append(index)
        names = sorted(strata)
        random.Random(seed).shuffle(names)  # which strata come first, when N < their count
        queues = []
        for name in names:
            indexes = strata[name]
            random.Random(f"{seed}:{name}").shuffle(indexes)
            queues.append(indexes)
        chosen: list[int] = []
        depth = 0
        while len(chosen) < limit:
            chosen.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        keep = sorted(chosen[:limit])
        return replace(self, items=tuple(self.items[i] for i in keep))

    def with_labels(self, count: int | None, *, seed: int = 0) -> EvalSet:
        """Classification on ``count`` labels drawn with ``seed``, and their items only.

        Why: 77 or 151 labels make a long prompt that small local models handle badly
        (and that costs tokens on every call); a random subset keeps the task honest
        (the model still picks among several close labels) at a size every tier can
        take. The set's name records the subset, so its evidence is kept apart.
        """
        if count is None or not self.labels or count >= len(self.labels):
            return self
        if count < 2:
            raise DataError(f"--labels must be at least 2, got {count}")
        labels = sorted(self.labels)
        random.Random(seed).shuffle(labels)
        keep = tuple(sorted(labels[:count]))
        items = tuple(i for i in self.items if i.gold in keep)
        return replace(self, name=f"{self.name}@labels{count}-seed{seed}", items=items,
                       labels=keep)


# ----------------------------------------------------------------- where the data is


def data_root() -> Path:
    """``$TIERWISE_DATA``, else ``<repo>/../shared/data/intent`` (a checkout's layout)."""
    explicit = os.environ.get(DATA_ENV)
    if explicit:
        root = Path(explicit).expanduser()
        return root / "intent" if (root / "intent").is_dir() else root
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "intent"


def resolve_data(spec: str) -> EvalSet:
    """The data set ``--data`` names: a file, a folder, or ``name[:split]``.

    Short names: ``banking77`` (split ``test``/``train``), ``clinc150`` (``test``, ``val``,
    ``train``), ``snips`` (``validate``/``train``), ``bfcl`` (``simple_python``,
    ``live_simple``), found under :func:`data_root`.

    Raises:
        DataError: nothing readable at that name or path.
    """
    name, _, split = spec.partition(":")
    if name in SHORT_NAMES and not Path(spec).exists():
        root = data_root()
        if name == "banking77":
            return load_banking77(root / "banking77", split=split or "test")
        if name == "clinc150":
            return load_clinc150(root / "clinc150", split=split or "test")
        if name == "snips":
            return load_snips(root / "snips_2017", split=split or "validate")
        return load_bfcl(root / "bfcl_v4", category=split or "simple_python")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"no data set at {path} (short names: {', '.join(SHORT_NAMES)}, "
                        f"found under ${DATA_ENV} or {data_root()})")
    return _load_path(path)


def _load_path(path: Path) -> EvalSet:
    """Recognise a data set by its files."""
    if path.is_dir():
        if (path / "categories.json").is_file() or (path / "test.csv").is_file():
            return load_banking77(path)
        if (path / "data_full.json").is_file():
            return load_clinc150(path)
        if list(path.glob("BFCL_*.json")):
            return load_bfcl(path)
        if list(path.glob("validate_*.json")) or list(path.glob("*/validate_*.json")):
            return load_snips(path)
        raise DataError(f"{path}: not a data set folder tierwise knows (Banking77, CLINC150, "
                        "SNIPS, BFCL)")
    if path.suffix == ".csv":
        return load_csv(path)
    if path.name.startswith("BFCL_"):
        return load_bfcl(path)
    if path.name == "data_full.json" or path.parent.name == "clinc150":
        return load_clinc150(path)
    if path.suffix == ".json":
        return load_snips(path)
    raise DataError(f"{path}: unknown data set format (expected .csv or .json)")


# ----------------------------------------------------------------- classification


def load_csv(path: Path, *, name: str | None = None,
             labels: Sequence[str] | None = None) -> EvalSet:
    """A classification CSV with a text column and a label column (Banking77's layout).

    The columns are ``text`` and ``category`` or ``label``; the first two otherwise.
    Item ids are the data row's index (0 = the first row after the header).
    """
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(rows) < 2:
        raise DataError(f"{path}: no data rows")
    header = [h.strip().lower() for h in rows[0]]
    text_col = header.index("text") if "text" in header else 0
    label_col = next((header.index(h) for h in ("category", "label", "intent") if h in header),
                     1)  # fmt: skip
    items = []
    for index, row in enumerate(rows[1:]):
        if len(row) <= max(text_col, label_col):
            continue
        text, label = row[text_col].strip(), row[label_col].strip()
        if text and label:
            items.append(EvalItem(str(index), {"instruction": text}, label, label))
    found = tuple(labels) if labels else tuple(sorted({i.gold for i in items}))
    return EvalSet(name or path.stem, TaskType.CLASSIFICATION, tuple(items), found)


def load_banking77(path: Path, *, split: str = "test") -> EvalSet:
    """Banking77: ``<split>.csv`` and ``categories.json`` (the 77 labels)."""
    folder = path if path.is_dir() else path.parent
    file = path if path.is_file() else folder / f"{split}.csv"
    if not file.is_file():
        raise DataError(f"no Banking77 split {split!r} at {file}")
    labels = None
    categories = folder / "categories.json"
    if categories.is_file():
        labels = json.loads(categories.read_text(encoding="utf-8"))
    return load_csv(file, name=f"banking77/{file.stem}", labels=labels)


def load_clinc150(path: Path, *, split: str = "test", out_of_scope: bool = True) -> EvalSet:
    """CLINC150 (``data_full.json``): ``split`` plus, by default, its ``oos_`` split.

    The ``oos`` label becomes ``out_of_scope`` (a model cannot guess what "oos" means).
    Item ids are ``<split>:<index>`` and ``oos_<split>:<index>``.
    """
    file = path / "data_full.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read CLINC150 at {file}: {exc}") from exc
    splits = [split, f"oos_{split}"] if out_of_scope else [split]
    if split not in data:
        raise DataError(f"{file}: no split {split!r}; splits: {', '.join(sorted(data))}")
    items = []
    for part in splits:
        for index, (text, label) in enumerate(data.get(part, [])):
            gold = OUT_OF_SCOPE if label == "oos" else label
            items.append(EvalItem(f"{part}:{index}", {"instruction": text}, gold, gold))
    labels = tuple(sorted({i.gold for i in items}))
    return EvalSet(f"clinc150/{split}", TaskType.CLASSIFICATION, tuple(items), labels)


# ----------------------------------------------------------------- SNIPS slots


def _read_snips(file: Path) -> Mapping[str, Any]:
    """One SNIPS file; some are not UTF-8 (``PlayMusic`` train is latin-1)."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"cannot read SNIPS file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{file}: not a SNIPS file (expected an object keyed by intent)")
    return data


def _snips_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    pattern = "validate_*.json" if split == "validate" else f"{split}_*.json"
    files = sorted(path.glob(pattern)) or sorted(path.glob(f"*/{pattern}"))
    if not files:
        raise DataError(f"no SNIPS {split!r} files under {path}")
    return files


def load_snips(path: Path, *, split: str = "validate") -> EvalSet:
    """SNIPS 2017: a file, one intent's folder or the whole set (``validate`` by default).

    Gold is the utterance's (slot, value) pairs. Each intent's slot names (every slot
    that occurs in the loaded files) become the optional fields of the schema the node
    fills, so models are told which parameters exist. Ids: ``<Intent>/<file stem>:<i>``.
    """
    items: list[EvalItem] = []
    files = _snips_files(path, split)
    for file in files:
        for intent, utterances in _read_snips(file).items():
            parsed = [_snips_utterance(u) for u in utterances]
            slots = tuple(sorted({slot for _, pairs in parsed for slot, _ in pairs}))
            for index, (text, pairs) in enumerate(parsed):
                items.append(EvalItem(
                    f"{intent}/{file.stem}:{index}", {"task": text}, tuple(pairs), intent,
                    {"intent": intent, "slots": slots},
                ))  # fmt: skip
    label = split if len(files) > 1 or path.is_dir() else files[0].stem
    return EvalSet(f"snips/{label}", TaskType.PARAMETER_EXTRACTION, tuple(items))


def _snips_utterance(utterance: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    text, pairs = "", []
    for span in utterance.get("data", []):
        text += span["text"]
        if span.get("entity"):
            pairs.append((str(span["entity"]), span["text"].strip()))
    return " ".join(text.split()), pairs


# ----------------------------------------------------------------- BFCL tool calls

_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_TYPES: Final = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}


def _json_lines(file: Path) -> Iterator[Mapping[str, Any]]:
    try:
        with file.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc


def load_bfcl(path: Path, *, category: str = "simple_python") -> EvalSet:
    """BFCL v4: a ``BFCL_v4_<category>.json`` file and the ``possible_answer__`` file beside it.

    The functions become OpenAI tool dicts: BFCL's Python type names (``dict``,
    ``float``, ``tuple``, ``any``) are mapped to JSON Schema and dots in function names
    become underscores (providers reject dots, as BFCL's own OpenAI handler does);
    ``setup["names"]`` maps them back for scoring. Only single-turn items with one gold
    call are kept (the ``simple`` categories are all of that kind).
    """
    file = path if path.is_file() else path / f"BFCL_v4_{category}.json"
    answers = file.with_name(f"possible_answer__{file.name}")
    if not file.is_file():
        raise DataError(f"no BFCL category {category!r} at {file}")
    if not answers.is_file():
        raise DataError(f"no gold answers for {file.name}: expected {answers}")
    gold = {str(a["id"]): a["ground_truth"] for a in _json_lines(answers)}
    items = []
    for entry in _json_lines(file):
        ident = str(entry["id"])
        turns = entry.get("question") or []
        truth = gold.get(ident)
        if len(turns) != 1 or not truth or len(truth) != 1:
            continue
        task = "\n".join(str(m["content"]) for m in turns[0] if m.get("role") == "user")
        tools, names = _tools(entry.get("function") or [])
        stratum = next(iter(truth[0]))
        items.append(EvalItem(ident, {"task": task}, tuple(truth), stratum,
                              {"tools": tools, "names": names}))
    return EvalSet(f"bfcl_v4/{file.stem.removeprefix('BFCL_v4_')}",
                   TaskType.TOOL_USE_FORMATTING, tuple(items))


def _tools(functions: Iterable[Mapping[str, Any]]) -> tuple[tuple[dict[str, Any], ...],
                                                            dict[str, str]]:
    tools, names = [], {}
    for function in functions:
        name = _TOOL_NAME.sub("_", str(function["name"]))
        names[name] = str(function["name"])
        tools.append({"type": "function", "function": {
            "name": name,
            "description": str(function.get("description", ""))[:1024],
            "parameters": _schema(function.get("parameters") or {"type": "dict"}),
        }})  # fmt: skip
    return tuple(tools), names


def _schema(node: Any) -> Any:
    """BFCL's parameter schema as JSON Schema (its Python type names mapped)."""
    if isinstance(node, list):
        return [_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _schema(v) for k, v in node.items() if k != "optional"}
    kind = node.get("type")
    if isinstance(kind, str):
        out["type"] = _TYPES.get(kind, kind)
        if kind == "any":
            out.pop("type")
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}
    return out
