"""Helpers every peer benchmark shares: options, the simulator process, timing, formatting."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks._stats import Spread

__all__ = [
    "Options",
    "SlowResult",
    "cell",
    "interleaved_blocks",
    "paired_ratio",
    "run_capped",
    "times_cell",
]


@dataclass(frozen=True)
class Options:
    """What ``python -m benchmarks`` was asked for."""

    quick: bool = False

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def pickf(self, full: float, quick: float) -> float:
        return quick if self.quick else full


@dataclass(frozen=True)
class SlowResult:
    """Seconds-long samples of one contender; ``None`` for a sample that outlived the cap."""

    samples: tuple[float | None, ...]
    cap: float

    @property
    def capped(self) -> bool:
        return any(s is None for s in self.samples)

    def spread(self, scale: float = 1e3) -> Spread:
        """Finished samples, and the cap for those that did not (a lower bound)."""
        return Spread.of((self.cap if s is None else s for s in self.samples), scale)

    def cell(self, unit: str = "ms", scale: float = 1e3, digits: int = 0) -> str:
        done = [s for s in self.samples if s is not None]
        n = len(self.samples)
        if not done:
            return f"≥ {self.cap * scale:,.{digits}f} {unit} (capped; {n}/{n} unfinished)"
        text = f"{self.spread(scale).cell(digits)} {unit}"
        if self.capped:
            text = f"≥ {text} ({n - len(done)}/{n} capped at {self.cap * scale:,.0f})"
        return text


def run_capped(
    calls: Mapping[str, Callable[[], object]], samples: int, cap: float
) -> dict[str, SlowResult]:
    """Time every call ``samples`` times, all at once in threads, for at most ``cap`` s.

    For contenders that take seconds (SDK retries sleeping on Retry-After, no timeout on a
    silent server): they spend that time waiting, so running them side by side costs one
    cap instead of one per sample and moves their figures by far less than a millisecond.
    A sample still running at the cap is reported as ``None`` (at least the cap); its
    daemon thread is abandoned.
    """
    results: dict[tuple[str, int], float] = {}
    lock = threading.Lock()

    def measure(label: str, index: int, fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        try:
            fn()
        except Exception:  # noqa: BLE001 - a contender that gives up still took this long
            pass
        elapsed = time.perf_counter() - start
        with lock:
            results[(label, index)] = elapsed

    threads = [
        threading.Thread(target=measure, args=(label, i, fn), daemon=True)
        for label, fn in calls.items()
        for i in range(samples)
    ]
    deadline = time.monotonic() + cap
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return {
            label: SlowResult(
                tuple(
                    (s if (s := results.get((label, i))) is not None and s <= cap else None)
                    for i in range(samples)
                ),
                cap,
            )
            for label in calls
        }


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Spread:
    """``numerator / denominator`` run by run (measured in the same runs)."""
    return Spread.of(n / d for n, d in zip(numerator, denominator, strict=True))


def cell(values: Iterable[float], unit: str, scale: float = 1e3, digits: int = 2) -> str:
    """``1.23 (1.10–1.40) ms`` from raw seconds."""
    return f"{Spread.of(values, scale).cell(digits)} {unit}"


def times_cell(ratio: Spread, digits: int = 1) -> str:
    """``×12.3 (11.0–14.1)``."""
    if ratio.n == 1:
        return f"×{ratio.median:.{digits}f}"
    return f"×{ratio.median:.{digits}f} ({ratio.low:.{digits}f}–{ratio.high:.{digits}f})"


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def litellm_deployment(group: str, model: str, url: str, **params: object) -> dict[str, object]:
    """A LiteLLM Router deployment of simulator ``model`` (OpenAI protocol, dummy key)."""
    from tierwise.catalog.specs import Provider
    from tierwise.testing.simulator import DUMMY_KEYS

    return {
        "model_name": group,
        "litellm_params": {
            "model": f"openai/{model}",
            "api_base": url + "/v1",
            "api_key": DUMMY_KEYS[Provider.OPENAI],
            **params,
        },
    }


def interleaved_blocks(
    blocks: Sequence[Sequence[Any]],
    runs: int,
    calls: int,
    warmup: int,
    *,
    keep: bool = False,
    drain: float = 0.5,
) -> list[list[float]]:
    """``router_overhead.interleaved`` per block of variants, the blocks taking turns per run.

    Calls are interleaved one by one only *within* a block. LiteLLM goes in a block of its
    own: it finishes each call's logging on background threads, which would otherwise
    slow down whichever variant comes next. After each block, ``drain`` seconds pass
    untimed so that work does not spill into the next block. Returns, per variant (in
    block order), each run's median (or with ``keep`` every call's seconds).
    """
    from benchmarks.router_overhead import interleaved

    flat: list[list[float]] = [[] for block in blocks for _ in block]
    for run in range(runs):
        offset = 0
        for block in blocks:
            n = len(block)
            turn = run % n  # the first variant rotates per run
            order = [*block[turn:], *block[:turn]]
            got = interleaved(order, 1, calls, warmup if run == 0 else min(warmup, 3),
                              keep=keep)
            for j, values in enumerate(got):
                flat[offset + (turn + j) % n].extend(values)
            offset += n
            time.sleep(drain)
    return flat
