"""Strategy registry: the built-in strategies plus any registered by plugins
through the ``register_consortium_strategies`` hook."""

from __future__ import annotations

import importlib
import threading

from ..errors import ConfigError
from .base import Param, Strategy, StrategyContext, StrategyOutcome

__all__ = [
    "Param",
    "Strategy",
    "StrategyContext",
    "StrategyOutcome",
    "available_strategies",
    "get_strategy_class",
]

# name -> "module:Class"; imported on first use.
BUILTIN: dict[str, str] = {
    "default": "llm_consortium.strategies.default:DefaultStrategy",
    "elimination": "llm_consortium.strategies.elimination:EliminationStrategy",
    "role": "llm_consortium.strategies.role:RoleStrategy",
    "semantic": "llm_consortium.strategies.semantic:SemanticStrategy",
    "voting": "llm_consortium.strategies.voting:VotingStrategy",
}

_hookspecs_added = False
_hookspecs_lock = threading.Lock()


def _plugin_strategies() -> dict[str, type[Strategy]]:
    global _hookspecs_added
    from llm.plugins import pm

    from .. import hookspecs
    from ..resolve import load_plugins

    with _hookspecs_lock:
        if not _hookspecs_added:
            pm.add_hookspecs(hookspecs)
            _hookspecs_added = True
    load_plugins()
    found: dict[str, type[Strategy]] = {}

    def register(strategy_class: type[Strategy]) -> None:
        if not (isinstance(strategy_class, type) and issubclass(strategy_class, Strategy)):
            raise TypeError(f"{strategy_class!r} is not a Strategy subclass")
        if not strategy_class.name:
            raise TypeError(f"{strategy_class.__name__} has no name")
        found[strategy_class.name] = strategy_class

    pm.hook.register_consortium_strategies(register=register)
    return found


def _load(path: str) -> type[Strategy]:
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def available_strategies() -> dict[str, type[Strategy]]:
    """Every strategy by name, sorted; built-ins win over plugins of the same name."""
    strategies = _plugin_strategies()
    strategies.update({name: _load(path) for name, path in BUILTIN.items()})
    return dict(sorted(strategies.items()))


def get_strategy_class(name: str | None) -> type[Strategy]:
    key = (name or "default").strip().lower()
    if key in BUILTIN:
        return _load(BUILTIN[key])
    strategies = available_strategies()
    if key not in strategies:
        raise ConfigError(
            f"Unknown strategy '{name}'. Available: {', '.join(strategies)}"
        )
    return strategies[key]
