"""API keys never reach the store, run-info, exports or logs.

Members are OpenAI-compatible models on a loopback server that need a key:
one from ``llm keys set``, one from the ``OPENAI_API_KEY`` environment
variable. After real runs, neither key appears anywhere we write or print —
checked on the raw bytes of the database files.
"""

from __future__ import annotations

import llm
import pytest
from llm.plugins import pm

from llm_consortium import create_consortium
from llm_consortium.db import Store, shared_store
from openai_server import serve, write_extra_openai_models

STORED_KEY = "sk-stored-SECRET-0123456789abcdef"
ENV_KEY = "sk-environ-SECRET-fedcba9876543210"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def keyed_server(user_dir, monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with serve() as running:
        write_extra_openai_models(
            user_dir,
            running.base_url,
            [
                {"model_id": "ok-stored", "api_key_name": "loopback"},
                {"model_id": "ok-environ", "api_key_name": "from-env"},
                {"model_id": "arbiter-stored", "api_key_name": "loopback"},
            ],
        )
        yield running


def all_bytes(user_dir):
    """Every file llm and this plugin wrote, WAL and shared-memory files too."""
    shared_store().close()
    return {
        path.name: path.read_bytes()
        for path in user_dir.iterdir()
        if path.is_file() and path.name not in ("keys.json", "extra-openai-models.yaml")
    }


def assert_no_secret(text_or_bytes, where):
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    for secret in (STORED_KEY, ENV_KEY):
        for needle in (secret, secret[-16:]):
            assert needle.encode() not in data, f"{where} contains a key"


def test_keys_used_by_members_are_never_stored_or_printed(cli, keyed_server, user_dir, monkeypatch, tmp_path):
    members = ["-m", "ok-stored", "-m", "ok-environ", "--arbiter", "arbiter-stored"]
    # Without the keys the members cannot run: the keys really are needed.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    keyless = cli("consortium", "run", "q", *members, "--retries", "0")
    assert keyless.exit_code == 1
    assert "No key found" in keyless.stderr

    assert cli("keys", "set", "loopback", "--value", STORED_KEY).exit_code == 0
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    assert cli("consortium", "save", "team", *members).exit_code == 0
    answered = cli("-m", "team", "What is 6 x 7?")
    one_off = cli("consortium", "run", "And 7 x 6?", *members, "--save", "team-2")
    assert answered.exit_code == 0 and answered.stdout.strip() == "42"
    assert one_off.exit_code == 0 and one_off.stdout.strip() == "42"
    assert all(request["authorization"] for request in keyed_server.requests)

    export_file = tmp_path / "training.jsonl"
    outputs = {
        "runs": cli("consortium", "runs", "--json"),
        "run-info": cli("consortium", "run-info", "--json"),
        "run-info text": cli("consortium", "run-info"),
        "list": cli("consortium", "list", "--json"),
        "info": cli("consortium", "info", "team", "--json"),
        "export-training": cli("consortium", "export-training", str(export_file)),
        "leaderboard": cli("consortium", "leaderboard", "--json"),
        "llm logs": cli("logs", "--json", "-n", "0"),
    }
    for where, result in {"llm -m": answered, "consortium run": one_off, **outputs}.items():
        assert result.exit_code == 0, (where, result.output)
        assert_no_secret(result.output, where)
    assert export_file.read_text().strip()
    assert_no_secret(export_file.read_bytes(), "the export file")
    files = all_bytes(user_dir)
    assert "consortium_logs.db" in files and "logs.db" in files
    for name, data in files.items():
        assert_no_secret(data, name)


class LeakyError(Exception):
    """A provider error that echoes credentials back, as some do."""


class LeakyModel(llm.Model):
    model_id = "leaky"

    def execute(self, prompt, stream, response, conversation=None):
        raise LeakyError(
            f"401 Unauthorized for https://api.example.test/v1/chat?key={STORED_KEY}&alt=sse: "
            f"Incorrect API key provided: {ENV_KEY}. Header was 'Authorization: Bearer {STORED_KEY}'"
        )
        yield ""  # pragma: no cover - a generator, like every model


class LeakyPlugin:
    @llm.hookimpl
    def register_models(self, register):
        register(LeakyModel())


def test_credentials_echoed_in_provider_errors_are_redacted(tmp_path):
    pm.register(LeakyPlugin(), name="undo-leaky")
    try:
        store = Store(tmp_path / "c.db")
        orchestrator = create_consortium(["leaky"], store=store, retries=0)
        with pytest.raises(llm.ModelError) as info:
            orchestrator.orchestrate("q")
    finally:
        pm.unregister(name="undo-leaky")
    message = str(info.value)
    assert "key=[redacted]&alt=sse" in message
    assert "Bearer [redacted]" in message
    assert_no_secret(message, "the error")
    (row,) = store.query("select error from consortium_members")
    assert_no_secret(row["error"], "the stored error")
    (run,) = store.query("select error from consortium_runs")
    assert_no_secret(run["error"], "the run's error")
    store.close()
    for path in tmp_path.glob("c.db*"):
        assert_no_secret(path.read_bytes(), path.name)
