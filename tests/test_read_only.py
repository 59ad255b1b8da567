"""A user who can read but not write the llm directory (a shared or
read-only mount) can still use every command that only reads, and
``llm -m NAME`` still finds the consortium; a run that cannot be stored says
so in one line, before any model is called.

Checked as a real non-root user: ``nobody``, given only the capability to
read and traverse (CAP_DAC_READ_SEARCH: the test interpreter lives under a
private directory), never to write. The database is left as a finished WAL
database leaves it: without ``-wal`` and ``-shm`` files, which a reader
cannot create in a read-only directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import LLM_BIN, write_fake_spec

MODELS = {"fake-a": {"answer": "42"}, "judge": {"arbiter": True}}
AS_NOBODY = [
    "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
]
# One real process per kind of read (each costs a second of start-up).
READ_ONLY_COMMANDS = {
    "list": ["consortium", "list"],
    "info": ["consortium", "info", "team", "--json"],
    "runs --json": ["consortium", "runs", "--json"],
    "run-info": ["consortium", "run-info"],
    "leaderboard": ["consortium", "leaderboard"],
    "llm models": ["models"],
}


def as_nobody(*args, env):
    return subprocess.run([*AS_NOBODY, LLM_BIN, *args], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run a subprocess as another user"
    if shutil.which("setpriv") is None:
        return "needs setpriv(1) from util-linux"
    probe = subprocess.run([*AS_NOBODY, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"setpriv cannot switch to nobody here: {probe.stderr.strip()}"
    return None


@pytest.mark.skipif(usable() is not None, reason=str(usable()))
def test_reading_works_read_only_and_a_run_that_cannot_be_stored_says_so(user_dir, tmp_path):
    write_fake_spec(user_dir, MODELS)
    env = {**os.environ, "LLM_CONSORTIUM_QUIET": "1"}
    env.pop("LLM_LOAD_PLUGINS", None)

    def as_owner(*args):
        result = subprocess.run([LLM_BIN, *args], capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr

    as_owner("consortium", "save", "team", "-m", "fake-a", "--arbiter", "judge")
    as_owner("-m", "team", "-n", "What is 6 x 7?")
    database = user_dir / "consortium_logs.db"
    assert not (user_dir / "consortium_logs.db-shm").exists()
    database.chmod(0o444)
    user_dir.chmod(0o555)
    before = database.read_bytes()
    writable = tmp_path / "out"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    try:
        outputs = {name: as_nobody(*args, env=env) for name, args in READ_ONLY_COMMANDS.items()}
        exported = as_nobody("consortium", "export-training", str(writable / "train.jsonl"), env=env)
        run = as_nobody("-m", "team", "-n", "And 7 x 6?", env=env)
    finally:
        user_dir.chmod(0o755)
        database.chmod(0o644)

    for name, result in outputs.items():
        assert result.returncode == 0, (name, result.stderr)
        assert result.stderr == "", (name, result.stderr)
    assert "Name: team" in outputs["list"].stdout
    assert json.loads(outputs["runs --json"].stdout)[0]["status"] == "success"
    assert "What is 6 x 7?" in outputs["run-info"].stdout
    assert json.loads(outputs["info"].stdout)["models"] == {"fake-a": 1}
    assert "Consortium: team" in outputs["llm models"].stdout
    assert exported.returncode == 0, exported.stderr
    assert json.loads((writable / "train.jsonl").read_text())["messages"][-1]["content"] == "42"

    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.strip() == (
        f"Error: Cannot record this run: {database} is read-only for you "
        "(attempt to write a readonly database); no model was called"
    )
    assert database.read_bytes() == before
