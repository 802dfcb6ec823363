"""Prompt for ``decomposition``: ordered sub-tasks."""

from langchain_core.prompts import ChatPromptTemplate

DECOMPOSE = ChatPromptTemplate.from_messages([
    ("system", "You break tasks into steps."),
    ("human",
     "Task: {instruction}\n"
     "Give at most {max_steps} short, different steps, in order. Each step is one action."),
])
