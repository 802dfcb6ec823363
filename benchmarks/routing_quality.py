"""Routing quality of tierwise's learned router on RouteLLM's GSM8K and MMLU data.

Run: ``python -m benchmarks.routing_quality [--data DIR] [--seed 0] [--file CSV_OR_DIR]
[--router PATH] [--save PATH]``.

Data: RouteLLM's ``gsm8k_responses.csv`` and ``mmlu/responses/*.csv`` (Mixtral-8x7B as
the weak model, GPT-4-1106 as the strong one), from ``--data`` (default: ``TIERWISE_DATA``
or ``<repo>/../shared/data``), with RouteLLM's contaminated prompts removed.

Split: each set separately, by distinct prompt (``tierwise.learning.routellm.split``:
prompts deduplicated, shuffled with ``numpy.random.default_rng(seed)``, 30 % to the test
side). One router is trained on the GSM8K and MMLU training parts together (what a user
would have: one router for all traffic) and scored on each held-out part separately.

Scored as RouteLLM does (``tierwise.learning.metrics``): the router's score is
``p(strong good) - p(weak good)``; 11 quantile thresholds; APGR, CPT(50 %), CPT(80 %).
Random routing is the mean over 20 seeds of uniform scores (its expected value is APGR
0.5, CPT(x) = x); the oracle sends the strong model exactly the prompts only it answers.

Also measured: training time (features, IDF, calibration fit and final fit) and the
median latency of one routing decision, ``LearnedRouter.choose(text, 5 candidates,
lam=...)`` on held-out prompt texts (features + prediction + argmax), over >= 1,000
decisions. Targets (the issue): APGR >= 0.65 on both, CPT(50 %) <= ~35 % (MMLU) and
<= ~34 % (GSM8K), training < 60 s, a decision < 1 ms.

``--file`` scores any RouteLLM-format CSV or folder with the router trained on the
standard split (or ``--router``, a saved ``.npz``); :func:`score_file` is the same for
the ``tierwise router score FILE`` command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tierwise.learning.learned_router import LearnedRouter
from tierwise.learning.routellm import find_data
from tierwise.learning.train import SETS, score_file, score_set, train_standard

DECISIONS = 2000
TARGETS = {"gsm8k": 0.34, "mmlu": 0.35}


def decision_latency_us(router: LearnedRouter, prompts: list[str], n: int) -> float:
    """Median µs of ``choose`` with 5 candidates (2 trained heads, 3 priors only)."""
    strong, weak = router.keys[-1], router.keys[0]
    candidates = [
        (weak, 0.0002),
        (strong, 0.01),
        ("local/model", 0.0),
        ("free/model", 0.0),
        ("paid/other", 0.02),
    ]
    timings = []
    for i in range(n):
        text = prompts[i % len(prompts)]
        start = time.perf_counter_ns()
        router.choose(text, candidates, lam=20.0)
        timings.append(time.perf_counter_ns() - start)
    return statistics.median(timings) / 1e3


def _row(name: str, figures: dict[str, float]) -> str:
    return (
        f"| {name:8s} | {figures['apgr']:.3f} | {figures['cpt50'] * 100:5.1f} % "
        f"| {figures['cpt80'] * 100:5.1f} % |"
    )


def _print_set(title: str, result: dict[str, Any], extra: str = "") -> None:
    print(
        f"\n### {title}: {result['rows']} prompts{extra}; weak {result['weak']} "
        f"{result['weak_quality']:.1%}, strong {result['strong']} {result['strong_quality']:.1%}"
    )
    print("| router   | APGR  | CPT(50%) | CPT(80%) |")
    print("|----------|-------|----------|----------|")
    for name in ("learned", "random", "oracle"):
        print(_row(name, result[name]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.routing_quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--file", type=Path, default=None, help="score this CSV or folder")
    parser.add_argument("--router", type=Path, default=None, help="a saved router (.npz)")
    parser.add_argument("--save", type=Path, default=None, help="save the trained router")
    args = parser.parse_args(argv)
    data = args.data or find_data()
    print(f"python -m benchmarks.routing_quality {' '.join(argv or sys.argv[1:])}")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    if args.file is not None:
        router = LearnedRouter.load(args.router) if args.router else None
        result = score_file(args.file, router, data=data, seed=args.seed)
        seen = f", {result['seen_in_training']} seen in training" if router is None else ""
        _print_set(str(args.file), result, seen)
        return 0
    if data is None:
        print("no shared data: set TIERWISE_DATA or pass --data", file=sys.stderr)
        return 2
    trained = train_standard(data, seed=args.seed)
    router = LearnedRouter.load(args.router) if args.router else trained.router
    if args.save:
        print(f"saved {trained.router.save(args.save)}")
    rows = sum(len(part) for part in trained.train.values())
    print(
        f"training: {rows} prompts (GSM8K + MMLU training parts, seed {args.seed}), "
        f"{trained.seconds:.1f} s (target < 60 s)"
    )
    texts = [p for name in SETS for p in trained.test[name].prompts]
    latency = decision_latency_us(router, texts[:1] + texts, DECISIONS)
    print(
        f"decision: median {latency:.0f} µs over {DECISIONS} choose() calls, 5 candidates "
        f"(target < 1000 µs)"
    )
    for name in SETS:
        result = score_set(trained.test[name], router)
        extra = (
            f" (of {len(trained.full[name])} after removing "
            f"{trained.full[name].removed} contaminated)"
        )
        _print_set(name.upper(), result, extra)
        cpt = result["learned"]["cpt50"]
        print(
            f"targets: APGR >= 0.65 {'met' if result['learned']['apgr'] >= 0.65 else 'missed'}; "
            f"CPT(50%) <= {TARGETS[name]:.0%} {'met' if cpt <= TARGETS[name] else 'missed'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
