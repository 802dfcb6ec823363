"""Prompt for ``instruction_routing``: which workflow an instruction belongs to."""

from langchain_core.prompts import ChatPromptTemplate

ROUTE = ChatPromptTemplate.from_messages([
    ("system",
     "Decide how to carry out the instruction.\n"
     "tool = one single action with one of these tools: {tools}\n"
     "plan = several steps are needed\n"
     "direct = no tool and no steps, it can be answered as it is."),
    ("human", "Instruction ({label}, {complexity}): {instruction}"),
])
