"""A CPU-only learned router: per-model logistic heads on n-gram and semantic features.

The model predicts, for a prompt, each model's probability of a good answer; a routing
decision takes the candidate with the best ``p(good) - lam * cost`` — unless the guard
says the router knows too little about this prompt, when the policy's chain order is kept
(:meth:`LearnedRouter.decide`). Only numpy is used: the features are in
:mod:`tierwise.learning.features`, persistence in :mod:`tierwise.learning.router_file`.

Columns of a row: the TF-IDF hashed n-grams and two length columns; with the semantic
extra, the prompt's unit vector (:mod:`tierwise.learning.semantic`, times
``semantic_weight``) and a one-hot of its nearest training cluster (k-means on the
training prompts' vectors), so a head can learn that one region of meaning is hard for a
model although no word of it was seen in training.

Why this model: on RouteLLM's GSM8K and MMLU data (``benchmarks/routing_quality.py``) a
linear model on character n-grams picks up the subject and the kind of question, which
is what predicts whether the cheaper model fails; it trains in seconds on two CPUs. The
semantic columns carry that knowledge to wordings the n-grams never saw. One logistic
head per model (trained jointly, full batch, with Adam and an L2 penalty) keeps any
number of models and lets a head be missing for a model without routing data.

The guard: n-gram *coverage* (share of the prompt's distinct n-gram ids seen in training)
and semantic *similarity* (cosine to the nearest training cluster) are compared with
floors set at :data:`GUARD_QUANTILE` of prompts held out of training; a prompt below
either floor is "unlike anything the router was trained on". Its *trust*
(:meth:`LearnedRouter.trust`) falls with how far below the floors it is, and what the
router's pick gains over the chain's first candidate is scaled by that trust: under
``margin`` the chain order is kept. A familiar prompt whose best pick gains less than
``margin`` is "not confident" and keeps the chain order too.

Why shrink rather than turn them all away: on RouteLLM's leave-one-out splits the heads
still rank unfamiliar prompts better than random, and turning them away cost up to 0.05 APGR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from tierwise.learning import calibration as share_calibration
from tierwise.learning import router_file
from tierwise.learning.features import (
    DEFAULT_BUCKETS,
    LENGTH_BINS,
    LENGTH_L2_SCALE,
    BoolArray,
    FloatArray,
    IntArray,
    Prompt,
    SparseRows,
    append_columns,
    count_rows,
    feature_ids,
    length_columns,
    semantic_vector,
    spherical_kmeans,
    split_ids,
    tfidf,
)
from tierwise.learning.semantic import Embedder, StaticEmbedder

__all__ = [
    "DEFAULT_BUCKETS",
    "GUARD_QUANTILE",
    "Decision",
    "LearnedRouter",
    "SparseRows",
    "feature_ids",
]

UNKNOWN_PRIOR = 0.5
"""p(good) of a candidate with neither a trained head nor a known training-set mean."""

GUARD_QUANTILE = 0.02
"""Share of held-out in-distribution prompts the novelty guard may call unfamiliar."""

NOVELTY_SCALE = 0.05
"""Deficit below the guard's floors (coverage plus cosine) that halves the trust (a priori)."""

_CALIBRATION_ROWS = 2000


@dataclass(frozen=True, slots=True)
class Decision:
    """A routing decision and why.

    Attributes:
        choice: The model key that should lead the chain.
        learned: False when the guard kept the chain's first candidate.
        why: One line for the steering reason.
    """

    choice: str
    learned: bool
    why: str


def _sigmoid(z: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class LearnedRouter:
    """Per-model probability of a good answer from a prompt, and the routing decision.

    Heads are trained jointly, full batch, with Adam and an L2 penalty (full batch because
    a numpy epoch over the whole split is cheap, and Adam because it needs no step-size
    tuning per data set). An outcome may be NaN (that model was not tried on that prompt):
    it is left out of that model's loss only.

    The defaults (``l2`` 3e-4, step 0.1, 25 steps) were chosen on validation slices carved
    from the RouteLLM GSM8K + MMLU training parts (the held-out test parts never used).

    Args:
        buckets: Hash space of the n-gram features.
        l2: L2 penalty on the weights (per unit of mean loss).
        epochs: Full-batch Adam steps of :meth:`fit`.
        learning_rate: Adam step size.
        seed: Seed of the calibration sample and the clusters drawn by :meth:`fit`.
        semantic: Use the semantic features (None: when the ``semantic`` extra is installed).
        clusters: Number of k-means clusters of the semantic vectors.
        semantic_weight: Scale of the semantic vector's columns.
        margin: The least gain in ``p(good) - lam * cost`` for which :meth:`decide` moves
            another candidate before the chain's first (when ``lam > 0``).
        embedder: The sentence embedding (default: the shipped table); not saved by
            :meth:`save`, so a router loaded from a file reads the shipped table.

    Example:
        >>> texts = ["add two numbers", "prove the theorem"] * 20
        >>> router = LearnedRouter(epochs=60, semantic=False).fit(
        ...     texts, {"small": [1.0, 0.0] * 20, "large": [1.0, 1.0] * 20}
        ... )
        >>> router.choose("add numbers", [("small", 0.0), ("large", 0.01)], lam=10.0)
        'small'
        >>> router.choose("prove a theorem", [("small", 0.0), ("large", 0.01)], lam=10.0)
        'large'
    """

    def __init__(
        self,
        *,
        buckets: int = DEFAULT_BUCKETS,
        l2: float = 3e-4,
        epochs: int = 25,
        learning_rate: float = 0.1,
        seed: int = 0,
        semantic: bool | None = None,
        clusters: int = 32,
        semantic_weight: float = 1.0,
        margin: float = 0.02,
        embedder: Embedder | None = None,
    ) -> None:
        """Create an untrained router (see the class docstring for the arguments)."""
        if buckets < 2:
            raise ValueError("buckets must be at least 2")
        self.buckets = buckets
        self.l2 = l2
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed
        self.clusters = clusters
        self.semantic_weight = semantic_weight
        self.margin = margin
        if embedder is None and semantic is not False:
            embedder = StaticEmbedder.default()
        if semantic and embedder is None:
            raise ValueError("semantic features need the `tokenizers` package "
                             "(pip install 'tierwise[semantic]')")  # fmt: skip
        self.embedder = embedder if semantic is not False else None
        self.dimensions = self.embedder.dimensions if self.embedder is not None else 0
        self.keys: tuple[str, ...] = ()
        self.priors: dict[str, float] = {}
        self.idf: FloatArray = np.ones(buckets)
        self.seen: BoolArray = np.zeros(buckets, dtype=bool)
        self.centroids: FloatArray = np.zeros((0, self.dimensions))
        self.weights: FloatArray = np.zeros((self.width, 0))
        self.bias: FloatArray = np.zeros(0)
        self.calibration: FloatArray = np.zeros((0, 0))
        self.coverage_floor = 0.0
        self.similarity_floor = -1.0
        self.trained_rows = 0

    @property
    def semantic(self) -> bool:
        """Whether the router reads the semantic vector (else n-gram features only)."""
        return self.dimensions > 0

    @property
    def width(self) -> int:
        """Number of columns: hashed buckets, length, semantic vector, clusters."""
        return self.buckets + LENGTH_BINS + self.dimensions + len(self.centroids)

    # ------------------------------------------------------------------ features
    def ids(self, prompt: Prompt) -> IntArray:
        """The feature ids of a prompt (text is featurised; an id array is checked and kept)."""
        if isinstance(prompt, str):
            return feature_ids(
                prompt, buckets=self.buckets, semantic=self.semantic, embedder=self.embedder
            )
        ids = np.asarray(prompt, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("a prompt's feature ids must be a 1-d array")
        return ids

    def _parts(self, prompts: Sequence[Prompt]) -> tuple[SparseRows, FloatArray, BoolArray]:
        """Hashed id counts, semantic vectors and which rows have one."""
        hashed, vectors = [], np.zeros((len(prompts), self.dimensions))
        has = np.zeros(len(prompts), dtype=bool)
        for i, prompt in enumerate(prompts):
            grams, semantic = split_ids(self.ids(prompt))
            hashed.append(grams)
            if self.dimensions and semantic.size:
                vector = semantic_vector(semantic, self.dimensions)
                if vector is not None:
                    vectors[i], has[i] = vector, True
        return count_rows(hashed, self.buckets), vectors, has

    def _design(self, counts: SparseRows, vectors: FloatArray, has: BoolArray) -> SparseRows:
        rows = tfidf(counts, self.idf)
        if not self.dimensions:
            return rows
        n = counts.n_rows
        columns = np.tile(np.arange(self.dimensions, dtype=np.int64), (n, 1))
        rows = append_columns(rows, columns, vectors * self.semantic_weight, self.dimensions)
        k = len(self.centroids)
        if k:
            nearest = np.argmax(vectors @ self.centroids.T, axis=1)[:, None]
            rows = append_columns(rows, nearest, has[:, None].astype(np.float64), k)
        return rows

    def _rows(self, prompts: Sequence[Prompt]) -> SparseRows:
        return self._design(*self._parts(prompts))

    # ------------------------------------------------------------------ the guard
    def _coverage(self, counts: SparseRows, seen: BoolArray) -> FloatArray:
        rows = counts.row_ids()
        total = np.bincount(rows, minlength=counts.n_rows)
        known = np.bincount(rows, weights=seen[counts.indices], minlength=counts.n_rows)
        return np.where(total > 0, known / np.maximum(total, 1), 0.0)

    def _similarity(self, vectors: FloatArray, has: BoolArray) -> FloatArray:
        if not len(self.centroids):
            return np.full(len(vectors), np.nan)
        best = (vectors @ self.centroids.T).max(axis=1)
        return np.where(has, best, np.nan)

    def familiarity(self, prompts: Sequence[Prompt]) -> tuple[FloatArray, FloatArray]:
        """``(coverage, similarity)`` per prompt (similarity NaN without a semantic vector)."""
        self._require_trained()
        counts, vectors, has = self._parts(prompts)
        return self._coverage(counts, self.seen), self._similarity(vectors, has)

    def _trust(self, coverage: FloatArray, similarity: FloatArray) -> FloatArray:
        deficit = np.maximum(self.coverage_floor - coverage, 0.0)
        deficit += np.nan_to_num(np.maximum(self.similarity_floor - similarity, 0.0))
        return 1.0 / (1.0 + deficit / NOVELTY_SCALE)

    def trust(self, prompts: Sequence[Prompt]) -> FloatArray:
        """Per prompt ``1 / (1 + deficit / NOVELTY_SCALE)``: 1 when familiar, less below the floors.

        The deficit is how far coverage and similarity fall below the guard's floors.
        """
        return self._trust(*self.familiarity(prompts))

    def familiar(self, prompts: Sequence[Prompt]) -> BoolArray:
        """Which prompts pass the novelty guard (trust 1; see the module docstring)."""
        return self.trust(prompts) >= 1.0

    def _novelty(self, ids: IntArray) -> tuple[str, float]:
        """Why a prompt fails the guard (``""`` when it passes) and its trust."""
        coverage, similarity = self.familiarity([ids])
        trust = float(self._trust(coverage, similarity)[0])
        if coverage[0] < self.coverage_floor:
            return (f"{coverage[0]:.0%} of its n-grams seen in training, "
                    f"floor {self.coverage_floor:.0%}"), trust  # fmt: skip
        if not np.isnan(similarity[0]) and similarity[0] < self.similarity_floor:
            return (f"similarity {similarity[0]:.2f} to the nearest training cluster, "
                    f"floor {self.similarity_floor:.2f}"), trust  # fmt: skip
        return "", trust

    # ------------------------------------------------------------------ training
    def fit(
        self,
        prompts: Sequence[Prompt],
        outcomes: Mapping[str, Sequence[float] | FloatArray],
        *,
        calibrate: bool = True,
    ) -> Self:
        """Learn the IDF, the clusters, the guard's floors and one head per model from scratch.

        Args:
            prompts: Texts, or :func:`feature_ids` arrays (a ledger's stored rows).
            outcomes: Per model key, one value per prompt in ``[0, 1]`` (1 = a good
                answer) or NaN (unknown: left out of that model's loss).
            calibrate: Hold out a sample of up to 2,000 rows (at most 10 %) for a model
                trained the same way on the other rows: its out-of-sample predictions
                serve :meth:`lam_for_share`, and its coverage and similarity set the
                guard's floors; then the final model is trained on all rows (so training
                costs about twice as much). Without it the sample is predicted by the
                final model (in-sample, overconfident) and the guard is off.

        Returns:
            The router itself.

        Raises:
            ValueError: No prompts, no models, an outcome list of the wrong length or a
                value outside ``[0, 1]``.
        """
        keys, targets = self._targets(outcomes, len(prompts))
        counts, vectors, has = self._parts(prompts)
        document_frequency = np.bincount(counts.indices, minlength=self.buckets)
        self.idf = np.log((1.0 + counts.n_rows) / (1.0 + document_frequency)) + 1.0
        self.seen = document_frequency > 0
        self.keys = keys
        means = np.nanmean(targets, axis=0)
        self.priors = {k: float(m) for k, m in zip(keys, means, strict=True) if not np.isnan(m)}
        rng = np.random.default_rng(self.seed)
        self.centroids = self._kmeans(vectors[has], rng)
        rows = self._design(counts, vectors, has)
        sample = min(_CALIBRATION_ROWS, rows.n_rows // 10)
        self.coverage_floor, self.similarity_floor = 0.0, -1.0
        if calibrate and sample >= 10:
            held = np.sort(rng.choice(rows.n_rows, size=sample, replace=False))
            kept = np.setdiff1d(np.arange(rows.n_rows), held)
            self._reset(len(keys))
            self._train(rows.take(kept), targets[kept], self.epochs)
            self.calibration = self._probabilities(rows.take(held))
            kept_counts = counts.take(kept)
            seen_kept = np.bincount(kept_counts.indices, minlength=self.buckets) > 0
            coverage = self._coverage(counts.take(held), seen_kept)
            self.coverage_floor = float(np.quantile(coverage, GUARD_QUANTILE))
            similarity = self._similarity(vectors[held], has[held])
            if not np.isnan(similarity).all():
                self.similarity_floor = float(np.nanquantile(similarity, GUARD_QUANTILE))
        self._reset(len(keys))
        self._train(rows, targets, self.epochs)
        if not (calibrate and sample >= 10):
            take = rng.choice(rows.n_rows, size=min(_CALIBRATION_ROWS, rows.n_rows), replace=False)
            self.calibration = self._probabilities(rows.take(np.sort(take)))
        self.trained_rows = rows.n_rows
        return self

    def _kmeans(self, vectors: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Clusters of the training vectors (none without enough of them)."""
        k = min(self.clusters, len(vectors) // 20)
        if not self.dimensions or k < 2:
            return np.zeros((0, self.dimensions))
        return spherical_kmeans(vectors, k, rng)

    def partial_fit(
        self,
        prompts: Sequence[Prompt],
        outcomes: Mapping[str, Sequence[float] | FloatArray],
        *,
        epochs: int | None = None,
    ) -> Self:
        """Continue training on new rows: IDF, clusters, floors frozen; weights warm-started.

        Incremental retraining from usage: a model key not seen before gets a new head
        (zero weights, bias at its mean outcome). The calibration sample is kept; the new
        rows' n-grams count as seen from now on.

        Args:
            prompts: Texts or feature-id arrays.
            outcomes: As for :meth:`fit`.
            epochs: Adam steps (default: a quarter of ``epochs``, at least 5).

        Returns:
            The router itself.
        """
        if not self.keys:
            return self.fit(prompts, outcomes)
        new_keys, new_targets = self._targets(outcomes, len(prompts))
        for key in new_keys:
            if key not in self.keys:
                self.keys = (*self.keys, key)
                self.weights = np.hstack([self.weights, np.zeros((len(self.weights), 1))])
                self.bias = np.append(self.bias, 0.0)
                self.calibration = np.hstack(
                    [self.calibration, np.full((len(self.calibration), 1), np.nan)]
                )
        targets = np.full((len(prompts), len(self.keys)), np.nan)
        for j, key in enumerate(new_keys):
            targets[:, self.keys.index(key)] = new_targets[:, j]
        for j, key in enumerate(self.keys):
            known = targets[:, j][~np.isnan(targets[:, j])]
            if key not in self.priors and known.size:
                self.priors[key] = float(known.mean())
                self.bias[j] = _logit(self.priors[key])
        counts, vectors, has = self._parts(prompts)
        self.seen[counts.indices] = True
        steps = max(5, self.epochs // 4) if epochs is None else epochs
        self._train(self._design(counts, vectors, has), targets, steps)
        self.trained_rows += counts.n_rows
        return self

    def calibrate(self, prompts: Sequence[Prompt]) -> Self:
        """Replace the calibration sample by these prompts' predicted vectors.

        Recent real traffic (a ledger's feature rows) makes :meth:`lam_for_share` match it.
        """
        self.calibration = self.predict_many(prompts)
        return self

    def _targets(
        self, outcomes: Mapping[str, Sequence[float] | FloatArray], n: int
    ) -> tuple[tuple[str, ...], FloatArray]:
        if n == 0:
            raise ValueError("no prompts to train on")
        if not outcomes:
            raise ValueError("no model outcomes to train on")
        keys = tuple(outcomes)
        targets = np.empty((n, len(keys)))
        for j, key in enumerate(keys):
            column = np.asarray(outcomes[key], dtype=np.float64)
            if column.shape != (n,):
                raise ValueError(f"outcomes[{key!r}] has {column.size} values for {n} prompts")
            known = column[~np.isnan(column)]
            if known.size and (known.min() < 0.0 or known.max() > 1.0):
                raise ValueError(f"outcomes[{key!r}] must lie in [0, 1] (or be NaN)")
            targets[:, j] = column
        return keys, targets

    def _reset(self, k: int) -> None:
        self.weights = np.zeros((self.width, k))
        means = [self.priors.get(key, UNKNOWN_PRIOR) for key in self.keys]
        self.bias = np.array([_logit(m) for m in means])

    def _train(self, rows: SparseRows, targets: FloatArray, steps: int) -> None:
        """Full-batch Adam on mean log-loss per model + ``l2/2 * |w|^2``."""
        known = ~np.isnan(targets)
        y = np.where(known, targets, 0.0)
        per_model = np.maximum(known.sum(axis=0), 1)
        row_of = rows.row_ids()
        touched = np.zeros(len(self.weights), dtype=bool)
        touched[rows.indices] = True
        cols = np.flatnonzero(touched)
        w = self.weights[cols]
        b = self.bias.copy()
        # the dense columns (length, semantic, clusters) are few: a light penalty lets
        # them carry what they know
        penalty = np.where(cols >= self.buckets, self.l2 * LENGTH_L2_SCALE, self.l2)[:, None]
        m_w, v_w = np.zeros_like(w), np.zeros_like(w)
        m_b, v_b = np.zeros_like(b), np.zeros_like(b)
        # the rows restricted to the touched columns, so each step is O(nnz + touched)
        local = SparseRows(rows.indptr, np.searchsorted(cols, rows.indices), rows.data, len(cols))
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(1, steps + 1):
            p = _sigmoid(local.dot(w, row_of) + b)
            residual = np.where(known, p - y, 0.0) / per_model
            g_w = local.tdot(residual, row_of) + penalty * w
            g_b = residual.sum(axis=0)
            m_w = beta1 * m_w + (1 - beta1) * g_w
            v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
            m_b = beta1 * m_b + (1 - beta1) * g_b
            v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
            scale = self.learning_rate * math.sqrt(1 - beta2**step) / (1 - beta1**step)
            w -= scale * m_w / (np.sqrt(v_w) + eps)
            b -= scale * m_b / (np.sqrt(v_b) + eps)
        self.weights[cols] = w
        self.bias = b

    # ------------------------------------------------------------------ prediction
    def _probabilities(self, rows: SparseRows) -> FloatArray:
        return _sigmoid(rows.dot(self.weights) + self.bias)

    def predict_many(self, prompts: Sequence[Prompt]) -> FloatArray:
        """p(good answer) of every trained model for each prompt: ``(n, len(keys))``.

        Columns follow :attr:`keys`.
        """
        self._require_trained()
        if not prompts:
            return np.zeros((0, len(self.keys)))
        return self._probabilities(self._rows(prompts))

    def _vector(self, ids: IntArray) -> FloatArray:
        grams, semantic = split_ids(ids)
        grams, counts = np.unique(grams, return_counts=True)
        if grams.size and (grams[0] < 0 or grams[-1] >= self.buckets):
            raise ValueError(f"feature ids must lie in [0, {self.buckets})")
        values = (1.0 + np.log(counts)) * self.idf[grams]
        norm = math.sqrt(float(values @ values)) or 1.0
        columns, weights = length_columns(np.array([float(counts.sum())]))
        logits: FloatArray = (
            (values / norm) @ self.weights[grams]
            + weights[0] @ self.weights[self.buckets + columns[0]]
            + self.bias
        )
        vector = semantic_vector(semantic, self.dimensions) if self.dimensions else None
        if vector is not None:
            start = self.buckets + LENGTH_BINS
            dense = self.weights[start : start + self.dimensions]
            logits = logits + (vector * self.semantic_weight) @ dense
            if len(self.centroids):
                nearest = int(np.argmax(self.centroids @ vector))
                logits = logits + self.weights[start + self.dimensions + nearest]
        return _sigmoid(logits)

    def predict(self, prompt: Prompt) -> dict[str, float]:
        """p(good answer) of every trained model for one prompt (text or feature ids)."""
        self._require_trained()
        return dict(zip(self.keys, self._vector(self.ids(prompt)).tolist(), strict=True))

    def prior(self, key: str) -> float:
        """p(good) of a model without a head: its training-set mean if known, else 0.5."""
        return self.priors.get(key, UNKNOWN_PRIOR)

    def scores(self, prompt: Prompt, keys: Sequence[str]) -> dict[str, float]:
        """p(good answer) for the given model keys; models without a head get :meth:`prior`."""
        self._require_trained()
        vector = self._vector(self.ids(prompt))
        index = {k: j for j, k in enumerate(self.keys)}
        return {k: float(vector[index[k]]) if k in index else self.prior(k) for k in keys}

    def _values(
        self, ids: IntArray, candidates: Sequence[tuple[str, float]], lam: float
    ) -> list[float]:
        if not candidates:
            raise ValueError("no candidates to choose from")
        probability = self.scores(ids, [key for key, _ in candidates])
        return [probability[key] - lam * cost for key, cost in candidates]

    def choose(self, prompt: Prompt, candidates: Sequence[tuple[str, float]], *, lam: float) -> str:
        """The candidate with the highest ``p(good) - lam * cost`` (first one on a tie).

        No guard: :meth:`decide` is the guarded decision the router's steering makes.
        ``candidates`` are ``(model key, expected USD per call)`` pairs; ``lam`` is the
        price of one USD in probability of a good answer (0: the best model).
        """
        values = self._values(self.ids(prompt), candidates, lam)
        return candidates[int(np.argmax(values))][0]

    def decide(
        self, prompt: Prompt, candidates: Sequence[tuple[str, float]], *, lam: float
    ) -> Decision:
        """:meth:`choose`, guarded: the chain's first candidate when the router knows too little.

        ``candidates`` are in the chain's order. The first one stays first when the
        prompt is unlike the training prompts and the best pick's gain over it, times
        the prompt's :meth:`trust`, is under ``margin`` (the novelty guard, whatever
        ``lam``), or when a familiar prompt's best pick gains less than ``margin`` while
        cost counts (``lam > 0``; at 0 the policy asks for the best predicted model
        whatever the gain); ``why`` says which.
        """
        ids = self.ids(prompt)
        first = candidates[0][0] if candidates else ""
        values = self._values(ids, candidates, lam)
        best = int(np.argmax(values))
        gain = values[best] - values[0]
        novelty, trust = self._novelty(ids)
        if novelty and (best == 0 or trust * gain < self.margin):
            return Decision(first, False, f"prompt unlike the router's training data "
                            f"({novelty}; trust {trust:.2f}): chain order kept")  # fmt: skip
        if best != 0 and lam > 0 and gain < self.margin:
            return Decision(first, False, f"learned router not confident: "
                            f"{candidates[best][0]} gains {gain:.3f} over {first} "
                            f"(margin {self.margin:g}): chain order kept")  # fmt: skip
        note = f" (unfamiliar prompt, trust {trust:.2f})" if novelty else ""
        choice = candidates[best][0]
        return Decision(choice, True, f"learned router chose {choice}{note}")

    # ------------------------------------------------------------------ calibration
    def strong_share(self, lam: float, candidates: Sequence[tuple[str, float]]) -> float:
        """Share of the calibration sample that :meth:`choose` sends to the costliest one."""
        return share_calibration.strong_share(self, lam, candidates)

    def lam_for_share(self, strong_share: float, candidates: Sequence[tuple[str, float]]) -> float:
        """The ``lam`` giving the costliest candidate ``strong_share`` (see calibration)."""
        return share_calibration.lam_for_share(self, strong_share, candidates)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the router to one ``.npz`` file (see :mod:`tierwise.learning.router_file`)."""
        self._require_trained()
        return router_file.save(self, path)

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Read a router written by :meth:`save` (see :func:`tierwise.learning.router_file.load`).

        Raises:
            ValueError: The file is missing, unreadable or not a tierwise router (the
                message names the file and the problem).
        """
        return router_file.load(path, cls)

    def _require_trained(self) -> None:
        if not self.keys:
            raise ValueError("the router is not trained: call fit() or LearnedRouter.load()")
