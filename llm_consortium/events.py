"""Events a run reports while it works (for progress displays and streaming)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .results import Decision, Member, MemberResult


@dataclass
class RunStarted:
    run_id: str
    config_name: str | None
    max_iterations: int
    member_count: int


@dataclass
class IterationStarted:
    iteration: int
    max_iterations: int
    members: list[Member]


@dataclass
class MemberFinished:
    result: MemberResult
    done: int
    total: int


@dataclass
class ArbiterStarted:
    iteration: int
    model: str


@dataclass
class SynthesisDelta:
    """A piece of the final answer, in order. Only the final synthesis is
    ever reported this way."""

    text: str


@dataclass
class IterationFinished:
    iteration: int
    decision: Decision
    final: bool
    reason: str = ""  # why the run stops here, or why another iteration follows


@dataclass
class RunFinished:
    run_id: str
    status: str
    result: dict[str, Any]


Event = (
    RunStarted
    | IterationStarted
    | MemberFinished
    | ArbiterStarted
    | SynthesisDelta
    | IterationFinished
    | RunFinished
)
