"""Calling models with a timeout and retries (``CallGroup``).

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
import heapq
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import llm

from .errors import ConsortiumError
from .redaction import redact
from .terminal import printable, valid_unicode

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 60.0
POLL_SECONDS = 0.1
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
    text = printable(redact(text or type(exc).__name__))
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


class _Workers:
    """Daemon threads that run attempts, kept for reuse.

    A new thread is started whenever no idle one is waiting, so there is no
    cap: 200 members get 200 threads. Reuse only saves thread start-up for
    later iterations and runs in the same process; a thread idle for
    ``IDLE_SECONDS`` exits. An abandoned (hung) attempt keeps its thread busy
    until it returns, and no one waits for it: daemon threads do not block
    interpreter exit.
    """

    IDLE_SECONDS = 30.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put((fn, args))
        if spawn:
            threading.Thread(target=self._loop, daemon=True, name="consortium-call").start()

    def _loop(self) -> None:
        # A new thread first lets the thread that starts attempts go on
        # starting the others: otherwise each new thread would hold the GIL
        # for a whole switch interval before that thread could continue.
        time.sleep(0)
        while True:
            try:
                fn, args = self._jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:
                        self._idle -= 1
                        return
                continue  # a job was handed to us as an idle thread: take it
            fn(*args)
            with self._lock:
                self._idle += 1


_workers = _Workers()


@dataclass
class _Call:
    """The state of one call in a ``CallGroup``."""

    request: CallRequest
    stream_chunks: bool
    started: float
    attempts: int = 0
    deadline: float | None = None  # of the running attempt
    last_error: str = "not called"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _prompted(request: CallRequest) -> Any:
    """The llm response object for one attempt, not yet run. Built in the
    thread that starts attempts, where llm's bookkeeping runs with warm
    caches: built in each member's own thread it cost twice the CPU (200
    members: the last one started 23 ms after the first against 12 ms)."""
    kwargs: dict[str, Any] = {"stream": request.stream}
    if request.system:
        kwargs["system"] = request.system
    if request.messages is not None:
        kwargs["messages"] = request.messages
    if request.attachments:
        kwargs["attachments"] = request.attachments
    return request.model.prompt(request.prompt, **kwargs, **(request.options or {}))


def _attempt(
    inbox: queue.SimpleQueue[tuple[str, Hashable, int, Any]],
    key: Hashable,
    attempt: int,
    response: Any,
    stream_chunks: bool,
) -> None:
    """Run one attempt's response, in a daemon thread; everything it learns
    goes to ``inbox`` tagged with the attempt number, so an abandoned
    (timed-out) attempt that answers late is recognised and ignored."""
    try:
        if stream_chunks:
            pieces = []
            for chunk in response:
                chunk = valid_unicode(chunk)
                pieces.append(chunk)
                inbox.put(("chunk", key, attempt, chunk))
            text = "".join(pieces)
        else:
            text = valid_unicode(response.text())
        usage = response.usage()
        inbox.put(
            ("ok", key, attempt, (text, _text_or_none(response.id), _count(usage.input), _count(usage.output)))
        )
    except BaseException as ex:  # reported to the thread that runs the group
        inbox.put(("error", key, attempt, ex))


class CallGroup:
    """Model calls made at once, each with a per-attempt ``timeout`` and up
    to ``retries`` retries.

    Every attempt runs at once in a daemon thread of its own (``_Workers``:
    threads are reused, never capped) unless ``max_concurrency`` is given. The
    thread that iterates ``events()`` does all the waiting: it enforces the
    deadlines, schedules retries after their backoff, and passes on streamed
    chunks. A hung provider is abandoned at its deadline (its thread cannot
    keep the process alive). ``events()`` never raises for model errors:
    they end up in ``CallOutcome.error``.
    """

    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        cancel: threading.Event,
        max_concurrency: int | None = None,
        wake_every: float = POLL_SECONDS,
    ) -> None:
        self.wake_every = wake_every
        self.timeout = timeout
        self.retries = retries
        self.cancel = cancel
        self.max_concurrency = max_concurrency
        self._inbox: queue.SimpleQueue[tuple[str, Hashable, int, Any]] = queue.SimpleQueue()
        self._calls: dict[Hashable, _Call] = {}
        self._waiting: list[tuple[float, int, Hashable]] = []  # (start at, order, key)
        self._deadlines: list[tuple[float, int, Hashable, int]] = []  # (at, order, key, attempt)
        self._order = 0
        self._running = 0

    def submit(self, key: Hashable, request: CallRequest, *, stream_chunks: bool = False) -> None:
        self._calls[key] = _Call(request, stream_chunks, started=time.monotonic())
        self._schedule(key, time.monotonic())

    def _schedule(self, key: Hashable, when: float) -> None:
        self._order += 1
        heapq.heappush(self._waiting, (when, self._order, key))

    def _start_due(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            if self.max_concurrency is not None and self._running >= self.max_concurrency:
                return
            _, _, key = heapq.heappop(self._waiting)
            call = self._calls[key]
            call.attempts += 1
            call.deadline = now + self.timeout
            self._order += 1
            heapq.heappush(self._deadlines, (call.deadline, self._order, key, call.attempts))
            self._running += 1
            try:
                response = _prompted(call.request)
            except Exception as ex:  # refused before any call (options, conversation): the attempt failed
                self._inbox.put(("error", key, call.attempts, ex))
                continue
            _workers.run(_attempt, self._inbox, key, call.attempts, response, call.stream_chunks)

    def _live_deadline(self) -> tuple[float, Hashable] | None:
        """The nearest deadline of a running attempt (stale entries dropped)."""
        while self._deadlines:
            at, _, key, attempt = self._deadlines[0]
            call = self._calls.get(key)
            if call is not None and call.attempts == attempt and call.deadline == at:
                return at, key
            heapq.heappop(self._deadlines)
        return None

    def _next_wake(self, now: float) -> float:
        moments = []
        deadline = self._live_deadline()
        if deadline is not None:
            moments.append(deadline[0])
        if self._waiting and (
            self.max_concurrency is None or self._running < self.max_concurrency
        ):
            moments.append(self._waiting[0][0])
        soonest = min(moments, default=now + self.wake_every)
        # Wake at least every ``wake_every`` seconds (POLL_SECONDS by default)
        # so that Ctrl-C and cancel are prompt and "idle" comes regularly.
        return min(max(soonest - now, 0.0), self.wake_every)

    def _expired(self, now: float) -> Iterator[tuple[str, Hashable, CallOutcome]]:
        while (deadline := self._live_deadline()) is not None and deadline[0] <= now:
            heapq.heappop(self._deadlines)
            self._running -= 1  # abandoned: its thread may never end
            done = self._failed(deadline[1], CallTimeout(f"timed out after {self.timeout:g} s"), now)
            if done:
                yield done

    def _finish(self, key: Hashable, outcome: CallOutcome) -> tuple[str, Hashable, CallOutcome]:
        del self._calls[key]
        return ("done", key, outcome)

    def _failed(self, key: Hashable, error: BaseException, now: float) -> tuple[str, Hashable, CallOutcome] | None:
        """Record a failed attempt; retry later or finish the call."""
        call = self._calls[key]
        call.deadline = None
        call.last_error = describe(error)
        retryable, retry_after = classify(error)
        if retryable and call.attempts <= self.retries:
            if retry_after is not None and retry_after > min(self.timeout, RETRY_AFTER_CAP):
                # Waiting would break the time bound; the retry would likely
                # be refused again anyway.
                call.last_error += (
                    f" (Retry-After {retry_after:g} s is longer than the {self.timeout:g} s timeout)"
                )
            else:
                self._schedule(key, now + backoff_delay(call.attempts, retry_after))
                return None
        message = call.last_error
        if call.attempts > 1:
            message = f"{message} (after {call.attempts} attempts)"
        return self._finish(key, self._outcome(call, error=message))

    def _outcome(self, call: _Call, **fields: Any) -> CallOutcome:
        values: dict[str, Any] = {
            "text": None,
            "error": None,
            "response_id": None,
            "input_tokens": None,
            "output_tokens": None,
        }
        values.update(fields)
        return CallOutcome(
            **values,
            duration_ms=int((time.monotonic() - call.started) * 1000),
            attempts=call.attempts,
        )

    def events(self) -> Iterator[tuple[str, Hashable, Any]]:
        """``("chunk", key, (attempt, text))`` while an attempt streams,
        ``("done", key, CallOutcome)`` once per call, as they happen, and
        ``("idle", None, None)`` each time it is about to wait (so that a
        caller can act on a batch of results at once)."""
        while self._calls:
            now = time.monotonic()
            if self.cancel.is_set():
                for key in list(self._calls):
                    yield self._finish(key, self._outcome(self._calls[key], error="cancelled"))
                return
            self._start_due(now)
            if self._inbox.empty():
                yield ("idle", None, None)
            try:
                item = self._inbox.get(timeout=self._next_wake(now))
            except queue.Empty:
                item = None
            if item is not None:
                yield from self._handle(*item)
            yield from self._expired(time.monotonic())

    def _handle(
        self, kind: str, key: Hashable, attempt: int, payload: Any
    ) -> Iterator[tuple[str, Hashable, Any]]:
        call = self._calls.get(key)
        if call is None or attempt != call.attempts or call.deadline is None:
            return  # a late answer from an abandoned attempt
        if kind == "chunk":
            yield ("chunk", key, (attempt, payload))
            return
        self._running -= 1
        now = time.monotonic()
        if kind == "error":
            if isinstance(payload, (KeyboardInterrupt, SystemExit)):
                raise payload
            done = self._failed(key, payload, now)
        else:
            text, response_id, input_tokens, output_tokens = payload
            if not text.strip():
                done = self._failed(key, EmptyResponse("empty response"), now)
            else:
                call.deadline = None
                done = self._finish(
                    key,
                    self._outcome(
                        call,
                        text=text,
                        response_id=response_id,
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                    ),
                )
        if done:
            yield done
