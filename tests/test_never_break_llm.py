"""The plugin never takes ``llm`` down with it.

Whatever state the consortium database, the user directory or the installed
extras are in, ``llm --version``, ``llm --help`` and ``llm models`` keep
working (real ``llm`` subprocesses, every installed plugin loaded), and the
consortium commands say what is wrong in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import LLM_BIN, write_fake_spec
from llm_consortium.db import shared_store

pytestmark = pytest.mark.slow  # real `llm` processes with every plugin loaded

MODELS = {
    "models": {"alpha": {"answer": "A"}, "judge": {"arbiter": True}},
    "embedding_models": {"hashy": {}},
}
OTHER_PLUGINS = "llm-echo,llm-consortium-fake-models"  # every plugin but this one


def llm_env(**overrides):
    env = {**os.environ, **overrides}
    env.pop("LLM_LOAD_PLUGINS", None)
    return env


def run_all(*commands, **env_overrides):
    """Run several ``llm`` commands at once; results in the same order."""
    env = llm_env(**env_overrides)
    processes = [
        subprocess.Popen(
            [LLM_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for args in commands
    ]
    results = []
    for args, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def check_llm_still_works(*extra_commands, **env_overrides):
    """``llm --version``, ``llm --help`` and ``llm models`` succeed; returns
    the results of ``llm models`` and of ``extra_commands``."""
    version, help_, models, *extra = run_all(
        ["--version"], ["--help"], ["models"], *extra_commands, **env_overrides
    )
    for result in (version, help_, models):
        assert result.returncode == 0, (result.args, result.stderr)
        assert "Traceback" not in result.stderr
    assert version.stdout.startswith("llm, version ")
    assert "consortium" in help_.stdout
    assert "Echo: echo" in models.stdout  # llm-echo, an unrelated plugin, still loads
    return models, *extra


def assert_one_line_error(result, text, code=1):
    assert result.returncode == code, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and text in lines[0], lines[0]


def save_good(cli, fakes, user_dir):
    """A saved consortium 'good', and the test process's connection closed so
    that the file on disk is complete."""
    write_fake_spec(user_dir, MODELS)
    with fakes(MODELS):
        assert cli("consortium", "save", "good", "-m", "alpha", "--arbiter", "judge").exit_code == 0
    shared_store().close()
    return user_dir / "consortium_logs.db"


def _writable(path: Path) -> bool:
    try:
        if path.is_dir():
            with tempfile.TemporaryFile(dir=path):
                return True
        with open(path, "r+b"):
            return True
    except OSError:
        return False


@contextmanager
def read_only(path: Path):
    """Make ``path`` read-only. Root ignores file modes, so there fall back to
    the immutable attribute (``chattr +i``); skip only when neither works."""
    mode = path.stat().st_mode
    os.chmod(path, 0o555 if path.is_dir() else 0o444)
    immutable = False
    try:
        if _writable(path):
            chattr = shutil.which("chattr")
            if chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0:
                immutable = True
            if _writable(path):
                pytest.skip(
                    "running as root, where chmod does not stop writes, and `chattr +i` "
                    "is not available on this filesystem: cannot make a read-only path"
                )
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        os.chmod(path, mode)


# -- the cases ---------------------------------------------------------------


def test_a_corrupt_config_row_is_skipped_with_one_warning(cli, fakes, user_dir):
    path = save_good(cli, fakes, user_dir)
    conn = sqlite3.connect(path)
    conn.execute("insert into consortium_configs values ('broken', '{not json', '2026-01-01')")
    conn.commit()
    conn.close()

    models, info, run = check_llm_still_works(
        ["consortium", "info", "broken"], ["-m", "good", "hi", "--no-log"]
    )

    assert "Consortium: good" in models.stdout
    warnings = [line for line in models.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "llm-consortium: skipping saved consortium 'broken': stored configuration is not valid JSON"
    )
    assert_one_line_error(info, "Saved consortium 'broken' cannot be read: stored configuration is not valid JSON")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "A"
    assert run.stderr.count("skipping saved consortium 'broken'") == 1


def test_a_garbage_database_file(user_dir):
    write_fake_spec(user_dir, MODELS)
    (user_dir / "consortium_logs.db").write_bytes(bytes(range(256)) * 64)

    models, listing, save = check_llm_still_works(
        ["consortium", "list"], ["consortium", "save", "x", "-m", "alpha", "--arbiter", "judge"]
    )

    assert "Alpha" not in models.stderr
    assert [line for line in models.stderr.splitlines() if line.strip()] == [
        f"llm-consortium: saved consortia not loaded: {user_dir / 'consortium_logs.db'} "
        "is not a usable database: file is not a database"
    ]
    assert_one_line_error(listing, "is not a usable database: file is not a database")
    assert_one_line_error(save, "is not a usable database: file is not a database")
    assert (user_dir / "consortium_logs.db").read_bytes() == bytes(range(256)) * 64


def test_a_read_only_database_can_be_read_and_writes_fail_in_one_line(cli, fakes, user_dir):
    path = save_good(cli, fakes, user_dir)
    with read_only(path):
        models, listing, save, run = check_llm_still_works(
            ["consortium", "list", "--json"],
            ["consortium", "save", "x", "-m", "alpha", "--arbiter", "judge"],
            ["consortium", "run", "hi", "-m", "alpha", "--arbiter", "judge"],
        )
    assert "Consortium: good" in models.stdout
    assert listing.returncode == 0, listing.stderr
    assert [item["name"] for item in json.loads(listing.stdout)] == ["good"]
    assert_one_line_error(save, "attempt to write a readonly database")
    assert_one_line_error(run, "attempt to write a readonly database")


def test_a_database_from_a_newer_schema_is_refused_in_one_line(cli, fakes, user_dir):
    path = save_good(cli, fakes, user_dir)
    conn = sqlite3.connect(path)
    conn.execute(
        "insert into _sqlite_migrations (migration_set, name, applied_at) "
        "values ('llm-consortium', 'm999_from_the_future', '2030-01-01')"
    )
    conn.commit()
    conn.close()

    models, listing, run = check_llm_still_works(
        ["consortium", "list"], ["-m", "good", "hi", "--no-log"]
    )

    assert "Consortium: good" in models.stdout
    message = "was written by a newer llm-consortium (schema m999_from_the_future); upgrade llm-consortium"
    assert_one_line_error(listing, message)
    assert_one_line_error(run, message)
    # Nothing was migrated or rewritten.
    names = [row[0] for row in sqlite3.connect(path).execute("select name from _sqlite_migrations")]
    assert "m999_from_the_future" in names


def test_a_missing_user_dir_is_created_only_when_needed(tmp_path):
    missing = tmp_path / "not" / "yet"

    _, listing = check_llm_still_works(["consortium", "list"], LLM_USER_PATH=str(missing))

    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.strip() == "No saved consortiums found."
    assert (missing / "consortium_logs.db").exists()


def test_a_user_dir_whose_path_has_uri_characters(cli, fakes, tmp_path, monkeypatch):
    odd = tmp_path / "what?#%20 dir"
    odd.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(odd))
    save_good(cli, fakes, odd)

    (models,) = check_llm_still_works(LLM_USER_PATH=str(odd))

    assert "Consortium: good" in models.stdout
    assert models.stderr.strip() == ""


def test_an_unwritable_user_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        models, listing, save = check_llm_still_works(
            ["consortium", "list"],
            ["consortium", "save", "x", "-m", "echo", "--arbiter", "echo"],
            LLM_USER_PATH=str(locked),
        )
    assert models.stderr.strip() == ""
    assert_one_line_error(listing, "Cannot open")
    assert_one_line_error(save, "unable to open database file")
    assert list(locked.iterdir()) == []


def test_a_user_dir_that_cannot_exist(tmp_path):
    """LLM_USER_PATH below a regular file. llm itself cannot list models
    there; the plugin must not make anything worse."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {"LLM_USER_PATH": str(blocker / "llm")}

    version, help_, group_help, listing, models, models_without_us = [
        *run_all(["--version"], ["--help"], ["consortium", "--help"], ["consortium", "list"], ["models"], **env),
        *run_all(["models"], LLM_LOAD_PLUGINS=OTHER_PLUGINS, **env),
    ]

    for result in (version, help_, group_help):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert_one_line_error(listing, "Cannot use the llm user directory")
    assert models.returncode == models_without_us.returncode
    assert "llm_consortium" not in models.stderr


def test_missing_optional_extras(user_dir, tmp_path):
    """numpy, scikit-learn, hdbscan, plotly and sentence-transformers all
    missing (simulated with a sitecustomize that blocks their import)."""
    write_fake_spec(user_dir, MODELS)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "for name in ('numpy', 'sklearn', 'hdbscan', 'plotly', 'sentence_transformers'):\n"
        "    sys.modules[name] = None\n"
    )
    semantic = [
        "consortium", "run", "hi", "-m", "alpha:3", "--arbiter", "judge", "--strategy", "semantic",
        "--embedding-backend", "llm", "--embedding-model", "hashy",
    ]

    blocked = subprocess.run(
        [sys.executable, "-c", "import numpy"], capture_output=True, text=True,
        env=llm_env(PYTHONPATH=str(site)),
    )
    assert blocked.returncode != 0  # the simulation works

    _, strategies, plain, semantic_run = check_llm_still_works(
        ["consortium", "strategies"],
        ["consortium", "run", "hi", "-m", "alpha:2", "--arbiter", "judge"],
        semantic,
        PYTHONPATH=str(site),
    )

    assert strategies.returncode == 0 and "semantic" in strategies.stdout
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "A"
    assert_one_line_error(semantic_run, "pip install 'llm-consortium[embeddings]'")
    assert "numpy is not installed" in semantic_run.stderr


def test_a_saved_consortium_whose_models_are_gone(cli, fakes, user_dir):
    write_fake_spec(user_dir, MODELS)
    with fakes(MODELS):
        for name, args in {
            "partial": ["-m", "alpha", "-m", "gone-model", "--arbiter", "judge"],
            "all-gone": ["-m", "gone-model", "--arbiter", "judge"],
            "no-judge": ["-m", "alpha", "--arbiter", "gone-judge"],
        }.items():
            assert cli("consortium", "save", name, *args).exit_code == 0
        # llm creates logs.db on the first prompt, even with --no-log, and
        # concurrent first prompts race on that (llm's own limit).
        assert cli("-m", "alpha", "create logs.db").exit_code == 0

    models, partial, all_gone, no_judge = check_llm_still_works(
        ["-m", "partial", "hi", "--no-log"],
        ["-m", "all-gone", "hi", "--no-log"],
        ["-m", "no-judge", "hi", "--no-log"],
    )

    for name in ("partial", "all-gone", "no-judge"):
        assert f"Consortium: {name}" in models.stdout
    assert partial.returncode == 0 and partial.stdout.strip() == "A"
    assert partial.stderr.strip() == (
        "llm-consortium: member gone-model[0] failed: Unknown model: gone-model (see 'llm models')"
    )
    assert all_gone.returncode == 1
    assert "Traceback" not in all_gone.stderr
    assert all_gone.stderr.splitlines()[-2:] == [
        "Error: Only 0 of 1 members answered in iteration 1 (at least 1 needed):",
        "  gone-model[0]: Unknown model: gone-model (see 'llm models')",
    ]
    assert_one_line_error(no_judge, "Unknown arbiter model: gone-judge")
