"""The learned router's file: one ``.npz`` of arrays and JSON metadata, no pickle.

Format 2 adds the semantic columns (``dimensions``, ``centroids``), the guard (``seen``
n-gram ids as packed bits, the two floors, ``margin``). A format-1 file (n-gram features
only) still loads: its seen ids are read off the IDF (an id never seen in training has
the largest IDF) and its guard floors are off.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from tierwise.learning.features import LENGTH_BINS, FloatArray

__all__ = ["FORMAT", "FORMATS", "RouterState", "load", "save"]


class RouterState(Protocol):
    """The router's persisted state, as this module reads and writes it.

    A protocol rather than the router class, so that the router can import this module
    and not the other way round.
    """

    keys: tuple[str, ...]
    priors: dict[str, float]
    buckets: int
    l2: float
    epochs: int
    learning_rate: float
    seed: int
    trained_rows: int
    dimensions: int
    clusters: int
    semantic_weight: float
    margin: float
    coverage_floor: float
    similarity_floor: float
    idf: FloatArray
    weights: FloatArray
    bias: FloatArray
    calibration: FloatArray
    seen: Any
    centroids: FloatArray

    @property
    def width(self) -> int:
        """Rows of ``weights``: n-gram buckets, length bins, semantic columns, clusters."""
        ...


State = TypeVar("State", bound=RouterState)

FORMAT = "tierwise.learned-router/2"
"""The ``format`` field written by :func:`save`."""
FORMATS = ("tierwise.learned-router/1", FORMAT)
"""The formats :func:`load` reads."""
_ARRAYS = {"meta", "idf", "used", "weights", "bias", "calibration"}


def save(router: RouterState, path: str | Path) -> Path:
    """Write ``router``; only the weight rows that some head uses are stored.

    Returns:
        The path written (``.npz`` is appended by numpy when missing).
    """
    target = Path(path)
    if target.suffix != ".npz":
        target = target.with_name(target.name + ".npz")
    used = np.flatnonzero(np.any(router.weights != 0.0, axis=1))
    meta = {
        "format": FORMAT,
        "keys": list(router.keys),
        "priors": router.priors,
        "buckets": router.buckets,
        "l2": router.l2,
        "epochs": router.epochs,
        "learning_rate": router.learning_rate,
        "seed": router.seed,
        "trained_rows": router.trained_rows,
        "dimensions": router.dimensions,
        "clusters": router.clusters,
        "semantic_weight": router.semantic_weight,
        "margin": router.margin,
        "coverage_floor": router.coverage_floor,
        "similarity_floor": router.similarity_floor,
    }
    np.savez_compressed(
        target,
        meta=np.array(json.dumps(meta)),
        idf=router.idf,
        used=used,
        weights=router.weights[used],
        bias=router.bias,
        calibration=router.calibration,
        seen=np.packbits(router.seen),
        centroids=router.centroids,
    )
    return target


def _read(source: Path) -> dict[str, Any]:
    try:
        with np.load(source, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise ValueError(f"{source}: no such router file") from None
    except Exception as error:  # OSError, ValueError, EOFError, zipfile.BadZipFile...
        raise ValueError(f"{source}: not a readable .npz router file ({error})") from None


def load(path: str | Path, new: Callable[..., State]) -> State:
    """Read a router written by :func:`save` (format 1 or 2).

    Raises:
        ValueError: The file is missing, is not a readable ``.npz`` or is not a
            tierwise router of a known format (the message names the file and the
            problem).
    """
    source = Path(path)
    arrays = _read(source)
    missing = _ARRAYS - set(arrays)
    if missing:
        raise ValueError(f"{source}: not a tierwise router (missing {sorted(missing)})")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: corrupt metadata ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{source}: format {found!r} is not one of {list(FORMATS)}")
    try:
        router = new(
            buckets=int(meta["buckets"]),
            l2=float(meta["l2"]),
            epochs=int(meta["epochs"]),
            learning_rate=float(meta["learning_rate"]),
            seed=int(meta["seed"]),
            semantic=False,
            clusters=int(meta.get("clusters", 32)),
            semantic_weight=float(meta.get("semantic_weight", 1.0)),
            margin=float(meta.get("margin", 0.0)),
        )
        router.dimensions = int(meta.get("dimensions", 0))
        router.keys = tuple(str(k) for k in meta["keys"])
        router.priors = {str(k): float(v) for k, v in meta["priors"].items()}
        router.trained_rows = int(meta["trained_rows"])
        router.coverage_floor = float(meta.get("coverage_floor", 0.0))
        router.similarity_floor = float(meta.get("similarity_floor", -1.0))
        k = len(router.keys)
        router.idf = arrays["idf"].astype(np.float64)
        router.bias = arrays["bias"].astype(np.float64)
        router.calibration = arrays["calibration"].astype(np.float64)
        if "centroids" in arrays:
            router.centroids = arrays["centroids"].astype(np.float64)
        else:
            router.centroids = np.zeros((0, router.dimensions))
        if "seen" in arrays:
            router.seen = np.unpackbits(arrays["seen"])[: router.buckets].astype(bool)
        else:  # format 1: an id never seen in training has the largest IDF
            router.seen = router.idf < router.idf.max() - 1e-9
        router.weights = np.zeros((router.width, k))
        router.weights[arrays["used"].astype(np.int64)] = arrays["weights"]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ValueError(f"{source}: corrupt router data ({error!r})") from None
    shapes_ok = (
        router.idf.shape == (router.buckets,)
        and router.seen.shape == (router.buckets,)
        and router.bias.shape == (k,)
        and router.centroids.shape[1:] == (router.dimensions,)
        and router.weights.shape[0] == router.buckets + LENGTH_BINS + router.dimensions
        + len(router.centroids)
        and router.calibration.ndim == 2
        and (router.calibration.shape[1] == k or router.calibration.size == 0)
    )
    if not shapes_ok:
        raise ValueError(f"{source}: corrupt router data (array shapes disagree)")
    return router
