"""RouteLLM's router metrics: PGR curve, APGR and CPT(x %), for a strong/weak model pair.

A router gives each prompt a score (higher = send it to the strong model). Sweeping a
threshold over the scores moves the share of strong-model calls from 100 % to 0 %; at
each point the quality of the routed answers gives the *performance gap recovered*::

    PGR = (q(router) - q(weak)) / (q(strong) - q(weak))

What is matched, from lm-sys/RouteLLM ``routellm/evals/benchmarks.py`` (``evaluate``) and
``routellm/evals/evaluate.py`` (``generate_results``):

- thresholds: the 11 edges of ``pandas.qcut(scores, 10)``, i.e. the 0, 10, ..., 100 %
  quantiles of the scores (linear interpolation, as ``np.quantile``); a prompt goes to
  the strong model when its score is ``>=`` the threshold, except at the last (maximum)
  threshold, where it is ``>``, so the curve runs from 100 % to 0 % strong calls;
- q(weak), q(strong): each model's mean correctness on the same evaluated prompts;
- APGR: ``np.trapz`` of quality over the strong-call share (points sorted by share),
  minus the weak model's area, divided by the strong-minus-weak area, which is the
  trapezoid area under the PGR curve;
- CPT(x): ``np.interp(q(weak) + x * (q(strong) - q(weak)), quality, share)``: the share
  of strong calls at which the linearly interpolated curve reaches PGR = x. RouteLLM's
  ``np.interp`` assumes quality rises with the share; here the *first* crossing (smallest
  share) is returned, which is the same for a rising curve and well defined otherwise.
  A curve that never reaches x gives CPT = 1.0 (all calls strong) if the strong model
  alone reaches it.

Differences, on purpose: shares and qualities are fractions (RouteLLM prints percent);
tied scores give repeated thresholds, which pandas refuses ("Bin edges must be unique")
and which are allowed here (a repeated point adds nothing to the area). The oracle is
scored as a router (see :func:`oracle_scores`), so its curve is what a real router could
reach at each share; RouteLLM's plotted "optimal" line keeps the peak quality up to
100 % strong calls instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CurvePoint",
    "RoutingQuality",
    "evaluate",
    "expected_random",
    "oracle_scores",
    "random_quality",
    "random_scores",
]

THRESHOLD_BINS = 10
"""RouteLLM's ``--num-results`` default: ``qcut`` into 10 bins, 11 thresholds."""

ArrayLike = Sequence[float] | Sequence[bool] | npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One threshold of the sweep.

    Attributes:
        threshold: Scores ``>=`` it went to the strong model (``>`` for the last one).
        strong_share: Share of prompts sent to the strong model.
        quality: Mean correctness of the routed answers.
        pgr: Performance gap recovered at that point.
    """

    threshold: float
    strong_share: float
    quality: float
    pgr: float


@dataclass(frozen=True, slots=True)
class RoutingQuality:
    """RouteLLM's figures for one router on one evaluated set.

    Attributes:
        apgr: Area under the PGR vs strong-share curve (random 0.5).
        cpt50: Smallest strong-call share reaching PGR 0.5 (random 0.5; lower is better).
        cpt80: The same for PGR 0.8.
        curve: The points, by rising strong-call share.
        weak_quality: Mean correctness of the weak model alone.
        strong_quality: Mean correctness of the strong model alone.
    """

    apgr: float
    cpt50: float
    cpt80: float
    curve: tuple[CurvePoint, ...]
    weak_quality: float
    strong_quality: float

    def cpt(self, level: float) -> float:
        """CPT(level): the smallest strong-call share at which PGR reaches ``level``."""
        return _cpt(self.curve, level)


def _vectors(
    scores: ArrayLike, weak_correct: ArrayLike, strong_correct: ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak_correct, dtype=np.float64)
    g = np.asarray(strong_correct, dtype=np.float64)
    if s.ndim != 1 or s.shape != w.shape or s.shape != g.shape:
        raise ValueError(
            f"scores, weak_correct and strong_correct must be 1-d of one length "
            f"(got {s.shape}, {w.shape}, {g.shape})"
        )
    if s.size == 0:
        raise ValueError("nothing to evaluate: no prompts")
    if np.isnan(s).any() or np.isnan(w).any() or np.isnan(g).any():
        raise ValueError("scores and correctness must not contain NaN")
    return s, w, g


def _gap(weak: float, strong: float) -> float:
    gap = strong - weak
    if abs(gap) < 1e-12:
        raise ValueError(
            f"PGR is undefined: the weak and strong models have the same quality ({weak:.4f})"
        )
    return gap


def _cpt(curve: Sequence[CurvePoint], level: float) -> float:
    """First strong-call share at which the linearly interpolated PGR reaches ``level``."""
    shares = [p.strong_share for p in curve]
    pgrs = [p.pgr for p in curve]
    if pgrs[0] >= level:
        return shares[0]
    for i in range(1, len(curve)):
        if pgrs[i] >= level:
            lo, hi = pgrs[i - 1], pgrs[i]
            t = (level - lo) / (hi - lo) if hi != lo else 0.0
            return shares[i - 1] + t * (shares[i] - shares[i - 1])
    return 1.0


def evaluate(
    scores: ArrayLike,
    weak_correct: ArrayLike,
    strong_correct: ArrayLike,
    *,
    bins: int = THRESHOLD_BINS,
) -> RoutingQuality:
    """APGR, CPT(50 %), CPT(80 %) and the curve of a router's scores, as RouteLLM does.

    Args:
        scores: One score per prompt; higher = send it to the strong model.
        weak_correct: The weak model's correctness per prompt (bool or in ``[0, 1]``).
        strong_correct: The strong model's correctness per prompt.
        bins: Quantile bins of the threshold sweep (RouteLLM: 10, so 11 thresholds).

    Returns:
        The figures and the curve.

    Raises:
        ValueError: Arrays of different lengths, empty or containing NaN, or weak and
            strong of equal quality (PGR undefined).

    Example:
        >>> weak = [1, 0, 0, 1]
        >>> strong = [1, 1, 1, 0]
        >>> q = evaluate([0.5, 0.9, 0.8, 0.1], weak, strong, bins=4)
        >>> [round(p.pgr, 2) for p in q.curve]
        [0.0, 1.0, 2.0, 2.0, 1.0]
    """
    s, w, g = _vectors(scores, weak_correct, strong_correct)
    weak, strong = float(w.mean()), float(g.mean())
    gap = _gap(weak, strong)
    thresholds = np.quantile(s, np.linspace(0.0, 1.0, bins + 1))
    points = []
    for i, threshold in enumerate(thresholds):
        chosen = s > threshold if i == len(thresholds) - 1 else s >= threshold
        quality = float(np.where(chosen, g, w).mean())
        points.append(
            CurvePoint(float(threshold), float(chosen.mean()), quality, (quality - weak) / gap)
        )
    points.sort(key=lambda p: (p.strong_share, p.quality))
    curve = tuple(points)
    shares = np.array([p.strong_share for p in curve])
    pgrs = np.array([p.pgr for p in curve])
    span = shares[-1] - shares[0]
    area = float(np.sum(np.diff(shares) * (pgrs[1:] + pgrs[:-1]) / 2.0))  # np.trapz
    apgr = area / float(span) if span > 0 else float(pgrs.mean())
    return RoutingQuality(
        apgr=apgr,
        cpt50=_cpt(curve, 0.5),
        cpt80=_cpt(curve, 0.8),
        curve=curve,
        weak_quality=weak,
        strong_quality=strong,
    )


def oracle_scores(weak_correct: ArrayLike, strong_correct: ArrayLike) -> npt.NDArray[np.float64]:
    """Scores of the oracle: strong first where only it is right, last where only weak is.

    ``strong - weak`` per prompt (1: only the strong model is right, 0: both agree, -1:
    only the weak one is), so the sweep sends the strong model exactly the prompts it
    fixes before any other: the best quality any router reaches at each share.
    """
    w = np.asarray(weak_correct, dtype=np.float64)
    g = np.asarray(strong_correct, dtype=np.float64)
    return g - w


def random_scores(n: int, seed: int) -> npt.NDArray[np.float64]:
    """RouteLLM's random router: a uniform score per prompt (numpy ``Generator(seed)``)."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=n)


def random_quality(
    weak_correct: ArrayLike, strong_correct: ArrayLike, *, seeds: int = 20
) -> RoutingQuality:
    """Random routing measured like any router, averaged over ``seeds`` seeds (0, 1, ...).

    APGR and CPTs are the means of the per-seed figures; the curve is the first seed's.
    """
    w = np.asarray(weak_correct, dtype=np.float64)
    results = [evaluate(random_scores(len(w), seed), w, strong_correct) for seed in range(seeds)]
    first = results[0]
    return RoutingQuality(
        apgr=float(np.mean([r.apgr for r in results])),
        cpt50=float(np.mean([r.cpt50 for r in results])),
        cpt80=float(np.mean([r.cpt80 for r in results])),
        curve=first.curve,
        weak_quality=first.weak_quality,
        strong_quality=first.strong_quality,
    )


def expected_random(
    weak_correct: ArrayLike, strong_correct: ArrayLike, *, bins: int = THRESHOLD_BINS
) -> RoutingQuality:
    """The expected value of random routing: PGR equals the strong-call share.

    Sending a uniformly random share ``s`` of prompts to the strong model gives expected
    quality ``q(weak) + s * (q(strong) - q(weak))``, so APGR = 0.5 and CPT(x) = x.
    """
    w = np.asarray(weak_correct, dtype=np.float64)
    g = np.asarray(strong_correct, dtype=np.float64)
    weak, strong = float(w.mean()), float(g.mean())
    gap = _gap(weak, strong)
    curve = tuple(
        CurvePoint(float(1 - s), float(s), weak + float(s) * gap, float(s))
        for s in np.linspace(0.0, 1.0, bins + 1)
    )
    return RoutingQuality(0.5, 0.5, 0.8, curve, weak, strong)
