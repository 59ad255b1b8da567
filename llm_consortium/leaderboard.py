"""``leaderboard``: how each member model fares across runs.

Counted per member model (instances of one model add up), from the stored
rows of the matching runs:

- ``runs``: runs the model took part in; ``responses`` / ``failures``: member
  calls that answered / failed;
- ``ranked_first``: arbiter decisions whose ranking puts one of its instances
  first; ``chosen``: decisions whose chosen response is one of its answers;
  ``mean_rank``: mean 1-based position in the arbiter rankings it appears in;
- ``mean_confidence``: mean self-reported confidence of its answers;
- ``eliminated``: instances a strategy dropped (the member rows' ``eliminated``
  flag);
- ``input_tokens`` / ``output_tokens``: summed over its calls;
  ``mean_latency_ms``: mean duration of its successful calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .db import RunFilter, Store, json_column

COLUMNS = (
    ("model", "Model"),
    ("runs", "Runs"),
    ("responses", "Responses"),
    ("failures", "Failures"),
    ("ranked_first", "Ranked 1st"),
    ("chosen", "Chosen"),
    ("mean_rank", "Mean rank"),
    ("mean_confidence", "Mean conf"),
    ("eliminated", "Eliminated"),
    ("input_tokens", "Tokens in"),
    ("output_tokens", "Tokens out"),
    ("mean_latency_ms", "Mean latency"),
)


@dataclass
class ModelStats:
    model: str
    runs: set[str] = field(default_factory=set)
    responses: int = 0
    failures: int = 0
    ranked_first: int = 0
    chosen: int = 0
    ranks: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    eliminated: set[tuple[str, str]] = field(default_factory=set)
    input_tokens: int | None = None
    output_tokens: int | None = None
    latencies: list[int] = field(default_factory=list)

    def add_member(self, row: dict[str, Any]) -> None:
        self.runs.add(row["run_id"])
        if row.get("error"):
            self.failures += 1
        else:
            self.responses += 1
            if row.get("confidence") is not None:
                self.confidences.append(row["confidence"])
            if row.get("duration_ms") is not None:
                self.latencies.append(row["duration_ms"])
        if row.get("input_tokens") is not None:
            self.input_tokens = (self.input_tokens or 0) + row["input_tokens"]
        if row.get("output_tokens") is not None:
            self.output_tokens = (self.output_tokens or 0) + row["output_tokens"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "runs": len(self.runs),
            "responses": self.responses,
            "failures": self.failures,
            "ranked_first": self.ranked_first,
            "chosen": self.chosen,
            "mean_rank": _mean(self.ranks),
            "mean_confidence": _mean(self.confidences),
            "eliminated": len(self.eliminated),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "mean_latency_ms": _mean(self.latencies),
        }


def _mean(values: list[int] | list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def leaderboard(
    store: Store, since: str | None = None, consortium: str | None = None
) -> list[dict[str, Any]]:
    """One dict per member model, best first (most often chosen, then ranked
    first, then the better mean rank)."""
    members, decisions = store.leaderboard_rows(RunFilter(since=since, consortium=consortium))
    stats: dict[str, ModelStats] = {}
    by_member: dict[tuple[str, int, str], dict[str, Any]] = {}
    by_response: dict[tuple[str, str], dict[str, Any]] = {}
    for row in members:
        stats.setdefault(row["model"], ModelStats(row["model"])).add_member(row)
        by_member[(row["run_id"], row["iteration"], str(row["member_id"]))] = row
        by_response[(row["run_id"], row["response_id"])] = row
        if row.get("eliminated"):
            stats[row["model"]].eliminated.add((row["run_id"], str(row["member_id"])))
    for decision in decisions:
        run_id, iteration = decision["run_id"], decision["iteration"]
        for position, member_id in enumerate(json_column(decision.get("ranking_json"), []) or [], 1):
            row = by_member.get((run_id, iteration, str(member_id)))
            if row is None:
                continue
            stats[row["model"]].ranks.append(position)
            if position == 1:
                stats[row["model"]].ranked_first += 1
        chosen = by_response.get((run_id, decision.get("chosen_response_id")))
        if chosen is not None:
            stats[chosen["model"]].chosen += 1
    ordered = sorted(
        stats.values(),
        key=lambda item: (
            -item.chosen,
            -item.ranked_first,
            _mean(item.ranks) if item.ranks else float("inf"),
            -item.responses,
            item.model,
        ),
    )
    return [item.to_dict() for item in ordered]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "mean_rank":
        return f"{value:.2f}"
    if key == "mean_confidence":
        return f"{value:.2f}"
    if key == "mean_latency_ms":
        return f"{value / 1000:.2f}s"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned plain-text columns (model left, numbers right)."""
    table = [[title for _, title in COLUMNS]]
    table += [[_cell(key, row[key]) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[index]) for line in table) for index in range(len(COLUMNS))]

    def render(line: list[str]) -> str:
        cells = [
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(line, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(table[0]), rule, *(render(line) for line in table[1:])])
