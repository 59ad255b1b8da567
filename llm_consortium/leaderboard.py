"""``leaderboard``: how each member model fares across runs.

Counted per member model (instances of one model add up), from the stored
rows of the matching runs:

- ``runs``: runs the model took part in; ``responses`` / ``failures``: member
  calls that answered / failed;
- ``ranked_first``: arbiter decisions whose ranking puts one of its instances
  first; ``chosen``: decisions whose chosen response is one of its answers;
  ``mean_rank``: mean 1-based position in the arbiter rankings it appears in;
- ``mean_confidence``: mean self-reported confidence of its answers;
- ``eliminated``: instances an elimination strategy dropped — marked in the
  member row (``extra_json`` ``"eliminated"``) or the decision
  (``decision_json`` ``"eliminated"``), or, in an ``elimination`` run, missing
  from the next iteration;
- ``input_tokens`` / ``output_tokens``: summed over its calls;
  ``mean_latency_ms``: mean duration of its successful calls.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .reports import json_column
from .store import Store

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


def _run_filter(since: str | None, consortium: str | None) -> tuple[str, list[Any]]:
    where, params = ["1 = 1"], []
    if since:
        where.append("r.created_at >= ?")
        params.append(since)
    if consortium:
        where.append("r.config_name = ?")
        params.append(consortium)
    return " AND ".join(where), params


def leaderboard(
    store: Store, since: str | None = None, consortium: str | None = None
) -> list[dict[str, Any]]:
    """One dict per member model, best first (most often chosen, then ranked
    first, then the better mean rank)."""
    where, params = _run_filter(since, consortium)
    members = store.query(
        "SELECT m.*, r.strategy AS run_strategy FROM consortium_members m "
        f"JOIN consortium_runs r ON r.id = m.run_id WHERE {where} "
        "ORDER BY m.run_id, m.iteration, m.member_index",
        params,
    )
    decisions = store.query(
        "SELECT d.run_id, d.iteration, d.ranking_json, d.chosen_response_id, d.decision_json "
        f"FROM arbiter_decisions d JOIN consortium_runs r ON r.id = d.run_id WHERE {where}",
        params,
    )
    stats: dict[str, ModelStats] = {}
    by_member: dict[tuple[str, int, str], dict[str, Any]] = {}
    by_response: dict[tuple[str, str], dict[str, Any]] = {}
    for row in members:
        stats.setdefault(row["model"], ModelStats(row["model"])).add_member(row)
        by_member[(row["run_id"], row["iteration"], str(row["member_id"]))] = row
        by_response[(row["run_id"], row["response_id"])] = row
        if json_column(row.get("extra_json"), {}).get("eliminated"):
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
        for member_id in json_column(decision.get("decision_json"), {}).get("eliminated") or []:
            row = by_member.get((run_id, iteration, str(member_id)))
            if row is not None:
                stats[row["model"]].eliminated.add((run_id, str(member_id)))
    for model, run_id, member_id in _dropped_members(members):
        stats[model].eliminated.add((run_id, member_id))
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


def _dropped_members(members: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """In ``elimination`` runs: instances called in one iteration and not in
    the next one (the strategy dropped them)."""
    called: dict[str, dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for row in members:
        if row.get("run_strategy") == "elimination":
            called[row["run_id"]][row["iteration"]][str(row["member_id"])] = row["model"]
    dropped = []
    for run_id, iterations in called.items():
        numbers = sorted(iterations)
        for current, following in zip(numbers, numbers[1:]):
            for member_id, model in iterations[current].items():
                if member_id not in iterations[following]:
                    dropped.append((model, run_id, member_id))
    return dropped


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
