"""Embedding backends (the original plugin's ``embeddings.backends``).

Every backend is a :class:`BaseEmbeddingBackend`: ``embed(text)`` returns one
vector (a numpy array), ``dimension()`` its length, and ``embed_batch(texts)``
a vector per text (in as few calls as the provider allows). Backends:

``openai`` (:class:`OpenAIBackend`)
    The ``openai`` package; default model ``text-embedding-3-small``. The key
    comes from ``llm keys set openai`` (else the ``openai`` module's own
    configuration, ``OPENAI_API_KEY``); ``OPENAI_BASE_URL`` points the client at
    another OpenAI-compatible server.
``sentence-transformers`` (:class:`SentenceTransformerBackend`)
    Local models (a name from the hub or a local path); default
    ``all-MiniLM-L6-v2``. Loaded models are kept for the life of the process.
``chutes`` (:class:`ChutesBackend`)
    An HTTP POST to ``CHUTES_EMBEDDING_URL`` or ``DEFAULT_CHUTES_URL`` (a model
    given as an ``http(s)://`` URL is used as the endpoint instead), bearer
    token from ``CHUTES_API_TOKEN``. Endpoints ending in ``/embeddings`` are
    OpenAI-compatible and get ``{"input": ..., "model": ...}``; any other (a
    text-embeddings-inference ``/embed`` route) gets ``{"inputs": [...]}``.
``llm`` (:class:`LLMBackend`, ours)
    Any embedding model registered with ``llm`` (``llm embed-models``); the
    model defaults to ``llm embed-models default``.

Constructing a backend is cheap and checks nothing; ``check()`` verifies the
optional package, the credentials and the model, so that a run can fail
before any member is prompted. Failures are :class:`EmbeddingError` (a
``RuntimeError``) with one line naming the backend and the cause; there is no
silent fallback. Heavy modules (numpy, openai, sentence-transformers) are
imported when first used; a missing one raises :class:`MissingExtraError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar

from ..errors import ConsortiumError

EXTRA_INSTALL_HINT = "pip install 'llm-consortium[embeddings]'"
DEFAULT_TIMEOUT = 60.0
DEFAULT_CHUTES_URL = "https://chutes-qwen-qwen3-embedding-8b.chutes.ai/v1/embeddings"
OPENAI_BATCH_SIZE = 2048  # the OpenAI API accepts at most 2048 inputs per call
CHUTES_BATCH_SIZE = 32  # text-embeddings-inference's default client batch limit
_ERROR_BODY_CHARS = 200

#: The ``openai`` module, imported on first use (replaceable in tests).
openai: Any = None


def _one_line(text: object) -> str:
    """One line, with anything that looks like a credential redacted."""
    from ..redaction import redact

    return redact(" ".join(str(text).split()))


def describe_error(exc: BaseException) -> str:
    message = _one_line(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


class EmbeddingError(ConsortiumError, RuntimeError):
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


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_vector(vector: Any) -> Any:
    """``vector`` as a 1-D numpy array of floats."""
    return import_optional("numpy").asarray(vector, dtype=float)


class BaseEmbeddingBackend(ABC):
    """The backend contract (the original's): ``embed(text)`` → one vector,
    ``dimension()``. ``embed_batch`` embeds one at a time unless a backend
    does better; ``check()`` verifies the configuration."""

    name: ClassVar[str] = "custom"
    model: str | None = None

    @abstractmethod
    def embed(self, text: str) -> Any:
        """One vector (a numpy array) for ``text``."""

    @abstractmethod
    def dimension(self) -> int:
        """The length of the vectors."""

    def embed_batch(self, texts: Sequence[str]) -> list[Any]:
        return [self.embed(text) for text in texts]

    def check(self) -> None:
        """Raise :class:`EmbeddingError` when the backend cannot work."""

    def fail(self, cause: str) -> EmbeddingError:
        return EmbeddingError(f"{self.name} embedding ({self.model}) failed: {cause}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}:{self.model}>"


class _RequestBackend(BaseEmbeddingBackend):
    """A backend that sends one text, or a batch of up to ``batch_size``, per
    request (``_request``)."""

    batch_size: ClassVar[int]

    @abstractmethod
    def _request(self, inputs: str | list[str]) -> list[Any]:
        """The vectors for ``inputs`` (one text, or a list)."""

    def embed(self, text: str) -> Any:
        return self._request(text)[0]

    def embed_batch(self, texts: Sequence[str]) -> list[Any]:
        vectors: list[Any] = []
        for batch in _chunks(list(texts), self.batch_size):
            vectors.extend(self._request(batch))
        return vectors


OPENAI_DIMENSIONS = {"text-embedding-3-large": 3072}  # the others: 1536


class OpenAIBackend(_RequestBackend):
    name = "openai"
    batch_size = OPENAI_BATCH_SIZE

    def __init__(self, model: str = "text-embedding-3-small") -> None:
        self.model = model or "text-embedding-3-small"

    def _key(self) -> str | None:
        import llm

        return llm.get_key(alias="openai", env="OPENAI_API_KEY")

    def check(self) -> None:
        _require_installed("openai")
        if not self._key():
            raise EmbeddingError(
                "openai embedding backend needs an API key: "
                "set OPENAI_API_KEY or run `llm keys set openai`"
            )

    def _client(self) -> Any:
        global openai
        if openai is None:
            openai = import_optional("openai")
        key = self._key()
        if key and hasattr(openai, "OpenAI"):
            return openai.OpenAI(
                api_key=key, base_url=os.environ.get("OPENAI_BASE_URL") or None, timeout=DEFAULT_TIMEOUT
            )
        return openai  # the module's own client (OPENAI_API_KEY)

    def _request(self, inputs: str | list[str]) -> list[Any]:
        response = self._client().embeddings.create(input=inputs, model=self.model)
        items = sorted(response.data, key=lambda item: getattr(item, "index", 0) or 0)
        return [as_vector(item.embedding) for item in items]

    def dimension(self) -> int:
        return OPENAI_DIMENSIONS.get(self.model, 1536)


class SentenceTransformerBackend(BaseEmbeddingBackend):
    name = "sentence-transformers"
    _loaded: ClassVar[dict[str, Any]] = {}
    _load_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str = "all-MiniLM-L6-v2") -> None:
        self.model = model or "all-MiniLM-L6-v2"
        self.model_name = self.model

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

    def check(self) -> None:
        try:
            self._load()
        except EmbeddingError:
            raise
        except Exception as exc:
            raise self.fail(describe_error(exc)) from exc

    def embed(self, text: str) -> Any:
        # As the original calls it (a stand-in model may take nothing more);
        # sentence-transformers draws no bar for it unless its logger is at
        # INFO. Runs embed through embed_batch, which turns the bar off.
        return as_vector(self._load().encode(text))

    def embed_batch(self, texts: Sequence[str]) -> list[Any]:
        encoded = self._load().encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        return [as_vector(vector) for vector in encoded]

    def dimension(self) -> int:
        return int(self._load().get_sentence_embedding_dimension() or 384)


class _HTTPResponse:
    def __init__(self, url: str, status: int, body: bytes) -> None:
        self.url, self.status_code, self.body = url, status, body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            detail = self.body.decode("utf-8", "replace")[:_ERROR_BODY_CHARS]
            raise OSError(f"HTTP {self.status_code} from {self.url}: {detail}")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ValueError(f"response from {self.url} is not JSON") from None


class _URLLibClient:
    """The part of an ``httpx.Client`` the chutes backend uses, on urllib."""

    def post(self, url: str, headers: dict[str, str], json: Any, timeout: float) -> _HTTPResponse:
        import json as json_module
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            url, data=json_module.dumps(json).encode("utf-8"), method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _HTTPResponse(url, response.status, response.read())
        except urllib.error.HTTPError as exc:
            return _HTTPResponse(url, exc.code, exc.read())


class ChutesBackend(_RequestBackend):
    name = "chutes"
    batch_size = CHUTES_BATCH_SIZE

    def __init__(
        self,
        client: Any = None,
        endpoint: str | None = None,
        model: str | None = None,
        default_dimension: int = 1024,
    ) -> None:
        self.client = client or _URLLibClient()
        self.model = model or None
        if self.model and self.model.startswith(("http://", "https://")):
            endpoint, self.model = self.model, None
        self.endpoint = endpoint or os.environ.get("CHUTES_EMBEDDING_URL") or DEFAULT_CHUTES_URL
        self._dimension = default_dimension

    @property
    def url(self) -> str:
        return self.endpoint

    def _token(self) -> str:
        token = os.environ.get("CHUTES_API_TOKEN", "").strip()
        if not token:
            raise EmbeddingError("chutes embedding backend needs an API token: set CHUTES_API_TOKEN")
        return token

    def check(self) -> None:
        self._token()

    def _request(self, inputs: str | list[str]) -> list[Any]:
        openai_style = self.endpoint.rstrip("/").endswith("/embeddings")
        payload = (
            {"input": inputs, "model": self.model}
            if openai_style
            else {"inputs": [inputs] if isinstance(inputs, str) else inputs}
        )
        response = self.client.post(
            self.endpoint,
            headers={
                "Authorization": f"Bearer {self._token()}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            json=payload,
            timeout=DEFAULT_TIMEOUT,
        )
        response.raise_for_status()
        vectors = [as_vector(vector) for vector in self._parse(response.json())]
        if vectors:
            self._dimension = int(len(vectors[0]))
        return vectors

    def _parse(self, data: Any) -> list[Any]:
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            items = data["data"]
            if all(isinstance(item, dict) and "embedding" in item for item in items):
                items = sorted(items, key=lambda item: item.get("index", 0))
                return [item["embedding"] for item in items]
        raise self.fail(
            "unexpected response shape (expected a list of vectors "
            'or {"data": [{"embedding": ...}]})'
        )

    def dimension(self) -> int:
        return self._dimension


class LLMBackend(BaseEmbeddingBackend):
    """Any embedding model registered with ``llm`` (ours)."""

    name = "llm"

    def __init__(self, model: str | None = None) -> None:
        self.model = model or None
        self._model: Any = None
        self._dimension: int | None = None

    def _embedding_model(self) -> Any:
        if self._model is None:
            import llm

            chosen = self.model or llm.get_default_embedding_model()
            if not chosen:
                raise EmbeddingError(
                    "llm embedding backend needs a model: pass one or run "
                    "`llm embed-models default MODEL` (`llm embed-models` lists them)"
                )
            try:
                self._model = llm.get_embedding_model(chosen)
            except llm.UnknownModelError as exc:
                raise EmbeddingError(
                    f"unknown llm embedding model {chosen!r}; "
                    "run `llm embed-models` to list the installed ones"
                ) from exc
            self.model = self._model.model_id
        return self._model

    def check(self) -> None:
        self._embedding_model()

    def embed(self, text: str) -> Any:
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: Sequence[str]) -> list[Any]:
        vectors = [as_vector(list(vector)) for vector in self._embedding_model().embed_multi(list(texts))]
        if vectors:
            self._dimension = int(len(vectors[0]))
        return vectors

    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(len(self.embed("dimension")))
        return self._dimension


BACKENDS: dict[str, type[BaseEmbeddingBackend]] = {
    "openai": OpenAIBackend,
    "sentence-transformers": SentenceTransformerBackend,
    "chutes": ChutesBackend,
    "llm": LLMBackend,
}


def known_backends() -> tuple[str, ...]:
    """Names accepted by :func:`get_backend`."""
    return tuple(BACKENDS)


def get_backend(name: str, model: str | None = None) -> BaseEmbeddingBackend:
    """The backend called ``name`` (case-insensitive) for ``model`` (unchecked)."""
    key = name.strip().lower() if isinstance(name, str) else None
    backend = BACKENDS.get(key) if key else None
    if backend is None:
        valid = ", ".join(known_backends())
        raise ValueError(f"unknown embedding backend {name!r}; valid backends: {valid}")
    model = model.strip() if model else None
    return backend(model=model) if model else backend()
