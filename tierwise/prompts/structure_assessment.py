"""Prompt for ``structure_assessment``: is an output well-formed and complete."""

from langchain_core.prompts import ChatPromptTemplate

ASSESS = ChatPromptTemplate.from_messages([
    ("system", "You check outputs for structure: shape, types, missing or empty values."),
    ("human",
     "Task: {task}\nOutput:\n{subject}\n"
     "Is the output well-formed and complete for the task? Name each defect briefly."),
])
