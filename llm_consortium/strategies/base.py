"""The strategy interface: who answers, and what the arbiter sees.

A strategy class declares its parameters (``Param``) so that string values
from the CLI are converted and range-checked in one place, at save time. A new
strategy instance is made for every run, so no state leaks between runs.

Per iteration the orchestrator calls, in order:
``select_members`` → (members answer) → ``process_responses`` → (arbiter) →
``update_state``. ``member_system_prompt`` lets a strategy add to a member's
system prompt (roles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..defaults import FALSE_WORDS, TRUE_WORDS
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ConsortiumConfig
    from ..results import IterationContext, Member, MemberResult



@dataclass(frozen=True)
class Param:
    """One strategy parameter: ``kind`` is int, float, bool, str or list."""

    name: str
    kind: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    def convert(self, value: Any) -> Any:
        label = f"strategy parameter '{self.name}'"
        if value is None and self.default is None:
            return None  # an optional parameter left unset (as saved configs store it)
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
            if self.min is not None and number < self.min:
                raise ConfigError(f"Invalid {label}: {number} is below the minimum {self.min:g}")
            if self.max is not None and number > self.max:
                raise ConfigError(f"Invalid {label}: {number} is above the maximum {self.max:g}")
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


@dataclass
class StrategyOutcome:
    """What ``process_responses`` returns.

    ``responses`` go to the arbiter. ``telemetry`` may hold
    ``geometric_confidence``, ``centroid_vector``, ``outliers`` (merged into
    the arbiter decision) and ``embeddings`` / ``clusters`` (lists of
    ``ResponseEmbedding`` / ``ClusterSummary`` values the store records),
    plus free notes.
    """

    responses: list[MemberResult]
    telemetry: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyContext:
    """What a strategy knows about the run it serves."""

    run_id: str
    config: ConsortiumConfig
    members: list[Member]


class Strategy:
    """Base class: all members answer and every response reaches the arbiter."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[Sequence[Param]] = ()
    #: A judging method the strategy requires ("rank" for elimination).
    forced_judging_method: ClassVar[str | None] = None

    def __init__(self, params: Mapping[str, Any], context: StrategyContext) -> None:
        self.options = dict(params)
        self.context = context

    # -- parameters -------------------------------------------------------
    @classmethod
    def convert_params(cls, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Typed, validated parameters with defaults filled in."""
        declared = {param.name: param for param in cls.params}
        converted = {name: param.default for name, param in declared.items()}
        for key, value in (raw or {}).items():
            if key not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise ConfigError(
                    f"Unknown parameter '{key}' for strategy '{cls.name}' (known: {known})"
                )
            converted[key] = declared[key].convert(value)
        cls.check_params(converted)
        return converted

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Cross-parameter checks; raise ``ConfigError``."""

    @classmethod
    def check_config(cls, config: ConsortiumConfig) -> None:
        """Checks that need the rest of the config (the semantic strategy
        requires ``embedding_backend``); raise ``ConfigError``."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "class_name": cls.__name__,
            "description": cls.description,
            "params": [param.describe() for param in cls.params],
            "forced_judging_method": cls.forced_judging_method,
        }

    # -- the run ----------------------------------------------------------
    def select_members(self, members: list[Member], iteration: int) -> list[Member]:
        return list(members)

    def member_system_prompt(self, member: Member, base: str | None) -> str | None:
        return base

    def member_role(self, member: Member) -> str | None:
        """A short label stored as the member's ``role``."""
        return None

    def process_responses(
        self, responses: list[MemberResult], iteration: int
    ) -> StrategyOutcome:
        return StrategyOutcome(list(responses))

    def update_state(self, context: IterationContext) -> None:
        """Learn from the iteration just judged (rankings, confidences)."""
