"""One HTTP client per endpoint for ``llm``'s OpenAI-family models.

``llm``'s OpenAI plugin builds a new ``openai.OpenAI`` client for every
prompt, and building one costs tens of milliseconds of CPU (nearly all of it
a new TLS context). A run calls many members at once; those costs queue up on
the GIL. ``ClientPool.adopt(model)`` returns a copy of a model whose
``get_client`` hands out one client per (endpoint, key, headers, …), built by
the plugin's own ``get_client`` the first time. Runs adopt their models into
one pool per process (``shared_pool()``).

Safety:

* only models whose ``get_client`` is the one in ``llm.default_plugins.
  openai_models`` (llm 0.32 to 0.36 build clients from the same inputs) are
  adopted; anything else — another plugin, a subclass that overrides it — is
  returned unchanged;
* the pool key holds every input of that factory: the class, ``api_base``,
  ``api_type``, ``api_version``, ``api_engine``, ``headers``, the key the
  model resolves right now, and sync/async (async clients also per event
  loop); a client is only kept after checking it really carries that key,
  base URL and headers — should a later ``llm`` build clients differently,
  the check fails and every call gets a client of its own, as in ``llm``;
* the models ``llm`` hands out are never changed: only the pool's copies,
  which live inside a run;
* ``LLM_OPENAI_SHOW_RESPONSES`` (llm's logging client) disables reuse.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
from typing import Any

OPENAI_PLUGIN = "llm.default_plugins.openai_models"
DUMMY_KEY = "DUMMY_KEY"  # what llm's factory passes when a model needs no key


def _factory_owner(model: Any) -> type | None:
    """The class in the model's MRO that defines ``get_client``, if it is
    ``llm``'s OpenAI plugin's; else None."""
    for klass in type(model).__mro__:
        if "get_client" in vars(klass):
            return klass if klass.__module__ == OPENAI_PLUGIN else None
    return None


def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _carries(client: Any, api_key: str, api_base: str | None, headers: dict[str, Any] | None) -> bool:
    """Whether ``client`` is bound to exactly this key, base URL and headers."""
    try:
        if client.api_key != api_key:
            return False
        if api_base and str(client.base_url).rstrip("/") != api_base.rstrip("/"):
            return False
        sent = client.default_headers
        return all(sent.get(name) == value for name, value in (headers or {}).items())
    except (AttributeError, TypeError):
        return False


class _Slot:
    """One client and the lock its first build holds, so members that start
    together wait for one build instead of each building their own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: Any = None
        self.reusable = True


class ClientPool:
    """Clients shared by the models it adopted. Thread-safe. At most
    ``max_clients`` are kept (the least recently used is dropped, and closed
    by the garbage collector once no call uses it)."""

    def __init__(self, max_clients: int = 32) -> None:
        self.max_clients = max_clients
        self._slots: dict[tuple[Any, ...], _Slot] = {}
        self._lock = threading.Lock()

    def adopt(self, model: Any) -> Any:
        """A copy of ``model`` that reuses this pool's clients, or ``model``
        itself when its client factory is not the one this pool knows."""
        owner = _factory_owner(model)
        if owner is None:
            return model
        adopted = copy.copy(model)
        build = owner.get_client

        def get_client(key: Any = None, *, async_: bool = False) -> Any:
            if os.environ.get("LLM_OPENAI_SHOW_RESPONSES"):
                return build(adopted, key, async_=async_)
            identity = self._identity(owner, adopted, key, async_)
            with self._lock:
                slot = self._slots.pop(identity, None) or _Slot()
                self._slots[identity] = slot  # the most recently used last
                while len(self._slots) > self.max_clients:
                    del self._slots[next(iter(self._slots))]
            with slot.lock:
                if slot.client is None and slot.reusable:
                    client = build(adopted, key, async_=async_)
                    api_base, headers = getattr(adopted, "api_base", None), getattr(adopted, "headers", None)
                    if _carries(client, identity[-1], api_base, headers):
                        slot.client = client
                    else:
                        slot.reusable = False
                        return client
            return slot.client if slot.reusable else build(adopted, key, async_=async_)

        adopted.get_client = get_client
        return adopted

    @staticmethod
    def _identity(owner: type, model: Any, key: Any, async_: bool) -> tuple[Any, ...]:
        """Everything llm's factory builds a client from; the resolved API key
        last (the factory asks ``get_key`` only when ``needs_key`` is set, and
        a missing key raises here just as it would there)."""
        api_key = model.get_key(key) if getattr(model, "needs_key", None) else DUMMY_KEY
        loop = asyncio.get_running_loop() if async_ else None  # async clients are bound to it
        return (
            owner,
            getattr(model, "api_base", None),
            getattr(model, "api_type", None),
            getattr(model, "api_version", None),
            getattr(model, "api_engine", None),
            _frozen(getattr(model, "headers", None)),
            async_,
            loop,
            api_key,
        )


_shared = ClientPool()


def shared_pool() -> ClientPool:
    """The process's pool: runs reuse each other's clients, so only the first
    run in a process pays for building one per endpoint."""
    return _shared
