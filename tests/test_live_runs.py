"""A run that is still running elsewhere is never marked interrupted.

Runs left ``running`` by a process that died (SIGKILL) are reaped. The pid
alone cannot tell: a container sharing the user directory (another pid
namespace) or another host (a network filesystem) has its own pids. A run
records its owner (host, boot id, pid namespace, pid, process start time);
only an owner that is certainly of this machine, boot and namespace, and
certainly gone, gets its run reaped. Others are left alone for a day.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import LLM_BIN, db_rows, write_fake_spec
from llm_consortium.liveness import current_owner, process_start
from llm_consortium.db import shared_store

MODELS = {"fake-a": {"answer": "42"}, "judge": {"arbiter": True}}


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def hours_ago(hours: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours)
    return moment.isoformat(timespec="microseconds")


def owner(**changes):
    return json.dumps({**current_owner(), **changes}, sort_keys=True)


@pytest.fixture
def running_rows(cli, fakes, user_dir):
    """Make one real run, then copy it as rows still ``running`` under the
    given owners, as a crashed or a live process elsewhere would leave them."""
    with fakes(MODELS):
        assert cli("consortium", "run", "q", "-m", "fake-a", "--arbiter", "judge").exit_code == 0
    shared_store().close()

    def make(rows: dict[str, tuple]) -> None:
        conn = sqlite3.connect(user_dir / "consortium_logs.db")
        with conn:
            for run_id, (pid, run_owner, created_at) in rows.items():
                conn.execute(
                    "INSERT INTO consortium_runs (id, created_at, status, pid, owner, user_prompt) "
                    "VALUES (?, ?, 'running', ?, ?, 'q')",
                    (run_id, created_at, pid, run_owner),
                )
        conn.close()

    return make


def statuses(cli):
    result = cli("consortium", "runs", "--json", "--limit", "50")
    assert result.exit_code == 0, result.output
    return {row["id"]: row["status"] for row in json.loads(result.stdout)}


def test_only_runs_whose_owner_is_certainly_gone_are_reaped(cli, running_rows):
    gone = dead_pid()
    now = hours_ago(0)
    running_rows({
        "other-host": (gone, owner(host="another-host", pid=gone, start="1"), now),
        "other-container": (gone, owner(pid_ns="pid:[4026599999]", pid=gone, start="1"), now),
        "other-boot": (gone, owner(boot_id="00000000-0000-0000-0000-000000000000", pid=gone, start="1"), now),
        "legacy-row": (gone, None, now),
        "alive-here": (os.getpid(), owner(), now),
        "dead-here": (gone, owner(pid=gone, start="1"), now),
        "pid-reused": (os.getppid(), owner(pid=os.getppid(), start="1"), now),
        "other-host-a-day-old": (gone, owner(host="another-host", pid=gone, start="1"), hours_ago(25)),
        "legacy-row-a-day-old": (gone, None, hours_ago(25)),
    })
    assert process_start(os.getppid()) != "1"

    seen = statuses(cli)

    assert {run_id: seen[run_id] for run_id in (
        "other-host", "other-container", "other-boot", "legacy-row", "alive-here",
    )} == dict.fromkeys(("other-host", "other-container", "other-boot", "legacy-row", "alive-here"), "running")
    assert {run_id: seen[run_id] for run_id in (
        "dead-here", "pid-reused", "other-host-a-day-old", "legacy-row-a-day-old",
    )} == dict.fromkeys(("dead-here", "pid-reused", "other-host-a-day-old", "legacy-row-a-day-old"), "interrupted")


def test_a_run_records_its_owner(cli, fakes, user_dir):
    with fakes(MODELS):
        assert cli("consortium", "run", "q", "-m", "fake-a", "--arbiter", "judge").exit_code == 0
    (row,) = db_rows(user_dir, "select pid, owner from consortium_runs")
    recorded = json.loads(row["owner"])
    assert recorded == current_owner() and row["pid"] == os.getpid()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to start llm in a new pid namespace",
)
def test_a_live_run_in_another_pid_namespace_is_left_running(cli, user_dir):
    """A real ``llm -m`` in a new pid namespace whose pid (99991 there) does
    not exist here: while it runs, ``runs`` here must not reap it."""
    write_fake_spec(user_dir, {"slow": {"answer": "42", "latency": 30}, "judge": {"arbiter": True}})
    env = {**os.environ, "LLM_CONSORTIUM_QUIET": "1"}
    env.pop("LLM_LOAD_PLUGINS", None)
    assert subprocess.run([LLM_BIN, "consortium", "save", "team", "-m", "slow", "--arbiter", "judge"],
                          env=env, capture_output=True, timeout=60).returncode == 0
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare is not permitted here: {probe.stderr.decode().strip()}")
    # sh is pid 1 in the new namespace; the llm it starts gets pid 99991.
    script = f'echo 99990 > /proc/sys/kernel/ns_last_pid; "{LLM_BIN}" -m team -n q'
    inner = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (user_dir / "consortium_logs.db").exists() and db_rows(
                user_dir, "select id from consortium_runs where status = 'running'"
            ):
                break
            time.sleep(0.05)
        (row,) = db_rows(user_dir, "select id, pid from consortium_runs")
        assert row["pid"] == 99991 and not os.path.exists("/proc/99991")
        assert statuses(cli) == {row["id"]: "running"}
    finally:
        inner.kill()
        inner.wait()
