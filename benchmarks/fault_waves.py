"""Answers under transient 503s: concurrent waves on one model, and pipelines on every provider.

Issue 14 measured a breaker cascade: 100 concurrent calls to a model answering 503 on 10%
of requests opened its breaker ("3 consecutive failures": the fast 503s return before the
successes), a second wave 0.5 s later got 0/100, and 200 instruction pipelines with 10%
503s on every provider answered 0/200. This script prints what tierwise does now, on the
simulator (real HTTP, real clients), each scenario on fresh routers and models:

* ``waves``: one model, 10% 503s (seeded), two waves of 100 concurrent ``ainvoke`` 0.5 s
  apart, through one router (one breaker);
* ``pipelines``: the instruction pipeline (``build_instruction_pipeline``) run 200 times
  concurrently over the packaged catalog, every hosted model answering 503 on ``--fault``
  of requests (default 10%; try ``--fault 0.3``).

Counted: runs that produced an answer; the 503s the simulator sent; attempts retried,
last-resort attempts. Run: ``python -m benchmarks.fault_waves [--fault 0.1] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections import Counter
from typing import Any

from benchmarks._isolation import scratch_state
from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, Limits, Provider, TaskType
from tierwise.guards.health import HealthBoard
from tierwise.routing.results import NoModelAvailable, RoutedResult
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Fault, Simulator


def _catalog() -> Catalog:
    models = {"only": {"provider": "openai", "model": "wave-model", "tier": "free",
                       "context_window": 32_768}}
    return Catalog.from_mapping({
        "models": models, "chains": {op.value: {"free": ["only"]} for op in TaskType},
    })


async def _wave(router: ModelRouter, n: int) -> tuple[int, list[RoutedResult]]:
    async def one(i: int) -> RoutedResult | None:
        try:
            return await router.ainvoke("rewriting", f"wave request {i}")
        except NoModelAvailable:
            return None

    results = await asyncio.gather(*(one(i) for i in range(n)))
    done = [r for r in results if r is not None]
    return len(done), done


def waves(sim: Simulator, fault: float, seed: int) -> None:
    catalog = _catalog()
    settings = sim.settings(dataclasses.replace(sim.settings(), catalog=catalog), timeout=10.0)
    spec = catalog.spec("only")
    sim.script(spec, Fault.server_error(503), fraction=fault, seed=seed)
    router = ModelRouter(settings, policy=Policy(mode="free_first", max_tier="free"),
                         snapshot=Snapshot.everything(catalog), ledger=None,
                         health=HealthBoard())

    async def both() -> list[tuple[int, list[RoutedResult]]]:
        first = await _wave(router, 100)
        await asyncio.sleep(0.5)
        second = await _wave(router, 100)
        return [first, second]

    before = len(sim.requests)
    outcome = asyncio.run(both())
    sent = sim.requests[before:]
    for i, (answered, results) in enumerate(outcome, 1):
        tries = Counter(sum(a.sent for a in r.attempts) for r in results)
        print(f"waves  wave {i}: {answered}/100 answered  (answered after 1/2/3 sent: "
              f"{tries[1]}/{tries[2]}/{tries[3]})")
    print(f"waves  simulator: {len(sent)} requests, "
          f"{sum(r.status == 503 for r in sent)} answered 503; breaker now "
          f"{router.health.state('only')}")


def pipelines(sim: Simulator, fault: float, seed: int, n: int) -> None:
    from tierwise.graphs.pipeline import build_instruction_pipeline

    base = sim.settings(timeout=10.0)
    # The published free-tier limits would refuse most of 200 concurrent pipelines locally;
    # this measures the 503s alone, so the models have no RPM/TPM/RPD here.
    catalog = base.catalog.model_copy(update={"models": {
        key: spec.model_copy(update={"limits": Limits()})
        for key, spec in base.catalog.models.items()
    }})
    settings = dataclasses.replace(base, catalog=catalog)
    hosted = [s for s in catalog if s.provider not in (Provider.EMBEDDED, Provider.OLLAMA)]
    for i, spec in enumerate(hosted):  # independent draws per model
        sim.script(spec, Fault.server_error(503), fraction=fault, seed=seed * 1000 + i)
    router = ModelRouter(settings, policy=Policy(mode="free_first", max_tier="free"),
                         snapshot=_hosted_only(catalog), ledger=None)
    graph = build_instruction_pipeline(router=router)

    async def run_all() -> list[Any]:
        async def one(i: int) -> Any:
            try:
                return await graph.ainvoke({"instruction": f"book a room for {i} people"})
            except Exception as exc:  # noqa: BLE001 - counted as unanswered
                return exc

        return await asyncio.gather(*(one(i) for i in range(n)))

    before = len(sim.requests)
    started = time.perf_counter()
    outcome = asyncio.run(run_all())
    wall = time.perf_counter() - started
    failed = [o for o in outcome if isinstance(o, BaseException)]
    sent = sim.requests[before:]
    print(f"pipelines ({fault:.0%} 503s on every hosted model): {n - len(failed)}/{n} "
          f"answered in {wall:.1f} s; simulator: {len(sent)} requests, "
          f"{sum(r.status == 503 for r in sent)} answered 503")
    for exc in failed[:2]:
        print(f"  unanswered: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        for a in getattr(exc, "attempts", ())[:8]:
            print(f"    {a.model} {a.failure} sent={a.sent} {a.detail[:90]}")


def _hosted_only(catalog: Catalog) -> Snapshot:
    """Every hosted model usable, the local ones not (the issue's setting: hosted faults)."""
    return Snapshot(frozenset(
        s.key for s in catalog if s.provider not in (Provider.EMBEDDED, Provider.OLLAMA)
    ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fault_waves")
    parser.add_argument("--fault", type=float, default=0.1, help="fraction of 503s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pipelines", type=int, default=200)
    args = parser.parse_args(argv)
    with scratch_state(), Simulator() as sim:
        waves(sim, args.fault, args.seed)
        sim.reset()
        pipelines(sim, args.fault, args.seed, args.pipelines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
