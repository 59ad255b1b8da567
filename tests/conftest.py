"""Shared fixtures.

In-process tests run the real ``llm`` CLI (``llm.cli.cli``) with click's
``CliRunner``. ``sys._called_from_test`` makes ``llm`` skip entry points, so
this plugin is registered by hand here, before ``llm.cli`` is imported (its
``register_commands`` hook runs at that import). Subprocess tests run the real
``llm`` executable of this virtualenv, which loads every installed plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

sys._called_from_test = True  # type: ignore[attr-defined]

from llm.plugins import pm  # noqa: E402

import llm_consortium  # noqa: E402

if not pm.is_registered(llm_consortium):
    pm.register(llm_consortium, name="llm_consortium")

try:
    import llm_consortium_fake_models as fake_models  # noqa: E402
except ImportError:  # not pip-installed: import from the source tree
    sys.path.insert(0, str(Path(__file__).parent / "fake_models"))
    import llm_consortium_fake_models as fake_models  # noqa: E402

from click.testing import CliRunner  # noqa: E402
from llm.cli import cli as llm_cli  # noqa: E402

LLM_BIN = str(Path(sys.executable).parent / "llm")


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    """Every test gets its own LLM_USER_PATH (and so its own consortium_logs.db)."""
    path = tmp_path / "llm-user"
    path.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(path))
    monkeypatch.delenv("LLM_CONSORTIUM_FAKE_MODELS", raising=False)
    monkeypatch.delenv("LLM_CONSORTIUM_FAKE_LOG", raising=False)
    monkeypatch.setenv("LLM_CONSORTIUM_QUIET", "1")
    fake_models.STOP.clear()
    yield path
    fake_models.STOP.clear()


@contextmanager
def registered_fakes(specs: dict):
    """Register scripted fake models in-process for the duration of a block."""
    plugin = fake_models.FakeModels(specs)
    pm.register(plugin, name="undo-fakes")
    try:
        yield plugin
    finally:
        pm.unregister(name="undo-fakes")


@pytest.fixture
def fakes():
    """``with fakes({...}):`` registers scripted models in-process."""
    return registered_fakes


def invoke(*args: str, input: str | None = None):
    """Run the real ``llm`` CLI in-process; returns click's Result."""
    runner = CliRunner()
    return runner.invoke(llm_cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cli():
    return invoke


def write_fake_spec(user_dir: Path, specs: dict) -> None:
    """Models for subprocess tests: the fake plugin reads this file."""
    data = specs if "models" in specs or "embedding_models" in specs else {"models": specs}
    (user_dir / "fake_models.json").write_text(json.dumps(data))


def run_llm(*args: str, input: str | None = None, timeout: float = 60, env: dict | None = None):
    """Run the real ``llm`` executable as a subprocess (all plugins loaded)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LLM_LOAD_PLUGINS", None)
    return subprocess.run(
        [LLM_BIN, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def llm_subprocess(user_dir):
    def run(*args: str, specs: dict | None = None, **kwargs):
        if specs is not None:
            write_fake_spec(user_dir, specs)
        return run_llm(*args, **kwargs)

    return run


def db_rows(user_dir: Path, sql: str, *params) -> list[dict]:
    """Rows of ``consortium_logs.db`` in ``user_dir`` as dicts."""
    import sqlite3

    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()
