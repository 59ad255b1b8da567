"""Many runs at once against one consortium_logs.db: nothing lost, never
``database is locked``, and reads work while others write.

The processes use ``--no-log``: llm 0.36's own logs.db write fails under
concurrent processes (see the README, "Many runs at once"). llm also migrates
logs.db on every prompt, even with ``--no-log``, and concurrent *first*
migrations race ("table ... already exists"), so one warm-up call creates it
first, as any earlier use of ``llm`` would have.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import LLM_BIN, write_fake_spec
from llm_consortium import create_consortium
from llm_consortium.db import Store

# Six processes whose runs each take three iterations of scripted 300 ms member
# calls: every run spends long enough writing that the runs really overlap
# (checked below from their stored start and end times), at a fraction of the
# cost of starting dozens of `llm` processes.
PROCESSES = 6
THREADS = 16
ITERATIONS = 3
MODELS = {
    "fa": {"answer": "42", "latency": 0.3},
    "fb": {"answer": "42", "latency": 0.3},
    "judge": {"arbiter": True, "needs_iteration": [True, True, False]},
}
MEMBERS_PER_RUN = 3  # fa:2 + fb


def llm_env():
    env = {**os.environ}
    env.pop("LLM_LOAD_PLUGINS", None)
    return env


def check_run_rows(path, prompts):
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    runs = {row["user_prompt"]: row for row in conn.execute("select * from consortium_runs")}
    assert set(prompts) <= set(runs)
    assert len(runs) == len(set(runs))
    for prompt in prompts:
        run = runs[prompt]
        assert run["status"] == "success", (prompt, run["error"])
        members = conn.execute(
            "select * from consortium_members where run_id = ? and role != 'arbiter'", (run["id"],)
        ).fetchall()
        assert len(members) == MEMBERS_PER_RUN * run["iteration_count"]
        assert all("<answer>42</answer>" in member["response"] for member in members)
        decisions = conn.execute(
            "select * from arbiter_decisions where run_id = ? order by iteration", (run["id"],)
        ).fetchall()
        assert len(decisions) == run["iteration_count"]
        assert decisions[-1]["synthesis"] == "42"
    return runs


def overlapping(runs):
    """How many runs were writing while at least one other run was."""
    spans = [(run["created_at"], run["finished_at"]) for run in runs]
    return sum(
        any(other is not span and other[0] < span[1] and span[0] < other[1] for other in spans)
        for span in spans
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_concurrent_llm_processes_lose_nothing_and_never_see_a_locked_database(user_dir, cli, fakes):
    write_fake_spec(user_dir, MODELS)
    with fakes(MODELS):
        saved = cli(
            "consortium", "save", "team", "-m", "fa:2", "-m", "fb", "--arbiter", "judge",
            "--max-iterations", str(ITERATIONS),
        )
        assert saved.exit_code == 0
        # llm creates logs.db on its first prompt, even with --no-log: do that
        # here, as any earlier use of llm would have.
        warm = cli("-m", "team", "warm-up", "--no-log")
    assert warm.exit_code == 0, warm.output

    prompts = [f"question {number}" for number in range(PROCESSES)]
    processes = [
        subprocess.Popen(
            [LLM_BIN, "-m", "team", prompt, "--no-log"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=llm_env(),
        )
        for prompt in prompts
    ]
    # Meanwhile, read through the CLI in this process (another process, with its own connection).
    reads = 0
    deadline = time.monotonic() + 500
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        listing = cli("consortium", "runs", "--json", "--limit", "100")
        assert listing.exit_code == 0, listing.output
        latest = json.loads(listing.stdout)[0]["id"]
        info = cli("consortium", "run-info", latest, "--json")
        assert info.exit_code == 0, info.output
        assert json.loads(info.stdout)["run"]["id"] == latest
        reads += 1
        time.sleep(0.2)  # leave the CPU to the writers
    outcomes = [process.communicate(timeout=120) + (process.returncode,) for process in processes]

    assert reads >= 1
    for (stdout, stderr, returncode), prompt in zip(outcomes, prompts):
        assert "locked" not in stderr.lower(), stderr
        assert returncode == 0, (prompt, stderr)
        assert stdout.strip() == "42"
    runs = check_run_rows(user_dir / "consortium_logs.db", prompts)
    assert len(runs) == PROCESSES + 1  # and the warm-up
    assert all(runs[prompt]["iteration_count"] == ITERATIONS for prompt in prompts)
    # The processes' runs were in flight at the same time, not one after another.
    assert overlapping([runs[prompt] for prompt in prompts]) >= PROCESSES // 2


def test_threads_in_one_process_lose_nothing(fakes, user_dir):
    """Runs from many threads through create_consortium (the shared store)."""
    prompts = [f"thread question {number}" for number in range(THREADS)]
    errors = []

    def work(prompt):
        try:
            orchestrator = create_consortium(["fa:2", "fb"], arbiter="judge", max_iterations=1)
            result = orchestrator.orchestrate(prompt)
            assert result["synthesis"]["synthesis"] == "42"
        except BaseException as ex:  # collected and asserted below
            errors.append(f"{prompt}: {type(ex).__name__}: {ex}")

    with fakes(MODELS):
        threads = [threading.Thread(target=work, args=(prompt,)) for prompt in prompts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    check_run_rows(user_dir / "consortium_logs.db", prompts)


def test_threads_with_their_own_connections_wait_for_each_other(fakes, tmp_path):
    """Separate Store objects (separate SQLite connections, as separate
    processes have) writing and reading the same file at once."""
    path = tmp_path / "shared.db"
    prompts = [f"own connection {number}" for number in range(THREADS)]
    errors = []
    finished = threading.Event()

    def work(prompt):
        try:
            orchestrator = create_consortium(
                ["fa:2", "fb"], arbiter="judge", max_iterations=1, store=Store(path)
            )
            orchestrator.orchestrate(prompt)
        except BaseException as ex:  # collected and asserted below
            errors.append(f"{prompt}: {type(ex).__name__}: {ex}")

    def read():
        reader = Store(path)
        while not finished.is_set():
            try:
                for run in reader.runs(limit=5):
                    reader.run_details(run["id"])
            except BaseException as ex:  # collected and asserted below
                errors.append(f"reader: {type(ex).__name__}: {ex}")
                return
            time.sleep(0.01)

    Store(path).runs()  # create the schema
    with fakes(MODELS):
        reader = threading.Thread(target=read)
        reader.start()
        threads = [threading.Thread(target=work, args=(prompt,)) for prompt in prompts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        finished.set()
        reader.join(30)
    assert errors == []
    check_run_rows(path, prompts)
