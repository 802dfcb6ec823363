"""Prompt for ``classification``: one label from a given set, plus the complexity."""

from langchain_core.prompts import ChatPromptTemplate

CLASSIFY = ChatPromptTemplate.from_messages([
    ("system", "You classify instructions."),
    ("human",
     "Instruction: {instruction}\n"
     "Pick one label from: {labels}.\n"
     "Complexity: simple (one obvious action), moderate (a few steps or some judgement) "
     "or complex (many steps, research or trade-offs)."),
])
