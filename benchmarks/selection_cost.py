"""1. Selection cost: ``Selector.candidates()`` vs LiteLLM Router's deployment pick.

tierwise: the default catalog, every model available, the default policy, one
``classification`` request of moderate complexity — a chain of N models — through the
memoised ``candidates()`` the router calls on every request (and, for context, computed
from scratch without the memo). LiteLLM: a ``Router`` whose one model group has the same
N deployments (simulator URLs; nothing is called), picked with ``get_available_deployment``
under the default strategy (``simple-shuffle``), under ``usage-based-routing-v2`` with an
RPM per deployment (the RPM-aware strategy of the throughput benchmark) and through the
async twin ``async_get_available_deployment``. The contenders take turns within each run
(the first one rotating); each run's figure is the mean of a tight loop, and ratios are
taken run by run.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from importlib import metadata

from benchmarks._common import Options, litellm_deployment, paired_ratio, times_cell
from benchmarks._offline import have_litellm, offline_litellm
from benchmarks._report import Bar, Panel, Row, Section
from benchmarks._stats import Spread
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Complexity, TaskType, load_default_catalog
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot

NAME = "selection"
TITLE = "1. selection cost"
GROUP = "classify"
URL = "http://127.0.0.1:9"  # never called: a pick makes no request

PerCall = Callable[[], float]  # one run: seconds per call


def loop(fn: Callable[[], object], calls: int) -> PerCall:
    def run() -> float:
        gc.collect()  # no contender pays for another's garbage
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls

    return run


def run(options: Options) -> Section:
    section = Section(NAME, TITLE)
    runs = options.pick(7, 2)
    catalog = load_default_catalog()
    snapshot = Snapshot.everything(catalog)
    policy = Policy()
    request = (TaskType.CLASSIFICATION, Complexity.MODERATE, policy, snapshot)
    memo = Selector(catalog)
    chain = memo.candidates(*request)
    contenders: dict[str, PerCall] = {
        "tierwise candidates() (memoised)": loop(
            lambda: memo.candidates(*request), options.pick(20_000, 2_000)
        ),
        "tierwise computed from scratch": loop(
            lambda: Selector(catalog, cache_size=0).candidates(*request), options.pick(2_000, 200)
        ),
    }
    litellm_version = ""
    if have_litellm():
        offline_litellm()
        litellm_version = metadata.version("litellm")
        from litellm import Router

        def router(strategy: str) -> Router:
            deployments = [
                litellm_deployment(GROUP, spec.model, URL, rpm=1_000) for spec in chain
            ]
            return Router(model_list=deployments, routing_strategy=strategy)

        shuffle, usage = router("simple-shuffle"), router("usage-based-routing-v2")
        calls = options.pick(1_000, 100)
        contenders["LiteLLM get_available_deployment (simple-shuffle)"] = loop(
            lambda: shuffle.get_available_deployment(GROUP), calls
        )
        contenders["LiteLLM get_available_deployment (usage-based-routing-v2)"] = loop(
            lambda: usage.get_available_deployment(GROUP), calls
        )

        async def picks(n: int) -> float:
            gc.collect()
            start = time.perf_counter()
            for _ in range(n):
                await shuffle.async_get_available_deployment(model=GROUP, request_kwargs={})
            return (time.perf_counter() - start) / n

        contenders["LiteLLM async_get_available_deployment (simple-shuffle)"] = (
            lambda: asyncio.run(picks(calls))
        )
    names = list(contenders)
    for fn in contenders.values():  # warm up: imports, caches, the memo
        fn()
    per_run: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            per_run[name].append(contenders[name]())

    memo_key = names[0]
    us = {name: Spread.of(values, 1e6) for name, values in per_run.items()}
    n = len(chain)
    section.rows.append(Row(
        f"one pick among {n} models / deployments (µs per call)",
        tierwise=f"{us[memo_key].cell(2)} µs memoised; {us[names[1]].cell(1)} µs from scratch",
        litellm=(
            "; ".join(
                f"{name.split('(')[-1].rstrip(')')}"
                f"{' async' if 'async' in name else ''}: {us[name].cell(0)} µs, "
                f"{times_cell(paired_ratio(per_run[name], per_run[memo_key]), 0)} tierwise's"
                for name in names[2:]
            )
            or "not installed (pip install -e '.[bench]')"
        ),
        target="tierwise ≥ 10× faster than LiteLLM",
        met=(
            all(
                paired_ratio(per_run[name], per_run[memo_key]).median >= 10
                for name in names[2:]
            )
            if len(names) > 2
            else None
        ),
    ))
    if len(names) > 2:
        scratch = min(paired_ratio(per_run[name], per_run[names[1]]).median for name in names[2:])
        section.notes.append(
            f"Even computed from scratch (no memo, every placement explained), tierwise's "
            f"selection is {scratch:.0f}× faster than LiteLLM's fastest pick here."
        )
    section.notes += [
        f"Request: classification, moderate complexity, default policy "
        f"({policy.mode.value}, up to the {policy.max_tier.value} tier), every model of the "
        f"default catalog available: a chain of {n} ({', '.join(s.key for s in chain)}).",
        f"LiteLLM {litellm_version}: one model group of {n} deployments (the same provider "
        "model ids, OpenAI protocol, simulator URL; no request is made), default Router "
        "settings; usage-based-routing-v2 with rpm=1000 per deployment.",
        f"{runs} runs; each run's figure is the mean of a tight loop; contenders take turns "
        "(first one rotating); ratios run by run.",
    ]
    section.panels.append(Panel(
        "1. selection cost per call (log scale)", "µs",
        [Bar(name.replace("get_available_deployment", "pick").replace("async_", "async "),
             us[name]) for name in names],
        log=True,
    ))
    return section
