"""Embeddings for the semantic strategy: backends and the caching service.

Importing this package is cheap (standard library only); numpy, openai and
sentence-transformers load when first used. See :mod:`.backends` and
:mod:`.service`.
"""

from .backends import (
    EXTRA_INSTALL_HINT,
    BaseEmbeddingBackend,
    ChutesBackend,
    EmbeddingError,
    LLMBackend,
    MissingExtraError,
    OpenAIBackend,
    SentenceTransformerBackend,
    get_backend,
    import_optional,
    known_backends,
    missing_packages,
)
from .service import EmbeddingService, create_embedding_service

__all__ = [
    "EXTRA_INSTALL_HINT",
    "BaseEmbeddingBackend",
    "ChutesBackend",
    "EmbeddingError",
    "EmbeddingService",
    "LLMBackend",
    "MissingExtraError",
    "OpenAIBackend",
    "SentenceTransformerBackend",
    "create_embedding_service",
    "get_backend",
    "import_optional",
    "known_backends",
    "missing_packages",
]
