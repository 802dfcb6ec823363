"""Routing quality of tierwise's learned router on RouteLLM's GSM8K and MMLU data.

Run: ``python -m benchmarks.routing_quality [--data DIR] [--seed 0] [--features
semantic|ngram] [--no-splits] [--no-references] [--file CSV_OR_DIR] [--router PATH]
[--save PATH]``.

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

Out of distribution (``tierwise.learning.splits``): a router trained on GSM8K scores
MMLU, the reverse, and a router trained on three of MMLU's four subject groups scores
the fourth; each scored on the whole left-out part (nothing of it seen in training).

``learned`` is the guarded router: an unfamiliar prompt's score is shrunk toward the
priors' gap by its trust (``LearnedRouter.trust``; at trust 0 it is routed as the chain
order, like random routing); ``unguarded`` is its own score on every prompt; ``guarded``
counts the unfamiliar prompts. ``--features ngram`` trains without the semantic columns.

References (MMLU, not routers a user gets): what the prompt text leaves out. MMLU's
subject is not in its prompts; ``subject prior`` scores each held-out prompt by the mean
``strong - weak`` of the training prompts of its subject, knowing nothing else, and
``router + subject tag`` is the learned router trained and scored with each prompt
tagged ``__op_<subject>`` the way tierwise tags a prompt with its operation in
production (``routing.steering.prompt_text``). The gap between them and the router
shows how much of the reachable APGR comes from knowing the task rather than the prompt.

Also measured: training time, wall and CPU, on the full standard split (features, IDF,
clusters, calibration fit and final fit) and the median latency of one routing decision,
``LearnedRouter.decide(text, 5 candidates, lam=...)`` on held-out prompt texts (features,
the semantic vector included, + guard + prediction + argmax), over >= 1,000 decisions.
Targets (issue 17): in-domain APGR >= 0.70 on both; every out-of-distribution split APGR
>= 0.55 and never below random; a decision <= 5 ms; training <= 120 s.

``--file`` scores any RouteLLM-format CSV or folder with the router trained on the
standard split (or ``--router``, a saved ``.npz``); :func:`score_file` is the same for
the ``tierwise router score FILE`` command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.learning.learned_router import LearnedRouter
from tierwise.learning.metrics import evaluate
from tierwise.learning.routellm import LabelledSet, find_data
from tierwise.learning.splits import leave_one_out
from tierwise.learning.train import SETS, Trained, score_file, score_set, train_standard

DECISIONS = 2000
IN_DOMAIN = 0.70
OUT_OF_DOMAIN = 0.55


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
        router.decide(text, candidates, lam=20.0)
        timings.append(time.perf_counter_ns() - start)
    return statistics.median(timings) / 1e3


def _row(name: str, figures: dict[str, float]) -> str:
    return (
        f"| {name:9s} | {figures['apgr']:.3f} | {figures['cpt50'] * 100:5.1f} % "
        f"| {figures['cpt80'] * 100:5.1f} % |"
    )


def _print_set(title: str, result: dict[str, Any], extra: str = "") -> None:
    print(
        f"\n### {title}: {result['rows']} prompts{extra}; weak {result['weak']} "
        f"{result['weak_quality']:.1%}, strong {result['strong']} {result['strong_quality']:.1%}"
    )
    print("| router    | APGR  | CPT(50%) | CPT(80%) |")
    print("|-----------|-------|----------|----------|")
    for name in ("learned", "unguarded", "random", "oracle"):
        print(_row(name, result[name]))
    print(f"guard: {result['guarded']} of {result['rows']} prompts unfamiliar "
          "(their scores shrunk by trust)")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def out_of_distribution(data: Path, seed: int, semantic: bool | None) -> bool:
    """Train and score each leave-one-out split; True when every target is met."""
    print("\n## Out of distribution (leave one data set / MMLU subject group out)")
    print("| split | prompts | guarded | learned APGR | unguarded | random | oracle "
          "| CPT(50%) | >= 0.55 | >= random |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    all_met = True
    for part in leave_one_out(data):
        router = LearnedRouter(seed=seed, semantic=semantic)
        router.fit(part.train.prompts, part.train.outcomes)
        result = score_set(part.test, router)
        apgr, rand = result["learned"]["apgr"], result["random"]["apgr"]
        ok_floor, ok_random = apgr >= OUT_OF_DOMAIN, apgr >= rand
        all_met &= ok_floor and ok_random
        print(f"| {part.name} | {result['rows']} | {result['guarded']} | {apgr:.3f} "
              f"| {result['unguarded']['apgr']:.3f} | {rand:.3f} "
              f"| {result['oracle']['apgr']:.3f} | {result['learned']['cpt50']:.1%} "
              f"| {_met(ok_floor)} | {_met(ok_random)} |")
    return all_met


def _tagged(labelled: LabelledSet) -> LabelledSet:
    """The set with each prompt tagged by its source file, as an operation tag is."""
    pairs = zip(labelled.prompts, labelled.sources, strict=True)
    prompts = tuple(f"__op_{Path(source).stem}\n{prompt}" for prompt, source in pairs)
    return dataclasses.replace(labelled, prompts=prompts)


def references(trained: Trained, seed: int, semantic: bool | None) -> None:
    """MMLU's APGR when the subject is known: alone, and as a tag the router reads."""
    train, test = trained.train["mmlu"], trained.test["mmlu"]
    weak, strong = test.pair()
    gaps: dict[str, list[float]] = {}
    for source, gap in zip(train.sources, train.outcomes[strong] - train.outcomes[weak],
                           strict=True):  # fmt: skip
        gaps.setdefault(source, []).append(float(gap))
    w, s = test.outcomes[weak], test.outcomes[strong]
    prior = evaluate(np.array([np.mean(gaps[source]) for source in test.sources]), w, s)
    both = LabelledSet.concat([_tagged(trained.train[name]) for name in SETS])
    router = LearnedRouter(seed=seed, semantic=semantic).fit(both.prompts, both.outcomes)
    tagged = score_set(_tagged(test), router)["learned"]
    print("\n## References: MMLU with its subject known (information the prompts do not hold)")
    print("| scored by | APGR | CPT(50%) |")
    print("|---|---|---|")
    print(f"| subject prior (mean strong - weak of the subject's training prompts) "
          f"| {prior.apgr:.3f} | {prior.cpt50:.1%} |")  # fmt: skip
    print(f"| router + subject tag (as an operation tag) | {tagged['apgr']:.3f} "
          f"| {tagged['cpt50']:.1%} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.routing_quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--file", type=Path, default=None, help="score this CSV or folder")
    parser.add_argument("--router", type=Path, default=None, help="a saved router (.npz)")
    parser.add_argument("--save", type=Path, default=None, help="save the trained router")
    parser.add_argument("--features", choices=("semantic", "ngram"), default=None,
                        help="feature set (default: semantic when installed)")
    parser.add_argument("--no-splits", action="store_true",
                        help="skip the out-of-distribution splits")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the MMLU subject-known references")
    args = parser.parse_args(argv)
    data = args.data or find_data()
    semantic = None if args.features is None else args.features == "semantic"
    print(f"python -m benchmarks.routing_quality {' '.join(argv or sys.argv[1:])}")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    if args.file is not None:
        router = LearnedRouter.load(args.router) if args.router else None
        result = score_file(args.file, router, data=data, seed=args.seed)
        seen = f", {result['seen_in_training']} seen in training" if router is None else ""
        if result["pair"] is not None:
            _print_set(str(args.file), result["pair"], seen)
        return 0
    if data is None:
        print("no shared data: set TIERWISE_DATA or pass --data", file=sys.stderr)
        return 2
    trained = train_standard(data, seed=args.seed, semantic=semantic)
    router = LearnedRouter.load(args.router) if args.router else trained.router
    if args.save:
        print(f"saved {trained.router.save(args.save)}")
    rows = sum(len(part) for part in trained.train.values())
    features = "n-grams + semantic vector" if router.semantic else "n-grams only"
    print(f"features: {features}")
    print(
        f"training: {rows} prompts (GSM8K + MMLU training parts, seed {args.seed}), "
        f"{trained.seconds:.1f} s wall, {trained.cpu_seconds:.1f} s CPU (target <= 120 s)"
    )
    texts = [p for name in SETS for p in trained.test[name].prompts]
    latency = decision_latency_us(router, texts[:1] + texts, DECISIONS)
    print(
        f"decision: median {latency / 1000:.2f} ms over {DECISIONS} decide() calls, "
        f"5 candidates, features included (target <= 5 ms)"
    )
    print("\n## In domain (standard split: 30 % of each set held out)")
    for name in SETS:
        result = score_set(trained.test[name], router)
        extra = (
            f" (of {len(trained.full[name])} after removing "
            f"{trained.full[name].removed} contaminated)"
        )
        _print_set(name.upper(), result, extra)
        apgr = result["learned"]["apgr"]
        print(f"target: APGR >= {IN_DOMAIN} {_met(apgr >= IN_DOMAIN)}")
    if not args.no_references:
        references(trained, args.seed, semantic)
    if not args.no_splits:
        out_of_distribution(data, args.seed, semantic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
