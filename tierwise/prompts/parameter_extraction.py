"""Prompt for ``parameter_extraction``: typed parameters pulled out of text."""

from langchain_core.prompts import ChatPromptTemplate

EXTRACT = ChatPromptTemplate.from_messages([
    ("system",
     "Extract the parameters needed to carry out the task: names, places, dates, numbers, "
     "quantities. Use only what the text says.{hint}"),
    ("human", "Task: {task}\nContext: {context}"),
])
