"""A CPU-only learned router: per-model logistic regression on hashed n-gram features.

The model predicts, for a prompt, each model's probability of a good answer; a routing
decision takes the candidate with the best ``p(good) - lam * cost``. Only numpy is used:
the sparse feature rows, the training loop and persistence are written here.

Features (:func:`feature_ids`): lowercase word unigrams and bigrams, and character 3-5
grams of each word padded with one space either side (as scikit-learn's ``char_wb``), each
hashed with ``zlib.crc32`` of its utf-8 bytes (stable across processes and Python
versions, unlike ``hash``) into ``buckets`` ids. A prompt's row is its ids' sublinear term
frequency ``1 + log(count)`` times an IDF learned by :meth:`LearnedRouter.fit`,
L2-normalised. The ledger may keep the ids (never the text) so that a router can retrain
from recorded usage: every method that takes a prompt also takes its id array.

Why this model: on RouteLLM's GSM8K and MMLU data (see ``benchmarks/routing_quality.py``)
a linear model on character n-grams picks up the subject and the kind of question, which
is what predicts whether the cheaper model fails; it trains in seconds on two CPUs and a
decision costs tens of microseconds. One logistic head per model (trained jointly, full
batch, with Adam and an L2 penalty) keeps any number of models and lets a head be missing
for a model without routing data.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_BUCKETS",
    "FORMAT",
    "LearnedRouter",
    "SparseRows",
    "feature_ids",
]

DEFAULT_BUCKETS = 1 << 18
"""Hash space of :func:`feature_ids` (2**18 ids)."""

FORMAT = "tierwise.learned-router/1"
"""The ``format`` field of a saved router's metadata; :meth:`LearnedRouter.load` checks it."""

UNKNOWN_PRIOR = 0.5
"""p(good) of a candidate with neither a trained head nor a known training-set mean."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Prompt = str | npt.NDArray[np.integer[Any]]
"""A prompt's text, or its :func:`feature_ids`."""

_WORD = re.compile(r"\w+")
_CHAR_SIZES = (3, 4, 5)
_CALIBRATION_ROWS = 2000
LENGTH_BINS = 32
LENGTH_L2_SCALE = 0.01
"""Columns after the hashed buckets that encode the log number of feature ids."""


def _bucket(key: str, buckets: int) -> int:
    return zlib.crc32(key.encode("utf-8")) % buckets


@lru_cache(maxsize=262_144)
def _word_ids(word: str, buckets: int) -> tuple[int, ...]:
    """The word-unigram id and the ``char_wb`` 3-5 gram ids of one lowercase word."""
    ids = [_bucket("w:" + word, buckets)]
    padded = f" {word} "
    for size in _CHAR_SIZES:
        ids.extend(
            _bucket("c:" + padded[i : i + size], buckets) for i in range(len(padded) - size + 1)
        )
    return tuple(ids)


def feature_ids(text: str, *, buckets: int = DEFAULT_BUCKETS) -> IntArray:
    r"""Hashed feature ids of a prompt, one per occurrence (repeats are counts).

    Word unigrams and bigrams (``\w+`` runs of the lowercased text) and character 3-5
    grams within word boundaries, hashed with ``zlib.crc32`` so that the ids are the same
    in every process; a ledger may store them instead of the prompt.

    Args:
        text: The prompt.
        buckets: Size of the hash space; must match the router's.

    Returns:
        An int64 array of ids in ``[0, buckets)``, in no particular order.

    Example:
        >>> ids = feature_ids("Hello world")
        >>> bool((ids == feature_ids("hello   WORLD")).all())
        True
        >>> int(ids.min()) >= 0 and int(ids.max()) < DEFAULT_BUCKETS
        True
    """
    words = _WORD.findall(text.lower())
    ids: list[int] = []
    for word in words:
        ids.extend(_word_ids(word, buckets))
    ids.extend(_bucket(f"b:{a} {b}", buckets) for a, b in zip(words, words[1:], strict=False))
    return np.fromiter(ids, dtype=np.int64, count=len(ids))


@dataclass(frozen=True, slots=True)
class SparseRows:
    """Rows of a sparse matrix in CSR form: row ``i`` is ``indices/data[indptr[i]:indptr[i+1]]``.

    Attributes:
        indptr: ``n_rows + 1`` offsets into ``indices`` and ``data``.
        indices: Column (bucket) ids, unique within a row.
        data: The values.
        width: Number of columns.
    """

    indptr: IntArray
    indices: IntArray
    data: FloatArray
    width: int

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.indptr) - 1

    def row_ids(self) -> IntArray:
        """The row of each stored value."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def dot(self, weights: FloatArray, rows: IntArray | None = None) -> FloatArray:
        """``X @ weights`` for a ``(width, k)`` weight matrix: an ``(n_rows, k)`` array."""
        rows = self.row_ids() if rows is None else rows
        out = np.empty((self.n_rows, weights.shape[1]))
        for k in range(weights.shape[1]):
            out[:, k] = np.bincount(
                rows, weights=self.data * weights[self.indices, k], minlength=self.n_rows
            )
        return out

    def tdot(self, residuals: FloatArray, rows: IntArray | None = None) -> FloatArray:
        """``X.T @ residuals`` for an ``(n_rows, k)`` array: a ``(width, k)`` array."""
        rows = self.row_ids() if rows is None else rows
        out = np.empty((self.width, residuals.shape[1]))
        for k in range(residuals.shape[1]):
            out[:, k] = np.bincount(
                self.indices, weights=self.data * residuals[rows, k], minlength=self.width
            )
        return out

    def take(self, which: IntArray) -> SparseRows:
        """The rows ``which``, in that order."""
        starts, ends = self.indptr[which], self.indptr[which + 1]
        lengths = ends - starts
        indptr = np.zeros(len(which) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        offsets = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseRows(indptr, self.indices[offsets], self.data[offsets], self.width)


def _count_rows(id_rows: Sequence[npt.NDArray[np.integer[Any]]], buckets: int) -> SparseRows:
    """CSR rows of per-row id counts (``data`` = count of each distinct id in the row)."""
    lengths = np.fromiter((len(r) for r in id_rows), dtype=np.int64, count=len(id_rows))
    flat = (
        np.concatenate([np.asarray(r, dtype=np.int64) for r in id_rows])
        if len(id_rows)
        else np.zeros(0, dtype=np.int64)
    )
    if flat.size and (flat.min() < 0 or flat.max() >= buckets):
        raise ValueError(f"feature ids must lie in [0, {buckets})")
    rows = np.repeat(np.arange(len(id_rows), dtype=np.int64), lengths)
    keys, counts = np.unique(rows * buckets + flat, return_counts=True)
    new_rows = keys // buckets
    indptr = np.zeros(len(id_rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(new_rows, minlength=len(id_rows)), out=indptr[1:])
    return SparseRows(indptr, keys % buckets, counts.astype(np.float64), buckets)


def _length_columns(n_ids: FloatArray) -> tuple[IntArray, FloatArray]:
    """Two length columns per row, as ``(n, 2)`` offsets and weights.

    ``t = 2 * log2(1 + n_ids)`` placed between its two neighbouring integer bins with
    linear weights, so each head learns a piecewise-linear function of log length.
    """
    t = np.clip(2.0 * np.log2(1.0 + n_ids), 0.0, LENGTH_BINS - 1.000001)
    low = np.floor(t).astype(np.int64)
    frac = t - low
    return np.stack([low, low + 1], axis=1), np.stack([1.0 - frac, frac], axis=1)


def _tfidf(counts: SparseRows, idf: FloatArray) -> SparseRows:
    """Sublinear TF times IDF, each row L2-normalised, plus its two length columns.

    The result is ``LENGTH_BINS`` columns wider than ``counts``: the length columns
    follow the hashed buckets.
    """
    values = (1.0 + np.log(counts.data)) * idf[counts.indices]
    rows = counts.row_ids()
    n = counts.n_rows
    norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n))
    norms[norms == 0] = 1.0
    n_ids = np.bincount(rows, weights=counts.data, minlength=n).astype(np.float64)
    columns, weights = _length_columns(n_ids)
    indptr = counts.indptr + 2 * np.arange(n + 1, dtype=np.int64)
    indices = np.empty(indptr[-1], dtype=np.int64)
    data = np.empty(indptr[-1])
    old = np.arange(counts.indices.size) + 2 * rows
    indices[old] = counts.indices
    data[old] = values / norms[rows]
    tail = indptr[1:, None] - np.array([2, 1])
    indices[tail] = counts.width + columns
    data[tail] = weights
    return SparseRows(indptr, indices, data, counts.width + LENGTH_BINS)


def _sigmoid(z: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LearnedRouter:
    """Per-model probability of a good answer from a prompt, and the routing decision.

    One logistic-regression head per model over the TF-IDF hashed features of
    :func:`feature_ids`; heads are trained jointly, full batch, with Adam and an L2
    penalty (full batch because a numpy epoch over ~10 M stored values costs ~0.2 s,
    and Adam because it needs no step-size tuning per data set). An outcome may be NaN
    (that model was not tried on that prompt): it is left out of that model's loss only.

    The defaults (``l2`` 3e-4, step 0.1, 25 steps) were chosen on validation slices carved
    from the RouteLLM GSM8K + MMLU training parts (three seeds, 25 % each; the held-out
    test parts never used): the lower penalty gave about +0.02 APGR on MMLU in every fold.

    Args:
        buckets: Hash space of the features.
        l2: L2 penalty on the weights (per unit of mean loss).
        epochs: Full-batch Adam steps of :meth:`fit`.
        learning_rate: Adam step size.
        seed: Seed of the calibration sample drawn by :meth:`fit`.

    Example:
        >>> texts = ["add two numbers", "prove the theorem"] * 20
        >>> router = LearnedRouter(epochs=60).fit(
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
    ) -> None:
        """Create an untrained router (see the class docstring for the arguments)."""
        if buckets < 2:
            raise ValueError("buckets must be at least 2")
        self.buckets = buckets
        self.l2 = l2
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed
        self.keys: tuple[str, ...] = ()
        self.priors: dict[str, float] = {}
        self.idf: FloatArray = np.ones(buckets)
        self.weights: FloatArray = np.zeros((buckets + LENGTH_BINS, 0))
        self.bias: FloatArray = np.zeros(0)
        self.calibration: FloatArray = np.zeros((0, 0))
        self.trained_rows = 0

    # ------------------------------------------------------------------ features
    def ids(self, prompt: Prompt) -> IntArray:
        """The feature ids of a prompt (text is hashed; an id array is checked and kept)."""
        if isinstance(prompt, str):
            return feature_ids(prompt, buckets=self.buckets)
        ids = np.asarray(prompt, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("a prompt's feature ids must be a 1-d array")
        return ids

    def _counts(self, prompts: Sequence[Prompt]) -> SparseRows:
        return _count_rows([self.ids(p) for p in prompts], self.buckets)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        prompts: Sequence[Prompt],
        outcomes: Mapping[str, Sequence[float] | FloatArray],
        *,
        calibrate: bool = True,
    ) -> Self:
        """Learn the IDF and one head per model from scratch.

        Args:
            prompts: Texts, or :func:`feature_ids` arrays (a ledger's stored rows).
            outcomes: Per model key, one value per prompt in ``[0, 1]`` (1 = a good
                answer) or NaN (unknown: left out of that model's loss).
            calibrate: Keep out-of-sample predicted vectors for :meth:`lam_for_share`:
                a sample of up to 2,000 rows (at most 10 %) is predicted by a model
                trained the same way on the other rows, then the final model is trained
                on all rows (so training costs about twice as much). Without it the
                sample is predicted by the final model (in-sample, overconfident).

        Returns:
            The router itself.

        Raises:
            ValueError: No prompts, no models, an outcome list of the wrong length or a
                value outside ``[0, 1]``.
        """
        keys, targets = self._targets(outcomes, len(prompts))
        counts = self._counts(prompts)
        document_frequency = np.bincount(counts.indices, minlength=self.buckets)
        self.idf = np.log((1.0 + counts.n_rows) / (1.0 + document_frequency)) + 1.0
        self.keys = keys
        means = np.nanmean(np.where(np.isnan(targets), np.nan, targets), axis=0)
        self.priors = {k: float(m) for k, m in zip(keys, means, strict=True) if not np.isnan(m)}
        rows = _tfidf(counts, self.idf)
        rng = np.random.default_rng(self.seed)
        sample = min(_CALIBRATION_ROWS, rows.n_rows // 10)
        if calibrate and sample >= 10:
            held = np.sort(rng.choice(rows.n_rows, size=sample, replace=False))
            kept = np.setdiff1d(np.arange(rows.n_rows), held)
            self._reset(len(keys), targets)
            self._train(rows.take(kept), targets[kept], self.epochs)
            self.calibration = self._probabilities(rows.take(held))
        self._reset(len(keys), targets)
        self._train(rows, targets, self.epochs)
        if not (calibrate and sample >= 10):
            take = rng.choice(rows.n_rows, size=min(_CALIBRATION_ROWS, rows.n_rows), replace=False)
            self.calibration = self._probabilities(rows.take(np.sort(take)))
        self.trained_rows = rows.n_rows
        return self

    def partial_fit(
        self,
        prompts: Sequence[Prompt],
        outcomes: Mapping[str, Sequence[float] | FloatArray],
        *,
        epochs: int | None = None,
    ) -> Self:
        """Continue training from the current weights on new rows (IDF frozen).

        Incremental retraining from usage: a model key not seen before gets a new head
        (zero weights, bias at its mean outcome). The calibration sample is kept.

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
        rows = _tfidf(self._counts(prompts), self.idf)
        steps = max(5, self.epochs // 4) if epochs is None else epochs
        self._train(rows, targets, steps, fresh=False)
        self.trained_rows += rows.n_rows
        return self

    def calibrate(self, prompts: Sequence[Prompt]) -> Self:
        """Replace the calibration sample by these prompts' predicted vectors.

        Use recent real traffic (e.g. a ledger's feature rows) so that
        :meth:`lam_for_share` matches the share of the traffic the router will see.
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

    def _reset(self, k: int, targets: FloatArray) -> None:
        self.weights = np.zeros((self.buckets + LENGTH_BINS, k))
        means = [self.priors.get(key, UNKNOWN_PRIOR) for key in self.keys]
        self.bias = np.array([_logit(m) for m in means])

    def _train(
        self, rows: SparseRows, targets: FloatArray, steps: int, *, fresh: bool = True
    ) -> None:
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
        # the length columns are few and dense: a light penalty lets them carry length
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
        return self._probabilities(_tfidf(self._counts(prompts), self.idf))

    def _vector(self, prompt: Prompt) -> FloatArray:
        ids, counts = np.unique(self.ids(prompt), return_counts=True)
        if ids.size and (ids[0] < 0 or ids[-1] >= self.buckets):
            raise ValueError(f"feature ids must lie in [0, {self.buckets})")
        values = (1.0 + np.log(counts)) * self.idf[ids]
        norm = math.sqrt(float(values @ values)) or 1.0
        columns, weights = _length_columns(np.array([float(counts.sum())]))
        logits: FloatArray = (
            (values / norm) @ self.weights[ids]
            + weights[0] @ self.weights[self.buckets + columns[0]]
            + self.bias
        )
        return _sigmoid(logits)

    def predict(self, prompt: Prompt) -> dict[str, float]:
        """p(good answer) of every trained model for one prompt (text or feature ids)."""
        self._require_trained()
        return dict(zip(self.keys, self._vector(prompt).tolist(), strict=True))

    def prior(self, key: str) -> float:
        """p(good) of a model without a head: its training-set mean if known, else 0.5."""
        return self.priors.get(key, UNKNOWN_PRIOR)

    def scores(self, prompt: Prompt, keys: Sequence[str]) -> dict[str, float]:
        """p(good answer) for the given model keys; models without a head get :meth:`prior`."""
        self._require_trained()
        vector = self._vector(prompt)
        index = {k: j for j, k in enumerate(self.keys)}
        return {k: float(vector[index[k]]) if k in index else self.prior(k) for k in keys}

    def choose(self, prompt: Prompt, candidates: Sequence[tuple[str, float]], *, lam: float) -> str:
        """The candidate with the highest ``p(good) - lam * cost`` (first one on a tie).

        Args:
            prompt: Text or feature ids.
            candidates: ``(model key, expected USD per call)`` pairs.
            lam: Price of one USD in probability of a good answer (0: best model).

        Returns:
            The chosen model key.
        """
        if not candidates:
            raise ValueError("no candidates to choose from")
        probability = self.scores(prompt, [key for key, _ in candidates])
        best, best_value = candidates[0][0], -math.inf
        for key, cost in candidates:
            value = probability[key] - lam * cost
            if value > best_value:
                best, best_value = key, value
        return best

    # ------------------------------------------------------------------ calibration
    def _calibration_matrix(self, keys: Sequence[str]) -> FloatArray:
        index = {k: j for j, k in enumerate(self.keys)}
        columns = []
        for key in keys:
            if key in index:
                column = self.calibration[:, index[key]]
                columns.append(np.where(np.isnan(column), self.prior(key), column))
            else:
                columns.append(np.full(len(self.calibration), self.prior(key)))
        return np.stack(columns, axis=1)

    def strong_share(self, lam: float, candidates: Sequence[tuple[str, float]]) -> float:
        """Share of the calibration sample that :meth:`choose` sends to the costliest one."""
        keys = [k for k, _ in candidates]
        costs = np.array([c for _, c in candidates], dtype=np.float64)
        value = self._calibration_matrix(keys) - lam * costs
        return float(np.mean(np.argmax(value, axis=1) == int(np.argmax(costs))))

    def lam_for_share(self, strong_share: float, candidates: Sequence[tuple[str, float]]) -> float:
        """The ``lam`` at which the costliest candidate gets ``strong_share`` of the calls.

        The share is measured on the calibration sample kept by :meth:`fit` (or set by
        :meth:`calibrate`); it falls as ``lam`` grows, so a bisection finds the smallest
        ``lam`` whose share is at most the target (the share moves in steps of one
        calibration row). Returns 0.0 when even ``lam = 0`` gives no more than the
        target share.

        Args:
            strong_share: Target share in ``[0, 1]``.
            candidates: ``(model key, expected USD per call)`` pairs, two or more.

        Raises:
            ValueError: A share outside ``[0, 1]``, fewer than two candidates, equal
                costs, or no calibration sample.
        """
        if not 0.0 <= strong_share <= 1.0:
            raise ValueError("strong_share must lie in [0, 1]")
        if len(candidates) < 2:
            raise ValueError("lam_for_share needs at least two candidates")
        costs = sorted(c for _, c in candidates)
        if costs[-1] <= costs[-2]:
            raise ValueError("the costliest candidate must cost more than the others")
        if not len(self.calibration):
            raise ValueError("no calibration sample: fit() the router or call calibrate()")
        if self.strong_share(0.0, candidates) <= strong_share:
            return 0.0
        # above this lam no probability gap (at most 1) pays for the cost gap
        low, high = 0.0, 1.0 / (costs[-1] - costs[-2]) * 1.000001
        for _ in range(100):
            middle = 0.5 * (low + high)
            if self.strong_share(middle, candidates) <= strong_share:
                high = middle
            else:
                low = middle
        return high

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the router to one ``.npz`` file (arrays and JSON metadata; no pickle).

        Only the weights of buckets that some head uses are stored.

        Returns:
            The path written (``.npz`` is appended by numpy when missing).
        """
        self._require_trained()
        target = Path(path)
        if target.suffix != ".npz":
            target = target.with_name(target.name + ".npz")
        used = np.flatnonzero(np.any(self.weights != 0.0, axis=1))
        meta = {
            "format": FORMAT,
            "keys": list(self.keys),
            "priors": self.priors,
            "buckets": self.buckets,
            "l2": self.l2,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "trained_rows": self.trained_rows,
        }
        np.savez_compressed(
            target,
            meta=np.array(json.dumps(meta)),
            idf=self.idf,
            used=used,
            weights=self.weights[used],
            bias=self.bias,
            calibration=self.calibration,
        )
        return target

    @classmethod
    def load(cls, path: str | Path) -> LearnedRouter:
        """Read a router written by :meth:`save`.

        Raises:
            ValueError: The file is missing, is not a readable ``.npz`` or is not a
                tierwise router of this format (the message names the file and the
                problem).
        """
        source = Path(path)
        try:
            with np.load(source, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            raise ValueError(f"{source}: no such router file") from None
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{source}: not a readable .npz router file ({error})") from None
        except Exception as error:  # zipfile.BadZipFile and friends
            raise ValueError(f"{source}: not a readable .npz router file ({error})") from None
        missing = {"meta", "idf", "used", "weights", "bias", "calibration"} - set(arrays)
        if missing:
            raise ValueError(f"{source}: not a tierwise router (missing {sorted(missing)})")
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: corrupt metadata ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{source}: format {found!r} is not {FORMAT!r}")
        try:
            router = cls(
                buckets=int(meta["buckets"]),
                l2=float(meta["l2"]),
                epochs=int(meta["epochs"]),
                learning_rate=float(meta["learning_rate"]),
                seed=int(meta["seed"]),
            )
            router.keys = tuple(str(k) for k in meta["keys"])
            router.priors = {str(k): float(v) for k, v in meta["priors"].items()}
            router.trained_rows = int(meta["trained_rows"])
            k = len(router.keys)
            router.idf = arrays["idf"].astype(np.float64)
            router.bias = arrays["bias"].astype(np.float64)
            router.calibration = arrays["calibration"].astype(np.float64)
            router.weights = np.zeros((router.buckets + LENGTH_BINS, k))
            router.weights[arrays["used"].astype(np.int64)] = arrays["weights"]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise ValueError(f"{source}: corrupt router data ({error!r})") from None
        shapes_ok = (
            router.idf.shape == (router.buckets,)
            and router.bias.shape == (k,)
            and router.calibration.ndim == 2
            and (router.calibration.shape[1] == k or router.calibration.size == 0)
        )
        if not shapes_ok:
            raise ValueError(f"{source}: corrupt router data (array shapes disagree)")
        return router

    def _require_trained(self) -> None:
        if not self.keys:
            raise ValueError("the router is not trained: call fit() or LearnedRouter.load()")


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))
