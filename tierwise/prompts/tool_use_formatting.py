"""Prompt for ``tool_use_formatting``: one tool call that fits the tool's schema."""

from langchain_core.prompts import ChatPromptTemplate

FORMAT_TOOL_CALL = ChatPromptTemplate.from_messages([
    ("system", "You call tools with arguments that match their schema."),
    ("human", "Task: {task}\nParameters: {parameters}\nCall exactly one tool for this task."),
])
