"""The hook third-party packages implement to add strategies."""

from pluggy import HookspecMarker

hookspec = HookspecMarker("llm")


@hookspec
def register_consortium_strategies(register):
    """Register strategy classes: call ``register(StrategyClass)`` for each
    (or ``register(StrategyClass, name="...")``).

    A strategy is a subclass of ``llm_consortium.strategies.ConsortiumStrategy``
    (the original plugin's API). Its name is ``name=``, else the class's
    ``name`` attribute, else derived from the class name
    (``RoundRobinStrategy`` → ``round_robin``).
    """
