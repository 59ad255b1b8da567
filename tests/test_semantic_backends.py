"""The semantic strategy with its HTTP embedding backends (``openai`` and
``chutes``) against the loopback server of tests/openai_server.py, and the
failures a user can meet: a server error, a missing token, a missing extra.
Members and the arbiter are scripted fake models; only embeddings go over
HTTP (to 127.0.0.1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import llm
import pytest

from llm_consortium.embeddings import EXTRA_INSTALL_HINT

from conftest import fake_models, db_rows as rows, write_fake_spec
from openai_server import serve

PARIS_1 = "The capital of France is Paris."
PARIS_2 = "Paris is the capital of France."
PARIS_3 = "The capital city of France is Paris."
BANANAS = "Bananas are a good source of potassium and dietary fibre."
SPECS = {
    "models": {
        "para-a": {"answer": PARIS_1},
        "para-b": {"answer": PARIS_2},
        "para-c": {"answer": PARIS_3},
        "off": {"answer": BANANAS},
        "judge": {"arbiter": True, "arbiter_confidence": 0.9},
    },
    "embedding_models": {"bow": {"dims": 64}},
}
FOUR = ["-m", "para-a", "-m", "para-b", "-m", "para-c", "-m", "off"]
BASE = ["--arbiter", "judge", "--strategy", "semantic", "--cluster-eps", "0.4", "--max-iterations", "1"]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "CHUTES_EMBEDDING_URL", "CHUTES_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def server():
    with serve() as running:
        yield running




def selected(user_dir: Path) -> list[int]:
    return [row["selected"] for row in rows(user_dir, "SELECT selected FROM consortium_members WHERE role != 'arbiter' ORDER BY position")]


def embedding_requests(server, path: str) -> list[dict]:
    return [request for request in server.requests if request["path"] == path]


def only_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# -- openai ------------------------------------------------------------------------


def test_openai_backend_embeds_all_answers_in_one_request_and_clusters_them(
    cli, fakes, user_dir, server, monkeypatch
):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with fakes(SPECS):
        saved = cli("consortium", "save", "sem", *FOUR, *BASE, "--embedding-backend", "openai")
        assert saved.exit_code == 0, saved.output
        result = cli("-m", "sem", "Capital of France?")
    assert result.exit_code == 0, result.output
    [request] = embedding_requests(server, "/v1/embeddings")
    assert request["model"] == "text-embedding-3-small"  # the default model
    assert request["body"]["input"] == [PARIS_1, PARIS_2, PARIS_3, BANANAS]
    assert request["authorization"] is True
    assert selected(user_dir) == [1, 1, 1, 0]
    embeddings = rows(user_dir, "SELECT * FROM response_embeddings ORDER BY member_id")
    assert {(row["backend"], row["embedding_model"], row["dimensions"]) for row in embeddings} == {
        ("openai", "text-embedding-3-small", 32)
    }
    assert json.loads(embeddings[3]["embedding_json"]) == pytest.approx(fake_models.hash_embedding(BANANAS, 32))
    [cluster] = rows(user_dir, "SELECT * FROM consensus_clusters")
    assert json.loads(cluster["member_ids_json"]) == ["1", "2", "3"]
    [decision] = rows(user_dir, "SELECT geometric_confidence FROM arbiter_decisions")
    assert 0 < decision["geometric_confidence"] < 1


@pytest.mark.slow
def test_openai_backend_error_fails_the_run_with_one_line(llm_subprocess, cli, fakes, user_dir, server):
    """The real `llm` process: an embedding error is one line on stderr."""
    with fakes(SPECS):
        saved = cli(
            "consortium", "save", "sem", *FOUR, *BASE,
            "--embedding-backend", "openai", "--embedding-model", "err400-embed",
        )
    assert saved.exit_code == 0, saved.output
    write_fake_spec(user_dir, SPECS)
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "NO_PROXY": "127.0.0.1"}
    result = llm_subprocess("-m", "sem", "Capital?", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    line = only_error_line(result.stderr)
    assert "openai embedding (err400-embed) failed" in line
    assert "400" in line and "simulated bad request" in line
    [run] = rows(user_dir, "SELECT status, error FROM consortium_runs")
    assert run["status"] == "failed" and "simulated bad request" in run["error"]
    assert rows(user_dir, "SELECT * FROM arbiter_decisions") == []


def refused_before_any_member(fakes, user_dir, backend: str) -> str:
    """Run through the Python API; the error message, after checking that the
    run failed before any member was prompted."""
    from llm_consortium import create_consortium

    with fakes(SPECS):
        orchestrator = create_consortium(
            ["para-a", "off"], arbiter="judge", strategy="semantic", embedding_backend=backend
        )
        with pytest.raises(llm.ModelError) as caught:
            orchestrator.orchestrate("Capital?")
        called = [model for model in SPECS["models"] if fake_models.ScriptedModel.calls.get(model)]
    assert called == []
    assert rows(user_dir, "SELECT * FROM consortium_members") == []
    [run] = rows(user_dir, "SELECT status, error FROM consortium_runs")
    assert run["status"] == "failed" and run["error"] == str(caught.value)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_openai_backend_without_a_key_fails_before_any_member_is_prompted(fakes, user_dir):
    message = refused_before_any_member(fakes, user_dir, "openai")
    assert "openai embedding backend needs an API key" in message
    assert "OPENAI_API_KEY" in message and "llm keys set openai" in message


# -- chutes --------------------------------------------------------------------------


def test_chutes_backend_posts_the_answers_with_the_token_and_clusters_them(
    cli, fakes, user_dir, server, monkeypatch
):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.chutes_url)
    monkeypatch.setenv("CHUTES_API_TOKEN", "chutes-test-token")
    with fakes(SPECS):
        saved = cli("consortium", "save", "sem", *FOUR, *BASE, "--embedding-backend", "chutes")
        assert saved.exit_code == 0, saved.output
        result = cli("-m", "sem", "Capital of France?")
    assert result.exit_code == 0, result.output
    [request] = embedding_requests(server, "/chutes/embed")
    assert request["body"] == {"inputs": [PARIS_1, PARIS_2, PARIS_3, BANANAS]}
    assert request["authorization"] is True
    assert selected(user_dir) == [1, 1, 1, 0]
    embeddings = rows(user_dir, "SELECT * FROM response_embeddings")
    assert {(row["backend"], row["embedding_model"]) for row in embeddings} == {
        ("chutes", None)  # as the original: the endpoint's own model unless one is given
    }


def test_chutes_backend_error_fails_the_run(cli, fakes, user_dir, monkeypatch):
    # In-process llm re-raises the model's error (sys._called_from_test); the
    # openai test above checks the one line a user sees.
    with serve({"chutes": "err500"}) as failing:
        monkeypatch.setenv("CHUTES_EMBEDDING_URL", failing.chutes_url)
        monkeypatch.setenv("CHUTES_API_TOKEN", "chutes-test-token")
        with fakes(SPECS):
            saved = cli("consortium", "save", "sem", *FOUR, *BASE, "--embedding-backend", "chutes")
            assert saved.exit_code == 0, saved.output
            with pytest.raises(llm.ModelError) as caught:
                cli("-m", "sem", "Capital?")
    message = str(caught.value)
    assert "chutes embedding" in message and "HTTP 500" in message and "\n" not in message
    [run] = rows(user_dir, "SELECT status FROM consortium_runs")
    assert run["status"] == "failed"


def test_chutes_backend_without_a_token_names_the_variable(fakes, user_dir):
    message = refused_before_any_member(fakes, user_dir, "chutes")
    assert "chutes embedding backend needs an API token: set CHUTES_API_TOKEN" in message


# -- missing extras ------------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden, backend, package",
    [
        (("sentence_transformers",), ["--embedding-backend", "sentence-transformers"], "sentence-transformers"),
        (("sklearn", "sklearn.cluster"), ["--embedding-backend", "llm", "--embedding-model", "bow"], "scikit-learn"),
    ],
)
def test_a_missing_extra_fails_the_run_with_the_pip_advice(fakes, monkeypatch, user_dir, hidden, backend, package):
    from llm_consortium import create_consortium

    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    options = dict(zip(backend[::2], backend[1::2]))
    with fakes(SPECS):
        orchestrator = create_consortium(
            ["para-a", "off"], arbiter="judge", strategy="semantic",
            embedding_backend=options["--embedding-backend"],
            embedding_model=options.get("--embedding-model"),
        )
        with pytest.raises(llm.ModelError) as caught:
            orchestrator.orchestrate("Capital?")
        called = [model for model in SPECS["models"] if fake_models.ScriptedModel.calls.get(model)]
    message = str(caught.value)
    assert f"{package} is not installed; run: {EXTRA_INSTALL_HINT}" in message
    assert "\n" not in message
    assert called == []  # refused before any member was prompted
    [run] = rows(user_dir, "SELECT status, error FROM consortium_runs")
    assert run["status"] == "failed" and EXTRA_INSTALL_HINT in run["error"]


def test_tropical_clustering_needs_no_scikit_learn(cli, fakes, user_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    with fakes(SPECS):
        saved = cli(
            "consortium", "save", "sem", *FOUR, *BASE, "--clustering-algorithm", "tropical",
            "--embedding-backend", "llm", "--embedding-model", "bow",
        )
        assert saved.exit_code == 0, saved.output
        result = cli("-m", "sem", "Capital?")
    assert result.exit_code == 0, result.output
    assert selected(user_dir) == [1, 1, 1, 0]


def test_saving_with_a_backend_whose_package_is_missing_warns_at_save_time(cli, fakes, monkeypatch):
    import importlib.machinery
    import types

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not installed
    args = ["-m", "para-a", "--arbiter", "judge", "--strategy", "semantic", "--embedding-backend", "sentence-transformers"]
    with fakes(SPECS):
        missing = cli("consortium", "save", "st", *args)
        assert missing.exit_code == 0, missing.output
        assert missing.stderr == (
            "Warning: the sentence-transformers embedding backend needs sentence-transformers; "
            f"runs of 'st' will fail until it is installed: {EXTRA_INSTALL_HINT}\n"
        )
        # Installed (findable without importing it): saved without a word.
        present = types.ModuleType("sentence_transformers")
        present.__spec__ = importlib.machinery.ModuleSpec("sentence_transformers", None)
        monkeypatch.setitem(sys.modules, "sentence_transformers", present)
        quiet = cli("consortium", "save", "st", *args)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert "sentence-transformers" in cli("consortium", "info", "st").stdout


def test_loading_a_sentence_transformers_model_draws_no_third_party_progress_bars(monkeypatch):
    """Real libraries draw a tqdm "Loading weights" bar on stderr unless told
    not to (the opt-in test_sentence_transformers.py checks stderr with the real
    model); here stand-ins record that they were told, before the model loads."""
    import importlib.machinery
    import os
    import types

    from llm_consortium.embeddings import SentenceTransformerBackend, get_backend

    told = []

    def module(name, **attributes):
        made = types.ModuleType(name)
        made.__spec__ = importlib.machinery.ModuleSpec(name, None)
        made.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, made)

    class Model:
        def __init__(self, name):
            told.append(("load", name, os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")))

        def encode(self, texts, show_progress_bar=None, **options):
            told.append(("encode", show_progress_bar))
            import numpy

            return numpy.ones((len(texts), 3)) if isinstance(texts, list) else numpy.ones(3)

    module("huggingface_hub")
    module("huggingface_hub.utils", disable_progress_bars=lambda: told.append("huggingface_hub"))
    module("transformers")
    module("transformers.utils")
    module("transformers.utils.logging", disable_progress_bar=lambda: told.append("transformers"))
    module("sentence_transformers", SentenceTransformer=Model)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    monkeypatch.setattr(SentenceTransformerBackend, "_loaded", {})
    backend = get_backend("sentence-transformers", "quiet-model")
    backend.embed_batch(["a", "b"])
    backend.embed("c")
    assert told[:3] == ["huggingface_hub", "transformers", ("load", "quiet-model", "1")]
    # A batch (what runs use) is encoded without a bar; one text is encoded
    # as the original did, encode(text).
    assert [entry for entry in told if entry[0] == "encode"] == [("encode", False), ("encode", None)]
