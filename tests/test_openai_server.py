"""Tests for the loopback OpenAI-compatible server in tests/openai_server.py.

They also pin down how llm's own OpenAI plugin treats errors, retries and
timeouts (see the findings at the top of openai_server.py).
"""

import http.client
import json
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import llm
import openai
import pytest

from conftest import invoke
from openai_server import hash_embedding, serve, write_extra_openai_models

pytestmark = pytest.mark.slow  # a loopback HTTP server, the SDK's own retries and hangs

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
DEFAULT_REPLY = "<thinking>t</thinking><answer>42</answer><confidence>0.9</confidence>"
ALL_MODELS = [
    "ok", "ok-custom", "err500", "err400", "flaky500", "rate429", "hang",
    "badjson", "cutstream", "empty", "arbiter", "missing",
]


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no real key is needed
    return tmp_path


@pytest.fixture
def server(user_dir):
    with serve({"ok-custom": "custom reply"}) as running:
        write_extra_openai_models(user_dir, running.base_url, ALL_MODELS)
        yield running


def run_llm(user_dir, *args):
    """The real llm CLI, in-process: llm's own OpenAI plugin finds the server's
    models in extra-openai-models.yaml under LLM_USER_PATH."""
    result = invoke(*args)
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def post_json(url, payload, headers=None, timeout=10):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        body = json.dumps(payload).encode()
        connection.request(
            "POST", parts.path, body=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def client(server, **kwargs):
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", **kwargs)


def ask(model_id, prompt="hi", stream=False):
    return llm.get_model(model_id).prompt(prompt, stream=stream).text()


# -- through the real llm CLI ----------------------------------------------


def test_cli_ok_streams_without_a_real_key(server, user_dir):
    result = run_llm(user_dir, "-m", "ok", "hi", "--no-log")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == DEFAULT_REPLY
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["model"] == "ok"
    assert request["body"]["stream"] is True
    assert request["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert request["authorization"] is True
    assert request["headers"]["authorization"] == "<redacted>"
    # llm passes no timeout/max_retries: the SDK defaults show on the wire.
    assert request["headers"]["x-stainless-read-timeout"] == "600"
    assert request["headers"]["x-stainless-retry-count"] == "0"


def test_cli_custom_reply_no_stream(server, user_dir):
    result = run_llm(user_dir, "-m", "ok-custom", "hi", "--no-log", "--no-stream")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "custom reply"
    assert server.requests[0]["body"]["stream"] is False


# In-process llm re-raises a model's exception (sys._called_from_test); a user
# sees it as one line, "Error: Error code: 500 - ...".


def test_cli_err500_fails_after_sdk_retries(server, user_dir):
    with pytest.raises(openai.InternalServerError, match="Error code: 500"):
        run_llm(user_dir, "-m", "err500", "hi", "--no-log")
    retry_counts = [r["headers"]["x-stainless-retry-count"] for r in server.requests]
    assert retry_counts == ["0", "1", "2"]  # openai default max_retries=2


def test_cli_err400_is_not_retried(server, user_dir):
    with pytest.raises(openai.BadRequestError, match="Error code: 400"):
        run_llm(user_dir, "-m", "err400", "hi", "--no-log")
    assert len(server.requests) == 1


def test_cli_rate429_answers_on_sdk_retry(server, user_dir):
    result = run_llm(user_dir, "-m", "rate429", "hi", "--no-log")
    assert result.returncode == 0, result.stderr
    assert "<answer>42</answer>" in result.stdout
    first, second = server.requests
    assert second["headers"]["x-stainless-retry-count"] == "1"
    assert second["time"] - first["time"] >= 0.9  # Retry-After: 1 honoured


def test_cli_flaky500_answers_on_sdk_retry(server, user_dir):
    result = run_llm(user_dir, "-m", "flaky500", "hi", "--no-log", "--no-stream")
    assert result.returncode == 0, result.stderr
    assert "<answer>42</answer>" in result.stdout
    assert len(server.requests) == 2


# -- in-process through llm: exception types -------------------------------


def test_status_errors_surface_as_openai_exceptions(server):
    with pytest.raises(openai.InternalServerError) as caught:
        ask("err500")
    assert caught.value.status_code == 500
    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.body["message"] == "simulated internal error"
    with pytest.raises(openai.BadRequestError) as caught:
        ask("err400", stream=True)
    assert caught.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        ask("missing")


def test_rate_limit_error_exposes_retry_after(server):
    with pytest.raises(openai.RateLimitError) as caught:
        client(server, max_retries=0).chat.completions.create(
            model="rate429-x", messages=[{"role": "user", "content": "hi"}]
        )
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "1"
    assert error.body["type"] == "rate_limit_error"


def test_badjson(server):
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK
        ask("badjson")
    assert ask("badjson", stream=True) == ""  # no SSE events: silently empty


def test_cutstream(server):
    with pytest.raises(openai.APIConnectionError) as caught:
        ask("cutstream", stream=True)
    assert type(caught.value.__cause__).__name__ == "RemoteProtocolError"
    assert len(server.requests) == 1  # a broken stream is not retried
    with pytest.raises(openai.APIConnectionError):
        ask("cutstream", stream=False)
    assert len(server.requests) == 4  # the non-stream call was tried 3 times


def test_empty_and_usage(server):
    response = llm.get_model("empty").prompt("one two three", stream=False)
    assert response.text() == ""
    assert (response.input_tokens, response.output_tokens) == (3, 0)
    response = llm.get_model("ok").prompt("one two", stream=True)
    assert response.text() == DEFAULT_REPLY
    assert response.input_tokens == 2


def test_arbiter(server):
    prompt = "responses:\n<answer> Paris </answer>\n<answer>Lyon</answer>"
    assert ask("arbiter", prompt) == (
        "<confidence>0.9</confidence><needs_iteration>false</needs_iteration>"
        "<analysis>a</analysis><synthesis>Paris</synthesis>"
    )
    assert ask("arbiter", "no answers", stream=True).endswith("<synthesis>none</synthesis>")


def test_extra_models_entries_accept_options(user_dir):
    with serve() as running:
        path = write_extra_openai_models(
            user_dir,
            running.base_url,
            [{"model_id": "ok-nostream", "can_stream": False, "aliases": ["nostream"]}],
        )
        assert path.name == "extra-openai-models.yaml"
        model = llm.get_model("nostream")
        assert model.model_id == "ok-nostream"
        assert model.can_stream is False
        assert model.prompt("hi").text() == DEFAULT_REPLY


# -- hang and bounded shutdown ----------------------------------------------


def test_hang_with_client_timeout(server):
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as caught:
        client(server, max_retries=0, timeout=0.5).chat.completions.create(
            model="hang", messages=[{"role": "user", "content": "hi"}]
        )
    assert type(caught.value.__cause__).__name__ == "ReadTimeout"
    assert isinstance(caught.value, openai.APIConnectionError)
    assert time.monotonic() - start < 5


def test_hang_for_configured_seconds(user_dir):
    with serve({"hang-short": 0.3}) as running:
        start = time.monotonic()
        reply = client(running, max_retries=0, timeout=10).chat.completions.create(
            model="hang-short", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == DEFAULT_REPLY
        assert time.monotonic() - start >= 0.3


def test_close_cuts_hang_short(user_dir):
    running = serve()
    outcome = {}

    def call():
        try:
            outcome["result"] = post_json(
                running.base_url + "/chat/completions",
                {"model": "hang", "messages": [{"role": "user", "content": "x"}]},
                timeout=20,
            )
        except Exception as ex:  # noqa: BLE001
            outcome["error"] = ex

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not running.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    start = time.monotonic()
    running.close()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - start < 5
    assert "error" in outcome  # dropped, not answered
    running.close()  # idempotent


# -- embeddings -------------------------------------------------------------


def test_openai_embeddings_float_and_base64(server):
    api = client(server)
    as_floats = api.embeddings.create(
        model="embed", input=["hello world", "x"], encoding_format="float"
    )
    assert [d.index for d in as_floats.data] == [0, 1]
    assert as_floats.data[0].embedding == hash_embedding("hello world")
    assert len(as_floats.data[0].embedding) == 32
    assert as_floats.usage.prompt_tokens == 3
    as_base64 = api.embeddings.create(model="embed", input="hello world")  # SDK default
    assert server.requests[-1]["body"]["encoding_format"] == "base64"
    assert as_base64.data[0].embedding == pytest.approx(hash_embedding("hello world"), abs=1e-6)
    sized = api.embeddings.create(
        model="embed", input="a", dimensions=8, encoding_format="float"
    )
    assert len(sized.data[0].embedding) == 8


def test_openai_embeddings_errors(server):
    with pytest.raises(openai.InternalServerError):
        client(server, max_retries=0).embeddings.create(model="err500", input="x")


def test_hash_embedding_is_bag_of_words():
    vector = hash_embedding("The cat, the CAT")
    assert vector == hash_embedding("cat the the cat")
    assert abs(sum(v * v for v in vector) - 1) < 1e-9
    assert hash_embedding("...") == [0.0] * 32


def test_chutes_embed(user_dir):
    with serve() as running:
        status, _, body = post_json(
            running.chutes_url, {"inputs": ["hello world", "b"]},
            headers={"Authorization": "Bearer sekret-value"},
        )
        assert status == 200
        assert json.loads(body) == [hash_embedding("hello world"), hash_embedding("b")]
        status, _, body = post_json(running.chutes_url, {"input": "solo"})
        assert json.loads(body) == [hash_embedding("solo")]
        assert [r["authorization"] for r in running.requests] == [True, False]
        assert running.requests[0]["path"] == "/chutes/embed"
        assert "sekret-value" not in json.dumps(running.requests)


def test_chutes_path_and_failure_are_configurable(user_dir):
    with serve({"chutes": "rate429"}, chutes_path="/custom/embed") as running:
        assert running.chutes_url.endswith("/custom/embed")
        status, headers, _ = post_json(running.chutes_url, {"inputs": ["a"]})
        assert status == 429 and headers.get("Retry-After") == "1"
        status, _, body = post_json(running.chutes_url, {"inputs": ["a"]})
        assert status == 200 and len(json.loads(body)) == 1
        status, _, _ = post_json(running.root_url + "/chutes/embed", {"inputs": ["a"]})
        assert status == 404


def test_server_binds_loopback_only(user_dir):
    with serve() as running:
        assert running.base_url.startswith("http://127.0.0.1:")
        assert running.base_url.endswith("/v1")
        assert running._httpd.server_address[0] == "127.0.0.1"
