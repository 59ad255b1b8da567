"""The strategy registry: built-in strategies plus those plugins register
through the ``register_consortium_strategies`` hook; ``create_strategy``."""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import ConsortiumStrategy

# name -> "module:Class"; imported on first use.
BUILTIN: dict[str, str] = {
    "default": "llm_consortium.strategies.default:DefaultStrategy",
    "elimination": "llm_consortium.strategies.elimination:EliminationStrategy",
    "role": "llm_consortium.strategies.role:RoleStrategy",
    "semantic": "llm_consortium.strategies.semantic:SemanticClusteringStrategy",
    "voting": "llm_consortium.strategies.voting:VotingStrategy",
}

_hookspecs_added = False
_hookspecs_lock = threading.Lock()


def strategy_name(strategy_class: type[ConsortiumStrategy]) -> str:
    """A class's registry name: its ``name``, else derived from the class
    name (``RoundRobinStrategy`` → ``round_robin``)."""
    if strategy_class.name:
        return strategy_class.name
    base = re.sub(r"Strategy$", "", strategy_class.__name__) or strategy_class.__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


def _plugin_strategies() -> dict[str, type[ConsortiumStrategy]]:
    global _hookspecs_added
    from llm.plugins import pm

    from .. import hookspecs
    from ..resolve import load_plugins  # safe from many threads at once

    with _hookspecs_lock:
        if not _hookspecs_added:
            pm.add_hookspecs(hookspecs)
            _hookspecs_added = True
    load_plugins()
    found: dict[str, type[ConsortiumStrategy]] = {}

    def register(strategy_class: type[ConsortiumStrategy], name: str | None = None) -> None:
        if not (isinstance(strategy_class, type) and issubclass(strategy_class, ConsortiumStrategy)):
            raise TypeError(f"{strategy_class!r} is not a ConsortiumStrategy subclass")
        found[(name or strategy_name(strategy_class)).strip().lower()] = strategy_class

    pm.hook.register_consortium_strategies(register=register)
    return found


def _load(path: str) -> type[ConsortiumStrategy]:
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def available_strategies() -> dict[str, type[ConsortiumStrategy]]:
    """Every strategy class by name, sorted; built-ins win over plugins of the same name."""
    strategies = _plugin_strategies()
    strategies.update({name: _load(path) for name, path in BUILTIN.items()})
    return dict(sorted(strategies.items()))


def get_strategy_class(name: str | None) -> type[ConsortiumStrategy]:
    key = (name or "default").strip().lower() or "default"
    if key in BUILTIN:
        return _load(BUILTIN[key])
    strategies = available_strategies()
    if key not in strategies:
        raise ConfigError(f"Unknown strategy: '{name}'. Available: {', '.join(strategies)}")
    return strategies[key]


def list_available_strategies() -> dict[str, dict[str, str]]:
    """``{name: {"class_name", "description"}}`` for every strategy, sorted."""
    return {
        name: {"class_name": cls.__name__, "description": cls.describe()["description"]}
        for name, cls in available_strategies().items()
    }


def create_strategy(
    strategy_name: str | None, orchestrator: Any, params: Mapping[str, Any] | None = None
) -> ConsortiumStrategy:
    """An instance of the named strategy for ``orchestrator``; ``ValueError``
    (a ``ConfigError``) for an unknown name or invalid parameters."""
    strategy_class = get_strategy_class(strategy_name)
    try:
        return strategy_class(orchestrator, dict(params or {}))
    except ConfigError:
        raise
    except (TypeError, ValueError) as ex:
        raise ConfigError(f"Invalid parameters for strategy '{strategy_name}': {ex}") from None
