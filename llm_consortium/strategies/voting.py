"""The ``voting`` strategy: similar answers form groups, the largest group wins.

Each successful member's answer (its ``<answer>`` block, else its whole text)
is normalised — lowercased, punctuation removed, white space collapsed, cut to
``answer_length`` characters — and compared with ``difflib.SequenceMatcher``.
Groups are built greedily in config order: an answer joins the group whose
first answer it resembles most (ratio ≥ ``similarity_threshold``), otherwise it
starts a new group. The largest group goes to the arbiter; on a tie, the group
whose first member comes first in config order.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from ..errors import RunFailed
from ..results import MemberResult
from .base import Param, Strategy, StrategyOutcome

_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise_answer(text: str, length: int) -> str:
    """Lowercased, punctuation stripped, white space collapsed, first ``length`` chars."""
    flat = _SPACE.sub(" ", _PUNCTUATION.sub("", text.lower())).strip()
    return flat[:length]


def similarity(first: str, second: str) -> float:
    return difflib.SequenceMatcher(None, first, second).ratio()


class VotingStrategy(Strategy):
    """Passes the largest group of similar answers to the arbiter.

    ``require_majority``: the largest group must hold more than half of the
    successful responses, otherwise there is no consensus. With no consensus,
    ``fallback_to_all`` sends every response to the arbiter; without it the
    run fails with a message saying so.
    """

    name = "voting"
    description = (
        "Group similar answers and pass the largest group (the consensus) to the arbiter."
    )
    params = (
        Param(
            "similarity_threshold",
            "float",
            0.5,
            "How similar two answers must be to count as the same vote (difflib ratio, 0-1).",
            min=0.0,
            max=1.0,
        ),
        Param(
            "answer_length",
            "int",
            2000,
            "Characters of each normalised answer that are compared.",
            min=10,
        ),
        Param(
            "require_majority",
            "bool",
            False,
            "Consensus only when the largest group holds more than half of the answers.",
        ),
        Param(
            "fallback_to_all",
            "bool",
            True,
            "Without consensus, send every answer to the arbiter (else the run fails).",
        ),
    )

    def group(self, responses: list[MemberResult]) -> list[list[MemberResult]]:
        """Groups of similar answers, each in config order, groups in order of
        their first member."""
        length = self.options["answer_length"]
        threshold = self.options["similarity_threshold"]
        groups: list[list[MemberResult]] = []
        heads: list[str] = []
        for result in responses:
            text = normalise_answer(result.answer or result.text or "", length)
            scores = [similarity(head, text) for head in heads]
            best = max(range(len(scores)), key=lambda i: (scores[i], -i), default=None)
            if best is not None and scores[best] >= threshold:
                groups[best].append(result)
                result.extra["similarity_to_group"] = round(scores[best], 4)
            else:
                groups.append([result])
                heads.append(text)
                result.extra["similarity_to_group"] = 1.0
        return groups

    def process_responses(
        self, responses: list[MemberResult], iteration: int
    ) -> StrategyOutcome:
        groups = self.group(responses)
        largest = max(groups, key=len, default=[])  # max keeps the first on ties
        total = len(responses)
        consensus = bool(largest) and (
            len(largest) * 2 > total if self.options["require_majority"] else True
        )
        chosen = {result.member.id for result in largest} if consensus else set()
        for result in responses:
            result.extra.update(
                voting_selected=result.member.id in chosen,
                voting_group_size=len(largest),
                voting_total=total,
            )
        telemetry: dict[str, Any] = {
            "voting": {
                "groups": [[result.member.id for result in group] for group in groups],
                "largest_group": [result.member.id for result in largest],
                "consensus": consensus,
                "fell_back_to_all": not consensus and self.options["fallback_to_all"],
            }
        }
        if consensus:
            return StrategyOutcome(list(largest), telemetry)
        if self.options["fallback_to_all"]:
            return StrategyOutcome(list(responses), telemetry)
        raise RunFailed(
            f"Voting found no consensus in iteration {iteration}: the largest group of similar "
            f"answers has {len(largest)} of {total}, not a majority, and fallback_to_all is off"
        )
