"""Keeping credentials out of what we store and print.

Provider error messages sometimes echo a credential back (``Incorrect API key
provided: …``, a request URL with ``?key=…``). Two nets catch it:

* **By value** (``redact_values``): every key the user configured — each
  value in ``llm keys`` (``keys.json``) and the value of each installed
  model's key environment variable (``key_env_var``, e.g.
  ``OPENAI_API_KEY``) — whatever its shape, when it is at least
  ``MIN_SECRET_LENGTH`` characters long (shorter values would blank out
  ordinary words).
* **By shape** (``redact``, for error messages only): bearer tokens,
  ``api_key: …``, ``?key=…``, ``sk-…`` and similar, for keys we do not know.

Errors are redacted both ways before they are stored or printed; everything
``run-info``, ``runs`` and the other reports print is redacted by value too
(so rows written before this existed are covered).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

MIN_SECRET_LENGTH = 6
REDACTED = "[redacted]"

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

_lock = threading.Lock()
# key_env_var of the installed models, from the last pass over them
# (``models_registered``, called by ``resolve``), and of embedding models
# per plugin set
_model_env_names: tuple[str, ...] | None = None
_embedding_env_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None
# (keys.json path, mtime_ns, size) -> the values in it
_file_values: tuple[tuple[str, int, int], tuple[str, ...]] | None = None


def _env_var_names(models: Iterable[Any]) -> tuple[str, ...]:
    names = {getattr(model, "key_env_var", None) for model in models}
    return tuple(sorted(name for name in names if isinstance(name, str) and name))


def models_registered(entries: Iterable[Any]) -> None:
    """Note the key environment variables of ``llm``'s models (its
    ``ModelWithAliases`` entries): ``resolve`` calls this after each pass
    over them, so redaction needs no pass of its own."""
    global _model_env_names
    found = _env_var_names(model for entry in entries for model in (entry.model, entry.async_model))
    with _lock:
        _model_env_names = found


def _key_env_var_names() -> tuple[str, ...]:
    """``key_env_var`` of every installed model and embedding model."""
    global _embedding_env_names
    import llm
    from llm.plugins import pm

    if _model_env_names is None:  # no pass over the models yet in this process
        models_registered(llm.get_models_with_aliases())
    plugins = tuple(sorted(name for name, _ in pm.list_name_plugin()))
    with _lock:
        cached = _embedding_env_names
    if cached is None or cached[0] != plugins:
        cached = (plugins, _env_var_names(llm.get_embedding_models()))
        with _lock:
            _embedding_env_names = cached
    return ("OPENAI_API_KEY", *(_model_env_names or ()), *cached[1])


def _keys_file_values() -> tuple[str, ...]:
    """The values stored with ``llm keys set`` (re-read when the file changes)."""
    global _file_values
    import llm

    try:
        path = llm.user_dir() / "keys.json"
        stat = path.stat()
    except OSError:  # no keys file, or no usable user directory
        return ()
    signature = (str(path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if _file_values is not None and _file_values[0] == signature:
            return _file_values[1]
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    values = tuple(
        value
        for name, value in (data.items() if isinstance(data, dict) else [])
        if isinstance(value, str) and not str(name).startswith("//")
    )
    with _lock:
        _file_values = (signature, values)
    return values


def configured_secrets() -> list[str]:
    """Every configured key value worth redacting, longest first (so a key
    that contains another is replaced whole)."""
    values = set(_keys_file_values())
    try:
        env_names = _key_env_var_names()
    except Exception:  # a broken plugin must not stop an error being reported
        env_names = ("OPENAI_API_KEY",)
    values.update(os.environ.get(name, "") for name in env_names)
    return sorted(
        (value.strip() for value in values if len(value.strip()) >= MIN_SECRET_LENGTH),
        key=len,
        reverse=True,
    )


def redact_values(text: str) -> str:
    """``text`` with every configured key value replaced by ``[redacted]``."""
    if not text:
        return text
    for secret in configured_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(text: str) -> str:
    """``text`` with configured keys and anything shaped like a credential
    replaced (for error messages)."""
    text = redact_values(text)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
