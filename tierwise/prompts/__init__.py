"""Prompt templates, one module per cognitive operation, and nothing else.

Each module holds named ``ChatPromptTemplate`` constants. They are short on purpose: the
floor of the local tier is a 135M-parameter model that evaluates the whole prompt on every
call, and hosted models do not need more to fill a schema.
"""
