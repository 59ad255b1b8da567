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

Beyond the original, a strategy may declare its parameters (``parameters``,
a tuple of :class:`Param`): string values from the CLI are then converted and
range-checked in one place, at save time as well as at construction, and
each declared parameter is also set as an attribute (``self.eps``). Keys it
does not declare are kept as given, as the original kept every key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..defaults import FALSE_WORDS, TRUE_WORDS
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ConsortiumConfig
    from ..results import IterationContext



@dataclass(frozen=True)
class Param:
    """One declared strategy parameter: ``kind`` is int, float, bool, str or list."""

    name: str
    kind: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    def _range_error(self, number: float) -> ConfigError:
        if self.min is not None and self.max is not None:
            rule = f"{self.name} must be between {self.min:g} and {self.max:g}"
        elif self.min is not None:
            rule = f"{self.name} must be at least {self.min:g}"
        else:
            rule = f"{self.name} must be at most {self.max:g}"
        return ConfigError(f"Invalid strategy parameter '{self.name}': {rule}, got {number:g}")

    def convert(self, value: Any) -> Any:
        label = f"strategy parameter '{self.name}'"
        if value is None and self.default is None:
            return None  # an optional parameter left unset (as saved configs store it)
        if value is True and self.kind != "bool":  # a bare --strategy-param KEY
            example = "NUMBER" if self.kind in ("int", "float") else "VALUE"
            raise ConfigError(f"Invalid {label}: needs a value, as in {self.name}={example}")
        if self.kind == "list":
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if any(not isinstance(item, str) or not item.strip() for item in items):
                raise ConfigError(f"Invalid {label}: expected non-empty text values")
            return [item.strip() for item in items]
        if isinstance(value, (list, tuple)):
            raise ConfigError(f"Invalid {label}: given more than once")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ConfigError(f"Invalid {label}: '{value}' is not true/false/yes/no/1/0")
        if self.kind in ("int", "float"):
            if isinstance(value, bool):
                raise ConfigError(f"Invalid {label}: expected a number, got '{value}'")
            try:
                number: int | float = int(str(value).strip()) if self.kind == "int" else float(value)
            except (TypeError, ValueError):
                kind = "a whole number" if self.kind == "int" else "a number"
                raise ConfigError(f"Invalid {label}: expected {kind}, got '{value}'") from None
            if number != number:
                raise ConfigError(f"Invalid {label}: expected a number, got '{value}'")
            if (self.min is not None and number < self.min) or (
                self.max is not None and number > self.max
            ):
                raise self._range_error(number)
            return number
        text = str(value).strip()
        if self.choices and text.lower() not in self.choices:
            raise ConfigError(
                f"Invalid {label}: '{text}'; choose one of {', '.join(self.choices)}"
            )
        return text.lower() if self.choices else text

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "type": self.kind, "default": self.default}
        info["help"] = self.help
        if self.min is not None:
            info["min"] = self.min
        if self.max is not None:
            info["max"] = self.max
        if self.choices:
            info["choices"] = list(self.choices)
        return info


class ConsortiumStrategy(ABC):
    """Base class of every strategy (the original plugin's API).

    ``select_models`` and ``process_responses`` are required; the other hooks
    have defaults. ``self.iteration_state`` is reset by ``initialize_state()``
    at the start of every run.
    """

    #: The name users give to ``--strategy`` (for plugin-registered strategies).
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Declared parameters: converted, defaulted and range-checked; ``()``
    #: for a strategy that takes none. ``None`` (a strategy written for the
    #: original): undeclared, every parameter is passed as given.
    parameters: ClassVar[Sequence[Param] | None] = None
    #: A judging method the strategy requires ("rank" for elimination).
    forced_judging_method: ClassVar[str | None] = None

    def __init__(self, orchestrator: Any, params: Mapping[str, Any] | None = None) -> None:
        self.orchestrator = orchestrator
        self.params: dict[str, Any] = self.convert_params(params)
        for param in self.parameters or ():
            setattr(self, param.name, self.params[param.name])
        self.iteration_state: dict[str, Any] = {}
        self._validate_params()

    def _validate_params(self) -> None:
        """Checks of ``self.params`` at construction; raise ``ValueError``."""

    # -- parameters (class level: used at save time, without a run) ----------
    @classmethod
    def convert_params(cls, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Declared parameters converted, with defaults filled in; keys the
        strategy does not declare are kept unchanged."""
        declared = {param.name: param for param in cls.parameters or ()}
        converted = {name: param.default for name, param in declared.items()}
        for key, value in (raw or {}).items():
            converted[key] = declared[key].convert(value) if key in declared else value
        cls.check_params(converted)
        return converted

    @classmethod
    def undeclared_params(cls, raw: Mapping[str, Any] | None) -> list[str]:
        """Keys of ``raw`` this strategy does not use (when it declares its
        parameters)."""
        if cls.parameters is None:
            return []
        declared = {param.name for param in cls.parameters}
        return [key for key in (raw or {}) if key not in declared]

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Cross-parameter checks; raise ``ConfigError``."""

    @classmethod
    def check_config(cls, config: ConsortiumConfig) -> None:
        """Checks that need the rest of the config; raise ``ConfigError``."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "class_name": cls.__name__,
            "description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
            "params": [param.describe() for param in cls.parameters or ()],
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
