"""Median cost of ``Selector.candidates()`` on the default catalog.

Run: ``python -m benchmarks.selector``. Prints the median (and min-max over repeats) of a
memoised call — what the router pays per request — and of an uncached computation, for
every operation x complexity x policy mode, against the default catalog with every model
available. Target: <= 20 us per call on a 2-core machine.
"""

from __future__ import annotations

import itertools
import time

from benchmarks._stats import Spread
from tierwise.catalog.policy import Policy, PolicyMode
from tierwise.catalog.specs import Complexity, TaskType, load_default_catalog
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot

REPEATS = 7
CALLS = 20_000


def _per_call_us(fn: object, calls: int) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    catalog = load_default_catalog()
    snapshot = Snapshot.everything(catalog)
    requests = [
        (op, cx, Policy(mode=mode))
        for op, cx, mode in itertools.product(TaskType, Complexity, PolicyMode)
    ]
    cycle = itertools.cycle(requests)

    warm = Selector(catalog)

    def cached() -> None:
        op, cx, policy = next(cycle)
        warm.candidates(op, cx, policy, snapshot)

    def uncached() -> None:
        op, cx, policy = next(cycle)
        Selector(catalog, cache_size=0).candidates(op, cx, policy, snapshot)

    for label, fn, calls in (
        ("candidates() memoised (router hot path)", cached, CALLS),
        ("candidates() computed from scratch", uncached, CALLS // 10),
    ):
        runs = Spread.of(_per_call_us(fn, calls) for _ in range(REPEATS))
        note = f"{REPEATS} x {calls} calls, {len(requests)} distinct requests"
        print(f"{label:42s} {runs.text('us', width=7, note=note)}")


if __name__ == "__main__":
    main()
