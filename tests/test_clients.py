"""One HTTP client per endpoint within a run, through llm's real OpenAI plugin
and two loopback servers: every request carries its own endpoint's key and
headers, answers and usage are right, and llm itself is left unchanged."""

from __future__ import annotations

import hashlib
import json
import uuid
from types import SimpleNamespace

import llm
import openai
import pytest

from llm_consortium import create_consortium, resolve
from llm_consortium.clients import ClientPool
from openai_server import serve, write_extra_openai_models

pytestmark = pytest.mark.slow  # loopback HTTP servers

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def header(request: dict, name: str):
    return {key.lower(): value for key, value in request["headers"].items()}.get(name.lower())


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def endpoints(user_dir, monkeypatch):
    """Two servers: models ``ok-a``/``arbiter-a`` at A with key ``key-a`` and
    header ``X-Team: a``, ``ok-b`` at B with ``key-b`` and ``X-Team: b``. The
    key values are new for each test: clients are kept per process, by key."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    unique = uuid.uuid4().hex
    keys = {"key-a": f"secret-a-{unique}", "key-b": f"secret-b-{unique}"}
    (user_dir / "keys.json").write_text(json.dumps(keys))
    with serve() as a, serve() as b:
        write_extra_openai_models(
            user_dir,
            "unused",
            [
                {"model_id": "ok-a", "api_base": a.base_url, "api_key_name": "key-a", "headers": {"X-Team": "a"}},
                {"model_id": "arbiter-a", "api_base": a.base_url, "api_key_name": "key-a", "headers": {"X-Team": "a"}},
                {"model_id": "ok-b", "api_base": b.base_url, "api_key_name": "key-b", "headers": {"X-Team": "b"}},
            ],
        )
        yield SimpleNamespace(a=a, b=b, key_a=keys["key-a"], key_b=keys["key-b"])


class CountingOpenAI(openai.OpenAI):
    built = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1
        super().__init__(*args, **kwargs)


def test_each_endpoint_gets_its_own_key_and_headers_and_one_client(endpoints, monkeypatch):
    a, b = endpoints.a, endpoints.b
    monkeypatch.setattr(openai, "OpenAI", CountingOpenAI)
    CountingOpenAI.built = 0
    result = create_consortium(["ok-a:4", "ok-b:4"], arbiter="arbiter-a", max_iterations=1).orchestrate(
        "What is 6 x 7?"
    )
    assert result["synthesis"]["synthesis"] == "42"
    responses = result["iterations"][0]["model_responses"]
    assert [r["model"] for r in responses] == ["ok-a"] * 4 + ["ok-b"] * 4
    assert all(r["response"].count("<answer>42</answer>") == 1 for r in responses)
    assert result["metadata"]["output_tokens"] > 0
    chats_a = [r for r in a.requests if r["path"].endswith("/chat/completions")]
    chats_b = [r for r in b.requests if r["path"].endswith("/chat/completions")]
    assert len(chats_a) == 5 and len(chats_b) == 4  # 4 members + the arbiter at A
    assert {r["authorization_sha256"] for r in chats_a} == {sha(f"Bearer {endpoints.key_a}")}
    assert {r["authorization_sha256"] for r in chats_b} == {sha(f"Bearer {endpoints.key_b}")}
    assert {header(r, "X-Team") for r in chats_a} == {"a"}
    assert {header(r, "X-Team") for r in chats_b} == {"b"}
    assert CountingOpenAI.built == 2  # one per endpoint for 9 calls
    again = create_consortium(["ok-b:2"], arbiter="arbiter-a", max_iterations=1).orchestrate("q")
    assert again["synthesis"]["synthesis"] == "42"
    assert CountingOpenAI.built == 2  # the next run reuses them


def test_the_pool_keeps_at_most_max_clients(endpoints, monkeypatch):
    monkeypatch.setattr(openai, "OpenAI", CountingOpenAI)
    CountingOpenAI.built = 0
    pool = ClientPool(max_clients=1)
    ok_a, ok_b = pool.adopt(llm.get_model("ok-a")), pool.adopt(llm.get_model("ok-b"))
    for model in (ok_a, ok_a, ok_b, ok_a):
        assert "<answer>42</answer>" in model.prompt("q", stream=False).text()
    assert CountingOpenAI.built == 3


def test_a_key_changed_between_runs_is_the_one_sent(endpoints, user_dir):
    create_consortium(["ok-a"], arbiter="arbiter-a", max_iterations=1).orchestrate("q")
    rotated = endpoints.key_a + "-rotated"
    (user_dir / "keys.json").write_text(json.dumps({"key-a": rotated, "key-b": endpoints.key_b}))
    create_consortium(["ok-a"], arbiter="arbiter-a", max_iterations=1).orchestrate("q")
    chats = [r for r in endpoints.a.requests if r["path"].endswith("/chat/completions")]
    keys = [r["authorization_sha256"] for r in chats]
    assert keys == [sha(f"Bearer {endpoints.key_a}")] * 2 + [sha(f"Bearer {rotated}")] * 2


def test_models_outside_a_run_are_not_changed(endpoints):
    create_consortium(["ok-a", "ok-b"], arbiter="arbiter-a", max_iterations=1).orchestrate("q")
    for model in (llm.get_model("ok-a"), resolve.get_model("ok-a"), resolve.get_model("arbiter-a")):
        assert "get_client" not in vars(model)


def test_a_client_that_does_not_carry_the_expected_key_is_never_reused(endpoints, monkeypatch):
    """If llm's factory ever builds clients from something the pool does not
    key on, the pool must fall back to a client per call."""

    class Mangled(openai.OpenAI):
        built = 0

        def __init__(self, *args, **kwargs):
            type(self).built += 1
            kwargs["api_key"] = kwargs["api_key"] + "-changed"
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(openai, "OpenAI", Mangled)
    result = create_consortium(["ok-a:3", "ok-b:2"], arbiter="arbiter-a", max_iterations=1).orchestrate("q")
    assert result["synthesis"]["synthesis"] == "42"
    assert Mangled.built == 6
    chats_b = [r for r in endpoints.b.requests if r["path"].endswith("/chat/completions")]
    assert {r["authorization_sha256"] for r in chats_b} == {sha(f"Bearer {endpoints.key_b}-changed")}


def test_only_llms_own_openai_factory_is_adopted(endpoints):
    model = llm.get_model("ok-a")

    class OwnFactory(type(model)):
        def get_client(self, key, *, async_=False):
            return super().get_client(key, async_=async_)

    custom = OwnFactory.__new__(OwnFactory)
    custom.__dict__.update(vars(model))
    pool = ClientPool()
    assert pool.adopt(custom) is custom
    assert pool.adopt(model) is not model
    assert pool.adopt(model).model_id == "ok-a"


def test_a_missing_key_fails_that_member_as_llm_would(endpoints, user_dir):
    (user_dir / "keys.json").write_text(json.dumps({"key-a": endpoints.key_a}))
    result = create_consortium(["ok-a", "ok-b"], arbiter="arbiter-a", max_iterations=1).orchestrate("q")
    by_model = {r["model"]: r for r in result["iterations"][0]["model_responses"]}
    assert by_model["ok-a"]["response"]
    assert "key-b" in by_model["ok-b"]["error"]
    assert result["synthesis"]["synthesis"] == "42"
