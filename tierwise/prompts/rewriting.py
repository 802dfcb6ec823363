"""Prompt for ``rewriting``: a clearer, self-contained restatement of the instruction."""

from langchain_core.prompts import ChatPromptTemplate

# Terse on purpose: the 135M embedded model copies or drifts from longer system prompts.
REWRITE = ChatPromptTemplate.from_messages([
    ("system", "You rewrite instructions."),
    ("human", "Rewrite this instruction more clearly, keeping all facts: {instruction}\n"
     "Do not carry it out."),
])
