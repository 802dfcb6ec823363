"""Calibrating the learned router's cost weight: the ``lam`` that gives a target share.

A policy rarely knows a good ``lam`` (USD are not probabilities); it knows what share of
its calls it can afford to send to the most expensive candidate. The router keeps a
calibration sample of predicted vectors (out of sample, from :meth:`LearnedRouter.fit`,
or recent traffic via :meth:`LearnedRouter.calibrate`); the share each ``lam`` gives on it
falls as ``lam`` grows, so a bisection finds the ``lam`` for a share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from tierwise.learning.features import FloatArray

__all__ = ["Calibrated", "lam_for_share", "strong_share"]


class Calibrated(Protocol):
    """What calibration reads of a router: its heads' keys, its sample and its priors.

    A protocol rather than the router class, so that the router can import this module
    and not the other way round.
    """

    @property
    def keys(self) -> tuple[str, ...]:
        """The models the router has heads for, in column order."""
        ...

    @property
    def calibration(self) -> FloatArray:
        """Predicted success per calibration row and head (NaN where unknown)."""
        ...

    def prior(self, key: str) -> float:
        """The success rate assumed for ``key`` where no head predicts it."""
        ...


def _calibration_matrix(router: Calibrated, keys: Sequence[str]) -> FloatArray:
    index = {k: j for j, k in enumerate(router.keys)}
    columns = []
    for key in keys:
        if key in index:
            column = router.calibration[:, index[key]]
            columns.append(np.where(np.isnan(column), router.prior(key), column))
        else:
            columns.append(np.full(len(router.calibration), router.prior(key)))
    return np.stack(columns, axis=1)


def strong_share(
    router: Calibrated, lam: float, candidates: Sequence[tuple[str, float]]
) -> float:
    """Share of the calibration sample that ``choose`` sends to the costliest candidate."""
    keys = [k for k, _ in candidates]
    costs = np.array([c for _, c in candidates], dtype=np.float64)
    value = _calibration_matrix(router, keys) - lam * costs
    return float(np.mean(np.argmax(value, axis=1) == int(np.argmax(costs))))


def lam_for_share(
    router: Calibrated, share: float, candidates: Sequence[tuple[str, float]]
) -> float:
    """The ``lam`` at which the costliest candidate gets ``share`` of the calls.

    The smallest ``lam`` whose share is at most the target (the share moves in steps of
    one calibration row); 0.0 when even ``lam = 0`` gives no more than the target share.

    Args:
        router: A trained router with a calibration sample.
        share: Target share in ``[0, 1]``.
        candidates: ``(model key, expected USD per call)`` pairs, two or more.

    Raises:
        ValueError: A share outside ``[0, 1]``, fewer than two candidates, equal
            costs, or no calibration sample.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError("strong_share must lie in [0, 1]")
    if len(candidates) < 2:
        raise ValueError("lam_for_share needs at least two candidates")
    costs = sorted(c for _, c in candidates)
    if costs[-1] <= costs[-2]:
        raise ValueError("the costliest candidate must cost more than the others")
    if not len(router.calibration):
        raise ValueError("no calibration sample: fit() the router or call calibrate()")
    if strong_share(router, 0.0, candidates) <= share:
        return 0.0
    # above this lam no probability gap (at most 1) pays for the cost gap
    low, high = 0.0, 1.0 / (costs[-1] - costs[-2]) * 1.000001
    for _ in range(100):
        middle = 0.5 * (low + high)
        if strong_share(router, middle, candidates) <= share:
            high = middle
        else:
            low = middle
    return high
