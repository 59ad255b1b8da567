"""Calling one model with a timeout and retries.

Each attempt runs in a daemon thread and is waited for at most ``timeout``
seconds: a provider that hangs is abandoned (its thread cannot keep the
process alive) and the attempt counts as timed out. Transient failures — HTTP
408/429/5xx, connection errors, time-outs — are retried with exponential
backoff and jitter, honouring ``Retry-After``; other errors are final.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def _status_and_retry_after(exc: BaseException) -> tuple[int | None, float | None]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(current, "status_code", None)
        response = getattr(current, "response", None)
        if status is None and response is not None:
            status = getattr(response, "status_code", None)
        if isinstance(status, int):
            retry_after = None
            headers = getattr(response, "headers", None) or {}
            try:
                raw = headers.get("retry-after") or headers.get("Retry-After")
                retry_after = float(raw) if raw is not None else None
            except (TypeError, ValueError, AttributeError):
                retry_after = None
            return status, retry_after
        current = current.__cause__ or current.__context__
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
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        name = type(item).__name__.lower()
        if isinstance(item, (ConnectionError, TimeoutError)) or any(
            word in name for word in _TRANSIENT_NAMES
        ):
            return True, None
    return False, None


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 500:
        text = text[:497] + "..."
    status, _ = _status_and_retry_after(exc)
    if status is not None and str(status) not in text:
        text = f"HTTP {status}: {text}"
    return text


def backoff_delay(attempt: int, retry_after: float | None) -> float:
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


