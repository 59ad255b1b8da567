"""The strategy interface — the original plugin's ``ConsortiumStrategy``.

A strategy is constructed as ``Strategy(orchestrator, params)`` and, per run,
the orchestrator calls ``initialize_state()``; then, per iteration:

``select_models`` → for each selected member instance
``get_instance_system_prompt`` and ``prepare_iteration_prompt`` → (members
answer) → ``process_responses`` → (arbiter) → ``update_state``.

Responses are the original's dicts (``model``, ``instance``, ``id``,
``response_id``, ``response``, ``confidence`` …). Keys a strategy adds to a
response dict are kept with that member's stored row; ``embedding`` (a
vector) and ``cluster_id`` (-1 = noise) are recorded as the response's
embedding and cluster, and the geometric confidence is computed over the
embeddings of the responses the strategy passes on. Strategies hand values;
the orchestrator records them.

Beyond the original, a strategy may declare its parameters as a pydantic
model, a nested ``class Params(StrategyParams)``: values from the CLI are
then converted and range-checked in one place (:mod:`.params`), at save time
as well as at construction, and each declared parameter is also set as an
attribute (``self.eps``). Keys it does not declare are kept as given, as the
original kept every key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .params import StrategyParams, describe_params, validate_params

if TYPE_CHECKING:
    from ..config import ConsortiumConfig
    from ..results import IterationContext



# The built-in strategies whose process_responses only computes over the
# answers (no embedding calls, nothing that can take long).
_IN_MEMORY_MODULES = frozenset(
    f"llm_consortium.strategies.{name}" for name in ("default", "elimination", "role", "voting")
)


def processes_in_memory(strategy: Any) -> bool:
    """Whether ``strategy.process_responses`` is a built-in one that only
    computes: the semantic strategy's calls an embedding model, and a plugin's
    may do anything (a subclass that overrides it is a plugin's)."""
    method = getattr(type(strategy), "process_responses", None)
    return getattr(method, "__module__", None) in _IN_MEMORY_MODULES


class ConsortiumStrategy(ABC):
    """Base class of every strategy (the original plugin's API).

    ``select_models`` and ``process_responses`` are required; the other hooks
    have defaults. ``self.iteration_state`` is reset by ``initialize_state()``
    at the start of every run.
    """

    #: The name users give to ``--strategy`` (for plugin-registered strategies).
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Declared parameters, a pydantic model: converted, defaulted and
    #: range-checked (a model without fields for a strategy that takes none).
    #: ``None`` (a strategy written for the original): undeclared, every
    #: parameter is passed as given.
    Params: ClassVar[type[StrategyParams] | None] = None
    #: A judging method the strategy requires ("rank" for elimination).
    forced_judging_method: ClassVar[str | None] = None

    def __init__(self, orchestrator: Any, params: Mapping[str, Any] | None = None) -> None:
        self.orchestrator = orchestrator
        self.params: dict[str, Any] = self.convert_params(params)
        for name in self.declared_params() or ():
            setattr(self, name, self.params[name])
        self.iteration_state: dict[str, Any] = {}
        self._validate_params()

    def _validate_params(self) -> None:
        """Checks of ``self.params`` at construction; raise ``ValueError``."""

    # -- parameters (class level: used at save time, without a run) ----------
    @classmethod
    def declared_params(cls) -> tuple[str, ...] | None:
        """Names of the declared parameters; ``None`` when undeclared."""
        return None if cls.Params is None else tuple(cls.Params.model_fields)

    @classmethod
    def convert_params(cls, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Declared parameters converted, with defaults filled in; keys the
        strategy does not declare are kept unchanged."""
        if cls.Params is None:
            return dict(raw or {})
        kept = {key: value for key, value in (raw or {}).items() if key not in cls.Params.model_fields}
        return {**validate_params(cls.Params, raw), **kept}

    @classmethod
    def undeclared_params(cls, raw: Mapping[str, Any] | None) -> list[str]:
        """Keys of ``raw`` this strategy does not use (when it declares its
        parameters)."""
        declared = cls.declared_params()
        if declared is None:
            return []
        return [key for key in (raw or {}) if key not in declared]

    @classmethod
    def check_config(cls, config: ConsortiumConfig) -> None:
        """Checks that need the rest of the config; raise ``ConfigError``."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "class_name": cls.__name__,
            "description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
            "params": describe_params(cls.Params) if cls.Params else [],
            "forced_judging_method": cls.forced_judging_method,
        }

    # -- the run --------------------------------------------------------------
    def initialize_state(self) -> None:
        """Called at the start of every run."""
        self.iteration_state = {}

    @abstractmethod
    def select_models(
        self, available_models: dict[str, int], current_prompt: str, iteration: int
    ) -> dict[str, int]:
        """Models (and how many of their instances, in config order) that answer
        in this iteration: a subset of ``available_models``."""

    @abstractmethod
    def process_responses(
        self, successful_responses: list[dict[str, Any]], iteration: int
    ) -> list[dict[str, Any]]:
        """The responses the arbiter sees (filtered, reordered, annotated)."""

    def update_state(self, iteration_context: IterationContext) -> None:
        """Learn from the iteration just judged (``synthesis``,
        ``model_responses`` including failures)."""

    def get_instance_system_prompt(
        self, model: str, instance: int, default_prompt: str | None
    ) -> str | None:
        """The system prompt of one member instance (``instance`` is 0-based)."""
        return default_prompt

    def instance_role(self, model: str, instance: int) -> str | None:
        """A short label of the instance's role, stored as its
        ``member_role`` (ours; called after ``get_instance_system_prompt``)."""
        return None

    def prepare_iteration_prompt(
        self, model_id: str, instance: int, original_prompt: str, iteration: int
    ) -> str:
        """The prompt a member instance gets: the user's prompt in the first
        iteration, then the original prompt with the previous synthesis and
        the arbiter's refinement areas."""
        history = getattr(self.orchestrator, "iteration_history", None) or []
        if iteration <= 1 or not history:
            return original_prompt
        from ..arbiter import build_refinement_prompt

        previous = history[-1].get("synthesis") or {}
        return build_refinement_prompt(
            original_prompt,
            iteration,
            previous.get("synthesis") or "",
            previous.get("refinement_areas") or [],
        )
