"""Value types of a run: members, their results, arbiter decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Member:
    """One member instance. ``id`` is stable: numbered 1, 2, … in config
    order (model order, then instance), never in completion order."""

    id: str
    model: str
    instance: int  # 0-based, as in the original plugin
    index: int  # 0-based position in config order

    @property
    def label(self) -> str:
        return f"{self.model}[{self.instance}]"


def members_from_models(models: dict[str, int]) -> list[Member]:
    members: list[Member] = []
    for model, count in models.items():
        for instance in range(count):
            index = len(members)
            members.append(Member(id=str(index + 1), model=model, instance=instance, index=index))
    return members


@dataclass
class MemberResult:
    """One member's answer (or failure) in one iteration."""

    member: Member
    iteration: int
    response_id: str
    prompt: str = ""
    system: str | None = None
    text: str | None = None
    answer: str | None = None
    confidence: float | None = None
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_ms: int = 0
    attempts: int = 0
    role: str | None = None
    #: Set by a strategy that drops this member after its iteration.
    eliminated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The original plugin's member response shape, plus our fields."""
        member = self.member
        data: dict[str, Any] = {
            "model": member.model, "instance": member.instance, "id": int(member.id),
            "response_id": self.response_id,
        }  # fmt: skip
        if self.error is None:
            data["response"], data["answer"], data["confidence"] = self.text, self.answer, self.confidence
        else:
            data["error"] = self.error
        data["iteration"], data["role"] = self.iteration, self.role
        data["input_tokens"], data["output_tokens"] = self.input_tokens, self.output_tokens
        data["duration_ms"], data["attempts"] = self.duration_ms, self.attempts
        if self.extra:  # a strategy's notes, never one of the keys above
            data.update(self.extra)
        if self.eliminated:
            data["eliminated"] = True
        return data


@dataclass
class Decision:
    """The arbiter's parsed decision for one iteration."""

    synthesis: str
    confidence: float
    analysis: str = ""
    dissent: str = ""
    needs_iteration: bool = False
    refinement_areas: list[str] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)
    chosen_response_id: str | None = None
    chosen_member_id: str | None = None
    raw_arbiter_response: str = ""
    geometric_confidence: float | None = None
    centroid_vector: list[float] | None = None
    outliers: list[str] = field(default_factory=list)
    #: Indices (into the responses passed to the arbiter) of the outliers.
    outlier_indices: list[int] = field(default_factory=list)
    #: What the arbiter's reply lacked ("no <synthesis>", …); None when it
    #: followed the format.
    format_problem: str | None = None
    #: Set when the arbiter ignored the format even after a reminder and a
    #: member's answer was used instead: how that answer was chosen.
    fallback: str | None = None
    #: The first reply, when it ignored the format and the arbiter was asked again.
    reply_ignoring_format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The original plugin's synthesis dict: ranking by (integer) response
        id, ``outlier_indices`` into the responses the arbiter saw."""
        return {
            "synthesis": self.synthesis,
            "confidence": self.confidence,
            "analysis": self.analysis,
            "dissent": self.dissent,
            "needs_iteration": self.needs_iteration,
            "refinement_areas": list(self.refinement_areas),
            "ranking": [int(member_id) for member_id in self.ranking],
            "chosen_response_id": self.chosen_response_id,
            "chosen_member_id": self.chosen_member_id,
            "geometric_confidence": self.geometric_confidence,
            "centroid_vector": self.centroid_vector,
            "outliers": list(self.outliers),
            "outlier_indices": list(self.outlier_indices),
            "format_problem": self.format_problem,
            "fallback": self.fallback,
            "reply_ignoring_format": self.reply_ignoring_format,
            "raw_arbiter_response": self.raw_arbiter_response,
        }


@dataclass
class IterationContext:
    """One finished iteration, as strategies see it in ``update_state``.

    Constructed as the original's ``IterationContext(synthesis,
    model_responses)``; ``synthesis`` and ``model_responses`` keep the
    original's dict shapes. The orchestrator also fills in the iteration
    number, the selected models (``{model: count}``), the typed results and
    decision, and whether this iteration ends the run.
    """

    synthesis: dict[str, Any]
    model_responses: list[dict[str, Any]]
    iteration: int = 0
    selected_models: dict[str, int] = field(default_factory=dict)
    results: list[MemberResult] = field(default_factory=list)
    decision: Decision | None = None
    members: list[Member] = field(default_factory=list)
    #: True when this iteration ends the run (no further iteration follows).
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "selected_models": dict(self.selected_models),
            "model_responses": self.model_responses,
            "synthesis": self.synthesis,
        }


@dataclass(frozen=True)
class ResponseEmbedding:
    """The vector a semantic strategy computed for one member's answer."""

    result: MemberResult
    vector: list[float]
    backend: str
    embedding_model: str | None


@dataclass(frozen=True)
class ClusterSummary:
    """One cluster of answers in an iteration (``label`` -1: every answer
    was noise, and this holds them all). ``density`` is 1 - the mean
    distance of the members to the centroid, as in the original plugin."""

    label: int
    centroid: list[float]
    radius: float
    density: float
    member_ids: list[str]
    algorithm: str
    is_consensus: bool = False
    all_noise: bool = False
