"""Median with min-max over repeated runs, formatted the same way in every benchmark."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of repeated measurements and their range."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float], scale: float = 1.0) -> Spread:
        """Summarise ``values``, each multiplied by ``scale`` (1e3: seconds to ms)."""
        data = [v * scale for v in values]
        if not data:
            raise ValueError("no measurements")
        return cls(statistics.median(data), min(data), max(data), len(data))

    def text(self, unit: str, *, digits: int = 2, width: int = 0, note: str = "") -> str:
        """``median 1.23 ms (min 1.10, max 1.40; note)``."""
        extra = f"; {note}" if note else ""
        return (
            f"median {self.median:{width}.{digits}f} {unit} "
            f"(min {self.low:.{digits}f}, max {self.high:.{digits}f}{extra})"
        )

    def cell(self, digits: int = 2, *, signed: bool = False) -> str:
        """``1.23 (1.10–1.40)`` for a table cell (``+1.23 (+1.10–+1.40)`` when ``signed``)."""
        spec = f"{'+' if signed else ''}.{digits}f"
        if self.n == 1:
            return f"{self.median:{spec}}"
        return f"{self.median:{spec}} ({self.low:{spec}}–{self.high:{spec}})"
