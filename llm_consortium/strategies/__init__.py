"""Consortium strategies: the original plugin's ``ConsortiumStrategy`` API,
the built-in strategies and the registry (``create_strategy``).

Strategy classes are imported on first use, so importing this package stays
cheap (numpy and scikit-learn load only when a run clusters).
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import ConsortiumStrategy
from .params import NonEmptyText, StrategyParams
from .factory import (
    available_strategies,
    create_strategy,
    get_strategy_class,
    list_available_strategies,
)

_CLASSES = {
    "DefaultStrategy": "llm_consortium.strategies.default",
    "EliminationStrategy": "llm_consortium.strategies.elimination",
    "RoleStrategy": "llm_consortium.strategies.role",
    "SemanticClusteringStrategy": "llm_consortium.strategies.semantic",
    "VotingStrategy": "llm_consortium.strategies.voting",
}

__all__ = [
    "ConsortiumStrategy",
    "NonEmptyText",
    "StrategyParams",
    "available_strategies",
    "create_strategy",
    "get_strategy_class",
    "list_available_strategies",
    *_CLASSES,
]


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'llm_consortium.strategies' has no attribute '{name}'")
