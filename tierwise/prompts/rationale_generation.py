"""Prompt for ``rationale_generation``: the reasoning behind a plan or decision."""

from langchain_core.prompts import ChatPromptTemplate

EXPLAIN = ChatPromptTemplate.from_messages([
    ("system",
     "Explain briefly why this plan or decision serves the instruction: what it does "
     "first and why, and what it relies on."),
    ("human", "Instruction: {instruction}\n{subject}"),
])
