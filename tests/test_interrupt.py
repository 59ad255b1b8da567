"""Interruption: Ctrl-C, SIGTERM and SIGHUP stop a run quickly, keep what was
received, record the run as ``interrupted`` and never leave it ``running``."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import LLM_BIN, fake_models, write_fake_spec
from llm_consortium import create_consortium
from llm_consortium.events import MemberFinished
from llm_consortium.db import Store

pytestmark = pytest.mark.slow  # real `llm` processes sent signals

MODELS = {
    "fast": {"answer": "42"},
    "slow": {"answer": "42", "hang": 60},
    "judge": {"arbiter": True},
    "stuck-judge": {"arbiter": True, "latency": 60},
}
MEMBER_ARGS = ["-m", "fast", "-m", "slow", "--max-iterations", "1"]
STOP_BOUND_S = 10  # the contract says "a second or two"; generous for busy machines
WAIT_BOUND_S = 60


def rows(user_dir, sql, params=()):
    path = user_dir / "consortium_logs.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT_BOUND_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def answered(user_dir, count):
    return lambda: len(
        rows(user_dir, "select 1 from consortium_members where response is not null")
    ) >= count


def start(*args):
    env = {**os.environ}
    env.pop("LLM_LOAD_PLUGINS", None)
    return subprocess.Popen(
        [LLM_BIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a signal for it alone, not for pytest
    )


def interrupt(process, signum):
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        stdout, stderr = process.communicate(timeout=WAIT_BOUND_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"llm did not stop within {WAIT_BOUND_S} s of {signum!r}")
    return stdout, stderr, time.monotonic() - sent


def assert_interrupted_and_kept(user_dir, expected_answers):
    (run,) = rows(user_dir, "select * from consortium_runs")
    assert run["status"] == "interrupted"
    assert run["finished_at"] is not None
    kept = rows(user_dir, "select * from consortium_members where response is not null")
    assert len(kept) == expected_answers
    assert all("<answer>42</answer>" in row["response"] for row in kept)
    assert not rows(user_dir, "select id from consortium_runs where status = 'running'")
    return run


@pytest.mark.parametrize(
    "command, signum",
    [
        ("model", signal.SIGINT),
        ("model", signal.SIGTERM),
        ("model", signal.SIGHUP),
        ("run", signal.SIGINT),
        ("run", signal.SIGTERM),
    ],
    ids=["llm-m-SIGINT", "llm-m-SIGTERM", "llm-m-SIGHUP", "consortium-run-SIGINT", "consortium-run-SIGTERM"],
)
def test_a_signal_stops_the_run_keeps_answers_and_marks_it_interrupted(user_dir, cli, fakes, command, signum):
    if signal.getsignal(signum) is signal.SIG_IGN:
        pytest.skip(f"{signum!r} is ignored in this session (nohup?) and so in the child too")
    write_fake_spec(user_dir, MODELS)
    if command == "model":
        with fakes(MODELS):
            assert cli("consortium", "save", "team", *MEMBER_ARGS, "--arbiter", "judge").exit_code == 0
        process = start("-m", "team", "q", "--no-log")
    else:
        process = start("consortium", "run", "q", *MEMBER_ARGS, "--arbiter", "judge")
    try:
        wait_until(answered(user_dir, 1), "the fast member's answer to be stored")
    finally:
        stdout, stderr, seconds = interrupt(process, signum)

    assert seconds < STOP_BOUND_S
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert stdout.strip() == ""
    run = assert_interrupted_and_kept(user_dir, expected_answers=1)
    lines = [line for line in stderr.splitlines() if line.strip()]
    if command == "model":
        # Then click's message for an interrupted command (exit status 1).
        assert lines == [f"Interrupted; run {run['id']} recorded as interrupted.", "Aborted!"]
    else:
        assert process.returncode == 130
        assert lines == [f"Interrupted; run {run['id']} recorded as interrupted."]


def test_ctrl_c_while_the_arbiter_is_judging_keeps_every_member_answer(user_dir, cli, fakes):
    write_fake_spec(user_dir, MODELS)
    with fakes(MODELS):
        assert cli(
            "consortium", "save", "team", "-m", "fast:2", "--arbiter", "stuck-judge"
        ).exit_code == 0
    process = start("-m", "team", "q", "--no-log")
    try:
        wait_until(answered(user_dir, 2), "both member answers to be stored")
        time.sleep(0.3)  # the arbiter call is under way
    finally:
        stdout, stderr, seconds = interrupt(process, signal.SIGINT)

    assert seconds < STOP_BOUND_S
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert_interrupted_and_kept(user_dir, expected_answers=2)
    assert rows(user_dir, "select * from arbiter_decisions") == []


def test_abandoning_a_run_part_way_marks_it_interrupted(fakes, tmp_path):
    store = Store(tmp_path / "c.db")
    with fakes(MODELS):
        run = create_consortium(["fast", "slow"], arbiter="judge", store=store).run("q")
        events = iter(run)
        try:
            for event in events:
                if isinstance(event, MemberFinished):
                    break
            events.close()
        finally:
            fake_models.STOP.set()  # wake the hanging fake member's thread
    assert run.status == "interrupted"
    (row,) = store.query("select status, error from consortium_runs")
    assert row == {"status": "interrupted", "error": "interrupted"}
    (kept,) = store.query("select model, response from consortium_members")
    assert kept["model"] == "fast" and "<answer>42</answer>" in kept["response"]


def test_a_run_never_finished_by_its_process_is_marked_interrupted_at_exit(user_dir, tmp_path):
    """The run loop is left suspended (its generator never closed) and the
    interpreter exits: the store's exit hook records the run as interrupted."""
    write_fake_spec(user_dir, MODELS)
    script = textwrap.dedent(
        f"""
        import os, sys
        from llm_consortium import create_consortium
        from llm_consortium.events import MemberFinished
        from llm_consortium.db import Store

        run = create_consortium(
            ["fast", "slow"], arbiter="judge", store=Store({str(tmp_path / "c.db")!r})
        ).run("q")
        KEEP = iter(run)
        for event in KEEP:
            if isinstance(event, MemberFinished):
                break
        sys.exit(3)
        """
    )
    env = {**os.environ}
    env.pop("LLM_LOAD_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=WAIT_BOUND_S
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    store = Store(tmp_path / "c.db")
    (row,) = store.query("select status, finished_at from consortium_runs")
    assert row["status"] == "interrupted"
    assert row["finished_at"] is not None
    assert len(store.query("select 1 from consortium_members where response is not null")) == 1
