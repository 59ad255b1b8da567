"""The final synthesis streams to stdout as the arbiter writes it; nothing else does."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from conftest import LLM_BIN, fake_models, db_rows as rows

CALLS = fake_models.ScriptedModel.calls

# ~1000 characters: at 8 characters a chunk and 0.03 s between chunks the
# arbiter needs at least 3.7 s to write its synthesis.
LONG_ANSWER = " ".join(f"word{i}" for i in range(160))
SLOW_CHUNK = 0.03




def save(cli, *args):
    result = cli("consortium", "save", "team", *args)
    assert result.exit_code == 0, result.output


def arbiter_reply(confidence, needs_iteration, synthesis, tail=""):
    return (
        f"<confidence>{confidence}</confidence>\n"
        f"<needs_iteration>{'true' if needs_iteration else 'false'}</needs_iteration>\n"
        "<analysis>checked</analysis>\n<dissent></dissent>\n"
        "<refinement_areas><area>be precise</area></refinement_areas>\n"
        '<ranking><rank position="1">1</rank></ranking>\n'
        f"<synthesis>\n{synthesis}\n</synthesis>{tail}"
    )


def run_streaming(args, timeout=90):
    """Run ``llm`` with stdout on a pipe read as it arrives: returns the
    (seconds since start, bytes) reads, the exit time, return code and stderr."""
    env = dict(os.environ)
    env.pop("LLM_LOAD_PLUGINS", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [LLM_BIN, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    reads: list[tuple[float, bytes]] = []
    errors: list[bytes] = []

    def read_stdout():
        while True:
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                return
            reads.append((time.monotonic() - started, data))

    def read_stderr():
        errors.append(proc.stderr.read())

    threads = [threading.Thread(target=fn, daemon=True) for fn in (read_stdout, read_stderr)]
    for thread in threads:
        thread.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    exited = time.monotonic() - started
    for thread in threads:
        thread.join(10)
    return reads, exited, proc.returncode, b"".join(errors).decode()


@pytest.mark.slow
def test_first_synthesis_bytes_reach_stdout_long_before_llm_exits(llm_subprocess, user_dir):
    specs = {
        "alpha": {"answer": LONG_ANSWER},
        "beta": {"answer": LONG_ANSWER},
        "slow-judge": {"arbiter": True, "chunk_delay": SLOW_CHUNK},
    }
    result = llm_subprocess(
        "consortium", "save", "team", "-m", "alpha", "-m", "beta", "--arbiter", "slow-judge", specs=specs
    )
    assert result.returncode == 0, result.stderr
    reads, exited, code, stderr = run_streaming(["-m", "team", "Say the words"])
    assert code == 0, stderr
    stdout = b"".join(data for _, data in reads).decode()
    assert stdout == LONG_ANSWER + "\n"
    first_byte = reads[0][0]
    # Writing the synthesis takes the arbiter >= 3.7 s after its first
    # chunk; printed only at the end, the first byte would come < 1 s before exit.
    assert exited - first_byte > 2.0, (first_byte, exited)
    assert len(reads) > 5  # it arrived in pieces, not at once
    [run] = rows(user_dir, "select * from consortium_runs")
    assert run["status"] == "success"
    assert run["final_synthesis"] == LONG_ANSWER


def test_arbiter_that_cannot_stream_still_prints_the_answer(cli, fakes, user_dir):
    with fakes(
        {
            "alpha": {"answer": "Paris"},
            "beta": {"answer": "Paris"},
            "judge": {"arbiter": True, "can_stream": False},
        }
    ):
        save(cli, "-m", "alpha", "-m", "beta", "--arbiter", "judge")
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"
    [run] = rows(user_dir, "select * from consortium_runs")
    assert run["final_synthesis"] == "Paris"


def test_arbiter_is_asked_to_stream_by_default_and_not_with_no_stream(cli, fakes):
    with fakes(
        {"alpha": {"answer": "Paris"}, "judge": {"arbiter": True, "chunk_delay": 0.001}}
    ):
        save(cli, "-m", "alpha", "--arbiter", "judge")
        streamed = cli("-m", "team", "Capital of France?")
        assert [call["stream"] for call in CALLS["judge"]] == [True]
        at_the_end = cli("-m", "team", "--no-stream", "Capital of France?")
        assert [call["stream"] for call in CALLS["judge"]] == [True, False]
    assert streamed.exit_code == 0 and at_the_end.exit_code == 0
    assert streamed.stdout == at_the_end.stdout == "Paris\n"


def test_a_non_final_iterations_synthesis_is_never_printed(cli, fakes, user_dir):
    replies = [
        arbiter_reply(0.95, True, "DRAFT asked to iterate"),
        arbiter_reply(0.30, False, "DRAFT below the threshold"),
        arbiter_reply(0.95, False, "The final answer"),
    ]
    with fakes(
        {"alpha": {"answer": "Paris"}, "judge": {"replies": replies, "chunk_delay": 0.001}}
    ):
        save(cli, "-m", "alpha", "--arbiter", "judge", "--max-iterations", "5")
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "The final answer\n"
    decisions = rows(user_dir, "select iteration, synthesis from arbiter_decisions order by iteration")
    assert [d["synthesis"] for d in decisions] == [
        "DRAFT asked to iterate",
        "DRAFT below the threshold",
        "The final answer",
    ]


def test_the_last_allowed_iteration_streams_even_with_low_confidence(cli, fakes, user_dir):
    with fakes(
        {
            "alpha": {"answer": "Paris"},
            "judge": {"replies": [arbiter_reply(0.2, True, "Best effort")], "chunk_delay": 0.001},
        }
    ):
        save(cli, "-m", "alpha", "--arbiter", "judge", "--max-iterations", "1")
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Best effort\n"
    assert [call["stream"] for call in CALLS["judge"]] == [True]
    [run] = rows(user_dir, "select * from consortium_runs")
    assert (run["iteration_count"], run["final_synthesis"]) == (1, "Best effort")


def test_a_streamed_synthesis_ends_the_run_even_if_a_later_tag_disagrees(cli, fakes, user_dir):
    """Text on stdout cannot be taken back: once the synthesis has streamed,
    that iteration is the final one, whatever the arbiter writes after it."""
    replies = [
        arbiter_reply(0.9, False, "Streamed answer", tail="\n<confidence>0.1</confidence>"),
        arbiter_reply(0.9, False, "A second answer"),
    ]
    with fakes(
        {"alpha": {"answer": "Paris"}, "judge": {"replies": replies, "chunk_delay": 0.001}}
    ):
        save(cli, "-m", "alpha", "--arbiter", "judge", "--max-iterations", "3")
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Streamed answer\n"
    [run] = rows(user_dir, "select * from consortium_runs")
    assert run["iteration_count"] == 1
    assert run["final_synthesis"] == "Streamed answer"


def test_arbiter_without_tags_before_the_synthesis_prints_at_the_end(cli, fakes, user_dir):
    # Confidence after the synthesis: finality is unknown while it streams,
    # so nothing streams and the final synthesis is printed once, at the end.
    reply = (
        "<synthesis>Paris, at the end</synthesis>\n"
        "<confidence>0.9</confidence><needs_iteration>false</needs_iteration>"
    )
    with fakes(
        {"alpha": {"answer": "Paris"}, "judge": {"reply": reply, "chunk_delay": 0.001}}
    ):
        save(cli, "-m", "alpha", "--arbiter", "judge")
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris, at the end\n"
    [run] = rows(user_dir, "select * from consortium_runs")
    assert run["iteration_count"] == 1


def test_rank_judging_prints_the_top_answer_once(cli, fakes):
    with fakes(
        {
            "alpha": {"answer": "Paris"},
            "beta": {"answer": "Lyon"},
            "judge": {"reply": '<ranking><rank position="1">1</rank><rank position="2">2</rank></ranking>'},
        }
    ):
        save(cli, "-m", "alpha", "-m", "beta", "--arbiter", "judge", "--judging-method", "rank")
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"


def test_streamed_answer_is_what_llm_logs_records(cli, fakes):
    with fakes({"alpha": {"answer": LONG_ANSWER}, "judge": {"arbiter": True, "chunk_delay": 0.001}}):
        save(cli, "-m", "alpha", "--arbiter", "judge")
        result = cli("-m", "team", "Say the words")
    assert result.stdout == LONG_ANSWER + "\n"
    [logged] = json.loads(cli("logs", "-n", "1", "--json").stdout)
    assert (logged["model"], logged["response"]) == ("team", LONG_ANSWER)
    assert logged["response_json"]["status"] == "success"
