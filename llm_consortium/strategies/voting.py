"""The ``voting`` strategy: similar answers form groups, the largest group wins.

Each successful member's answer (its ``<answer>`` block, else its whole text)
is normalised — lowercased, punctuation removed, white space collapsed, cut to
``answer_length`` characters — and compared with ``difflib.SequenceMatcher``.
Groups are built greedily in config order: an answer joins the group whose
first answer it resembles most (ratio ≥ ``similarity_threshold``), otherwise it
starts a new group. The largest group goes to the arbiter; on a tie, the group
whose first member comes first.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import Field

from .base import ConsortiumStrategy
from .params import StrategyParams

_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise_answer(text: str, length: int) -> str:
    """Lowercased, punctuation stripped, white space collapsed, first ``length`` chars."""
    flat = _SPACE.sub(" ", _PUNCTUATION.sub("", text.lower())).strip()
    return flat[:length]


def similarity(first: str, second: str) -> float:
    return difflib.SequenceMatcher(None, first, second).ratio()


class VotingStrategy(ConsortiumStrategy):
    """Passes the largest group of similar answers to the arbiter.

    ``require_majority``: the largest group must hold more than half of the
    successful responses, otherwise there is no consensus. With no consensus,
    ``fallback_to_all`` sends every response to the arbiter; without it none
    is sent, and the run fails saying so.
    """

    name = "voting"
    description = (
        "Group similar answers and pass the largest group (the consensus) to the arbiter."
    )

    class Params(StrategyParams):
        similarity_threshold: float = Field(
            0.5,
            ge=0.0,
            le=1.0,
            description="How similar two answers must be to count as the same vote "
            "(difflib ratio, 0-1).",
        )
        answer_length: int = Field(
            2000, ge=10, description="Characters of each normalised answer that are compared."
        )
        require_majority: bool = Field(
            False,
            description="Consensus only when the largest group holds more than half of the answers.",
        )
        fallback_to_all: bool = Field(
            True,
            description="Without consensus, send every answer to the arbiter (else none: the run fails).",
        )

    def initialize_state(self) -> None:
        super().initialize_state()
        self.iteration_state.update(voting_history=[], consensus_count=0, no_consensus_count=0)

    def select_models(
        self, available_models: dict[str, int], current_prompt: str, iteration: int
    ) -> dict[str, int]:
        return dict(available_models)

    def group(self, responses: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Groups of similar answers, each in the order given, groups in order
        of their first member."""
        groups: list[list[dict[str, Any]]] = []
        heads: list[str] = []
        for response in responses:
            text = normalise_answer(
                response.get("answer") or response.get("response") or "", self.answer_length
            )
            scores = [similarity(head, text) for head in heads]
            best = max(range(len(scores)), key=lambda i: (scores[i], -i), default=None)
            if best is not None and scores[best] >= self.similarity_threshold:
                groups[best].append(response)
                response["similarity_to_group"] = round(scores[best], 4)
            else:
                groups.append([response])
                heads.append(text)
                response["similarity_to_group"] = 1.0
        return groups

    def process_responses(
        self, successful_responses: list[dict[str, Any]], iteration: int
    ) -> list[dict[str, Any]]:
        if not successful_responses:
            return []
        state = self.iteration_state
        for key, empty in (("voting_history", []), ("consensus_count", 0), ("no_consensus_count", 0)):
            state.setdefault(key, empty)
        groups = self.group(successful_responses)
        largest = max(groups, key=len)  # max keeps the first on ties
        total = len(successful_responses)
        consensus = len(largest) * 2 > total if self.require_majority else True
        state["voting_history"].append(
            {
                "iteration": iteration,
                "groups": [[response.get("id") for response in group] for group in groups],
                "selected_group_size": len(largest),
                "total_responses": total,
                "consensus": consensus,
            }
        )
        state["consensus_count" if consensus else "no_consensus_count"] += 1
        chosen = largest if consensus else []
        for number, group in enumerate(groups):
            for response in group:
                response["voting_group"] = number
        for response in successful_responses:
            response.update(
                voting_selected=any(response is member for member in chosen),
                voting_group_size=len(largest),
                voting_total=total,
            )
        if consensus:
            return list(largest)
        return list(successful_responses) if self.fallback_to_all else []
