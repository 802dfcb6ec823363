"""Prompt for ``rewriting``: a clearer, self-contained restatement of the instruction."""

from langchain_core.prompts import ChatPromptTemplate

REWRITE = ChatPromptTemplate.from_messages([
    ("system",
     "Rewrite the instruction so it is clear and self-contained. Keep every fact, name, "
     "number and date. Do not answer it."),
    ("human", "{instruction}"),
])
