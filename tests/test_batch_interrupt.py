"""Ctrl-C (SIGINT) part-way through `batch` and `eval` in a real `llm`
process (the installed fake-models plugin, a temporary LLM_USER_PATH), then
the same command again: the set completes, and no row answered before the
interrupt is sent again."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import db_rows, fake_models, run_llm, write_fake_spec
from test_interrupt import interrupt, start, wait_until

pytestmark = pytest.mark.slow  # real `llm` processes sent Ctrl-C

ROWS = 30
CONCURRENCY = 2


@pytest.fixture
def setup(user_dir, tmp_path, monkeypatch):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this session and so in the child too")
    write_fake_spec(user_dir, {"steady": {"reply": "answer to {prompt}", "latency": 0.05}})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": n, "prompt": f"p{n}", "expected": f"answer to p{n}"}) + "\n"
                              for n in range(1, ROWS + 1)))
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("LLM_CONSORTIUM_FAKE_LOG", str(log))  # every call, from every process
    return source, log


def prompts_sent(log):
    return [record["prompt"] for record in fake_models.read_log(log)]


def test_ctrl_c_then_the_same_batch_command_completes_the_set(setup, tmp_path):
    source, log = setup
    out = tmp_path / "out.jsonl"
    args = ("consortium", "batch", str(source), "-m", "steady", "-o", str(out),
            "--concurrency", str(CONCURRENCY))
    process = start(*args)
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 6, "six rows written")
    stdout, stderr, _ = interrupt(process, signal.SIGINT)

    assert process.returncode == 130
    assert "Traceback" not in stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert 6 <= len(written) < ROWS
    assert stderr.strip().splitlines()[-1] == (
        f"Interrupted: {len(written)} rows written to {out}. Run the same command to resume."
    )
    sent_before = len(prompts_sent(log))

    result = run_llm(*args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == list(range(1, ROWS + 1))
    assert all(row["error"] is None and row["answer"] == f"answer to p{row['id']}" for row in rows)
    resent = prompts_sent(log)[sent_before:]
    assert not {f"p{row['id']}" for row in written} & set(resent)  # answered rows: never again
    assert len(resent) == ROWS - len(written)


def test_ctrl_c_then_the_same_eval_command_completes_it(setup, user_dir):
    source, log = setup
    args = ("consortium", "eval", str(source), "--baseline", "steady", "--concurrency",
            str(CONCURRENCY), "--json")
    process = start(*args)
    wait_until(lambda: len(prompts_sent(log)) >= 12, "twelve prompts sent")  # results stored in groups
    stdout, stderr, _ = interrupt(process, signal.SIGINT)

    assert process.returncode == 130
    assert "Traceback" not in stderr and stdout == ""
    assert "Run the same command to resume." in stderr
    stored = {row["row_key"] for row in db_rows(user_dir, "select row_key from consortium_eval_results")}
    (status,) = db_rows(user_dir, "select status from consortium_evals")
    assert status == {"status": "interrupted"}
    assert stored
    sent_before = len(prompts_sent(log))

    result = run_llm(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (system,) = report["systems"]
    assert (system["n"], system["correct"], system["failures"]) == (ROWS, ROWS, 0)
    assert report["status"] == "finished"
    resent = prompts_sent(log)[sent_before:]
    assert not {f"p{key}" for key in stored} & set(resent)
    assert len(resent) == ROWS - len(stored)


def test_a_reader_that_stops_early_ends_the_batch_quietly(setup):
    """`llm consortium batch … | head -n 1`: no traceback, no complaint."""
    source, log = setup
    process = start("consortium", "batch", str(source), "-m", "steady", "--concurrency", "1")
    first = process.stdout.readline()
    process.stdout.close()  # the reader goes away
    stderr = process.stderr.read()
    process.wait(timeout=60)
    assert json.loads(first)["id"] == 1
    assert process.returncode == 0
    assert stderr == ""
    assert len(prompts_sent(log)) < ROWS
