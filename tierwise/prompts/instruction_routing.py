"""Prompt for ``instruction_routing``: which workflow an instruction belongs to."""

from langchain_core.prompts import ChatPromptTemplate

ROUTE = ChatPromptTemplate.from_messages([
    ("system", "You decide how to carry out instructions."),
    ("human",
     "Instruction ({label}, {complexity}): {instruction}\n"
     "Answer plan if it needs several steps, tool if it is one action for one of these "
     "tools: {tools}, direct if neither."),
])
