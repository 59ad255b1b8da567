"""Calling one model with a timeout and retries.

Each attempt runs in a daemon thread and is waited for at most ``timeout``
seconds: a provider that hangs is abandoned (its thread cannot keep the
process alive) and the attempt counts as timed out. Transient failures — HTTP
408/429/5xx, connection errors, time-outs — are retried with exponential
backoff and jitter, honouring ``Retry-After``; other errors are final.

The wall time of one call is therefore bounded by ``(retries + 1) × timeout``
plus the backoff between attempts, whatever the provider's client does inside
an attempt (the OpenAI client, for one, retries by itself): a ``Retry-After``
longer than the timeout is not waited for — the call fails at once instead.
"""

from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import llm

from .errors import ConsortiumError

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 60.0
_TRANSIENT_NAMES = ("timeout", "connection", "connect", "remoteprotocol", "readerror", "network")


class CallTimeout(Exception):
    pass


class EmptyResponse(Exception):
    pass


@dataclass
class CallOutcome:
    text: str | None
    error: str | None
    response_id: str | None
    input_tokens: int | None
    output_tokens: int | None
    duration_ms: int
    attempts: int


@dataclass
class CallRequest:
    """Everything ``model.prompt`` needs for one call."""

    model: Any
    prompt: str
    system: str | None = None
    messages: list[Any] | None = None
    attachments: list[Any] | None = None
    stream: bool = False
    options: dict[str, Any] | None = None


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or
    an HTTP date); None when absent or unreadable."""
    if not isinstance(headers, Mapping) and not hasattr(headers, "get"):
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(float(millis) / 1000, 0.0)
        raw = headers.get("retry-after") or headers.get("Retry-After")
    except (TypeError, ValueError, AttributeError):
        return None
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, without loops."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _status_and_retry_after(exc: BaseException) -> tuple[int | None, float | None]:
    """The HTTP status (and ``Retry-After``) of the first exception in the
    chain that carries one — openai/httpx/requests-style ``status_code`` or
    ``response.status_code``."""
    for item in _chain(exc):
        status = getattr(item, "status_code", None)
        response = getattr(item, "response", None)
        if status is None and response is not None:
            status = getattr(response, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status, _retry_after(getattr(response, "headers", None))
    return None, None


def classify(exc: BaseException) -> tuple[bool, float | None]:
    """``(retryable, retry_after_seconds)`` for an attempt's exception."""
    if isinstance(exc, CallTimeout):
        return True, None
    if isinstance(exc, EmptyResponse):
        return False, None
    status, retry_after = _status_and_retry_after(exc)
    if status is not None:
        return (status in (408, 429) or status >= 500), retry_after
    for item in _chain(exc):
        name = type(item).__name__.lower()
        if isinstance(item, (ConnectionError, TimeoutError)) or any(
            word in name for word in _TRANSIENT_NAMES
        ):
            return True, None
    return False, None


_ERROR_CODE_PREFIX = re.compile(r"^error code:\s*\d+\s*[-:]\s*", re.IGNORECASE)
# Credentials a provider error may echo back (a bearer token, a key-shaped
# string, ``?key=`` in a request URL, ``api_key: …``): error texts are stored
# and printed, keys never are.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',}]{6,}"), r"\1[redacted]"),
    (re.compile(r"(?i)([?&](?:api[_-]?)?key=)[^&\s\"'#]+"), r"\1[redacted]"),
    (re.compile(r"(?i)\b((?:x-)?api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"), r"\1[redacted]"),
    (
        re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',}]{6,}"),
        r"\1[redacted]",
    ),
    (re.compile(r"\b(sk|pk|rk|gsk|xai)([-_])[A-Za-z0-9_-]{10,}"), r"\1\2[redacted]"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), "[redacted]"),
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def describe(exc: BaseException) -> str:
    """One line saying what went wrong: ``HTTP 500: …`` when there is a
    status, the plugin's own message for ``llm.ModelError``, otherwise the
    exception's type and message (``JSONDecodeError: Expecting value …``)."""
    text = " ".join(str(exc).split())
    status, _ = _status_and_retry_after(exc)
    if status is not None:
        text = _ERROR_CODE_PREFIX.sub("", text)
        if not text.startswith(f"HTTP {status}"):
            text = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    elif not isinstance(exc, (CallTimeout, EmptyResponse, llm.ModelError, ConsortiumError)):
        name = type(exc).__name__
        text = f"{name}: {text}" if text and name not in text else (text or name)
    text = redact(text or type(exc).__name__)
    if len(text) > 500:
        text = text[:497] + "..."
    return text


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before attempt ``attempt + 1``: the server's ``Retry-After``
    when given, else exponential backoff (0.5 s, 1 s, 2 s … capped) plus up to
    50 % jitter so that parallel members do not retry in lock-step."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    delay = min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_CAP)
    return delay + random.uniform(0, delay / 2)


def _one_attempt(
    request: CallRequest, on_chunk: Callable[[int, str], None] | None, attempt: int
) -> tuple[str, Any]:
    kwargs: dict[str, Any] = {"stream": request.stream}
    if request.system:
        kwargs["system"] = request.system
    if request.messages is not None:
        kwargs["messages"] = request.messages
    if request.attachments:
        kwargs["attachments"] = request.attachments
    response = request.model.prompt(request.prompt, **kwargs, **(request.options or {}))
    pieces = []
    for chunk in response:
        pieces.append(chunk)
        if on_chunk is not None:
            on_chunk(attempt, chunk)
    return "".join(pieces), response


def call_model(
    request: CallRequest,
    *,
    timeout: float,
    retries: int,
    cancel: threading.Event,
    on_chunk: Callable[[int, str], None] | None = None,
) -> CallOutcome:
    """Call a model with a per-attempt ``timeout`` and up to ``retries``
    retries. Never raises for model errors: they are in ``error``."""
    started = time.monotonic()
    attempts = 0
    last_error = "not called"
    while True:
        attempts += 1
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = _one_attempt(request, on_chunk, attempts)
            except BaseException as ex:  # handed to the waiting thread below
                box["error"] = ex

        worker = threading.Thread(target=run, daemon=True, name="consortium-call")
        worker.start()
        deadline = time.monotonic() + timeout
        while worker.is_alive() and not cancel.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            worker.join(min(remaining, 0.1))
        if cancel.is_set() and worker.is_alive():
            last_error = "cancelled"
            break
        error: BaseException | None
        if worker.is_alive():
            error = CallTimeout(f"timed out after {timeout:g} s")
        elif "error" in box:
            error = box["error"]
        else:
            text, response = box["value"]
            if not text.strip():
                error = EmptyResponse("empty response")
            else:
                usage = response.usage()
                return CallOutcome(
                    text=text,
                    error=None,
                    response_id=response.id,
                    input_tokens=usage.input,
                    output_tokens=usage.output,
                    duration_ms=int((time.monotonic() - started) * 1000),
                    attempts=attempts,
                )
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise error
        last_error = describe(error)
        retryable, retry_after = classify(error)
        if not retryable or attempts > retries:
            break
        if retry_after is not None and retry_after > min(timeout, RETRY_AFTER_CAP):
            # Waiting would break the time bound; the retry would likely be
            # refused again anyway.
            last_error += f" (Retry-After {retry_after:g} s is longer than the {timeout:g} s timeout)"
            break
        if cancel.wait(backoff_delay(attempts, retry_after)):
            last_error = "cancelled"
            break
    if attempts > 1 and last_error != "cancelled":
        last_error = f"{last_error} (after {attempts} attempts)"
    return CallOutcome(
        text=None,
        error=last_error,
        response_id=None,
        input_tokens=None,
        output_tokens=None,
        duration_ms=int((time.monotonic() - started) * 1000),
        attempts=attempts,
    )


