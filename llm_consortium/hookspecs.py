"""The hook third-party packages implement to add strategies."""

from pluggy import HookspecMarker

hookspec = HookspecMarker("llm")


@hookspec
def register_consortium_strategies(register):
    """Register strategy classes: call ``register(StrategyClass)`` for each.

    A strategy is a subclass of ``llm_consortium.strategies.Strategy`` with a
    unique ``name``.
    """
