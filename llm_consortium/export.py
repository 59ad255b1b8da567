"""``export-training``: successful runs as supervised fine-tuning data.

One JSON object per line, in the chat shape that common fine-tuning tools
(OpenAI fine-tuning, Axolotl/TRL "messages" datasets) accept::

    {"messages": [{"role": "system", ...}?, earlier turns…,
                  {"role": "user", "content": PROMPT},
                  {"role": "assistant", "content": FINAL SYNTHESIS}],
     "metadata": {"run_id", "consortium", "confidence", "iterations",
                  "members", "arbiter", "strategy", ...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from .db import RunFilter, Store


def model_names(name: str) -> list[str]:
    """``name`` and, when ``llm`` knows it as an alias, the model id it
    stands for (runs store model ids)."""
    import llm

    from .resolve import get_model

    names = [name]
    try:
        model_id = get_model(name).model_id
    except llm.UnknownModelError:
        return names
    if model_id not in names:
        names.append(model_id)
    return names


def successful_runs(
    store: Store,
    since: str | None = None,
    model: str | None = None,
    min_confidence: float | None = None,
) -> list[dict[str, Any]]:
    """Finished runs with a final synthesis, oldest first, filtered."""
    return store.training_runs(
        RunFilter(since=since, models=model_names(model) if model else (), min_confidence=min_confidence)
    )


def training_record(run: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuning record of one run row."""
    messages: list[dict[str, str]] = []
    if run.get("system_prompt"):
        messages.append({"role": "system", "content": run["system_prompt"]})
    for turn in run.get("conversation_json") or []:
        role, text = turn[0], turn[1]
        if role in ("user", "assistant") and text:
            messages.append({"role": role, "content": text})
    messages.append({"role": "user", "content": run.get("user_prompt") or ""})
    messages.append({"role": "assistant", "content": run["final_synthesis"]})
    return {
        "messages": messages,
        "metadata": {
            "run_id": run["id"],
            "consortium": run.get("config_name"),
            "confidence": run.get("final_confidence"),
            "iterations": run.get("iteration_count"),
            "members": run.get("member_models") or {},
            "arbiter": run.get("arbiter"),
            "strategy": run.get("strategy"),
            "judging_method": run.get("judging_method"),
            "input_tokens": run.get("input_tokens"),
            "output_tokens": run.get("output_tokens"),
            "duration_ms": run.get("duration_ms"),
            "created_at": run.get("created_at"),
        },
    }


def training_records(store: Store, **filters: Any) -> Iterator[dict[str, Any]]:
    for run in successful_runs(store, **filters):
        yield training_record(run)


def export_training(store: Store, stream: TextIO, **filters: Any) -> int:
    """Write one JSON line per matching run to ``stream``; returns the count."""
    count = 0
    for record in training_records(store, **filters):
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count
