"""The ``elimination`` strategy: the arbiter ranks, the worst-ranked drop out.

It eliminates member *instances* (member ids), not whole models: the arbiter
ranks responses by member id, so ``gpt-4o:2`` can lose one instance and keep
the other. Members that failed, or that the arbiter left out of its ranking,
count as worse than every ranked member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..results import IterationContext, Member, MemberResult
from .base import Param, Strategy, StrategyContext, StrategyOutcome


class EliminationStrategy(Strategy):
    """Rank judging every iteration; after each ranked iteration from
    ``elimination_delay`` on, the ``max(eliminate_count, int(active ×
    eliminate_fraction))`` worst-ranked member instances are dropped, never
    leaving fewer than ``keep_minimum`` active."""

    name = "elimination"
    description = (
        "Use the arbiter's ranking to remove the weakest member instances across iterations "
        "(forces rank judging; instances, not whole models, are eliminated)."
    )
    forced_judging_method = "rank"
    params = (
        Param("eliminate_count", "int", 1, "Members removed after each ranked iteration.", min=0),
        Param(
            "eliminate_fraction",
            "float",
            0.0,
            "Fraction of the active members removed instead, when that is more (0-1).",
            min=0.0,
            max=1.0,
        ),
        Param("keep_minimum", "int", 2, "Never fewer active members than this.", min=1),
        Param(
            "elimination_delay",
            "int",
            1,
            "First iteration after which members are eliminated.",
            min=0,
        ),
    )

    def __init__(self, params: Mapping[str, Any], context: StrategyContext) -> None:
        super().__init__(params, context)
        self.eliminated: dict[str, int] = {}  # member id -> iteration it was ranked out

    def select_members(self, members: list[Member], iteration: int) -> list[Member]:
        return [member for member in members if member.id not in self.eliminated]

    def process_responses(
        self, responses: list[MemberResult], iteration: int
    ) -> StrategyOutcome:
        telemetry = {
            "elimination": {
                "active": [result.member.id for result in responses],
                "eliminated_before": dict(self.eliminated),
            }
        }
        return StrategyOutcome(list(responses), telemetry)

    def worst_first(self, context: IterationContext) -> list[MemberResult]:
        """This iteration's members from worst to best: failed members, then
        members the arbiter left out of its ranking (each in reverse config
        order), then the ranking reversed."""
        ranking = list(context.decision.ranking) if context.decision else []
        by_id = {result.member.id: result for result in context.results}
        unranked = [result for result in context.results if result.member.id not in ranking]
        unranked.sort(key=lambda result: (result.ok, -result.member.index))
        ranked = [by_id[member_id] for member_id in reversed(ranking) if member_id in by_id]
        return unranked + ranked

    def update_state(self, context: IterationContext) -> None:
        if context.final or context.iteration < self.options["elimination_delay"]:
            return  # nothing follows the final iteration: no one to drop
        active = len(context.results)
        wanted = max(
            self.options["eliminate_count"],
            int(active * self.options["eliminate_fraction"]),
        )
        count = max(0, min(wanted, active - self.options["keep_minimum"]))
        ranking = list(context.decision.ranking) if context.decision else []
        for result in self.worst_first(context)[:count]:
            self.eliminated[result.member.id] = context.iteration
            result.eliminated = True
            result.extra["eliminated_rank"] = (
                ranking.index(result.member.id) + 1 if result.member.id in ranking else None
            )
