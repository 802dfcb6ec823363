"""Token estimates: one place, tool calls and tool definitions included (issue 18)."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from pydantic import BaseModel, Field

from tierwise.routing.request import RouteRequest
from tierwise.routing.tokens import definition_tokens, estimate_tokens

QUESTION = HumanMessage("What is the weather in Porto today, and should I bring an umbrella?")
CALL = AIMessage("", tool_calls=[
    {"name": "get_weather", "args": {"city": "Porto", "days": 1}, "id": "call_1"},
])
RESULT = ToolMessage('{"temp": 18, "rain": 0.7}', tool_call_id="call_1")


class Weather(BaseModel):
    """Today's weather in a city."""

    city: str = Field(description="The city, e.g. Porto.")
    days: int = Field(1, description="How many days ahead.")


def test_an_assistant_tool_call_counts() -> None:
    without = estimate_tokens([QUESTION, AIMessage(""), RESULT])
    with_call = estimate_tokens([QUESTION, CALL, RESULT])
    assert with_call > without
    assert with_call == count_tokens_approximately([QUESTION, CALL, RESULT])


def test_tool_and_schema_definitions_count_and_are_memoised() -> None:
    tools = (Weather,)
    assert definition_tokens(None, ()) == 0
    assert definition_tokens(None, tools) > 10
    assert definition_tokens(Weather, ()) == definition_tokens(None, tools)
    assert definition_tokens(None, tools) == definition_tokens(None, tools)
    # a provider's built-in tool has no function schema: counted as the JSON it is
    assert definition_tokens(None, ({"type": "web_search"},)) > 0


def test_the_request_estimate_is_messages_plus_definitions() -> None:
    """The router, the limiter and the budget all read this one figure."""
    request = RouteRequest("tool_use_formatting", [QUESTION, CALL, RESULT], tools=[Weather])
    assert request.prompt_tokens == (
        estimate_tokens([QUESTION, CALL, RESULT]) + definition_tokens(None, (Weather,))
    )
