"""Environment isolation: the variables that would point a client elsewhere than the simulator.

Provider SDKs read base URLs, keys, proxies and tracing switches from the environment, so
a developer's shell can silently send a "simulated" test to a real host, or through a
proxy that cannot reach 127.0.0.1. Tests clear these and set ``NO_PROXY``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

__all__ = ["ISOLATED_PREFIXES", "ISOLATED_VARIABLES", "isolated_environment", "variables_to_clear"]

#: Cleared by :func:`isolated_environment` and the ``isolated_env`` fixture.
ISOLATED_VARIABLES: tuple[str, ...] = (
    # endpoints
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
    "OPENAI_PROXY",
    "GROQ_API_BASE",
    "GROQ_BASE_URL",
    "GROQ_PROXY",
    "OLLAMA_HOST",
    "LANGSMITH_GATEWAY",
    # keys and accounts
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_ORGANIZATION",
    "OPENAI_PROJECT_ID",
    "GROQ_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "OPENROUTER_API_KEY",
    "MISTRAL_API_KEY",
    "HF_TOKEN",
    "HUGGINGFACEHUB_API_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "ANTHROPIC_API_KEY",
    # proxies
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    # tracing, which would call LangSmith
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_API_KEY",
    "LANGCHAIN_ENDPOINT",
    # tierwise's own config file lookup
    "TIERWISE_CONFIG",
)

#: Every variable starting with one of these is cleared too.
ISOLATED_PREFIXES: tuple[str, ...] = ("GOOGLE_GENAI_", "LANGSMITH_")

#: Set by the isolation so loopback traffic never goes through a proxy.
NO_PROXY = "127.0.0.1,localhost"


def variables_to_clear(environ: MutableMapping[str, str]) -> list[str]:
    """The names in ``environ`` that isolation removes."""
    return [
        name for name in environ if name in ISOLATED_VARIABLES or name.startswith(ISOLATED_PREFIXES)
    ]


@contextmanager
def isolated_environment() -> Iterator[None]:
    """Clear provider endpoints, keys, proxies and tracing; set ``NO_PROXY``; restore after.

    For use outside pytest (inside pytest use the ``isolated_env`` fixture).
    """
    saved = dict(os.environ)
    try:
        for name in variables_to_clear(os.environ):
            del os.environ[name]
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = NO_PROXY
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
