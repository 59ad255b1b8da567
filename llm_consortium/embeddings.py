"""Embedding backends for llm-consortium.

``get_backend(name, model)`` returns an :class:`EmbeddingBackend` whose
``embed(texts)`` turns strings into vectors.  Backends:

``openai``
    The ``openai`` package; default model ``text-embedding-3-small``.  The key
    comes from ``llm keys set openai`` or ``OPENAI_API_KEY``; ``OPENAI_BASE_URL``
    (if set) points the client at another OpenAI-compatible server.
``sentence-transformers``
    Local models (a name from the hub or a local path); default
    ``all-MiniLM-L6-v2``.  Loaded models are kept for the life of the process.
``chutes``
    An HTTP POST (standard library only) to ``CHUTES_EMBEDDING_URL`` or
    ``DEFAULT_CHUTES_URL``; a model given as an ``http(s)://`` URL is used as
    the endpoint instead.  Bearer token from ``CHUTES_API_TOKEN``.  Endpoints
    ending in ``/embeddings`` are OpenAI-compatible and get
    ``{"model": ..., "input": [...]}``; any other endpoint (for example a text-
    embeddings-inference ``/embed`` route) gets ``{"inputs": [...]}``.  The
    response may be a JSON list of vectors or ``{"data": [{"embedding": ...}]}``.
``llm``
    Any embedding model registered with ``llm`` (``llm embed-models``); the
    model defaults to ``llm embed-models default``.

Credentials and model names are checked when the backend is created, so a
misconfiguration fails before any model is prompted.  Every failure is raised
as :class:`EmbeddingError` with one line naming the backend and the cause;
there is no silent fallback.  Vectors are cached per process, keyed by
(backend, model, text), so each text is embedded at most once per process
even when several threads ask for it at the same time.

Heavy modules are imported inside the functions that need them; a missing
optional dependency raises :class:`MissingExtraError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar

from .errors import ConsortiumError

EXTRA_INSTALL_HINT = "pip install 'llm-consortium[embeddings]'"
DEFAULT_TIMEOUT = 60.0
DEFAULT_CHUTES_URL = "https://chutes-qwen-qwen3-embedding-8b.chutes.ai/v1/embeddings"
DEFAULT_CHUTES_MODEL = "Qwen/Qwen3-Embedding-8B"
OPENAI_BATCH_SIZE = 2048  # the OpenAI API accepts at most 2048 inputs per call
CHUTES_BATCH_SIZE = 32  # text-embeddings-inference's default client batch limit
_ERROR_BODY_CHARS = 200


def _one_line(text: object) -> str:
    """One line, with anything that looks like a credential redacted."""
    from .calls import redact

    return redact(" ".join(str(text).split()))


def _describe(exc: BaseException) -> str:
    message = _one_line(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


class EmbeddingError(ConsortiumError):
    """Embedding failed; the message is a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class MissingExtraError(EmbeddingError, ImportError):
    """An optional dependency of the ``embeddings`` extra is not installed."""

    def __init__(self, package: str) -> None:
        super().__init__(f"{package} is not installed; run: {EXTRA_INSTALL_HINT}")
        self.name = package


def import_optional(module: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra.

    ``package`` is the distribution name shown in the error (default: module).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(package or module) from exc


def _require_installed(module: str, package: str | None = None) -> None:
    """Cheap check (no import) that top-level ``module`` can be imported."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise MissingExtraError(package or module) from exc
    if spec is None:
        raise MissingExtraError(package or module)


# What a backend needs beyond numpy (and scikit-learn, except for tropical
# clustering): import name and distribution name.
BACKEND_PACKAGES: dict[str, tuple[str, str]] = {
    "openai": ("openai", "openai"),
    "sentence-transformers": ("sentence_transformers", "sentence-transformers"),
}


def missing_packages(backend: str, clustering_algorithm: str | None = None) -> list[str]:
    """Distributions a semantic run with ``backend`` needs and cannot import,
    found without importing anything (for a warning when a consortium is saved)."""
    needed = [("numpy", "numpy")]
    if clustering_algorithm != "tropical":
        needed.append(("sklearn", "scikit-learn"))
    if backend.strip().lower() in BACKEND_PACKAGES:
        needed.append(BACKEND_PACKAGES[backend.strip().lower()])
    missing = []
    for module, package in needed:
        try:
            _require_installed(module, package)
        except MissingExtraError:
            missing.append(package)
    return missing


CacheKey = tuple[str, str, str]


class _EmbeddingCache:
    """Thread-safe per-process vector cache with in-flight de-duplication."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vectors: dict[CacheKey, tuple[float, ...]] = {}
        self._pending: dict[CacheKey, threading.Event] = {}

    def lookup(self, keys: Sequence[CacheKey]) -> dict[CacheKey, tuple[float, ...]]:
        with self._lock:
            return {key: self._vectors[key] for key in keys if key in self._vectors}

    def claim(
        self, keys: Sequence[CacheKey]
    ) -> tuple[list[CacheKey], list[threading.Event]]:
        """Split uncached keys into ours to embed and events of other threads'."""
        mine: list[CacheKey] = []
        waits: list[threading.Event] = []
        with self._lock:
            for key in dict.fromkeys(keys):
                if key in self._vectors:
                    continue
                if key in self._pending:
                    waits.append(self._pending[key])
                else:
                    self._pending[key] = threading.Event()
                    mine.append(key)
        return mine, waits

    def store(self, vectors: dict[CacheKey, tuple[float, ...]]) -> None:
        with self._lock:
            self._vectors.update(vectors)

    def release(self, keys: Sequence[CacheKey]) -> None:
        with self._lock:
            for key in keys:
                event = self._pending.pop(key, None)
                if event is not None:
                    event.set()

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()


_CACHE = _EmbeddingCache()


def clear_cache() -> None:
    """Forget every cached vector (in-flight embeddings are unaffected)."""
    _CACHE.clear()


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of strings, not a single string")
    items = list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"text {index} is {type(text).__name__}, expected str")
    return items


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to_vector(raw: Any) -> tuple[float, ...] | None:
    if not isinstance(raw, (list, tuple)) or not raw:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw):
        return None
    vector = tuple(float(x) for x in raw)
    return vector if all(math.isfinite(x) for x in vector) else None


class EmbeddingBackend(ABC):
    """Base class: subclasses implement ``_embed_uncached`` for one batch."""

    name: ClassVar[str]
    default_model: ClassVar[str | None] = None

    def __init__(self, model: str | None = None) -> None:
        chosen = model or self.default_model
        if not chosen:
            raise EmbeddingError(f"{self.name} embedding backend needs a model name")
        self.model: str = chosen

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}:{self.model}>"

    @property
    def cache_model(self) -> str:
        """The model part of the cache key."""
        return self.model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` (one vector per text, in order), using the cache."""
        items = _check_texts(texts)
        keys = [(self.name, self.cache_model, text) for text in items]
        while True:
            found = _CACHE.lookup(keys)
            if len(found) == len(set(keys)):
                return [list(found[key]) for key in keys]
            mine, waits = _CACHE.claim([key for key in keys if key not in found])
            if mine:
                self._fill(mine)
            for event in waits:
                event.wait()

    def _fill(self, keys: list[CacheKey]) -> None:
        try:
            vectors = self._embed_checked([key[2] for key in keys])
            _CACHE.store(dict(zip(keys, vectors)))
        finally:
            _CACHE.release(keys)

    def _fail(self, cause: str) -> EmbeddingError:
        return EmbeddingError(f"{self.name} embedding ({self.model}) failed: {cause}")

    def _embed_checked(self, texts: list[str]) -> list[tuple[float, ...]]:
        try:
            raw = self._embed_uncached(texts)
        except EmbeddingError:
            raise
        except Exception as exc:
            raise self._fail(_describe(exc)) from exc
        return self._validate(raw, len(texts))

    def _validate(self, raw: Any, expected: int) -> list[tuple[float, ...]]:
        if not isinstance(raw, list) or len(raw) != expected:
            got = len(raw) if isinstance(raw, list) else type(raw).__name__
            raise self._fail(f"expected {expected} vectors, got {got}")
        vectors = [_to_vector(item) for item in raw]
        for index, vector in enumerate(vectors):
            if vector is None:
                raise self._fail(f"vector {index} is not a non-empty list of numbers")
        return vectors  # type: ignore[return-value]

    @abstractmethod
    def _embed_uncached(self, texts: list[str]) -> list[Any]:
        """Embed ``texts`` (non-empty, unique) without the cache."""


class OpenAIBackend(EmbeddingBackend):
    name = "openai"
    default_model = "text-embedding-3-small"

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model)
        _require_installed("openai")
        self._api_key = self._find_key()
        self._base_url = os.environ.get("OPENAI_BASE_URL") or None

    def _find_key(self) -> str:
        import llm

        key = llm.get_key(alias="openai", env="OPENAI_API_KEY")
        if not key:
            raise EmbeddingError(
                "openai embedding backend needs an API key: "
                "set OPENAI_API_KEY or run `llm keys set openai`"
            )
        return key

    def _embed_uncached(self, texts: list[str]) -> list[Any]:
        openai = import_optional("openai")
        client = openai.OpenAI(
            api_key=self._api_key, base_url=self._base_url, timeout=DEFAULT_TIMEOUT
        )
        vectors: list[Any] = []
        for batch in _chunks(texts, OPENAI_BATCH_SIZE):
            response = client.embeddings.create(
                model=self.model, input=batch, encoding_format="float"
            )
            ordered = sorted(response.data, key=lambda item: item.index)
            vectors.extend(list(item.embedding) for item in ordered)
        return vectors


class SentenceTransformersBackend(EmbeddingBackend):
    name = "sentence-transformers"
    default_model = "all-MiniLM-L6-v2"
    _loaded: ClassVar[dict[str, Any]] = {}
    _load_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model)
        _require_installed("sentence_transformers", "sentence-transformers")

    def _load(self) -> Any:
        # Our progress display is the only one: no "Loading weights" bars from
        # huggingface_hub or transformers on stderr (the environment switch
        # works when they are imported from here; the calls when they already were).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        module = import_optional("sentence_transformers", "sentence-transformers")
        for library, switch_off in (
            ("huggingface_hub.utils", "disable_progress_bars"),
            ("transformers.utils.logging", "disable_progress_bar"),
        ):
            try:
                getattr(importlib.import_module(library), switch_off)()
            except (ImportError, AttributeError):
                continue  # a version without that switch, or not installed: no bar to hide
        with self._load_lock:
            if self.model not in self._loaded:
                self._loaded[self.model] = module.SentenceTransformer(self.model)
            return self._loaded[self.model]

    def _embed_uncached(self, texts: list[str]) -> list[Any]:
        encoded = self._load().encode(
            texts, convert_to_numpy=True, show_progress_bar=False
        )
        return encoded.tolist()


class ChutesBackend(EmbeddingBackend):
    name = "chutes"
    default_model = DEFAULT_CHUTES_MODEL

    def __init__(self, model: str | None = None) -> None:
        super().__init__(model)
        if self.model.startswith(("http://", "https://")):
            self.url = self.model
        else:
            self.url = os.environ.get("CHUTES_EMBEDDING_URL") or DEFAULT_CHUTES_URL
        self._token = os.environ.get("CHUTES_API_TOKEN", "").strip()
        if not self._token:
            raise EmbeddingError(
                "chutes embedding backend needs an API token: set CHUTES_API_TOKEN"
            )

    @property
    def cache_model(self) -> str:
        return f"{self.model} @ {self.url}"

    def _payload(self, texts: list[str]) -> dict[str, Any]:
        if self.url.rstrip("/").endswith("/embeddings"):
            return {"model": self.model, "input": texts}
        return {"inputs": texts}

    def _embed_uncached(self, texts: list[str]) -> list[Any]:
        vectors: list[Any] = []
        for batch in _chunks(texts, CHUTES_BATCH_SIZE):
            vectors.extend(self._parse(self._post(self._payload(batch))))
        return vectors

    def _post(self, payload: dict[str, Any]) -> Any:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode("utf-8"),
            method="POST",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=DEFAULT_TIMEOUT) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:_ERROR_BODY_CHARS]
            raise self._fail(f"HTTP {exc.code} from {self.url}: {detail}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise self._fail(f"response from {self.url} is not JSON") from exc

    def _parse(self, data: Any) -> list[Any]:
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            items = data["data"]
            if all(isinstance(item, dict) and "embedding" in item for item in items):
                items = sorted(items, key=lambda item: item.get("index", 0))
                return [item["embedding"] for item in items]
        raise self._fail(
            "unexpected response shape (expected a list of vectors "
            'or {"data": [{"embedding": ...}]})'
        )


class LLMBackend(EmbeddingBackend):
    name = "llm"

    def __init__(self, model: str | None = None) -> None:
        import llm

        chosen = model or llm.get_default_embedding_model()
        if not chosen:
            raise EmbeddingError(
                "llm embedding backend needs a model: pass one or run "
                "`llm embed-models default MODEL` (`llm embed-models` lists them)"
            )
        super().__init__(chosen)
        try:
            self._model = llm.get_embedding_model(self.model)
        except llm.UnknownModelError as exc:
            raise EmbeddingError(
                f"unknown llm embedding model {self.model!r}; "
                "run `llm embed-models` to list the installed ones"
            ) from exc
        self.model = self._model.model_id

    def _embed_uncached(self, texts: list[str]) -> list[Any]:
        return [list(vector) for vector in self._model.embed_multi(texts)]


_BACKENDS: dict[str, type[EmbeddingBackend]] = {
    backend.name: backend
    for backend in (
        OpenAIBackend,
        SentenceTransformersBackend,
        ChutesBackend,
        LLMBackend,
    )
}


def known_backends() -> tuple[str, ...]:
    """Names accepted by :func:`get_backend`."""
    return tuple(_BACKENDS)


def get_backend(name: str, model: str | None = None) -> EmbeddingBackend:
    """Return the backend called ``name`` (case-insensitive) for ``model``."""
    key = name.strip().lower() if isinstance(name, str) else None
    backend = _BACKENDS.get(key) if key else None
    if backend is None:
        valid = ", ".join(known_backends())
        raise ValueError(f"unknown embedding backend {name!r}; valid backends: {valid}")
    model = model.strip() if model else None
    return backend(model or None)
