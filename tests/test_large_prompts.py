"""A large prompt is stored once per run, not once per member and arbiter
call: the member rows and the arbiter's prompt refer to the run's prompt,
and every reader gets the full texts back."""

from __future__ import annotations

import json
import sqlite3

from llm_consortium import create_consortium
from llm_consortium.db import shared_store

MODELS = {"fake-a": {"answer": "42"}, "fake-b": {"answer": "42"}, "judge": {"arbiter": True}}
PROMPT = "Summarise this log. " + "".join(f"line {n}: all quiet\n" for n in range(250_000))  # ~5 MB


def database_bytes(user_dir) -> bytes:
    shared_store().close()
    return b"".join(path.read_bytes() for path in sorted(user_dir.glob("consortium_logs.db*")))


def test_a_5_mb_prompt_is_stored_once_and_read_back_whole(cli, fakes, user_dir):
    assert len(PROMPT) > 5_000_000
    with fakes(MODELS):
        result = create_consortium(
            ["fake-a", "fake-b"], arbiter="judge", minimum_iterations=2, max_iterations=2
        ).orchestrate(PROMPT)
    assert result["metadata"]["status"] == "success"

    stored = database_bytes(user_dir)
    marker = b"line 249999: all quiet"
    assert stored.count(marker) == 1
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    page_size, pages, free = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                              for name in ("page_size", "page_count", "freelist_count"))
    conn.close()
    assert (pages - free) * page_size < 1.5 * len(PROMPT)  # pages in use

    details = json.loads(cli("consortium", "run-info", "--json").stdout)
    assert details["run"]["user_prompt"] == PROMPT
    first = [row for row in details["members"] if row["iteration"] == 1]
    assert [row["prompt"] for row in first] == [PROMPT, PROMPT]
    second = [row for row in details["members"] if row["iteration"] == 2]
    assert all(PROMPT in row["prompt"] and row["prompt"] != PROMPT for row in second)
    assert all(PROMPT in decision["prompt"] for decision in details["decisions"])
