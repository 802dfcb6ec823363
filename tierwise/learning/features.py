"""The learned router's features: hashed n-grams, a length code and the semantic vector.

A prompt is represented by one int64 array of ids (what the ledger keeps, never the text):

* **hashed n-grams** (:func:`hashed_ids`): lowercase word unigrams and bigrams, and character
  3-5 grams of each word padded with one space either side (as scikit-learn's ``char_wb``),
  each hashed with ``zlib.crc32`` of its utf-8 bytes (stable across processes and Python
  versions, unlike ``hash``) into ``buckets`` ids; a row is their sublinear term frequency
  ``1 + log(count)`` times an IDF, L2-normalised (:func:`tfidf`), followed by two length
  columns (:func:`length_columns`);
* **the semantic vector** (:mod:`tierwise.learning.semantic`), when the ``semantic`` extra is
  installed: each dimension quantised to 8 bits and stored as one id at or above
  :data:`SEMANTIC_BASE` (``SEMANTIC_BASE + 256 * dimension + level``), so a ledger row
  carries it in the same column and a router can retrain on it (:func:`semantic_vector`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.learning.semantic import Embedder, StaticEmbedder

__all__ = [
    "DEFAULT_BUCKETS",
    "LENGTH_BINS",
    "SEMANTIC_BASE",
    "SparseRows",
    "append_columns",
    "count_rows",
    "feature_ids",
    "hashed_ids",
    "length_columns",
    "semantic_vector",
    "spherical_kmeans",
    "split_ids",
    "tfidf",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Prompt = str | npt.NDArray[np.integer[Any]]
"""A prompt's text, or its :func:`feature_ids`."""

DEFAULT_BUCKETS = 1 << 18
"""Hash space of :func:`hashed_ids` (2**18 ids)."""

SEMANTIC_BASE = 1 << 40
"""Ids at or above it carry the semantic vector (one id per dimension, 256 levels each)."""
_LEVELS = 256
_QUANTUM = 127.0

_WORD = re.compile(r"\w+")
_CHAR_SIZES = (3, 4, 5)
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


def hashed_ids(text: str, *, buckets: int = DEFAULT_BUCKETS) -> IntArray:
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
        >>> ids = hashed_ids("Hello world")
        >>> bool((ids == hashed_ids("hello   WORLD")).all())
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


def semantic_ids(vector: FloatArray) -> IntArray:
    """The ids that carry a unit vector: dimension ``d`` at level ``round(127 * v) + 128``."""
    levels = np.clip(np.rint(np.asarray(vector) * _QUANTUM), -127, 127).astype(np.int64) + 128
    return SEMANTIC_BASE + _LEVELS * np.arange(levels.size, dtype=np.int64) + levels


def semantic_vector(ids: IntArray, dimensions: int) -> FloatArray | None:
    """The semantic vector carried by ``ids`` (None when they carry none).

    Raises:
        ValueError: The ids carry a vector of another size than ``dimensions``.
    """
    found = ids[ids >= SEMANTIC_BASE] - SEMANTIC_BASE
    if found.size == 0:
        return None
    dimension, level = np.divmod(found, _LEVELS)
    if found.size != dimensions or int(dimension.max()) >= dimensions:
        raise ValueError(f"the prompt's semantic ids carry {found.size} dimensions, "
                         f"not the router's {dimensions}")  # fmt: skip
    vector = np.zeros(dimensions)
    vector[dimension] = (level - 128) / _QUANTUM
    return vector


def split_ids(ids: IntArray) -> tuple[IntArray, IntArray]:
    """``(hashed n-gram ids, semantic ids)`` of one prompt's ids."""
    semantic = ids >= SEMANTIC_BASE
    return ids[~semantic], ids[semantic]


def feature_ids(
    text: str,
    *,
    buckets: int = DEFAULT_BUCKETS,
    semantic: bool = True,
    embedder: Embedder | None = None,
) -> IntArray:
    """All ids of a prompt: :func:`hashed_ids`, then its semantic ids when available.

    Args:
        text: The prompt.
        buckets: Hash space of the n-gram ids; must match the router's.
        semantic: Add the semantic ids (when the ``semantic`` extra is installed).
        embedder: The embedder (default: the shipped table, :meth:`StaticEmbedder.default`).

    Example:
        >>> ids = feature_ids("Hello world")
        >>> bool((ids == feature_ids("hello   WORLD")).all())
        True
        >>> hashed, _ = split_ids(ids)
        >>> int(hashed.min()) >= 0 and int(hashed.max()) < DEFAULT_BUCKETS
        True
    """
    hashed = hashed_ids(text, buckets=buckets)
    if not semantic:
        return hashed
    embedder = embedder or StaticEmbedder.default()
    if embedder is None:
        return hashed
    return np.concatenate([hashed, semantic_ids(embedder.embed(text))])


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


def count_rows(id_rows: Sequence[npt.NDArray[np.integer[Any]]], buckets: int) -> SparseRows:
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


def length_columns(n_ids: FloatArray) -> tuple[IntArray, FloatArray]:
    """Two length columns per row, as ``(n, 2)`` offsets and weights.

    ``t = 2 * log2(1 + n_ids)`` placed between its two neighbouring integer bins with
    linear weights, so each head learns a piecewise-linear function of log length.
    """
    t = np.clip(2.0 * np.log2(1.0 + n_ids), 0.0, LENGTH_BINS - 1.000001)
    low = np.floor(t).astype(np.int64)
    frac = t - low
    return np.stack([low, low + 1], axis=1), np.stack([1.0 - frac, frac], axis=1)


def tfidf(counts: SparseRows, idf: FloatArray) -> SparseRows:
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
    columns, weights = length_columns(n_ids)
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




def append_columns(
    rows: SparseRows, columns: IntArray, values: FloatArray, width: int
) -> SparseRows:
    """``rows`` with ``width`` more columns; row ``i`` gains ``values[i]`` at ``columns[i]``.

    ``columns`` and ``values`` are ``(n_rows, m)``: the same number of new entries per row
    (a dense block, or a one-hot), each column offset within ``[0, width)``.
    """
    n, m = columns.shape
    if m == 0:
        return SparseRows(rows.indptr, rows.indices, rows.data, rows.width + width)
    indptr = rows.indptr + m * np.arange(n + 1, dtype=np.int64)
    indices = np.empty(indptr[-1], dtype=np.int64)
    data = np.empty(indptr[-1])
    old = np.arange(rows.indices.size) + m * rows.row_ids()
    indices[old] = rows.indices
    data[old] = rows.data
    tail = indptr[1:, None] - np.arange(m, 0, -1)
    indices[tail] = rows.width + columns
    data[tail] = values
    return SparseRows(indptr, indices, data, rows.width + width)


def spherical_kmeans(
    vectors: FloatArray, k: int, rng: np.random.Generator, steps: int = 12
) -> FloatArray:
    """``k`` unit centroids of unit ``vectors`` (cosine k-means, seeded from ``rng``)."""
    centroids = vectors[rng.choice(len(vectors), size=k, replace=False)]
    for _ in range(steps):
        nearest = np.argmax(vectors @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids)
    return centroids
