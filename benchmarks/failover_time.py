"""3. Failover time: from the call to the fallback's answer when the primary fails.

The primary answers 429 with ``Retry-After: 30``, answers 503, or accepts the request and
stays silent (the client's read timeout has to fire). Contenders, each with the same
primary and fallback on the zero-latency simulator (its own process):

* tierwise ``ModelRouter`` (``ledger=None``): on its first failover (a fresh router per
  call: new limiter and circuit breaker, warm clients) and in steady state (a router that
  has already seen the primary fail);
* LangChain ``primary.with_fallbacks([fallback])`` over default ``ChatOpenAI`` clients (SDK
  retries on, no timeout), and over tierwise's clients (retries off, timeout set);
* LiteLLM ``Router`` with its default settings, and with ``num_retries=0`` (first call on a
  fresh router and steady state).

Contenders that answer within milliseconds are timed call by call, interleaved. Those
that take seconds (default retries sleeping on Retry-After, no timeout on a silent
server) run side by side in threads with a cap; a sample still running at the cap is
reported as "≥ cap". For the silent primary, tierwise's clients, the with_fallbacks
clients and LiteLLM (``timeout=``) all get the same short timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from benchmarks._common import Options, interleaved_blocks, litellm_deployment, run_capped
from benchmarks._offline import have_litellm, offline_litellm
from benchmarks._report import Bar, Panel, Row, Section
from benchmarks._stats import Spread
from benchmarks.router_overhead import (
    FALLBACK,
    HANGING,
    MESSAGES,
    OPERATION,
    RATE_LIMITED,
    UNAVAILABLE,
    Bench,
    Variant,
    default_client,
    scenario,
    simulator,
    timer,
)

NAME = "failover"
TITLE = "3. failover time"
RETRY_AFTER = 30.0
TIMEOUT = 1.0  # the short client timeout every contender gets for the silent primary
MARGIN_MS = 10.0
PROMPT = [{"role": "user", "content": str(MESSAGES[0].content)}]

#: fault label -> (simulator model, calls that teach a router the primary is out)
FAULTS = {
    f"429 Retry-After {RETRY_AFTER:g}": (RATE_LIMITED, 1),
    "503": (UNAVAILABLE, 3),
    "silent (read timeout)": (HANGING, 3),
}


def litellm_router(url: str, primary: str, **settings: Any) -> Any:
    from litellm import Router

    return Router(
        model_list=[
            litellm_deployment("primary", primary, url),
            litellm_deployment("fallback", FALLBACK, url),
        ],
        fallbacks=[{"primary": ["fallback"]}],
        **settings,
    )


def litellm_call(router: Any) -> None:
    response = router.completion(model="primary", messages=PROMPT)
    assert response.model == FALLBACK, response.model


def tierwise_call(router_of: Callable[[], Any], primary: str) -> Callable[[], float]:
    """Time ``router_of().invoke`` (building the router is not timed)."""
    import time

    def call() -> float:
        router = router_of()
        start = time.perf_counter()
        result = router.invoke(OPERATION, MESSAGES)
        elapsed = time.perf_counter() - start
        assert result.model == FALLBACK, result.attempts
        return elapsed

    return call


def fresh_litellm(url: str, primary: str, **settings: Any) -> Callable[[], float]:
    """A fresh LiteLLM Router per call (construction not timed)."""
    import time

    def call() -> float:
        router = litellm_router(url, primary, **settings)
        start = time.perf_counter()
        litellm_call(router)
        return time.perf_counter() - start

    return call


def sent_to(url: str, model: str) -> int:
    """Requests the simulator has received for ``model``."""
    records = httpx.get(url + "/_sim/requests", timeout=10).json()
    return sum(1 for r in records if r["model"] == model)


def steady_hits(url: str, model: str, calls: dict[str, Callable[[], object]]) -> dict[str, int]:
    """How many of 3 steady-state calls of each contender reached the failing primary."""
    hits = {}
    for who, call in calls.items():
        before = sent_to(url, model)
        for _ in range(3):
            call()
        hits[who] = sent_to(url, model) - before
    return hits


def fast(bench: Bench, url: str, primary: str, prime: int, slow: bool, peers: bool,
         runs: int, calls: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Millisecond contenders, interleaved (every call kept for the silent primary).

    Also how many steady-state calls still reached the primary, per router.
    """
    fallback = bench.spec_client(FALLBACK)
    bench.warm(FALLBACK)
    steady = bench.router(primary, ledger=None)
    for _ in range(prime):
        steady.invoke(OPERATION, MESSAGES)
    chain = bench.spec_client(primary).with_fallbacks([fallback])
    variants = [
        Variant("fallback alone", timer(lambda: fallback.invoke(MESSAGES))),
        Variant("tierwise, first failover",
                tierwise_call(lambda: bench.router(primary, ledger=None), primary)),
        Variant("tierwise, steady state", tierwise_call(lambda: steady, primary)),
        Variant("with_fallbacks, tierwise clients", timer(lambda: chain.invoke(MESSAGES))),
    ]
    blocks = [variants]
    if peers:  # a block of its own: its background logging would slow the next variant
        settings: dict[str, Any] = {"num_retries": 0}
        if slow:
            settings["timeout"] = TIMEOUT
        primed = litellm_router(url, primary, **settings)
        for _ in range(prime):
            litellm_call(primed)
        blocks.append([
            Variant("LiteLLM num_retries=0, first call", fresh_litellm(url, primary, **settings)),
            Variant("LiteLLM num_retries=0, steady state", timer(lambda: litellm_call(primed))),
        ])
        variants = [*variants, *blocks[1]]
    if slow:  # every sample waits for the timeout: a few, each one kept
        seconds = interleaved_blocks(blocks, 1, calls, warmup=0, keep=True)
    else:
        seconds = interleaved_blocks(blocks, runs, calls, warmup=3)
    routers: dict[str, Callable[[], object]] = {
        "tierwise": lambda: steady.invoke(OPERATION, MESSAGES)}
    if peers:
        routers["LiteLLM (num_retries=0)"] = lambda: litellm_call(primed)
    hits = steady_hits(url, primary, routers)
    return {v.label: s for v, s in zip(variants, seconds, strict=True)}, hits


def run(options: Options) -> Section:
    section = Section(NAME, TITLE)
    runs, calls = options.pick(5, 2), options.pick(20, 3)
    silent_calls = options.pick(3, 1)
    cap, slow_samples = options.pickf(20.0, 3.0), options.pick(2, 1)
    peers = have_litellm()
    if peers:
        offline_litellm()
    hang = cap + 30.0  # silent for longer than any capped contender waits
    fast_results: dict[str, dict[str, list[float]]] = {}
    reached: dict[str, dict[str, int]] = {}
    with simulator(scenario(RETRY_AFTER, RETRY_AFTER, hang), in_process=False) as url:
        bench = Bench(url, timeout=5.0)
        short = Bench(url, timeout=TIMEOUT)
        for fault, (model, prime) in FAULTS.items():
            silent = model == HANGING
            fast_results[fault], reached[fault] = fast(
                short if silent else bench, url, model, prime, silent, peers, runs,
                silent_calls if silent else calls,
            )
        slow_calls: dict[str, Callable[[], object]] = {}
        for fault, (model, _) in FAULTS.items():
            chain = default_client(url, model).with_fallbacks([default_client(url, FALLBACK)])
            slow_calls[f"{fault}|with_fallbacks, default clients"] = (
                lambda chain=chain: chain.invoke(MESSAGES)
            )
            if peers:
                default_router = litellm_router(url, model)
                slow_calls[f"{fault}|LiteLLM defaults"] = (
                    lambda r=default_router: litellm_call(r)
                )
                if model == HANGING:
                    bare = litellm_router(url, model, num_retries=0)
                    slow_calls[f"{fault}|LiteLLM num_retries=0, no timeout"] = (
                        lambda r=bare: litellm_call(r)
                    )
        slow = run_capped(slow_calls, slow_samples, cap)

    for fault, (model, _) in FAULTS.items():
        got = fast_results[fault]
        silent = model == HANGING
        spreads = {k: Spread.of(v, 1e3) for k, v in got.items()}
        alone = spreads["fallback alone"].median
        first = spreads["tierwise, first failover"]
        limit = alone + MARGIN_MS + (TIMEOUT * 1e3 if silent else 0.0)
        extra = first.median - alone - (TIMEOUT * 1e3 if silent else 0.0)

        def slow_cell(label: str, fault: str = fault) -> str:
            result = slow.get(f"{fault}|{label}")
            return "not installed" if result is None else result.cell()

        lt = "not installed"
        if peers:
            timeout_note = f", timeout={TIMEOUT:g} s" if silent else ""
            lt = (
                f"defaults: {slow_cell('LiteLLM defaults')}; num_retries=0{timeout_note}: "
                f"{spreads['LiteLLM num_retries=0, first call'].cell(1)} ms first call, "
                f"{spreads['LiteLLM num_retries=0, steady state'].cell(1)} ms steady"
            )
            if silent:
                lt += f"; num_retries=0, no timeout: {slow_cell('LiteLLM num_retries=0, no timeout')}"  # noqa: E501
        section.rows.append(Row(
            f"primary {fault}: time to the fallback's answer (ms)",
            tierwise=(
                f"{first.cell(1)} ms first failover "
                f"({'timeout + ' if silent else ''}fallback {extra:+.1f} ms); "
                f"{spreads['tierwise, steady state'].cell(1)} ms steady state"
            ),
            langchain=(
                f"default clients: {slow_cell('with_fallbacks, default clients')}; "
                f"tierwise's clients{f' (timeout {TIMEOUT:g} s)' if silent else ''}: "
                f"{spreads['with_fallbacks, tierwise clients'].cell(1)} ms"
            ),
            litellm=lt,
            target=(f"tierwise ≤ {'timeout + ' if silent else ''}fallback alone "
                    f"({alone:.1f} ms) + {MARGIN_MS:g} ms"),
            met=first.median <= limit,
            why="" if first.median <= limit else "see notes",
        ))
        bars = [Bar(label, spread) for label, spread in spreads.items()]
        bars += [Bar(key.split("|", 1)[1], result.spread(), capped=result.capped)
                 for key, result in slow.items() if key.startswith(fault + "|")]
        section.panels.append(Panel(f"3. failover, primary {fault} (log scale)", "ms",
                                    bars, log=True))
    section.notes += [
        f"Millisecond contenders: {runs} runs × {calls} calls, interleaved (LiteLLM's in a "
        "block of their own, its background logging given 0.5 s to finish before the "
        "others run; a run's figure is the median of its calls); silent primary: "
        f"{silent_calls} call(s) each, every "
        "call kept. The steady-state router has already seen the primary fail (1 call for "
        "a 429, 3 for a 503 or a timeout).",
        f"Seconds-long contenders: {slow_samples} sample(s) each, all started together in "
        f"threads and capped at {cap:g} s; '≥ {cap * 1e3:,.0f} ms (capped)' means the "
        "fallback had not answered by then. With Retry-After 30 the OpenAI SDK sleeps 30 s "
        "before each of its 2 retries; with no timeout a silent server is waited on for "
        f"as long as it stays silent (here {hang:g} s).",
    ]
    for fault, hits in reached.items():
        section.notes.append(
            f"Steady state, primary {fault}: of 3 further calls, "
            + ", ".join(f"{who} sent {n} to the primary" for who, n in hits.items())
            + " (tierwise's limiter skips a 429'd model until its Retry-After, its circuit "
            "breaker a failing one until its cooldown; LiteLLM's cooldown does not take "
            "the only deployment of a model group out)."
        )
    return section
