"""Added latency of ``ModelRouter.invoke`` and failover time, beside LangChain's ``with_fallbacks``.

Run: ``python -m benchmarks.router_overhead [--runs 5] [--calls 300] [--in-process]``
(2-3 minutes on a busy 2-core machine; ``--help`` lists the knobs).

Everything runs against the zero-latency provider simulator, started in its own process
(``python -m tierwise.testing --scenario FILE --port 0``) so the server does not compete
with the client for one GIL (``--in-process``: a thread in this process, as in the tests).
All models are OpenAI-protocol models of a small benchmark catalog, so every variant uses
``ChatOpenAI``. Every figure is the median over ``--runs`` runs with min-max; a run's
figure is the median of its calls; variants measured together are interleaved call by
call (the first variant rotating per run) so drift hits them alike. Measured:

1. Overhead per call: the bare tierwise client (``ProviderFactory(settings).chat_model``:
   retries off, timeout set), ``ModelRouter.invoke`` with that model as primary (fixed
   snapshot: no probing), a default ``ChatOpenAI`` and LangChain's
   ``primary.with_fallbacks([fallback])`` over default clients; the same with a schema
   (bare clients: ``with_structured_output(schema)``, as a user writes it).
   Target: router - bare client <= 0.3 ms.
   With a ledger vs without, in the same runs: the router with no ledger, with a ledger
   (every attempt recorded; dynamic model selection reading the ledger's record for its
   snapshot at most every 2 s) and with a ledger but no dynamic selection
   (``demotion=None``); then what one refresh of the record costs (the one call in ~2 s
   that pays for it).
2. Failover, from the call to the fallback's answer, when the primary answers 429
   (``Retry-After: 30``), 503, or nothing at all (read timeout). The router is measured on
   its first failover (a fresh limiter and circuit breaker; clients and selector warm, so
   construction is not measured) and in steady state (primary known blocked: skipped
   without a request). ``with_fallbacks`` is measured over default clients (SDK retries
   on, which sleep on Retry-After: run ``--default-runs`` times only, and against a primary
   that says ``Retry-After: --default-retry-after`` instead of 30) and over tierwise's
   clients (retries off). Target: router <= fallback alone + 10 ms. A primary that never
   answers is measured with a short tierwise client timeout (``--timeout``, 1 s; the
   default is 60 s) against default clients, which set none.

Routers have no ledger except in the measurements of the ledger's cost (their own temporary
files), and the process's default ledger and data dir are temporary too: what the user's
ledger holds (a primary it demoted) does not change the figures, and nothing is left behind.

The load average is printed: on a shared 2-core machine other processes inflate every
figure; the differences and ratios, measured in the same runs, are what to compare.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from benchmarks._isolation import scratch_state
from benchmarks._stats import Spread
from tierwise.catalog.policy import Policy
from tierwise.catalog.settings import Credentials, ProviderConfig, Settings
from tierwise.catalog.specs import Catalog, Provider, TaskType
from tierwise.ledger import Ledger
from tierwise.providers.clients import ProviderFactory
from tierwise.routing.availability import DEFAULT_DEMOTION, read_standings
from tierwise.routing.router import ModelRouter
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import isolated_environment
from tierwise.testing.simulator import DUMMY_KEYS

OPERATION = TaskType.CLASSIFICATION
PRIMARY = "bench-primary"
FALLBACK = "bench-fallback"
RATE_LIMITED = "bench-429"  # 429 with Retry-After: --retry-after (30 s)
RATE_LIMITED_SHORT = "bench-429-short"  # the same for default clients, shorter Retry-After
UNAVAILABLE = "bench-503"
HANGING = "bench-hang"  # accepts the request and says nothing for --hang seconds
KEY = DUMMY_KEYS[Provider.OPENAI]
MESSAGES: list[BaseMessage] = [HumanMessage("Classify this ticket: the printer is on fire.")]


class Label(BaseModel):
    """The structured-output schema."""

    label: str
    confidence: float


Timed = Callable[[], float]  # makes one call, returns its duration in seconds


@dataclass
class Variant:
    """One thing to time; ``before_run`` (untimed) prepares it for each run."""

    label: str
    call: Timed
    before_run: Callable[[], None] | None = None


@dataclass
class Row:
    """One line of the result table (cells in ms, already formatted)."""

    measurement: str
    router: str = "-"
    lc_default: str = "-"
    lc_tierwise: str = "-"
    reference: str = "-"
    target: str = "-"


# ---------------------------------------------------------------------- set-up


def bench_catalog() -> Catalog:
    """Five OpenAI-protocol free models; the snapshot decides which two are candidates."""
    keys = [RATE_LIMITED, UNAVAILABLE, HANGING, PRIMARY, FALLBACK]
    models = {
        k: {"provider": "openai", "model": k, "tier": "free", "context_window": 128_000}
        for k in keys
    }
    return Catalog.from_mapping(
        {"models": models, "chains": {op.value: {"free": keys} for op in TaskType}}
    )


def scenario(retry_after: float, default_retry_after: float, hang: float) -> dict[str, Any]:
    """The simulator's scripts: one faulty behaviour per model, for ever."""

    def rule(model: str, **reply: Any) -> dict[str, Any]:
        return {"model": model, "reply": reply}

    return {
        "script": [
            rule(RATE_LIMITED, fault="rate_limited", retry_after=retry_after),
            rule(RATE_LIMITED_SHORT, fault="rate_limited", retry_after=default_retry_after),
            rule(UNAVAILABLE, fault="http_error", status=503),
            rule(HANGING, fault="timeout", seconds=hang),
        ]
    }


@contextmanager
def simulator(data: dict[str, Any], in_process: bool) -> Iterator[str]:
    """The simulator's URL, serving ``data``: a child process, or a thread with the GIL."""
    if in_process:
        from tierwise.testing import Simulator
        from tierwise.testing.scenario import apply_scenario

        with Simulator() as sim:
            apply_scenario(sim, data)
            yield sim.url
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.json"
        path.write_text(json.dumps(data))
        command = [sys.executable, "-m", "tierwise.testing", "--scenario", str(path), "--port", "0"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            yield proc.stdout.readline().split("listening on ", 1)[1].strip()
        finally:
            proc.terminate()
            proc.wait(10)


def bench_settings(url: str, catalog: Catalog, timeout: float) -> Settings:
    """Settings pointing the OpenAI provider at the simulator with ``timeout``."""
    credentials = Credentials(openai_api_key=KEY, _env_file=None)
    providers = {Provider.OPENAI: ProviderConfig(base_url=url + "/v1", timeout=timeout)}
    return Settings(catalog, Policy(), credentials).with_providers(providers, credentials)


def default_client(url: str, model: str) -> ChatOpenAI:
    """``ChatOpenAI`` as a LangChain user writes it: SDK retries on, no timeout."""
    return ChatOpenAI(model=model, base_url=url + "/v1", api_key=KEY)


class Bench:
    """The routers and clients of one benchmark, all against one simulator."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.catalog = bench_catalog()
        self.settings = bench_settings(url, self.catalog, timeout)
        self.factory = ProviderFactory(self.settings)
        self.selector = Selector(self.catalog)  # stateless memo, shared by fresh routers

    def spec_client(self, key: str) -> Any:
        return self.factory.chat_model(self.catalog.spec(key))

    def router(self, primary: str, **kwargs: Any) -> ModelRouter:
        """A new router (new limiter and breakers) whose candidates are primary, fallback.

        It has no ledger unless ``ledger=`` says which: a ledger's record demotes a primary
        that failed in earlier calls, and a "first failover" must start from nothing.
        """
        kwargs.setdefault("ledger", None)
        snapshot = Snapshot(available=frozenset({primary, FALLBACK}))
        router = ModelRouter(self.settings, factory=self.factory, snapshot=snapshot, **kwargs)
        router.selector = self.selector
        return router

    def warm(self, *keys: str) -> None:
        """Build the clients and open their connections (answers or faults alike)."""
        for key in keys:
            try:
                self.spec_client(key).invoke(MESSAGES)
            except Exception:  # noqa: BLE001 - the faulty models fail, as scripted
                pass


# ---------------------------------------------------------------------- timing


def timer(fn: Callable[[], object]) -> Timed:
    def call() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return call


def interleaved(
    variants: list[Variant], runs: int, calls: int, warmup: int, *, keep: bool = False
) -> list[list[float]]:
    """Per variant, the median seconds per call of each run; calls interleaved round-robin.

    With ``keep``, every call's seconds instead (for a few seconds-long samples).
    """
    for v in variants:
        if v.before_run is not None:
            v.before_run()
        for _ in range(warmup):
            v.call()
    n = len(variants)
    medians: list[list[float]] = [[] for _ in variants]
    for run in range(runs):
        for v in variants:
            if v.before_run is not None:
                v.before_run()
        order = [(run + i) % n for i in range(n)]
        samples: list[list[float]] = [[] for _ in variants]
        gc.collect()
        for _ in range(calls):
            for i in order:
                samples[i].append(variants[i].call())
        for i in range(n):
            if keep:
                medians[i].extend(samples[i])
            else:
                medians[i].append(statistics.median(samples[i]))
    return medians


def sequential(call: Timed, runs: int, cap: float | None = None) -> Spread | None:
    """``runs`` samples of a seconds-long call, in ms; None when one outlives ``cap`` s."""

    def measure(out: list[float]) -> None:
        out.append(call())

    samples = []
    for _ in range(runs):
        box: list[float] = []
        worker = threading.Thread(target=measure, args=(box,), daemon=True)
        worker.start()
        worker.join(cap)
        if not box:
            return None
        samples.append(box[0])
    return Spread.of(samples, 1e3)


def paired(a: list[float], b: list[float], scale: float = 1e3) -> Spread:
    """``a - b`` run by run (the same runs, so drift cancels), in ms."""
    return Spread.of((x - y for x, y in zip(a, b, strict=True)), scale)


def cell(s: Spread | None, digits: int = 2) -> str:
    return "no answer within the cap" if s is None else s.cell(digits)


def routed(router: Callable[[], ModelRouter], primary: str, sent: list[int] | None = None) -> Timed:
    """Time ``router().invoke`` (``router()`` itself untimed); the fallback must answer.

    Without ``sent`` the primary must have been called; with it, the calls that reached
    the primary are counted there (in steady state only half-open probes should).
    """

    def call() -> float:
        r = router()
        start = time.perf_counter()
        result = r.invoke(OPERATION, MESSAGES)
        elapsed = time.perf_counter() - start
        reached = any(a.sent for a in result.attempts if a.model == primary)
        assert result.model == FALLBACK, result.attempts
        if sent is None:
            assert reached, result.attempts
        elif reached:
            sent[0] += 1
        return elapsed

    return call


def probes(sent: list[int]) -> str:
    """A note on steady-state calls that still reached the primary."""
    if not sent[0]:
        return "primary never called"
    return f"{sent[0]} call(s) reached the primary: half-open probes after the cooldown"


# ---------------------------------------------------------------------- measurements


def overhead(bench: Bench, runs: int, calls: int, schema: type[BaseModel] | None) -> list[Row]:
    """Per-call latency: bare clients, the router, with_fallbacks over default clients."""
    router = bench.router(PRIMARY)
    p_default = default_client(bench.url, PRIMARY)
    f_default = default_client(bench.url, FALLBACK)
    kind = "text" if schema is None else "structured"
    if schema is None:
        bare: Any = bench.spec_client(PRIMARY)
        lc_bare: Any = p_default
        lc_chain: Any = p_default.with_fallbacks([f_default])
    else:
        # as a user writes it, with the method the router uses for this model (the router
        # also asks for the raw message: include_raw=True)
        method = bench.catalog.spec(PRIMARY).structured_output.value
        bare = bench.spec_client(PRIMARY).with_structured_output(schema, method=method)
        lc_bare = p_default.with_structured_output(schema)
        # with_structured_output on a with_fallbacks wrapper does not work: one per model
        lc_chain = lc_bare.with_fallbacks([f_default.with_structured_output(schema)])
    result = router.invoke(OPERATION, MESSAGES, schema=schema)
    assert result.model == PRIMARY and len(result.attempts) == 1, result.attempts
    variants = [
        Variant("bare tierwise client", timer(lambda: bare.invoke(MESSAGES))),
        Variant(
            "ModelRouter.invoke", timer(lambda: router.invoke(OPERATION, MESSAGES, schema=schema))
        ),
        Variant("bare default ChatOpenAI", timer(lambda: lc_bare.invoke(MESSAGES))),
        Variant("with_fallbacks, default clients", timer(lambda: lc_chain.invoke(MESSAGES))),
    ]
    runs_s = interleaved(variants, runs, calls, warmup=max(20, calls // 10))
    spreads = [Spread.of(r, 1e3) for r in runs_s]
    added = paired(runs_s[1], runs_s[0])
    ratio = Spread.of(r / b for r, b in zip(runs_s[1], runs_s[0], strict=True))
    added_lc = paired(runs_s[3], runs_s[2])
    note = f"{runs} runs x {calls} calls"
    for v, s in zip(variants, spreads, strict=True):
        print(f"  {kind:10s} {v.label:32s} {s.text('ms', width=6, note=note)}")
    print(f"  {kind:10s} {'router - bare tierwise client':32s} {added.text('ms', digits=3)}")
    print(f"  {kind:10s} {'router / bare tierwise client':32s} {ratio.text('x', digits=3)}")
    print(f"  {kind:10s} {'with_fallbacks - bare default':32s} {added_lc.text('ms', digits=3)}")
    return [
        Row(
            f"per call, {kind}",
            router=spreads[1].cell(),
            lc_default=spreads[3].cell(),
            reference=f"bare tierwise client {spreads[0].cell()}; "
            f"bare default ChatOpenAI {spreads[2].cell()}",
        ),
        Row(
            f"added over the bare client, {kind}",
            router=f"{added.cell(3, signed=True)} (x{ratio.median:.3f})",
            lc_default=added_lc.cell(3, signed=True),
            target="router <= +0.3",
        ),
    ]


def ledger_overhead(bench: Bench, runs: int, calls: int) -> list[Row]:
    """Per-call latency without a ledger, with one, with one but no dynamic selection.

    Also what one refresh of the ledger's record (into standings) costs.
    """
    with tempfile.TemporaryDirectory() as tmp:
        with Ledger(Path(tmp) / "ledger.sqlite3") as ledger, \
                Ledger(Path(tmp) / "static.sqlite3") as static_ledger:  # fmt: skip
            bare = bench.spec_client(PRIMARY)
            plain = bench.router(PRIMARY)
            dynamic = bench.router(PRIMARY, ledger=ledger)
            static = bench.router(PRIMARY, ledger=static_ledger, demotion=None)
            for router in (plain, dynamic, static):
                assert router.invoke(OPERATION, MESSAGES).model == PRIMARY
            variants = [
                Variant("bare tierwise client", timer(lambda: bare.invoke(MESSAGES))),
                Variant("router, no ledger", timer(lambda: plain.invoke(OPERATION, MESSAGES))),
                Variant("router + ledger", timer(lambda: dynamic.invoke(OPERATION, MESSAGES))),
                Variant(
                    "router + ledger, demotion off",
                    timer(lambda: static.invoke(OPERATION, MESSAGES)),
                ),
            ]
            runs_s = interleaved(variants, runs, calls, warmup=max(20, calls // 10))
            assert ledger.flush()
            rows_in_horizon = sum(
                w.n for w in ledger.performance(
                    last_n=10**9, since=time.time() - DEFAULT_DEMOTION.horizon
                ).values()
            )
            refresh = Spread.of(
                (refresh_seconds(ledger, bench.catalog) for _ in range(runs * 5)), 1e3
            )
            assert not dynamic.snapshot().standings  # the primary answers: nobody demoted
    spreads = [Spread.of(r, 1e3) for r in runs_s]
    with_ledger = paired(runs_s[2], runs_s[1])
    ratio = Spread.of(w / n for w, n in zip(runs_s[2], runs_s[1], strict=True))
    selection = paired(runs_s[2], runs_s[3])
    recording = paired(runs_s[3], runs_s[1])
    note = f"{runs} runs x {calls} calls"
    for v, sp in zip(variants, spreads, strict=True):
        print(f"  ledger     {v.label:32s} {sp.text('ms', width=6, note=note)}")
    print(f"  ledger     {'with ledger - without':32s} {with_ledger.text('ms', digits=3)}")
    print(f"  ledger     {'with ledger / without':32s} {ratio.text('x', digits=3)}")
    print(f"  ledger     {'  of which recording rows':32s} {recording.text('ms', digits=3)}")
    print(f"  ledger     {'  of which dynamic selection':32s} {selection.text('ms', digits=3)}")
    print(
        f"  ledger     {'one refresh of the record':32s} "
        f"{refresh.text('ms', digits=3, note=f'{rows_in_horizon} rows in the horizon')}"
    )
    return [
        Row(
            "per call, text, with a ledger (dynamic selection on)",
            router=f"{spreads[2].cell()}; without ledger {spreads[1].cell()}",
            reference=f"bare tierwise client {spreads[0].cell()}",
        ),
        Row(
            "added by the ledger, text",
            router=f"{with_ledger.cell(3, signed=True)} (x{ratio.median:.3f}); recording "
            f"{recording.cell(3, signed=True)}, dynamic selection "
            f"{selection.cell(3, signed=True)}",
            reference=f"one refresh of the record {refresh.cell(3)} "
            f"({rows_in_horizon} rows), at most every 2 s",
        ),
    ]


def refresh_seconds(ledger: Ledger, catalog: Catalog) -> float:
    """Seconds one read of the ledger's record into standings takes (what the router does)."""
    start = time.perf_counter()
    read_standings(DEFAULT_DEMOTION, ledger, catalog, time.time())
    return time.perf_counter() - start


def failover(
    bench: Bench,
    primary: str,
    what: str,
    runs: int,
    calls: int,
    *,
    prime_calls: int,
    default: tuple[str, int, str],
) -> list[Row]:
    """Time to the fallback's answer when ``primary`` fails, for every contender.

    ``prime_calls`` calls teach a fresh router that the primary is out (1 for a 429: the
    limiter blocks it; 3 for a 503: the breaker trips). ``default`` is the default-client
    primary's model, how many calls to time and a note on what that primary says.
    """
    bench.warm(primary, FALLBACK)
    steady: list[ModelRouter] = []

    def prime() -> None:
        router = bench.router(primary)
        for _ in range(prime_calls):
            router.invoke(OPERATION, MESSAGES)
        steady[:] = [router]

    fallback = bench.spec_client(FALLBACK)
    lc_tierwise = bench.spec_client(primary).with_fallbacks([fallback])
    reached = [0]
    variants = [
        Variant("fallback alone (bare client)", timer(lambda: fallback.invoke(MESSAGES))),
        Variant("router, first failover", routed(lambda: bench.router(primary), primary)),
        Variant("router, steady state", routed(lambda: steady[0], primary, reached), prime),
        Variant("with_fallbacks, tierwise clients", timer(lambda: lc_tierwise.invoke(MESSAGES))),
    ]
    runs_s = interleaved(variants, runs, calls, warmup=5)
    spreads = [Spread.of(r, 1e3) for r in runs_s]
    first, steady_over = paired(runs_s[1], runs_s[0]), paired(runs_s[2], runs_s[0])
    note = f"{runs} runs x {calls} calls"
    for v, s in zip(variants, spreads, strict=True):
        print(f"  {what}: {v.label:34s} {s.text('ms', width=6, note=note)}")
    over_lc = paired(runs_s[1], runs_s[3])
    print(f"  {what}: {'router first failover - fallback':34s} {first.text('ms', digits=3)}")
    print(f"  {what}: {'router first - with_fallbacks':34s} {over_lc.text('ms', digits=3)}")
    print(
        f"  {what}: {'router steady state - fallback':34s} "
        f"{steady_over.text('ms', digits=3, note=probes(reached))}"
    )

    model, samples, said = default
    chain = default_client(bench.url, model).with_fallbacks([default_client(bench.url, FALLBACK)])
    lc_default = sequential(timer(lambda: chain.invoke(MESSAGES)), samples)
    assert lc_default is not None
    print(
        f"  {what}: {'with_fallbacks, default clients':34s} "
        f"{lc_default.text('ms', digits=0, note=f'{samples} calls; primary {said}')}"
    )

    def versus(i: int, d: Spread) -> str:
        ratio = Spread.of(x / y for x, y in zip(runs_s[i], runs_s[0], strict=True))
        return f"{spreads[i].cell()}; fallback {d.median:+.2f} (x{ratio.median:.2f})"

    return [
        Row(
            f"{what}: first failover",
            router=f"{versus(1, first)}; with_fallbacks {over_lc.median:+.2f}",
            lc_default=f"{lc_default.cell(0)} (primary {said}; {samples} calls)",
            lc_tierwise=spreads[3].cell(),
            reference=f"fallback alone {spreads[0].cell()}",
            target="router <= fallback + 10",
        ),
        Row(
            f"{what}: steady state (primary known out)",
            router=versus(2, steady_over),
            lc_default="no state: every call as above",
            lc_tierwise="no state: every call as above",
            reference=f"fallback alone {spreads[0].cell()}",
            target="router <= fallback + 10",
        ),
    ]


def failover_timeout(url: str, timeout: float, hang: float, calls: int, samples: int) -> list[Row]:
    """A primary that never answers: clients with a tierwise timeout vs without one."""
    bench = Bench(url, timeout)
    bench.warm(FALLBACK)
    fallback = bench.spec_client(FALLBACK)
    lc_tierwise = bench.spec_client(HANGING).with_fallbacks([fallback])
    # each sample waits for the client timeout: a fresh router per sample, interleaved with
    # with_fallbacks over the same clients (it pays the SDK's own timeout handling too)
    first_s, lc_s = interleaved(
        [
            Variant("router, first failover", routed(lambda: bench.router(HANGING), HANGING)),
            Variant("with_fallbacks", timer(lambda: lc_tierwise.invoke(MESSAGES))),
        ],
        1,
        samples,
        warmup=0,
        keep=True,
    )
    first, lc = Spread.of(first_s, 1e3), Spread.of(lc_s, 1e3)
    # steady state: three timeouts trip the breaker (5 s cooldown), then the primary is skipped
    router = bench.router(HANGING)
    for _ in range(3):
        routed(lambda: router, HANGING)()
    reached = [0]
    alone_s, steady_s = interleaved(
        [
            Variant("fallback alone", timer(lambda: fallback.invoke(MESSAGES))),
            Variant("router, breaker open", routed(lambda: router, HANGING, reached)),
        ],
        3,
        calls,
        warmup=5,
    )
    alone, steady = Spread.of(alone_s, 1e3), Spread.of(steady_s, 1e3)
    default_chain = default_client(url, HANGING).with_fallbacks([default_client(url, FALLBACK)])
    cap = 3 * hang + 15
    lc_default = sequential(timer(lambda: default_chain.invoke(MESSAGES)), 1, cap)
    what = f"silent {hang:g} s"
    for label, spread in (
        (f"router, first failover ({samples} fresh routers)", first),
        ("with_fallbacks, tierwise clients", lc),
        ("router, breaker open", steady),
        ("fallback alone", alone),
        ("with_fallbacks, default clients", lc_default),
    ):
        if spread is None:
            text = f"no answer within {cap:g} s"
        else:
            note = probes(reached) if spread is steady else ""
            text = spread.text("ms", digits=1, note=note)
        print(f"  {what}: {label:42s} {text}")
    over = paired(first_s, lc_s)
    print(f"  {what}: {'router - with_fallbacks (same clients)':42s} {over.text('ms', digits=2)}")
    extra = first.median - timeout * 1e3 - alone.median
    return [
        Row(
            f"primary silent {hang:g} s, tierwise client timeout {timeout:g} s: first failover",
            router=f"{first.cell(1)}; timeout + fallback {extra:+.2f}; "
            f"with_fallbacks {over.median:+.2f}",
            lc_default=cell(lc_default, 0) + " (no client timeout; 1 call)",
            lc_tierwise=lc.cell(1),
            reference=f"fallback alone {alone.cell()}",
            target="router <= timeout + fallback + 10",
        ),
        Row(
            "primary silent: steady state (breaker open after 3 timeouts)",
            router=f"{steady.cell()}; fallback {paired(steady_s, alone_s).median:+.2f}",
            lc_default="no state: every call as above",
            lc_tierwise="no state: every call as above",
            reference=f"fallback alone {alone.cell()}",
            target="router <= fallback + 10",
        ),
    ]


# ---------------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    lines = [
        "| measurement (ms; median (min–max) over runs) | tierwise ModelRouter "
        "| with_fallbacks, default ChatOpenAI | with_fallbacks, tierwise clients "
        "| reference | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.measurement} | {r.router} | {r.lc_default} | {r.lc_tierwise} "
            f"| {r.reference} | {r.target} |"
        )
    return "\n".join(lines)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure")
    parser.add_argument("--calls", type=int, default=300, help="text calls per run and variant")
    parser.add_argument("--structured-calls", type=int, default=100, help="with a schema")
    parser.add_argument("--failover-calls", type=int, default=60, help="per failover run")
    parser.add_argument("--retry-after", type=float, default=30.0, help="the router's 429")
    parser.add_argument(
        "--default-retry-after",
        type=float,
        default=5.0,
        help="Retry-After sent to the default clients (their SDK sleeps it, twice)",
    )
    parser.add_argument("--default-runs", type=int, default=2, help="default clients, 429")
    parser.add_argument("--timeout", type=float, default=1.0, help="tierwise client timeout")
    parser.add_argument("--hang", type=float, default=3.0, help="seconds the server is silent")
    parser.add_argument("--timeout-samples", type=int, default=3, help="per contender")
    parser.add_argument("--in-process", action="store_true", help="simulator thread, one GIL")
    args = parser.parse_args()

    started = time.perf_counter()
    command = shlex.join(["python", "-m", "benchmarks.router_overhead", *sys.argv[1:]])
    data = scenario(args.retry_after, args.default_retry_after, args.hang)
    # scratch_state: the routers' default ledger is a fresh one, so a primary that failed in
    # the user's earlier runs (and is demoted in their ledger) is still called here
    with isolated_environment(), scratch_state(), simulator(data, args.in_process) as url:
        where = "in-process thread (shares the GIL)" if args.in_process else "separate process"
        print(f"simulator: {url} ({where}), zero latency, OpenAI protocol; {load()}")
        bench = Bench(url, timeout=5.0)
        rows: list[Row] = []
        print("1. overhead per call")
        rows += overhead(bench, args.runs, args.calls, None)
        rows += overhead(bench, args.runs, args.structured_calls, Label)
        rows += ledger_overhead(bench, args.runs, args.calls)
        print("2. failover: from the call to the fallback's answer")
        rows += failover(
            bench,
            RATE_LIMITED,
            f"429 Retry-After {args.retry_after:g}",
            args.runs,
            args.failover_calls,
            prime_calls=1,
            default=(
                RATE_LIMITED_SHORT,
                args.default_runs,
                f"says Retry-After {args.default_retry_after:g}",
            ),
        )
        rows += failover(
            bench,
            UNAVAILABLE,
            "503",
            args.runs,
            args.failover_calls,
            prime_calls=3,
            default=(UNAVAILABLE, 3, "says 503"),
        )
        rows += failover_timeout(
            url, args.timeout, args.hang, args.failover_calls, args.timeout_samples
        )
    elapsed = time.perf_counter() - started
    print()
    print(table(rows))
    print()
    print(f"command: {command}")
    print(f"ran {elapsed:.0f} s; {load()}")


if __name__ == "__main__":
    main()
