"""When a run stops iterating, and why: the one rule, shared by the run loop,
the progress display and ``run-info``.

A run stops after an iteration when it reached ``max_iterations``, or when it
reached ``min_iterations``, the arbiter's confidence is at least the threshold
and the arbiter did not ask for another iteration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IterationVerdict:
    final: bool
    reason: str


def _number(value: float) -> str:
    return f"{value:g}"


def _iterations(count: int) -> str:
    return f"{count} iteration{'' if count == 1 else 's'}"


def judge_iteration(
    iteration: int,
    confidence: float | None,
    needs_iteration: bool | None,
    *,
    threshold: float,
    min_iterations: int,
    max_iterations: int,
) -> IterationVerdict:
    """Whether the run stops after ``iteration`` and, in words, why (or why
    another iteration follows)."""
    if iteration >= max_iterations:
        return IterationVerdict(True, f"maximum of {_iterations(max_iterations)} reached")
    reasons = []
    if confidence is None:
        reasons.append("the arbiter gave no confidence")
    elif confidence < threshold:
        reasons.append(f"confidence below the threshold {_number(threshold)}")
    if needs_iteration:
        reasons.append("the arbiter asked for another iteration")
    if iteration < min_iterations:
        reasons.append(f"minimum of {_iterations(min_iterations)} not reached")
    if reasons:
        return IterationVerdict(False, "; ".join(reasons))
    return IterationVerdict(True, f"confidence reached the threshold {_number(threshold)}")
