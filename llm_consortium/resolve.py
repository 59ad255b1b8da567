"""Finding ``llm`` models by id or alias: one pass, cached, thread-safe.

``llm.get_model(name)`` asks every plugin to register all its models again on
each call (``llm``'s OpenAI plugin re-reads ``extra-openai-models.yaml`` each
time), so resolving a consortium of N distinct models one by one costs N full
passes. Here one pass over ``llm.get_models_with_aliases()`` serves a whole
consortium, and it is kept for the process until ``llm``'s model registry
could have changed: a plugin registered or unregistered, ``LLM_USER_PATH``
pointing elsewhere, a file in the user directory (``extra-openai-models.yaml``,
``aliases.json``, a plugin's own settings) changed, or the saved consortia
changed. Databases in the user directory other than the consortium
configurations (``logs.db``, the runs) do not count.

``llm`` loads its plugins lazily on first use and marks them loaded *before*
loading them, so a second thread can see a half-filled registry ("Unknown
model"). Every look-up here goes through one lock, under which the plugins
are loaded once and the pass is made once; concurrent first uses wait for it.
"""

from __future__ import annotations

import os
import threading
import time
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import llm

from . import redaction

# Files in the user directory that hold data, not model definitions (llm's
# logs, the consortium runs): they change on every call and are not watched.
_DATA_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite-wal", ".sqlite-shm")
# How long to wait for plugins another (non-consortium) thread is loading.
PLUGIN_WAIT_SECONDS = 10.0

_lock = threading.RLock()


@dataclass
class Registry:
    """One pass over ``llm``'s models: each model by id and by alias, with
    ``llm.get_model``'s precedence (a later registration wins)."""

    entries: list[Any]
    models: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entry in self.entries:
            for alias in entry.aliases:
                self.models[alias] = entry.model
            self.models[entry.model.model_id] = entry.model

    def get(self, name: str) -> Any:
        """The (sync) model called ``name``; ``llm.UnknownModelError`` otherwise."""
        try:
            return self.models[name]
        except KeyError:
            raise llm.UnknownModelError(f"Unknown model: {name}") from None


_cached: tuple[tuple[Any, ...], Registry] | None = None


def _plugins_loaded() -> bool:
    """Whether ``llm``'s plugin loading has finished: its built-in plugins are
    registered last. True when that cannot be told (other ``llm`` versions)."""
    from llm.plugins import pm

    names = getattr(llm.plugins, "DEFAULT_PLUGINS", ())
    return all(pm.has_plugin(name) for name in names)


def load_plugins() -> None:
    """``llm.load_plugins()``, safe to call from many threads at once."""
    with _lock:
        llm.load_plugins()
        # Another thread that called llm directly may still be loading them.
        deadline = time.monotonic() + PLUGIN_WAIT_SECONDS
        while not _plugins_loaded() and time.monotonic() < deadline:
            time.sleep(0.005)


def _user_dir_state(user_dir: str) -> tuple[tuple[str, int, int], ...]:
    try:
        with os.scandir(user_dir) as entries:
            state = []
            for entry in entries:
                if entry.name.endswith(_DATA_SUFFIXES) or not entry.is_file():
                    continue
                info = entry.stat()
                state.append((entry.name, info.st_mtime_ns, info.st_size))
    except OSError:
        return ()
    return tuple(sorted(state))


def _saved_consortia() -> tuple[tuple[str, str], ...]:
    from .errors import ConsortiumError
    from .db import read_config_rows_for_startup

    try:
        rows = read_config_rows_for_startup()
    except ConsortiumError:
        return ()
    return tuple((str(row["name"]), str(row["config"])) for row in rows)


def _fingerprint() -> tuple[Any, ...]:
    """What the registry depends on. Plugin objects themselves are kept (not
    their ids), so a new plugin object can never pass for an old one."""
    from llm.plugins import pm

    try:
        user_dir = str(llm.user_dir())
    except OSError:
        user_dir = ""
    return (
        user_dir,
        tuple(pm.list_name_plugin()),
        _user_dir_state(user_dir) if user_dir else (),
        _saved_consortia(),
    )


def registry() -> Registry:
    """The models ``llm`` knows, from one pass, cached while nothing changed."""
    global _cached
    with _lock:
        load_plugins()
        fingerprint = _fingerprint()
        if _cached is not None and _cached[0] == fingerprint:
            return _cached[1]
        found = Registry(list(llm.get_models_with_aliases()))
        redaction.models_registered(found.entries)  # the key variables to redact
        # The pass may itself have created files (a plugin writing its
        # defaults): fingerprint after it, so the next call is a hit.
        _cached = (_fingerprint(), found)
        return found


def get_model(name: str) -> Any:
    """``llm.get_model(name)`` from the cached registry."""
    return registry().get(name)


def get_models(names: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(models, missing)``: each name's model, and for each unknown name the
    error message to report, from one registry."""
    found = registry()
    models: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            models[name] = found.get(name)
        except llm.UnknownModelError as ex:
            try:
                models[name] = _replaced_get_model(name, ex)
            except llm.UnknownModelError as unknown:
                missing[name] = f"{unknown.args[0] if unknown.args else unknown} (see 'llm models')"
    return models, missing


def _replaced_get_model(name: str, unknown: llm.UnknownModelError) -> Any:
    """A name the pass does not know, asked of ``llm.get_model`` when that
    is no longer llm's own function: the original looked every model up
    with it, so tests written for it replace it with a mock to hand out
    their models. llm's own function would only make more passes."""
    get_model = llm.get_model
    if isinstance(get_model, types.FunctionType) and get_model.__module__ == "llm":
        raise unknown
    return get_model(name)
