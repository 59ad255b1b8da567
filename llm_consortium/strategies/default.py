from __future__ import annotations

from typing import Any

from .base import ConsortiumStrategy
from .params import StrategyParams


class DefaultStrategy(ConsortiumStrategy):
    """All members answer; every response reaches the arbiter unchanged."""

    name = "default"
    description = "Run all configured members and synthesize their responses."

    class Params(StrategyParams):
        """No parameters."""

    def select_models(
        self, available_models: dict[str, int], current_prompt: str, iteration: int
    ) -> dict[str, int]:
        return dict(available_models)

    def process_responses(
        self, successful_responses: list[dict[str, Any]], iteration: int
    ) -> list[dict[str, Any]]:
        return successful_responses
