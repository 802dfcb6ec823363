"""Prompt for ``decomposition``: ordered sub-tasks."""

from langchain_core.prompts import ChatPromptTemplate

DECOMPOSE = ChatPromptTemplate.from_messages([
    ("system",
     "Break the task into at most {max_steps} ordered sub-tasks. Each sub-task is one "
     "distinct action, small enough for one tool call or one answer. No repeats."),
    ("human", "{instruction}"),
])
