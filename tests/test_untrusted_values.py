"""What is stored is untrusted: a hand-edit or another tool may leave text
where a number belongs. Every report shows what it can, skips what it
cannot use, says so in one warning line, and never raises."""

from __future__ import annotations

import json
import sqlite3

import pytest

from llm_consortium.db import shared_store

MODELS = {
    "fake-a": {"answer": "42", "confidence": 0.9, "usage": [10, 5]},
    "fake-b": {"answer": "41", "confidence": 0.6, "usage": [7, 3]},
    "fake-arb": {"arbiter": True, "usage": [100, 20]},
}
EDITS = [
    "UPDATE consortium_runs SET duration_ms = 'slow', final_confidence = 'high', input_tokens = 'many', "
    "iteration_count = 'two', confidence_threshold = 'strict'",
    "UPDATE consortium_members SET duration_ms = 'slow', confidence = 'sure', input_tokens = 'x', "
    "attempts = 'a few'",
    "UPDATE arbiter_decisions SET confidence = 'very', geometric_confidence = 'round', duration_ms = '[]', "
    "output_tokens = 'lots'",
]
COMMANDS = {
    "runs": ["consortium", "runs"],
    "runs-json": ["consortium", "runs", "--json"],
    "run-info": ["consortium", "run-info"],
    "run-info-json": ["consortium", "run-info", "--json"],
    "leaderboard": ["consortium", "leaderboard"],
    "leaderboard-json": ["consortium", "leaderboard", "--json"],
    "export": ["consortium", "export-training", "-"],
}


@pytest.fixture
def edited_run(cli, fakes, user_dir):
    with fakes(MODELS):
        assert cli("consortium", "run", "q", "-m", "fake-a", "-m", "fake-b", "--arbiter", "fake-arb").exit_code == 0
    shared_store().close()
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    with conn:
        for statement in EDITS:
            conn.execute(statement)
    conn.close()


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_reports_show_or_skip_wrong_typed_values_with_one_warning(cli, edited_run, args):
    result = cli(*args)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "wrong type" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("llm-consortium: warning: ")
    assert "consortium_runs.duration_ms" in warnings[0] or "duration_ms" in warnings[0]
    if args[-1] == "--json":
        json.loads(result.stdout)


def test_a_confidence_stored_as_text_is_not_at_least_anything(cli, edited_run):
    result = cli("consortium", "export-training", "-", "--min-confidence", "0.5")
    assert result.exit_code == 0
    assert result.stdout == ""  # 'high' >= 0.5 would be true in SQLite; it is no confidence


def test_run_info_still_shows_the_answers_and_what_is_usable(cli, edited_run):
    info = cli("consortium", "run-info").stdout
    assert "42" in info and "Member #1 fake-a[0]" in info
    data = json.loads(cli("consortium", "run-info", "--json").stdout)
    member = data["members"][0]
    assert member["confidence"] is None and member["duration_ms"] is None  # skipped, not made up
    assert member["output_tokens"] == 5  # untouched values stay


def test_visualize_with_wrong_typed_confidences(cli, edited_run, tmp_path):
    pytest.importorskip("plotly")
    output = tmp_path / "run.html"
    result = cli("consortium", "visualize", "-o", str(output))
    assert result.exit_code == 0, result.output
    assert output.exists()
    assert len([line for line in result.stderr.splitlines() if "wrong type" in line]) == 1
