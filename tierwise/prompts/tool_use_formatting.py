"""Prompt for ``tool_use_formatting``: one tool call that fits the tool's schema."""

from langchain_core.prompts import ChatPromptTemplate

FORMAT_TOOL_CALL = ChatPromptTemplate.from_messages([
    ("system",
     "Call exactly one of the tools to carry out the task, with arguments that match the "
     "tool's schema. Use the extracted parameters."),
    ("human", "Task: {task}\nParameters: {parameters}"),
])
