"""Prompt for ``parameter_extraction``: typed parameters pulled out of text."""

from langchain_core.prompts import ChatPromptTemplate

EXTRACT = ChatPromptTemplate.from_messages([
    ("system", "You extract parameters from text."),
    ("human",
     "Text: {task}\nContext: {context}\n"
     "List the parameters needed to carry out the text: places, dates, numbers, people. "
     "Use only values the text gives.{hint}"),
])
