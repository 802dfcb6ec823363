"""The wire protocols the simulator speaks, and which URL path leads to which of them.

=====================================  ===========  ============================
path                                   provider     protocol
=====================================  ===========  ============================
``/v1/chat/completions``               openai       OpenAI chat completions
``/api/v1/chat/completions``           openrouter   OpenAI chat completions
``/mistral/v1/chat/completions``       mistral      OpenAI chat completions
``/hf/v1/chat/completions``            huggingface  OpenAI chat completions
``/openai/v1/chat/completions``        groq         OpenAI + ``x_groq``
``/v1[beta]/models/{m}:generateContent``  gemini    Gemini (``:streamGenerateContent``)
``/api/chat``                          ollama       Ollama NDJSON
=====================================  ===========  ============================
"""

from __future__ import annotations

from collections.abc import Mapping

from tierwise.catalog.specs import Provider
from tierwise.testing.protocols.base import Frames, Route, WireProtocol
from tierwise.testing.protocols.gemini_api import GeminiAPI
from tierwise.testing.protocols.ollama_api import OllamaAPI, tags_body
from tierwise.testing.protocols.openai_chat import OpenAIChat

__all__ = [
    "BASE_PATHS",
    "Frames",
    "GeminiAPI",
    "OllamaAPI",
    "OpenAIChat",
    "Route",
    "WireProtocol",
    "resolve_route",
    "tags_body",
]

OPENAI = OpenAIChat()
GEMINI = GeminiAPI()
OLLAMA = OllamaAPI()

#: The path each hosted provider's base URL ends in; the client appends the rest.
BASE_PATHS: Mapping[Provider, str] = {
    Provider.OPENAI: "/v1",
    Provider.OPENROUTER: "/api/v1",
    Provider.MISTRAL: "/mistral/v1",
    Provider.HUGGINGFACE: "/hf/v1",
    Provider.GROQ: "",
    Provider.GEMINI: "",
    Provider.OLLAMA: "",
}

_CHAT_ROUTES: Mapping[str, Route] = {
    "/v1/chat/completions": Route(OPENAI, Provider.OPENAI),
    "/chat/completions": Route(OPENAI, Provider.OPENAI),
    "/api/v1/chat/completions": Route(OPENAI, Provider.OPENROUTER),
    "/mistral/v1/chat/completions": Route(OPENAI, Provider.MISTRAL),
    "/hf/v1/chat/completions": Route(OPENAI, Provider.HUGGINGFACE),
    "/openai/v1/chat/completions": Route(OPENAI, Provider.GROQ),
    "/api/chat": Route(OLLAMA, Provider.OLLAMA),
}

_GEMINI_PREFIXES = ("/v1/models/", "/v1beta/models/", "/v1alpha/models/")


def resolve_route(path: str) -> Route | None:
    """The route serving a ``POST`` to ``path``, or ``None`` when nothing does.

    Example:
        >>> resolve_route("/v1beta/models/gemini-2.5-flash:streamGenerateContent").model
        'gemini-2.5-flash'
    """
    route = _CHAT_ROUTES.get(path)
    if route is not None:
        return route
    if path.startswith(_GEMINI_PREFIXES):
        name, _, method = path.split("/models/", 1)[1].rpartition(":")
        if method == "generateContent":
            return Route(GEMINI, Provider.GEMINI, name)
        if method == "streamGenerateContent":
            return Route(GEMINI, Provider.GEMINI, name, stream=True)
    return None
