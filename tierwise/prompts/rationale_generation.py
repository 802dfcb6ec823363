"""Prompt for ``rationale_generation``: the reasoning behind a plan or decision."""

from langchain_core.prompts import ChatPromptTemplate

EXPLAIN = ChatPromptTemplate.from_messages([
    ("system", "You explain plans and decisions briefly."),
    ("human", "Instruction: {instruction}\n{subject}\n"
     "In two or three sentences: why does this serve the instruction?"),
])
