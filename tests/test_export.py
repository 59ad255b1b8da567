"""`export-training`: successful runs as JSONL fine-tuning records."""

import json

import llm
import pytest

from llm_consortium import create_consortium
from llm_consortium.config import ConsortiumConfig
from llm_consortium.db import shared_store

MODELS = {
    "fake-a": {"answer": "42", "confidence": 0.9, "usage": [10, 5]},
    "fake-b": {"answer": "42", "confidence": 0.7, "usage": [7, 3]},
    "fake-c": {"answer": "Paris", "confidence": 0.8, "usage": [4, 2], "aliases": ["cee"]},
    # Used in turn: the first team run, its continuation, the one-off run.
    "fake-arb": {"arbiter": True, "arbiter_confidence": [0.95, 0.6, 0.9], "usage": [100, 20]},
    "broken-arb": {"fail": "arbiter is down"},
}


def make_runs(cli, fakes):
    """Three successful runs (one continuing a conversation) and a failed one."""
    with fakes(MODELS):
        for args in (
            ["team", "-m", "fake-a", "-m", "fake-b", "--arbiter", "fake-arb", "--system", "Answer briefly."],
            ["doomed", "-m", "fake-a", "--arbiter", "broken-arb", "--retries", "0"],
        ):
            saved = cli("consortium", "save", *args, "--max-iterations", "1")
            assert saved.exit_code == 0, saved.output
        assert cli("-m", "team", "What is six times seven?").exit_code == 0
        assert cli("-c", "And times eight?").exit_code == 0
        create_consortium(["fake-c:2"], arbiter="fake-arb", max_iterations=1).orchestrate("Capital of France?")
        with pytest.raises(llm.ModelError):
            cli("-m", "doomed", "anything")


def export(cli, *args):
    result = cli("consortium", "export-training", "-", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_each_successful_run_becomes_one_chat_record(cli, fakes, tmp_path):
    make_runs(cli, fakes)
    output = tmp_path / "train.jsonl"
    result = cli("consortium", "export-training", str(output))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Exported 3 records to {output}\n"
    assert result.stdout == ""
    first, follow_up, one_off = [json.loads(line) for line in output.read_text().splitlines()]

    assert first["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is six times seven?"},
        {"role": "assistant", "content": "42"},
    ]
    runs = {row["user_prompt"]: row for row in shared_store().runs(limit=None)}
    meta = first["metadata"]
    assert meta == {
        "run_id": runs["What is six times seven?"]["id"],
        "consortium": "team",
        "confidence": 0.95,
        "iterations": 1,
        "members": {"fake-a": 1, "fake-b": 1},
        "arbiter": "fake-arb",
        "strategy": "default",
        "judging_method": "default",
        "input_tokens": 117,
        "output_tokens": 28,
        "duration_ms": runs["What is six times seven?"]["duration_ms"],
        "created_at": runs["What is six times seven?"]["created_at"],
    }
    # The earlier turns come before the new user message.
    assert follow_up["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is six times seven?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "And times eight?"},
        {"role": "assistant", "content": "42"},
    ]
    assert one_off["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
    ]
    assert one_off["metadata"]["consortium"] is None
    assert one_off["metadata"]["members"] == {"fake-c": 2}
    assert "Capital" not in json.dumps(first) and "anything" not in output.read_text()


def test_dash_writes_only_jsonl_to_stdout(cli, fakes):
    make_runs(cli, fakes)
    records, stderr = export(cli)
    assert [r["messages"][-2]["content"] for r in records] == [
        "What is six times seven?",
        "And times eight?",
        "Capital of France?",
    ]
    assert stderr == "Exported 3 records to stdout\n"


def test_model_filter_keeps_runs_that_included_that_member(cli, fakes):
    make_runs(cli, fakes)
    records, stderr = export(cli, "--model", "fake-c")
    assert [r["messages"][-2]["content"] for r in records] == ["Capital of France?"]
    assert stderr == "Exported 1 record to stdout\n"
    assert len(export(cli, "--model", "fake-b")[0]) == 2
    assert export(cli, "--model", "fake-arb")[0] == []  # the arbiter is not a member
    with fakes(MODELS):
        assert llm.get_model("cee").model_id == "fake-c"
        assert len(export(cli, "--model", "cee")[0]) == 1  # an alias of a member model


def test_min_confidence_filter(cli, fakes):
    make_runs(cli, fakes)
    assert [r["metadata"]["confidence"] for r in export(cli, "--min-confidence", "0.9")[0]] == [0.95, 0.9]
    assert [r["metadata"]["confidence"] for r in export(cli, "--min-confidence", "95")[0]] == [0.95]
    assert len(export(cli, "--min-confidence", "0")[0]) == 3
    bad = cli("consortium", "export-training", "-", "--min-confidence", "150")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_since_filter(cli, fakes):
    store = shared_store()
    store.start_run(
        "ancient", "old question", ConsortiumConfig(models={"fake-a": 1}),
        created_at="2020-03-01T12:00:00.000000+00:00",
    )
    store.finish_run("ancient", status="success", final_synthesis="old answer", final_confidence=1.0)
    make_runs(cli, fakes)
    assert len(export(cli)[0]) == 4
    assert len(export(cli, "--since", "2020-03-01")[0]) == 4
    assert len(export(cli, "--since", "2020-03-01T12:00:01")[0]) == 3
    recent, stderr = export(cli, "--since", "2021-01-01")
    assert "old question" not in json.dumps(recent) and len(recent) == 3
    bad = cli("consortium", "export-training", "-", "--since", "yesterday-ish")
    assert bad.exit_code == 2
    assert "is not a date or ISO timestamp" in bad.stderr


def test_filters_combine_and_no_match_writes_an_empty_file(cli, fakes, tmp_path):
    make_runs(cli, fakes)
    assert len(export(cli, "--model", "fake-a", "--min-confidence", "0.9")[0]) == 1
    output = tmp_path / "none.jsonl"
    result = cli("consortium", "export-training", str(output), "--model", "no-such-model")
    assert result.exit_code == 0
    assert output.read_text() == ""
    assert result.stderr == f"Exported 0 records to {output}\n"


def test_unwritable_output_is_one_line_error(cli, tmp_path):
    result = cli("consortium", "export-training", str(tmp_path / "missing-dir" / "out.jsonl"))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
