"""``ConsortiumConfig``: one consortium's settings, validated once for the CLI,
the Python API and saved rows alike."""

from __future__ import annotations

import math
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .defaults import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    EMBEDDING_BACKENDS,
    JUDGING_METHODS,
)
from .errors import ConfigError, first_invalid
from .specs import parse_models


def normalize_threshold(value: Any) -> float:
    """0.8 stays 0.8; a value in (1, 100] is a percentage (80 → 0.8)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Confidence threshold must be a number, got '{value}'") from None
    if number != number or number < 0 or number > 100:
        raise ConfigError(
            f"Confidence threshold must be between 0.0 and 1.0 (or 0 and 100), got {value}"
        )
    return number / 100 if number > 1 else number


class ConsortiumConfig(BaseModel):
    """Settings of a consortium. Field names match the original plugin's."""

    model_config = ConfigDict(extra="ignore", validate_assignment=False)

    models: dict[str, int]
    system_prompt: str | None = None
    confidence_threshold: float = 0.8
    max_iterations: int = 3
    minimum_iterations: int = 1
    arbiter: str | None = None
    judging_method: str = "default"
    strategy: str = "default"
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    embedding_backend: str | None = None
    embedding_model: str | None = None
    embedding_cache_enabled: bool = True
    manual_context: bool = Field(
        default=False,
        description="Use manual context management instead of automatic conversation objects",
    )
    category: str | None = None
    expected_agreement: float | None = None
    status: str | None = None
    created_at: str | None = None
    # Added by this implementation.
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    min_responses: int = 1
    max_concurrency: int | None = None

    def __init__(self, *, stored: bool = False, **data: Any) -> None:
        """``stored``: a saved configuration, read back. Checks that only a
        new configuration needs (the semantic strategy's embedding backend,
        which the original did not require) are then left to the run."""
        try:
            super().__init__(**data)
        except pydantic.ValidationError as ex:
            where, message, error = first_invalid(ex, "config")
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, ConfigError):
                raise ConfigError(str(cause)) from None
            raise ConfigError(f"Invalid {where}: {message}") from None
        self._check(stored)

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> dict[str, int]:
        return parse_models(value)

    @field_validator("confidence_threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> float:
        return normalize_threshold(value)

    @field_validator("judging_method", "strategy", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> str:
        return str(value or "default").strip().lower() or "default"

    @field_validator("embedding_backend", "embedding_model", "arbiter", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("strategy_params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> dict[str, Any]:
        return dict(value or {})

    def _check(self, stored: bool = False) -> None:
        from .strategies import get_strategy_class
        from .strategies.factory import strategy_name

        if self.max_iterations < 1:
            raise ConfigError("max_iterations must be at least 1")
        if self.minimum_iterations < 1:
            raise ConfigError("min_iterations must be at least 1")
        if self.minimum_iterations > self.max_iterations:
            raise ConfigError(
                f"min_iterations ({self.minimum_iterations}) cannot exceed "
                f"max_iterations ({self.max_iterations})"
            )
        if self.judging_method not in JUDGING_METHODS:
            raise ConfigError(
                f"Unknown judging method '{self.judging_method}'; choose one of "
                + ", ".join(JUDGING_METHODS)
            )
        if self.embedding_backend is not None:
            self.embedding_backend = self.embedding_backend.lower()
            if self.embedding_backend not in EMBEDDING_BACKENDS:
                raise ConfigError(
                    f"Unknown embedding backend '{self.embedding_backend}'; choose one of "
                    + ", ".join(EMBEDDING_BACKENDS)
                )
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError("timeout must be a positive number of seconds")
        if self.retries < 0:
            raise ConfigError("retries cannot be negative")
        if self.min_responses < 1:
            raise ConfigError("min_responses must be at least 1")
        if self.min_responses > self.member_count():
            raise ConfigError(
                f"min_responses ({self.min_responses}) cannot exceed the number of "
                f"members ({self.member_count()})"
            )
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be at least 1")
        strategy_class = get_strategy_class(self.strategy)
        self.strategy = strategy_name(strategy_class)
        self.strategy_params = strategy_class.convert_params(self.strategy_params)
        try:  # the strategy's own checks (``_validate_params``), before any run
            strategy_class(None, self.strategy_params)
        except ConfigError:
            raise
        except (TypeError, ValueError) as ex:
            raise ConfigError(f"Invalid parameters for strategy '{self.strategy}': {ex}") from None
        except AttributeError:
            pass  # it needs a real orchestrator to check more: checked when a run starts
        if not stored:
            strategy_class.check_config(self)
        if strategy_class.forced_judging_method:
            self.judging_method = strategy_class.forced_judging_method

    @property
    def min_iterations(self) -> int:
        return self.minimum_iterations

    def member_count(self) -> int:
        return sum(self.models.values())

    def with_overrides(self, **overrides: Any) -> ConsortiumConfig:
        """A validated copy with some fields replaced (``None`` values ignored)."""
        data = self.to_dict()
        data.update({key: value for key, value in overrides.items() if value is not None})
        return ConsortiumConfig(**data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsortiumConfig:
        """A saved configuration (see ``stored``)."""
        return cls(stored=True, **data)
