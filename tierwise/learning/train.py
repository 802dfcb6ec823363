"""Training the learned router and scoring it as RouteLLM does.

Two sources of labels, one model (:class:`~tierwise.learning.learned_router.LearnedRouter`):

* **labelled files** in RouteLLM's column format (a ``prompt`` column and one boolean or
  score column per model; :mod:`tierwise.learning.routellm`), with ``aliases`` mapping
  their model columns to catalog keys so the heads serve the catalog's models;
* **the ledger's own outcomes** (:meth:`~tierwise.ledger.evidence.EvidenceStore.training_rows`):
  the hashed features of each judged call's prompt with the verdicts on its answer —
  evals, judges' scores, escalations — so the router improves with usage.

``train_standard`` is the fixed, documented split the benchmark and README quote: each
of GSM8K and MMLU separately, RouteLLM's contaminated prompts removed, deduplicated by
prompt, shuffled with ``numpy.random.default_rng(seed)`` (seed 0), 30 % held out; one
router trained on both training parts together.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.learning.frontier import Frontier, score_models
from tierwise.learning.learned_router import LearnedRouter
from tierwise.learning.metrics import RoutingQuality, evaluate, oracle_scores, random_quality
from tierwise.learning.routellm import LabelledSet, find_data, load_benchmark, load_labelled, split
from tierwise.learning.semantic import Embedder
from tierwise.ledger.evidence import EvidenceStore

__all__ = [
    "SETS",
    "HoldoutError",
    "Trained",
    "router_scores",
    "score_file",
    "predictions",
    "score_models_of",
    "score_set",
    "train_from_sources",
    "train_standard",
]

FloatArray = npt.NDArray[np.float64]
SETS = ("gsm8k", "mmlu")


class HoldoutError(ValueError):
    """``score_file``'s ``holdout`` cannot be used: given with a router, or one side empty."""

RANDOM_SEEDS = 20


@dataclass
class Trained:
    """A router trained on the standard split, with the parts it was trained and tested on."""

    router: LearnedRouter
    seconds: float
    cpu_seconds: float
    train: dict[str, LabelledSet]
    test: dict[str, LabelledSet]
    full: dict[str, LabelledSet]


def train_standard(
    data: Path,
    *,
    seed: int = 0,
    test_share: float = 0.3,
    semantic: bool | None = None,
    embedder: Embedder | None = None,
) -> Trained:
    """The combined router on the GSM8K + MMLU training parts of the standard split.

    Timed in wall seconds and in this process's CPU seconds (on a shared machine the wall
    time measures the other load as much as the training).

    ``semantic``, ``embedder``: as :class:`LearnedRouter` (default: the shipped table when
    the ``semantic`` extra is installed).
    """
    full = {name: load_benchmark(name, data) for name in SETS}
    parts = {name: split(full[name], test_share=test_share, seed=seed) for name in SETS}
    train = {name: parts[name][0] for name in SETS}
    test = {name: parts[name][1] for name in SETS}
    both = LabelledSet.concat([train[name] for name in SETS])
    start, cpu = time.perf_counter(), time.process_time()
    router = LearnedRouter(seed=seed, semantic=semantic, embedder=embedder)
    router.fit(both.prompts, both.outcomes)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return Trained(router, seconds, cpu_seconds, train, test, full)


def predictions(router: LearnedRouter, prompts: Any, keys: Sequence[str]) -> FloatArray:
    """``(n, len(keys))`` p(good) per prompt and model (models without a head: their prior)."""
    probabilities = router.predict_many(list(prompts))
    index = {key: j for j, key in enumerate(router.keys)}
    columns = [
        probabilities[:, index[key]] if key in index
        else np.full(len(probabilities), router.prior(key))
        for key in keys
    ]  # fmt: skip
    return np.stack(columns, axis=1) if columns else np.zeros((len(probabilities), 0))


def router_scores(
    router: LearnedRouter, prompts: Any, weak: str, strong: str, *, guard: bool = True
) -> FloatArray:
    """``p(strong good) - p(weak good)`` per prompt (models without a head: their prior).

    With ``guard``, an unfamiliar prompt's score is shrunk toward the priors' gap by its
    :meth:`~LearnedRouter.trust` (as :meth:`~LearnedRouter.decide` shrinks its gain): at
    trust 0 every such prompt would score the priors' gap, move to the strong model
    together in the threshold sweep and so be routed as random routing does (the chain's
    order mixed at the sweep's share); above 0 the router's own ranking of them is kept.
    """
    prompts = list(prompts)
    p = predictions(router, prompts, [weak, strong])
    scores = p[:, 1] - p[:, 0]
    if guard and prompts:
        neutral = router.prior(strong) - router.prior(weak)
        scores = neutral + router.trust(prompts) * (scores - neutral)
    return scores


def _figures(quality: RoutingQuality) -> dict[str, float]:
    return {"apgr": quality.apgr, "cpt50": quality.cpt50, "cpt80": quality.cpt80}


def score_set(
    labelled: LabelledSet,
    router: LearnedRouter,
    *,
    strong: str | None = None,
    weak: str | None = None,
) -> dict[str, Any]:
    """RouteLLM's figures of ``router``, random and oracle routing on one labelled set."""
    weak, strong = labelled.pair(strong=strong, weak=weak)
    w, s = labelled.outcomes[weak], labelled.outcomes[strong]
    known = ~(np.isnan(w) | np.isnan(s))
    subset = labelled.take(np.flatnonzero(known))
    w, s = w[known], s[known]
    learned = evaluate(router_scores(router, subset.prompts, weak, strong), w, s)
    unguarded = evaluate(router_scores(router, subset.prompts, weak, strong, guard=False), w, s)
    return {
        "rows": len(subset),
        "guarded": int(len(subset) - router.familiar(list(subset.prompts)).sum()),
        "unguarded": _figures(unguarded),
        "weak": weak,
        "strong": strong,
        "weak_quality": learned.weak_quality,
        "strong_quality": learned.strong_quality,
        "learned": _figures(learned),
        "random": _figures(random_quality(w, s, seeds=RANDOM_SEEDS)),
        "oracle": _figures(evaluate(oracle_scores(w, s), w, s)),
    }


def score_models_of(
    labelled: LabelledSet, router: LearnedRouter, costs: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Cost-aware multi-model figures of ``router`` on the models that have a cost.

    A model's cost per prompt is its ``<model>_cost`` column, else ``costs[model]``
    (USD per call; it wins over the column when both are given). Prompts missing an
    outcome or a cost of one of those models are left out.

    Raises:
        ValueError: Fewer than two models with a cost.
    """
    given = dict(costs or {})
    unknown = sorted(set(given) - set(labelled.models))
    if unknown:
        raise ValueError(f"--cost names no model column: {unknown}; "
                         f"columns: {list(labelled.models)}")  # fmt: skip
    n = len(labelled)
    price = {m: np.full(n, given[m]) if m in given else labelled.costs[m]
             for m in labelled.models if m in given or m in labelled.costs}  # fmt: skip
    names = list(price)
    if len(names) < 2:
        raise ValueError(f"cost-aware scoring needs a cost for two or more models (have "
                         f"{names}); give <model>_cost columns or --cost MODEL=USD")  # fmt: skip
    known = np.ones(n, dtype=bool)
    for m in names:
        known &= ~np.isnan(labelled.outcomes[m]) & ~np.isnan(price[m])
    rows = np.flatnonzero(known)
    subset = labelled.take(rows)
    result = score_models(
        predictions(router, subset.prompts, names),
        {m: subset.outcomes[m] for m in names},
        {m: price[m][rows] for m in names},
    )

    def curve(f: Frontier) -> dict[str, Any]:
        return {"aiq": f.aiq, "frontier": [list(v) for v in f.hull],
                "points": [list(p) for p in f.points]}  # fmt: skip

    return {
        "rows": result.rows,
        "models": {m: {"cost": c, "quality": q} for m, (c, q) in result.models.items()},
        "cost_range": list(result.cost_range),
        "learned": curve(result.router),
        "random": curve(result.random),
        "oracle": curve(result.oracle),
    }


def score_file(
    path: str | Path,
    router: LearnedRouter | str | Path | None = None,
    *,
    data: str | Path | None = None,
    seed: int = 0,
    strong: str | None = None,
    weak: str | None = None,
    aliases: Mapping[str, str] | None = None,
    costs: Mapping[str, float] | None = None,
    holdout: float | None = None,
) -> dict[str, Any]:
    """Score a RouteLLM-format CSV (or folder of CSVs) with a learned router.

    Two models (or ``strong`` and ``weak`` named) get RouteLLM's figures; models with a
    cost (``<model>_cost`` columns or ``costs``) get the cost-quality frontier and AIQ
    (:func:`score_models_of`); a file may get both.

    Args:
        path: The file or folder (``tierwise.learning.routellm.load_labelled``).
        router: A trained router, the path of a saved one, or None to train one: on
            ``holdout``'s training part of the file itself, else on the standard GSM8K +
            MMLU training split (needs the shared data; it has heads for RouteLLM's two
            models only).
        data: The shared data folder when training (default: ``find_data()``).
        seed: Split seed when training.
        strong: The strong model column (default: the higher mean of two columns).
        weak: The weak model column.
        aliases: Column name -> the router's model key (as given to training).
        costs: Model column (before aliases) -> USD per call.
        holdout: Share of the file's distinct prompts held out (:func:`split` with
            ``seed``): a router is trained on the rest of the file and scored on them.

    Returns:
        ``file``; ``pair``: None, or ``rows``, ``weak``, ``strong``, ``weak_quality``,
        ``strong_quality``, ``guarded`` (prompts the guard turned away),
        ``learned``/``unguarded``/``random``/``oracle`` (each ``{"apgr", "cpt50",
        "cpt80"}``); ``multi``: None or :func:`score_models_of`'s figures;
        ``seen_in_training`` (prompts of the file the router was trained on when it was
        trained here; None for a given router, whose training prompts are unknown),
        ``train_seconds`` (0.0 for a given router), ``trained_on`` (prompts of the file
        trained on, with ``holdout``) and ``without_head`` (scored models the router has
        no head for: it routes them on a prior alone).

    Raises:
        HoldoutError: ``holdout`` with a router, or a share leaving one side empty.
        ValueError: An unreadable file or router, or no data to train on.
    """
    labelled = load_labelled(path)
    costs = dict(costs or {})
    if aliases:  # the file's model columns under the names the router's heads carry
        names = dict(aliases)
        labelled = dataclasses.replace(
            labelled,
            outcomes={names.get(k, k): v for k, v in labelled.outcomes.items()},
            costs={names.get(k, k): v for k, v in labelled.costs.items()},
        )
        costs = {names.get(k, k): v for k, v in costs.items()}
        strong = names.get(strong, strong) if strong else None
        weak = names.get(weak, weak) if weak else None
    two = len(labelled.models) == 2 or (strong is not None and weak is not None)
    if not two and not costs and not labelled.costs:
        labelled.pair(strong=strong, weak=weak)  # raises: which models to compare
    seen: int | None = None
    seconds, trained_on = 0.0, 0
    if holdout is not None:
        if router is not None:
            raise HoldoutError("--holdout trains its own router: leave out --router")
        own, labelled = split(labelled, test_share=holdout, seed=seed)
        if not len(own) or not len(labelled):
            raise HoldoutError(f"--holdout {holdout} leaves no prompts on one side "
                             f"of {len(own) + len(labelled)}")  # fmt: skip
        started = time.perf_counter()
        model = LearnedRouter(seed=seed).fit(own.prompts, own.outcomes)
        seconds, trained_on, seen = time.perf_counter() - started, len(own), 0
    elif router is None:
        root = Path(data) if data is not None else find_data()
        if root is None:
            raise ValueError("no router given and no shared data to train one (TIERWISE_DATA)")
        trained = train_standard(root, seed=seed)
        model, seconds = trained.router, trained.seconds
        training = {p for part in trained.train.values() for p in part.prompts}
        seen = sum(1 for p in labelled.prompts if p in training)
    elif isinstance(router, LearnedRouter):
        model = router
    else:
        model = LearnedRouter.load(router)
    pair = score_set(labelled, model, strong=strong, weak=weak) if two else None
    multi = score_models_of(labelled, model, costs) if costs or labelled.costs else None
    pairs = [pair["weak"], pair["strong"]] if pair else []
    scored = dict.fromkeys([*pairs, *(multi["models"] if multi else [])])
    return {"file": str(path), "pair": pair, "multi": multi, "seen_in_training": seen,
            "train_seconds": seconds, "trained_on": trained_on,
            "without_head": [m for m in scored if m not in model.keys]}  # fmt: skip


def train_from_sources(
    files: Sequence[LabelledSet] = (),
    *,
    evidence: EvidenceStore | None = None,
    aliases: Mapping[str, str] | None = None,
    since: float | None = None,
    base: LearnedRouter | None = None,
    seed: int = 0,
) -> tuple[LearnedRouter, int]:
    """Train on labelled files and the ledger's outcomes; returns the router and its rows.

    Args:
        files: Labelled sets (RouteLLM format); their model columns are renamed by
            ``aliases`` (column -> catalog key), unnamed ones kept as they are.
        evidence: The ledger's evidence store: every judged call with kept features.
        aliases: Column name -> catalog key.
        since: Only ledger outcomes from this time on (incremental retraining).
        base: Continue training this router (``partial_fit``: IDF frozen, new models get a
            head) instead of fitting a new one.
        seed: The new router's seed.

    Raises:
        ValueError: Nothing to train on.
    """
    names = dict(aliases or {})
    prompts: list[str | npt.NDArray[np.int64]] = []
    columns: dict[str, list[float]] = {}

    def add(prompt: str | npt.NDArray[np.int64], scores: Mapping[str, float]) -> None:
        for key, column in columns.items():
            column.append(scores.get(key, math.nan))
        for key, score in scores.items():
            if key not in columns:
                columns[key] = [math.nan] * len(prompts) + [score]
        prompts.append(prompt)

    for labelled in files:
        renamed = {names.get(k, k): v for k, v in labelled.outcomes.items()}
        for row, prompt in enumerate(labelled.prompts):
            add(prompt, {k: float(v[row]) for k, v in renamed.items() if not np.isnan(v[row])})
    if evidence is not None:
        for found in evidence.training_rows(since=since):
            add(np.asarray(found.ids, dtype=np.int64), {found.model: found.score})
    if not prompts:
        raise ValueError("nothing to train on: no labelled file rows and no judged calls "
                         "with kept features in the ledger")  # fmt: skip
    if base is not None:
        return base.partial_fit(prompts, columns), len(prompts)
    return LearnedRouter(seed=seed).fit(prompts, columns), len(prompts)
