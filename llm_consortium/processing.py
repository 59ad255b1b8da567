"""What a strategy's ``process_responses`` hands back, as values.

Strategies work on the original plugin's response dicts. This module maps
the dicts a strategy returns back to the typed member results, keeps the
keys it added (its notes on each response), and reads the values it handed
over: each response's ``embedding`` and ``cluster_id``. From those it
computes the clusters (centroid, radius and density = 1 - mean distance, on
the (1 - cos)/2 scale) and the geometric confidence of the responses passed
to the arbiter, as the original does. Storing them is the store's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RunFailed
from .geometry import GeometricSummary, centroid, cosine_distance, geometric_confidence
from .results import ClusterSummary, MemberResult

#: Keys of a response dict the orchestrator writes (not a strategy's notes).
BASE_KEYS = frozenset(
    {
        "model", "instance", "id", "response_id", "response", "answer", "confidence",
        "error", "iteration", "role", "input_tokens", "output_tokens", "duration_ms",
        "attempts", "embedding", "eliminated",
    }
)
NOISE = -1


@dataclass
class Processed:
    """The responses for the arbiter and the values a strategy handed over."""

    responses: list[MemberResult]
    #: Every result given to the strategy.
    considered: list[MemberResult] = field(default_factory=list)
    embeddings: dict[str, list[float]] = field(default_factory=dict)  # member id -> vector
    clusters: list[ClusterSummary] = field(default_factory=list)
    geometry: GeometricSummary | None = None


def _vector(value: Any) -> list[float]:
    return [float(x) for x in (value.tolist() if hasattr(value, "tolist") else value)]


def keep_notes(results: list[MemberResult], dicts: list[dict[str, Any]]) -> None:
    """Copy what a strategy added to response dicts into the results' ``extra``
    (and an ``eliminated`` mark into the result's flag)."""
    by_id = {int(result.member.id): result for result in results}
    for data in dicts:
        result = by_id.get(data.get("id"))  # type: ignore[arg-type]
        if result is None:
            continue
        result.eliminated = result.eliminated or bool(data.get("eliminated"))
        if data.keys() <= BASE_KEYS:
            continue  # most dicts add nothing: checked at C speed
        for key, value in data.items():
            if key not in BASE_KEYS:
                result.extra[key] = value.tolist() if hasattr(value, "tolist") else value


def _clusters(
    dicts: list[dict[str, Any]], chosen: set[str], embeddings: dict[str, list[float]], algorithm: str
) -> list[ClusterSummary]:
    groups: dict[int, list[str]] = {}
    for data in dicts:
        label = data.get("cluster_id")
        member_id = str(data.get("id"))
        if isinstance(label, int) and label != NOISE and member_id in embeddings:
            groups.setdefault(label, []).append(member_id)
    clusters = []
    for label, member_ids in sorted(groups.items()):
        center = centroid([embeddings[member_id] for member_id in member_ids])
        distances = [cosine_distance(embeddings[member_id], center) for member_id in member_ids]
        clusters.append(
            ClusterSummary(
                label=label,
                centroid=center,
                radius=max(distances),
                density=1.0 - sum(distances) / len(distances),
                member_ids=member_ids,
                algorithm=algorithm,
                is_consensus=set(member_ids) <= chosen,
            )
        )
    return clusters


def process_with(strategy: Any, results: list[MemberResult], iteration: int) -> Processed:
    """Run ``strategy.process_responses`` on the successful results."""
    dicts = [result.to_dict() for result in results]
    returned = strategy.process_responses(dicts, iteration)
    if not isinstance(returned, list):
        raise RunFailed(f"Strategy {type(strategy).__name__}.process_responses did not return a list")
    by_id = {int(result.member.id): result for result in results}
    chosen: list[MemberResult] = []
    for data in returned:
        result = by_id.get(data.get("id")) if isinstance(data, dict) else None
        if result is None:
            raise RunFailed(
                f"Strategy {type(strategy).__name__} returned a response that is not one of "
                f"this iteration's (id {data.get('id') if isinstance(data, dict) else data!r})"
            )
        chosen.append(result)
    keep_notes(results, dicts)
    keep_notes(results, returned)
    embeddings = {
        str(data["id"]): _vector(data["embedding"])
        for data in [*dicts, *returned]
        if data.get("embedding") is not None
    }
    passed = [embeddings[result.member.id] for result in chosen if result.member.id in embeddings]
    return Processed(
        responses=chosen,
        considered=list(results),
        embeddings=embeddings,
        clusters=_clusters(
            dicts,
            {result.member.id for result in chosen},
            embeddings,
            str((getattr(strategy, "params", None) or {}).get("clustering_algorithm") or ""),
        ),
        geometry=geometric_confidence(passed) if passed else None,
    )
