"""The ``elimination`` strategy: the arbiter ranks, the worst-ranked models drop out.

As in the original, whole models are eliminated (``select_models`` leaves
them out of later iterations) and ``keep_minimum`` counts models. Beyond the
original, a member that failed, or that the arbiter left out of its ranking,
counts as worse than every ranked one, and nothing is eliminated after the
final iteration (nothing follows it).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import ConsortiumStrategy
from .params import StrategyParams


class EliminationStrategy(ConsortiumStrategy):
    """Rank judging every iteration; after each ranked iteration from
    ``elimination_delay`` on, the ``max(eliminate_count, int(active ×
    eliminate_fraction))`` worst-ranked models are dropped, never leaving
    fewer than ``keep_minimum`` active."""

    name = "elimination"
    description = (
        "Use the arbiter's ranking to remove the weakest models across iterations "
        "(forces rank judging)."
    )
    forced_judging_method = "rank"

    class Params(StrategyParams):
        eliminate_count: int = Field(
            1, ge=0, description="Models removed after each ranked iteration."
        )
        eliminate_fraction: float = Field(
            0.0,
            ge=0.0,
            le=1.0,
            description="Fraction of the active models removed instead, when that is more (0-1).",
        )
        keep_minimum: int = Field(2, ge=1, description="Never fewer active models than this.")
        elimination_delay: int = Field(
            1, ge=0, description="First iteration after which models are eliminated."
        )

    def initialize_state(self) -> None:
        super().initialize_state()
        self.iteration_state["eliminated_models"] = set()
        self.iteration_state["iteration_count"] = 0

    def select_models(
        self, available_models: dict[str, int], current_prompt: str, iteration: int
    ) -> dict[str, int]:
        self.iteration_state["iteration_count"] = iteration
        eliminated: set[str] = self.iteration_state.setdefault("eliminated_models", set())
        selected = {model: count for model, count in available_models.items() if model not in eliminated}
        # Never fewer than keep_minimum: bring models back, in config order.
        for model, count in available_models.items():
            if len(selected) >= self.keep_minimum:
                break
            if model not in selected:
                selected[model] = count
                eliminated.discard(model)
        return {model: selected[model] for model in available_models if model in selected}

    def process_responses(
        self, successful_responses: list[dict[str, Any]], iteration: int
    ) -> list[dict[str, Any]]:
        return successful_responses

    @staticmethod
    def worst_first(responses: list[dict[str, Any]], ranking: list[Any]) -> list[dict[str, Any]]:
        """Responses from worst to best: failed ones, then those the arbiter
        left out of its ranking (each in reverse order), then the ranking reversed."""
        by_id = {response.get("id"): response for response in responses}
        unranked = [response for response in responses if response.get("id") not in ranking]
        unranked.reverse()
        unranked.sort(key=lambda response: response.get("error") is None)
        ranked = [by_id[rid] for rid in reversed(ranking) if rid in by_id]
        return unranked + ranked

    def update_state(self, iteration_context: Any) -> None:
        if getattr(iteration_context, "final", False) is True:
            return
        iteration = self.iteration_state.get("iteration_count", 0)
        if iteration < self.elimination_delay:
            return
        ranking = list((iteration_context.synthesis or {}).get("ranking") or [])
        if not ranking:
            return  # nothing to go by (the arbiter did not rank)
        eliminated: set[str] = self.iteration_state.setdefault("eliminated_models", set())
        responses = [
            response
            for response in iteration_context.model_responses
            if response.get("model") not in eliminated and response.get("id") is not None
        ]
        active = list(dict.fromkeys(response["model"] for response in responses))
        wanted = max(self.eliminate_count, int(len(active) * self.eliminate_fraction))
        count = min(wanted, len(active) - self.keep_minimum)
        dropped: list[str] = []
        for response in self.worst_first(responses, ranking):
            if len(dropped) >= count:
                break
            if response["model"] not in dropped:
                dropped.append(response["model"])
        for response in responses:
            if response["model"] in dropped:
                response["eliminated"] = True
                rid = response.get("id")
                response["eliminated_rank"] = ranking.index(rid) + 1 if rid in ranking else None
        eliminated.update(dropped)
