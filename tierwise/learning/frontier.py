"""Cost-aware scoring of a router over N models: the cost-quality frontier and its AIQ.

RouteLLM's APGR (:mod:`tierwise.learning.metrics`) compares two models. With more models
and a price for each, a router is scored as RouterBench does (Hu et al. 2024,
arXiv 2403.12031, section 4; ``evaluation/AIQ.py`` of withmartian/routerbench):

- the router's **cost weight** ``lam`` moves from 0 (best predicted quality) upwards; at
  each value every prompt goes to ``argmax p(good) - lam * cost`` (the cheaper model on a
  tie), giving one point: (mean cost per prompt, mean quality of the routed answers).
  The sweep visits every ``lam`` at which some prompt's pick changes (the midpoints
  between consecutive break-even weights), so no point of the curve is missed;
- the **frontier** is the non-decreasing convex hull of those points: any two routing
  configurations can be mixed at random, so every point on the segment between two
  points is reachable, and paying more never has to buy less quality (the hull stays
  flat right of its best point);
- **AIQ** (average improvement in quality) = ``1 / (c_max - c_min)`` times the area under
  the frontier between ``c_min`` and ``c_max``, the mean per-prompt costs of the cheapest
  and the costliest single model, so every router scored on a file shares one range. The
  frontier is 0 left of its cheapest point (as RouterBench's code integrates from there);
- **single models** are points; **random** routing (any random mix of the models) is the
  frontier of the single models' points (RouterBench's "zero router"); the **oracle**
  is the same sweep with the true outcomes as predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Frontier", "MultiModelScore", "aiq", "frontier", "hull", "sweep", "score_models"]

FloatArray = npt.NDArray[np.float64]
_TIE = 1e-12


@dataclass(frozen=True, slots=True)
class Frontier:
    """A router's points and their non-decreasing convex hull.

    Attributes:
        points: ``(lam, cost, quality)`` per cost weight swept (lam NaN for single models).
        hull: ``(cost, quality)`` vertices of the frontier, by rising cost.
        aiq: Area under the frontier over ``[c_min, c_max]`` divided by its width.
    """

    points: tuple[tuple[float, float, float], ...]
    hull: tuple[tuple[float, float], ...]
    aiq: float


@dataclass(frozen=True, slots=True)
class MultiModelScore:
    """The multi-model figures of one labelled set.

    Attributes:
        models: Per model: ``(mean cost per prompt, mean quality)``.
        cost_range: ``(c_min, c_max)``: the cheapest and the costliest model's mean cost.
        router: The learned router's frontier.
        random: The single models' frontier (random mixes of them).
        oracle: The frontier of a router that knows every outcome.
        rows: Prompts scored.
    """

    models: dict[str, tuple[float, float]]
    cost_range: tuple[float, float]
    router: Frontier
    random: Frontier
    oracle: Frontier
    rows: int


def _picks(predicted: FloatArray, costs: FloatArray, lam: float) -> npt.NDArray[np.int64]:
    value = predicted - lam * costs
    best = value.max(axis=1, keepdims=True)
    picks: npt.NDArray[np.int64] = np.argmin(np.where(value >= best - _TIE, costs, np.inf), 1)
    return picks


def _break_evens(predicted: FloatArray, costs: FloatArray) -> FloatArray:
    """Every positive ``lam`` at which two models' values meet on some prompt."""
    found = []
    m = predicted.shape[1]
    for j in range(m):
        for k in range(j + 1, m):
            gap_c = costs[:, j] - costs[:, k]
            gap_p = predicted[:, j] - predicted[:, k]
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = gap_p / gap_c
            found.append(lam[(gap_c != 0) & np.isfinite(lam) & (lam > 0)])
    return np.unique(np.concatenate(found)) if found else np.zeros(0)


def sweep(
    predicted: FloatArray, quality: FloatArray, costs: FloatArray, *, max_points: int = 400
) -> list[tuple[float, float, float]]:
    """``(lam, mean cost, mean quality)`` at 0 and between consecutive break-even weights.

    With more than ``max_points`` break-even weights, their quantiles are used instead.
    """
    edges = _break_evens(predicted, costs)
    if edges.size > max_points:
        edges = np.unique(np.quantile(edges, np.linspace(0.0, 1.0, max_points)))
    lams = [0.0]
    if edges.size:
        lams += [float(x) for x in (edges[:-1] + edges[1:]) / 2.0]
        lams.append(float(edges[-1]) * 2.0)
    rows = np.arange(len(predicted))
    points = []
    for lam in lams:
        pick = _picks(predicted, costs, lam)
        points.append((lam, float(costs[rows, pick].mean()), float(quality[rows, pick].mean())))
    return points


def hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-decreasing convex hull of ``(cost, quality)`` points, by rising cost.

    The upper hull from the cheapest point (the best quality among equally cheap ones)
    to the best-quality point (the cheapest among equally good ones).

    Example:
        >>> hull([(0, 0.25), (0.25, 0.5), (1, 0.5), (2, 0.4)])
        [(0, 0.25), (0.25, 0.5)]
    """
    ordered = sorted(set(points), key=lambda p: (p[0], -p[1]))
    top = max(p[1] for p in ordered)
    end = next(i for i, p in enumerate(ordered) if p[1] == top)
    upper: list[tuple[float, float]] = []
    for point in ordered[: end + 1]:
        if upper and point[0] == upper[-1][0]:
            continue  # same cost, lower quality (sorted so)
        while len(upper) >= 2:
            (x1, y1), (x2, y2) = upper[-2], upper[-1]
            # drop the middle point when it lies on or below the segment to the new one
            if (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1) >= 0:
                upper.pop()
            else:
                break
        upper.append(point)
    return upper


def aiq(vertices: Sequence[tuple[float, float]], c_min: float, c_max: float) -> float:
    """Mean height of the frontier over ``[c_min, c_max]`` (flat right of it, 0 left of it).

    Example:
        >>> aiq([(0.0, 0.25), (1.0, 0.5), (3.0, 0.75)], 0.0, 3.0)  # (0.375 + 1.25) / 3
        0.5416666666666666
    """
    if c_max <= c_min:
        return float(max(q for c, q in vertices if c <= c_max)) if vertices else 0.0
    xs = np.array([c for c, _ in vertices], dtype=np.float64)
    ys = np.array([q for _, q in vertices], dtype=np.float64)
    low = max(c_min, float(xs[0]))
    if low >= c_max:
        return 0.0
    grid = np.unique(np.concatenate([[low, c_max], xs[(xs > low) & (xs < c_max)]]))
    heights = np.interp(grid, xs, ys)  # flat right of the last vertex
    area = float(np.sum(np.diff(grid) * (heights[1:] + heights[:-1]) / 2.0))
    return area / (c_max - c_min)


def frontier(
    predicted: FloatArray, quality: FloatArray, costs: FloatArray, c_min: float, c_max: float
) -> Frontier:
    """The sweep, its hull and AIQ of a router whose predictions are ``predicted``."""
    points = sweep(predicted, quality, costs)
    vertices = hull([(c, q) for _, c, q in points])
    return Frontier(tuple(points), tuple(vertices), aiq(vertices, c_min, c_max))


def score_models(
    predicted: FloatArray,
    outcomes: Mapping[str, FloatArray],
    costs: Mapping[str, FloatArray],
) -> MultiModelScore:
    """Router, single models, random and oracle on prompts with every model's outcome.

    Args:
        predicted: ``(n, m)`` p(good) per prompt, columns in the order of ``outcomes``.
        outcomes: Per model, its outcome per prompt in ``[0, 1]``.
        costs: Per model (the same keys), its cost per prompt in USD.

    Raises:
        ValueError: Fewer than two models, a model without costs, or no prompt.
    """
    names = list(outcomes)
    if len(names) < 2:
        raise ValueError("multi-model scoring needs at least two models")
    lacking = [m for m in names if m not in costs]
    if lacking:
        raise ValueError(f"no cost for {lacking}: give each model a cost")
    quality = np.stack([np.asarray(outcomes[m], dtype=np.float64) for m in names], axis=1)
    price = np.stack([np.asarray(costs[m], dtype=np.float64) for m in names], axis=1)
    if not len(quality):
        raise ValueError("nothing to score: no prompt has every model's outcome")
    means = {m: (float(price[:, j].mean()), float(quality[:, j].mean()))
             for j, m in enumerate(names)}  # fmt: skip
    c_min = min(c for c, _ in means.values())
    c_max = max(c for c, _ in means.values())
    singles = tuple((float("nan"), c, q) for c, q in means.values())
    random_hull = hull([(c, q) for c, q in means.values()])
    return MultiModelScore(
        models=means,
        cost_range=(c_min, c_max),
        router=frontier(np.asarray(predicted, dtype=np.float64), quality, price, c_min, c_max),
        random=Frontier(singles, tuple(random_hull), aiq(random_hull, c_min, c_max)),
        oracle=frontier(quality, quality, price, c_min, c_max),
        rows=len(quality),
    )
