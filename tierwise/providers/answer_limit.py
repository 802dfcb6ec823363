"""How each provider's LangChain client is told to stop an answer at N tokens.

A budget hold is sized for an answer of at most N tokens, so the request must carry N in
the spelling its client forwards: ``max_tokens`` for the OpenAI-compatible clients and the
embedded model, ``max_output_tokens`` for Gemini (``generationConfig.maxOutputTokens`` on
the wire). ``ChatOllama`` takes no per-call ``num_predict``; it takes a per-call
``options`` mapping, which *replaces* the options the model was built with, so those are
carried over with ``num_predict`` added.
"""

from __future__ import annotations

from typing import Any, Final

from tierwise.catalog.specs import Provider

__all__ = ["answer_limit"]

#: ``ChatOllama`` fields it sends as Ollama ``options`` (langchain-ollama 1.1 ``_chat_params``).
_OLLAMA_OPTIONS: Final = (
    "mirostat", "mirostat_eta", "mirostat_tau", "num_ctx", "num_gpu", "num_thread",
    "repeat_last_n", "repeat_penalty", "temperature", "seed", "stop", "tfs_z", "top_k",
    "top_p",
)


def answer_limit(model: object, provider: Provider, tokens: int) -> dict[str, Any]:
    """Call arguments that cap ``model``'s answer at ``tokens``.

    Example:
        >>> answer_limit(object(), Provider.GEMINI, 300)
        {'max_output_tokens': 300}
    """
    if provider is Provider.GEMINI:
        return {"max_output_tokens": tokens}
    if provider is Provider.OLLAMA:
        own = {
            name: value for name in _OLLAMA_OPTIONS
            if (value := getattr(model, name, None)) is not None
        }
        return {"options": {**own, "num_predict": tokens}}
    return {"max_tokens": tokens}
