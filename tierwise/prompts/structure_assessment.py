"""Prompt for ``structure_assessment``: is an output well-formed and complete."""

from langchain_core.prompts import ChatPromptTemplate

ASSESS = ChatPromptTemplate.from_messages([
    ("system",
     "Check whether the output is well-formed and complete for the task. Name each "
     "defect briefly (missing fields, wrong types, empty values); none if there are none."),
    ("human", "Task: {task}\nOutput:\n{subject}"),
])
