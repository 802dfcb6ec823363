"""Prompt for ``quality_scoring``: a 0-10 score on the rubric, with reasons."""

from langchain_core.prompts import ChatPromptTemplate

SCORE = ChatPromptTemplate.from_messages([
    ("system", "You grade outputs from 0 to 10: 8-10 excellent (correct, complete, clear), "
     "4-7 good (usable, some gaps), 0-3 poor (wrong or unusable)."),
    ("human", "Task: {task}\nOutput:\n{subject}\nScore the output, with up to two short "
     "reasons."),
])
