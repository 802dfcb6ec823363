"""Prompt for ``rewriting``: a clearer, self-contained restatement of the instruction."""

from langchain_core.prompts import ChatPromptTemplate

REWRITE = ChatPromptTemplate.from_messages([
    ("system", "You rewrite instructions to be clear and self-contained. Keep every fact, "
     "name, number and date. Never answer the instruction."),
    ("human", "Rewrite this instruction clearly: {instruction}"),
])
