"""``EmbeddingService``: a backend plus a cache (the original's ``embeddings.service``).

Vectors are cached per service, keyed by the SHA-256 of the text, least
recently used first out (``cache_size``); an orchestrator keeps one service
for its life (``get_embedding_service()``), so each text is embedded once
across its runs. A backend failure is raised as :class:`EmbeddingError` (a
``RuntimeError``) naming the backend — never a fallback.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .backends import (
    BaseEmbeddingBackend,
    EmbeddingError,
    as_vector,
    describe_error,
    get_backend,
)


class EmbeddingService:
    def __init__(
        self, backend: BaseEmbeddingBackend, cache_enabled: bool = True, cache_size: int = 256
    ) -> None:
        self.backend = backend
        self.cache_enabled = cache_enabled
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def cache_key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _fail(self, cause: str) -> EmbeddingError:
        fail = getattr(self.backend, "fail", None)
        if fail is not None:
            return fail(cause)
        return EmbeddingError(f"{type(self.backend).__name__} embedding failed: {cause}")

    def _checked(self, vectors: Any, expected: int) -> list[Any]:
        if not isinstance(vectors, (list, tuple)) or len(vectors) != expected:
            got = len(vectors) if isinstance(vectors, (list, tuple)) else type(vectors).__name__
            raise self._fail(f"expected {expected} vectors, got {got}")
        checked = []
        for index, vector in enumerate(vectors):
            try:
                array = as_vector(vector)
            except (TypeError, ValueError):
                array = None
            if array is None or array.ndim != 1 or array.size == 0 or not all(
                math.isfinite(x) for x in array.tolist()
            ):
                raise self._fail(f"vector {index} is not a non-empty list of numbers")
            checked.append(array)
        return checked

    def _call(self, texts: list[str]) -> list[Any]:
        try:
            vectors = list(self.backend.embed_batch(texts))
        except EmbeddingError:
            raise
        except Exception as exc:
            raise self._fail(describe_error(exc)) from exc
        return self._checked(vectors, len(texts))

    def embed(self, text: str) -> Any:
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: Sequence[str]) -> list[Any]:
        """One vector per text, in order; uncached texts in one backend call."""
        if isinstance(texts, str):
            raise TypeError("embed_batch() takes a list of strings, not a single string")
        items = list(texts)
        keys = [self.cache_key(text) for text in items]
        found: dict[str, Any] = {}
        if self.cache_enabled:
            with self._lock:
                for key in keys:
                    if key in self._cache:
                        self._cache.move_to_end(key)
                        found[key] = self._cache[key]
        missing = list(dict.fromkeys(text for text, key in zip(items, keys) if key not in found))
        if missing:
            fresh = dict(zip((self.cache_key(text) for text in missing), self._call(missing)))
            found.update(fresh)
            if self.cache_enabled:
                with self._lock:
                    for key, vector in fresh.items():
                        self._cache[key] = vector
                        self._cache.move_to_end(key)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [found[key].copy() for key in keys]

    def check(self) -> None:
        """Fail now (``EmbeddingError``) when the backend cannot work."""
        try:
            self.backend.check()
        except EmbeddingError:
            raise
        except Exception as exc:
            raise self._fail(describe_error(exc)) from exc


def create_embedding_service(config: Any) -> EmbeddingService:
    """The service a consortium config asks for (``embedding_backend``,
    ``embedding_model``, ``embedding_cache_enabled``)."""
    backend_name = getattr(config, "embedding_backend", None)
    if not backend_name:
        raise ValueError(f"No valid embedding_backend configured. Found: {backend_name}")
    backend = get_backend(backend_name, getattr(config, "embedding_model", None))
    return EmbeddingService(backend, cache_enabled=getattr(config, "embedding_cache_enabled", True))
