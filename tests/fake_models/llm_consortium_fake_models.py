"""Offline, scripted fake models for testing llm-consortium.

This is a test-only ``llm`` plugin. It never touches the network.

Two ways to get models:

* Spec file (for subprocess / CLI tests). The module-level hooks read a JSON
  file from ``$LLM_CONSORTIUM_FAKE_MODELS``, or else from
  ``llm.user_dir() / "fake_models.json"``. With neither present nothing is
  registered. A malformed file produces one warning line on stderr and
  registers nothing; the hooks never raise. Shape::

      {"models": {"fake-a": {"answer": "42"}},
       "embedding_models": {"fake-embed": {"dims": 16}}}

* In process::

      from llm.plugins import pm
      pm.register(FakeModels({"models": {"fake-a": {"reply": "hi"}}}),
                  name="undo-fakes")
      try:
          llm.get_model("fake-a").prompt("x", stream=False).text()
      finally:
          pm.unregister(name="undo-fakes")

  ``FakeModels`` also accepts a bare ``{"model-id": spec}`` mapping. Building
  a ``FakeModels`` resets the call counters/records of its model ids (pass
  ``reset=False`` to keep them).

Model spec keys (all optional; a bare string is shorthand for ``{"reply": s}``):

``reply`` / ``replies``
    Text (or a list used in turn). Placeholders: ``{prompt}`` (latest user
    text), ``{system}``, ``{n}`` (1-based call number for this model id in
    this process) and ``{model}``.
``answer`` / ``answers`` (+ ``confidence``, ``thinking``)
    Shorthand for ``<thinking>..</thinking>\\n<answer>..</answer>\\n
    <confidence>..</confidence>``. ``confidence`` may also be a list.
    With no reply/answer/echo/arbiter/empty key the model answers "42".
``echo``
    Reply with every message received, one ``[role] text`` line each.
``arbiter``
    A deterministic arbiter: majority vote over the ``<answer>`` tags in the
    latest user text (when ``<model_response id="..">`` blocks are present,
    one vote per block: its last ``<answer>``). Confidence = agreeing share,
    rounded to 3 places. ``arbiter_confidence`` and ``needs_iteration``
    override (each a value or a list used in turn).
``latency`` / ``chunk_delay`` / ``hang``
    Seconds (interruptible: sleeps run in slices of at most 0.05 s and stop
    early once ``STOP`` is set).
``can_stream``
    Default true. Streamed calls yield ~8 character chunks.
``fail`` (+ ``fail_times``), ``empty``
    Raise ``llm.ModelError(fail)`` (only for the first ``fail_times`` calls if
    given); reply with "".
``usage``
    ``[input, output]`` token counts; default: word counts.
``aliases`` / ``attachment_types``
    Registered aliases; accepted attachment MIME types.

Every call is recorded in ``ScriptedModel.calls[model_id]`` and, when
``$LLM_CONSORTIUM_FAKE_LOG`` is set, appended as one JSON line to that file.

Embedding spec keys: ``dims`` (default 64), ``fail``, ``latency``,
``aliases``. ``HashEmbedding.batches`` records every batch size.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import llm
from pydantic import ConfigDict, Field

try:  # pragma: no cover - always present on Linux
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

SPEC_ENV = "LLM_CONSORTIUM_FAKE_MODELS"
LOG_ENV = "LLM_CONSORTIUM_FAKE_LOG"
SPEC_FILENAME = "fake_models.json"

DEFAULT_ANSWER = "42"
DEFAULT_CONFIDENCE = 0.8
DEFAULT_THINKING = "Reasoning about it."
DEFAULT_DIMS = 64
CHUNK_SIZE = 8
SLEEP_SLICE = 0.05

# Set this event to cut every pending fake sleep (latency, hang, chunk
# delays) short, e.g. from a test's teardown. Clear it again afterwards.
STOP = threading.Event()

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
ID_RE = re.compile(r'<model_response[^>]*\bid="([^"]+)"')
BLOCK_RE = re.compile(
    r'<model_response[^>]*\bid="([^"]+)"[^>]*>(.*?)</model_response>', re.S
)
WORD_RE = re.compile(r"[a-z0-9]+")
PLACEHOLDER_RE = re.compile(r"\{(prompt|system|n|model)\}")

DEFAULT_ATTACHMENT_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
)


# ---------------------------------------------------------------------------
# Spec validation
# ---------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_non_negative(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= 0


def _is_str_list(value: Any, allow_empty: bool = False) -> bool:
    return (
        isinstance(value, list)
        and (allow_empty or bool(value))
        and all(isinstance(v, str) for v in value)
    )


def _is_answer(value: Any) -> bool:
    return isinstance(value, str) or _is_number(value)


def _one_or_list(check):
    def inner(value: Any) -> bool:
        if isinstance(value, list):
            return bool(value) and all(check(v) for v in value)
        return check(value)

    return inner


MODEL_KEYS = {
    "reply": (lambda v: isinstance(v, str), "a string"),
    "replies": (_is_str_list, "a non-empty list of strings"),
    "answer": (_is_answer, "a string"),
    "answers": (
        lambda v: isinstance(v, list) and bool(v) and all(_is_answer(a) for a in v),
        "a non-empty list of strings",
    ),
    "confidence": (_one_or_list(_is_number), "a number or list of numbers"),
    "thinking": (lambda v: isinstance(v, str), "a string"),
    "echo": (lambda v: isinstance(v, bool), "true or false"),
    "arbiter": (lambda v: isinstance(v, bool), "true or false"),
    "arbiter_confidence": (_one_or_list(_is_number), "a number or list of numbers"),
    "needs_iteration": (
        _one_or_list(lambda v: isinstance(v, bool)),
        "a boolean or list of booleans",
    ),
    "latency": (_is_non_negative, "a non-negative number"),
    "chunk_delay": (_is_non_negative, "a non-negative number"),
    "hang": (_is_non_negative, "a non-negative number"),
    "can_stream": (lambda v: isinstance(v, bool), "true or false"),
    "fail": (lambda v: isinstance(v, str), "a string"),
    "fail_times": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "a non-negative integer",
    ),
    "empty": (lambda v: isinstance(v, bool), "true or false"),
    "usage": (
        lambda v: isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
        "a list [input_tokens, output_tokens]",
    ),
    "aliases": (lambda v: _is_str_list(v, allow_empty=True), "a list of strings"),
    "attachment_types": (
        lambda v: _is_str_list(v, allow_empty=True),
        "a list of strings",
    ),
}

EMBEDDING_KEYS = {
    "dims": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "a positive integer",
    ),
    "fail": (lambda v: isinstance(v, str), "a string"),
    "latency": (_is_non_negative, "a non-negative number"),
    "aliases": (lambda v: _is_str_list(v, allow_empty=True), "a list of strings"),
}


def _check_spec(kind: str, model_id: Any, spec: Any, allowed: dict) -> dict:
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"{kind} ids must be non-empty strings, got {model_id!r}")
    if isinstance(spec, str) and kind == "model":
        spec = {"reply": spec}
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ValueError(f"{kind} {model_id!r}: spec must be an object")
    for key, value in spec.items():
        if key not in allowed:
            raise ValueError(
                f"{kind} {model_id!r}: unknown key {key!r} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        check, description = allowed[key]
        if not check(value):
            raise ValueError(f"{kind} {model_id!r}: {key!r} must be {description}")
    return dict(spec)


def normalize_specs(specs: Any) -> tuple[dict, dict]:
    """Validate ``specs`` and return ``(models, embedding_models)``.

    Accepts the file shape ``{"models": {...}, "embedding_models": {...}}``
    or a bare ``{"model-id": spec}`` mapping. Raises ``ValueError``.
    """
    if specs is None:
        return {}, {}
    if not isinstance(specs, dict):
        raise ValueError("the spec must be a JSON object")
    if specs and set(specs) <= {"models", "embedding_models"}:
        models = specs.get("models") or {}
        embeddings = specs.get("embedding_models") or {}
    else:
        models, embeddings = specs, {}
    if not isinstance(models, dict):
        raise ValueError('"models" must be an object mapping ids to specs')
    if not isinstance(embeddings, dict):
        raise ValueError('"embedding_models" must be an object mapping ids to specs')
    checked_models = {
        model_id: _check_spec("model", model_id, spec, MODEL_KEYS)
        for model_id, spec in models.items()
    }
    checked_embeddings = {
        model_id: _check_spec("embedding model", model_id, spec, EMBEDDING_KEYS)
        for model_id, spec in embeddings.items()
    }
    return checked_models, checked_embeddings


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def sleep(seconds: float) -> None:
    """Sleep in slices of at most SLEEP_SLICE; return early once STOP is set."""
    deadline = time.monotonic() + max(0.0, float(seconds or 0))
    while not STOP.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        STOP.wait(min(SLEEP_SLICE, remaining))


async def async_sleep(seconds: float) -> None:
    deadline = time.monotonic() + max(0.0, float(seconds or 0))
    while not STOP.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(SLEEP_SLICE, remaining))


def _pick(value: Any, n: int) -> Any:
    if isinstance(value, list):
        return value[(n - 1) % len(value)]
    return value


def _parts_text(parts: Any) -> str:
    try:
        from llm.parts import TextPart
    except ImportError:  # pragma: no cover - llm < 0.32
        TextPart = None  # type: ignore[assignment]
    texts = []
    for part in parts or []:
        if TextPart is not None and not isinstance(part, TextPart):
            continue
        text = getattr(part, "text", None)
        if isinstance(text, str):
            texts.append(text)
    return "\n".join(texts)


def _messages(prompt: Any) -> list[dict]:
    try:
        messages = prompt.messages
    except Exception:  # noqa: BLE001 - llm < 0.32 has no prompt.messages
        messages = None
    if messages is None:
        result = []
        if prompt.system:
            result.append({"role": "system", "text": prompt.system})
        result.append({"role": "user", "text": prompt.prompt or ""})
        return result
    return [
        {"role": getattr(m, "role", "?"), "text": _parts_text(getattr(m, "parts", []))}
        for m in messages
    ]


def _attachment_type(attachment: Any) -> Optional[str]:
    if attachment.type:
        return attachment.type
    if attachment.url:
        return None  # resolving would need the network
    try:
        return attachment.resolve_type()
    except Exception:  # noqa: BLE001
        return None


def _word_count(text: str) -> int:
    return len((text or "").split())


def _format_number(value: float) -> str:
    return str(round(float(value), 3))


def _fill(template: str, values: dict) -> str:
    return PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


_LOG_LOCK = threading.Lock()


def _append_log(record: dict) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    data = (json.dumps(record, default=str) + "\n").encode("utf-8")
    with _LOG_LOCK:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as ex:
            sys.stderr.write(f"llm-consortium-fake-models: cannot log to {path}: {ex}\n")
            return
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)  # also releases the flock


def read_log(path: os.PathLike | str) -> list[dict]:
    """Parse a $LLM_CONSORTIUM_FAKE_LOG file (missing file → [])."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hash_embedding(text: str | bytes, dims: int = DEFAULT_DIMS) -> list[float]:
    """Deterministic bag-of-words hashing embedding, L2-normalised."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    vector = [0.0] * dims
    for word in WORD_RE.findall((text or "").lower()):
        vector[zlib.crc32(word.encode("utf-8")) % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        return vector
    return [v / norm for v in vector]


def arbiter_reply(text: str, n: int = 1, spec: Optional[dict] = None) -> str:
    """The deterministic majority-vote arbiter reply for a user ``text``."""
    spec = spec or {}
    blocks = BLOCK_RE.findall(text or "")
    if blocks:
        # One vote per <model_response> block: its last <answer> (as the
        # consortium's own member_answer() reads it). Tags outside the
        # blocks (iteration history, the original prompt) do not vote.
        pairs = []
        for response_id, body in blocks:
            found = ANSWER_RE.findall(body)
            pairs.append((response_id, found[-1].strip() if found else None))
        answers = [answer for _, answer in pairs if answer is not None]
    else:
        answers = [a.strip() for a in ANSWER_RE.findall(text or "")]
        ids = ID_RE.findall(text or "")
        pairs = [
            (response_id, answers[i] if i < len(answers) else None)
            for i, response_id in enumerate(ids)
        ]
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer] = counts.get(answer, 0) + 1
    winner, agree = "", 0
    for answer, count in counts.items():  # insertion order: first seen wins ties
        if count > agree:
            winner, agree = answer, count
    total = len(answers)

    ranked: list[str] = []
    for response_id, answer in pairs:
        if answer == winner and response_id not in ranked:
            ranked.append(response_id)
    for response_id, _ in pairs:
        if response_id not in ranked:
            ranked.append(response_id)

    if pairs:
        dissent = "; ".join(
            f"{response_id}: {answer}"
            for response_id, answer in pairs
            if answer is not None and answer != winner
        )
    else:
        dissent = "; ".join(a for a in answers if a != winner)

    if "arbiter_confidence" in spec:
        confidence = float(_pick(spec["arbiter_confidence"], n))
    else:
        confidence = agree / total if total else 0.0
    needs_iteration = bool(_pick(spec.get("needs_iteration", False), n))
    ranking = "".join(
        f'<rank position="{i}">{response_id}</rank>'
        for i, response_id in enumerate(ranked, start=1)
    )
    return (
        f"<confidence>{_format_number(confidence)}</confidence>\n"
        f"<needs_iteration>{'true' if needs_iteration else 'false'}</needs_iteration>\n"
        f"<analysis>{total} responses; {agree} agree.</analysis>\n"
        f"<dissent>{dissent}</dissent>\n"
        "<refinement_areas></refinement_areas>\n"
        f"<ranking>{ranking}</ranking>\n"
        f"<synthesis>{winner}</synthesis>"
    )


# ---------------------------------------------------------------------------
# Chat models
# ---------------------------------------------------------------------------


class _Scripted:
    """Shared behaviour of the sync and async scripted models."""

    can_stream = True
    supports_schema = False
    supports_tools = False

    class Options(llm.Options):
        # Any -o/option is accepted and recorded.
        model_config = ConfigDict(extra="allow")
        temperature: Optional[float] = Field(default=None, description="Recorded only")
        max_tokens: Optional[int] = Field(default=None, description="Recorded only")

    # Class-level, shared by every instance (and by the async variant):
    calls: dict[str, list[dict]] = {}
    _counts: dict[str, int] = {}
    _lock = threading.Lock()

    def __init__(self, model_id: str, spec: Optional[dict] = None):
        checked = _check_spec("model", model_id, spec or {}, MODEL_KEYS)
        self.model_id = model_id
        self.spec = checked
        self.can_stream = checked.get("can_stream", True)
        self.attachment_types = set(
            checked.get("attachment_types", DEFAULT_ATTACHMENT_TYPES)
        )

    def __str__(self) -> str:
        return f"Scripted: {self.model_id}"

    @classmethod
    def reset(cls, model_ids: Optional[Any] = None) -> None:
        """Forget calls and counters (all, or only for ``model_ids``)."""
        with _Scripted._lock:
            if model_ids is None:
                _Scripted.calls.clear()
                _Scripted._counts.clear()
            else:
                for model_id in model_ids:
                    _Scripted.calls.pop(model_id, None)
                    _Scripted._counts.pop(model_id, None)

    # -- the call --------------------------------------------------------

    def _begin(self, prompt: Any, stream: bool) -> dict:
        messages = _messages(prompt)
        system = prompt.system or next(
            (m["text"] for m in messages if m["role"] == "system"), ""
        )
        latest_user = next(
            (m["text"] for m in reversed(messages) if m["role"] == "user"),
            prompt.prompt or "",
        )
        try:
            options = prompt.options.model_dump(exclude_none=True)
        except Exception:  # noqa: BLE001
            options = {}
        with _Scripted._lock:
            n = _Scripted._counts.get(self.model_id, 0) + 1
            _Scripted._counts[self.model_id] = n
            record = {
                "model": self.model_id,
                "n": n,
                "prompt": latest_user,
                "system": system,
                "messages": messages,
                "stream": bool(stream),
                "options": options,
                "attachments": [_attachment_type(a) for a in prompt.attachments or []],
                "pid": os.getpid(),
                "time": time.time(),
            }
            if self.spec.get("record", True):
                _Scripted.calls.setdefault(self.model_id, []).append(record)
        _append_log(record)
        return record

    def _failure(self, call: dict) -> Optional[str]:
        spec = self.spec
        if "fail" not in spec:
            return None
        fail_times = spec.get("fail_times")
        if fail_times is not None and call["n"] > fail_times:
            return None
        return spec["fail"]

    def _reply(self, prompt: Any, call: dict) -> str:
        spec, n = self.spec, call["n"]
        if spec.get("empty"):
            return ""
        if spec.get("echo"):
            lines = []
            has_system = any(m["role"] == "system" for m in call["messages"])
            if prompt.system and not has_system:
                lines.append(f"[system] {prompt.system}")
            lines.extend(f"[{m['role']}] {m['text']}" for m in call["messages"])
            return "\n".join(lines)
        if spec.get("arbiter"):
            return arbiter_reply(call["prompt"], n, spec)
        if "accuracy" in spec:
            return arithmetic_reply(self.model_id, call, spec)
        if "answer" in spec or "answers" in spec:
            answer = _pick(spec["answers"], n) if "answers" in spec else spec["answer"]
            template = self._answer_text(answer, n)
        elif "replies" in spec:
            template = _pick(spec["replies"], n)
        elif "reply" in spec:
            template = spec["reply"]
        else:
            template = self._answer_text(DEFAULT_ANSWER, n)
        return _fill(
            template,
            {
                "prompt": call["prompt"],
                "system": call["system"] or "",
                "n": str(n),
                "model": self.model_id,
            },
        )

    def _answer_text(self, answer: Any, n: int) -> str:
        confidence = _pick(self.spec.get("confidence", DEFAULT_CONFIDENCE), n)
        thinking = self.spec.get("thinking", DEFAULT_THINKING)
        return (
            f"<thinking>{thinking}</thinking>\n"
            f"<answer>{answer}</answer>\n"
            f"<confidence>{confidence}</confidence>"
        )

    def _set_usage(self, response: Any, call: dict, output: str) -> None:
        if "usage" in self.spec:
            tokens_in, tokens_out = self.spec["usage"]
        else:
            texts = [m["text"] for m in call["messages"]]
            if call["system"] and not any(
                m["role"] == "system" for m in call["messages"]
            ):
                texts.append(call["system"])
            tokens_in = sum(_word_count(t) for t in texts)
            tokens_out = _word_count(output)
        response.set_usage(input=tokens_in, output=tokens_out)

    def _chunks(self, text: str, stream: bool) -> list[str]:
        if not text:
            return []
        if stream and self.can_stream:
            return [text[i : i + CHUNK_SIZE] for i in range(0, len(text), CHUNK_SIZE)]
        return [text]


class ScriptedModel(_Scripted, llm.Model):
    def execute(self, prompt, stream, response, conversation=None):
        call = self._begin(prompt, stream)
        sleep(self.spec.get("latency", 0))
        if "hang" in self.spec:
            sleep(self.spec["hang"])
            raise llm.ModelError("hung")
        failure = self._failure(call)
        if failure is not None:
            raise llm.ModelError(failure)
        text = self._reply(prompt, call)
        self._set_usage(response, call, text)
        for i, chunk in enumerate(self._chunks(text, stream)):
            if i:
                sleep(self.spec.get("chunk_delay", 0))
            yield chunk


class AsyncScriptedModel(_Scripted, llm.AsyncModel):
    async def execute(self, prompt, stream, response, conversation=None):
        call = self._begin(prompt, stream)
        await async_sleep(self.spec.get("latency", 0))
        if "hang" in self.spec:
            await async_sleep(self.spec["hang"])
            raise llm.ModelError("hung")
        failure = self._failure(call)
        if failure is not None:
            raise llm.ModelError(failure)
        text = self._reply(prompt, call)
        self._set_usage(response, call, text)
        for i, chunk in enumerate(self._chunks(text, stream)):
            if i:
                await async_sleep(self.spec.get("chunk_delay", 0))
            yield chunk


# ---------------------------------------------------------------------------
# Embedding model
# ---------------------------------------------------------------------------


class HashEmbedding(llm.EmbeddingModel):
    supports_text = True
    supports_binary = False
    batch_size = 32

    # Class-level: the size of every embed_batch call, in order.
    batches: list[int] = []
    batches_by_model: dict[str, list[int]] = {}
    _lock = threading.Lock()

    def __init__(self, model_id: str, spec: Optional[dict] = None):
        self.model_id = model_id
        self.spec = _check_spec("embedding model", model_id, spec or {}, EMBEDDING_KEYS)
        self.dims = self.spec.get("dims", DEFAULT_DIMS)

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            HashEmbedding.batches.clear()
            HashEmbedding.batches_by_model.clear()

    def embed_batch(self, items, *, key=None):
        items = list(items)
        with HashEmbedding._lock:
            HashEmbedding.batches.append(len(items))
            HashEmbedding.batches_by_model.setdefault(self.model_id, []).append(
                len(items)
            )
        sleep(self.spec.get("latency", 0))
        if "fail" in self.spec:
            raise llm.ModelError(self.spec["fail"])
        return [hash_embedding(item, self.dims) for item in items]


# ---------------------------------------------------------------------------
# Plugin objects
# ---------------------------------------------------------------------------


class FakeModels:
    """A pluggy plugin object registering scripted models from ``specs``."""

    def __init__(self, specs: Optional[dict] = None, *, reset: bool = True):
        self.models, self.embedding_models = normalize_specs(specs)
        if reset:
            _Scripted.reset(self.models)
            if self.embedding_models:
                HashEmbedding.reset()

    @llm.hookimpl
    def register_models(self, register):
        for model_id, spec in self.models.items():
            register(
                ScriptedModel(model_id, spec),
                AsyncScriptedModel(model_id, spec),
                aliases=tuple(spec.get("aliases", ())),
            )

    @llm.hookimpl
    def register_embedding_models(self, register):
        for model_id, spec in self.embedding_models.items():
            register(
                HashEmbedding(model_id, spec),
                aliases=tuple(spec.get("aliases", ())),
            )


_warned: set = set()


def _warn_once(message: str) -> None:
    if message in _warned:
        return
    _warned.add(message)
    try:
        sys.stderr.write(f"llm-consortium-fake-models: {message}\n")
    except Exception:  # noqa: BLE001
        pass


def spec_path() -> Optional[Path]:
    """The spec file in use: $LLM_CONSORTIUM_FAKE_MODELS, else user_dir's."""
    env = os.environ.get(SPEC_ENV)
    if env and Path(env).is_file():
        return Path(env)
    try:
        candidate = llm.user_dir() / SPEC_FILENAME
    except Exception:  # noqa: BLE001
        return None
    return candidate if candidate.is_file() else None


def load_spec_file() -> dict:
    """Read and validate the spec file; {} if absent, {} + warning if bad."""
    path = spec_path()
    if path is None:
        return {}
    try:
        specs = json.loads(path.read_text(encoding="utf-8"))
        normalize_specs(specs)
    except Exception as ex:  # noqa: BLE001
        _warn_once(f"ignoring malformed spec file {path}: {ex}")
        return {}
    return specs


@llm.hookimpl
def register_models(register):
    try:
        plugin = FakeModels(load_spec_file(), reset=False)
        plugin.register_models(register)
    except Exception as ex:  # noqa: BLE001 - hooks must never raise
        _warn_once(f"could not register fake models: {ex}")


@llm.hookimpl
def register_embedding_models(register):
    try:
        plugin = FakeModels(load_spec_file(), reset=False)
        plugin.register_embedding_models(register)
    except Exception as ex:  # noqa: BLE001 - hooks must never raise
        _warn_once(f"could not register fake embedding models: {ex}")


# ---------------------------------------------------------------------------
# Probabilistic arithmetic answerer (the eval demo and eval tests)
# ---------------------------------------------------------------------------
# Spec key ``accuracy`` (0..1): the model answers the last "What is A op B?"
# (op: + - * x) in the latest user text correctly with that probability.
# The draw is seeded by the model id and the question, so each model gets
# the same questions right on every run (and different models err on
# different ones); a wrong answer is off by 1..9. Inside a consortium (the
# system prompt asks for <answer> tags) it replies in the member format with
# ``confidence`` (default 0.7); asked directly it replies with the number.

MODEL_KEYS["accuracy"] = (
    lambda v: _is_number(v) and 0 <= v <= 1,
    "a number between 0 and 1",
)
# Spec key ``record`` (default true): false keeps no ``calls`` record, so a
# long benchmark (scripts/bench_batch.py) measures the plugin, not the fake.
MODEL_KEYS["record"] = (lambda v: isinstance(v, bool), "true or false")
ARITHMETIC_RE = re.compile(r"what is\s+(-?\d+)\s*([-+*x×])\s*(-?\d+)", re.I)


def _unit_draw(*parts: Any) -> float:
    return zlib.crc32("|".join(map(str, parts)).encode("utf-8")) / 2**32


def arithmetic_answer(model_id: str, text: str, accuracy: float) -> Optional[int]:
    """This model's (possibly wrong) answer to the question in ``text``."""
    found = ARITHMETIC_RE.findall(text or "")
    if not found:
        return None
    left, op, right = found[-1]
    a, b = int(left), int(right)
    truth = a + b if op == "+" else a - b if op == "-" else a * b
    question = f"{a}{op}{b}"
    if _unit_draw(model_id, question) < accuracy:
        return truth
    offset = 1 + int(_unit_draw(model_id, question, "offset") * 9)
    return truth + offset if _unit_draw(model_id, question, "sign") < 0.5 else truth - offset


def arithmetic_reply(model_id: str, call: dict, spec: dict) -> str:
    answer = arithmetic_answer(model_id, call["prompt"], spec["accuracy"])
    text = "I cannot tell." if answer is None else str(answer)
    if "<answer>" in (call["system"] or ""):
        confidence = _pick(spec.get("confidence", 0.7), call["n"])
        return (
            f"<thinking>Working it out.</thinking>\n<answer>{text}</answer>\n"
            f"<confidence>{confidence}</confidence>"
        )
    return text
