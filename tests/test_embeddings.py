import importlib.machinery
import json
import sys
import threading
import time
import types
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import llm
import pytest
from llm.plugins import pm

from llm_consortium import embeddings
from llm_consortium.embeddings import (
    EXTRA_INSTALL_HINT,
    BaseEmbeddingBackend,
    EmbeddingError,
    EmbeddingService,
    MissingExtraError,
    get_backend,
    known_backends,
)
from llm_consortium.embeddings.backends import DEFAULT_CHUTES_URL
from llm_consortium.errors import ConsortiumError

DIMS = 16


def bag_of_words(text: str) -> list[float]:
    """Deterministic hashing embedder: word counts in DIMS crc32 buckets."""
    vector = [0.0] * DIMS
    for word in text.lower().split():
        vector[zlib.crc32(word.encode("utf-8")) % DIMS] += 1.0
    return vector


class HashEmbed(llm.EmbeddingModel):
    model_id = "hash-embed"

    def __init__(self, delay: float = 0.0):
        self.calls: list[list[str]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def embed_batch(self, items, *, key=None):
        batch = list(items)
        with self.lock:
            self.calls.append(batch)
        time.sleep(self.delay)
        for text in batch:
            yield bag_of_words(text)


class BrokenEmbed(llm.EmbeddingModel):
    model_id = "broken-embed"

    def embed_batch(self, items, *, key=None):
        raise RuntimeError("boom\nsecond line")


class ShortEmbed(llm.EmbeddingModel):
    model_id = "short-embed"

    def embed_batch(self, items, *, key=None):
        return iter([])


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("OPENAI_BASE_URL", "CHUTES_EMBEDDING_URL", "CHUTES_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def hash_model():
    model = HashEmbed()
    slow = HashEmbed(delay=0.2)
    slow.model_id = "slow-hash-embed"

    class EmbedPlugin:
        __name__ = "EmbedPlugin"

        @llm.hookimpl
        def register_embedding_models(self, register):
            register(model, aliases=("hashy",))
            register(slow)
            register(BrokenEmbed())
            register(ShortEmbed())

    pm.register(EmbedPlugin(), name="undo-embed")
    try:
        yield model, slow
    finally:
        pm.unregister(name="undo-embed")


# -- loopback HTTP server ------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length))
        self.server.seen.append(
            {
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
        )
        status, payload = self.server.reply(self.path, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def openai_style(body):
    texts = body.get("input", [])
    data = [
        {"object": "embedding", "index": i, "embedding": bag_of_words(t)}
        for i, t in enumerate(texts)
    ]
    data.reverse()  # clients must order by "index"
    usage = {"prompt_tokens": 1, "total_tokens": 1}
    return {"object": "list", "data": data, "model": body.get("model"), "usage": usage}


def default_reply(path, body):
    if path.endswith("/embeddings"):
        return 200, openai_style(body)
    return 200, [bag_of_words(t) for t in body.get("inputs", [])]


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.seen = []
    httpd.reply = default_reply
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def service(name: str, model: str | None = None) -> EmbeddingService:
    """The service a consortium would use, checked as a run checks it."""
    made = EmbeddingService(get_backend(name, model))
    made.check()
    return made


def embed(target: EmbeddingService, texts) -> list[list[float]]:
    return [vector.tolist() for vector in target.embed_batch(texts)]


# -- registry ----------------------------------------------------------------


def test_known_backends():
    assert known_backends() == ("openai", "sentence-transformers", "chutes", "llm")


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        get_backend("word2vec", None)
    for name in known_backends():
        assert name in str(info.value)


def test_error_hierarchy():
    error = MissingExtraError("numpy")
    assert isinstance(error, EmbeddingError)
    assert isinstance(error, ImportError)
    assert isinstance(error, ConsortiumError)
    assert EXTRA_INSTALL_HINT in str(error)
    assert str(EmbeddingError("two\n  lines")) == "two lines"


# -- llm backend ---------------------------------------------------------------


def test_llm_backend_batches_in_one_call(hash_model):
    model, _ = hash_model
    target = service("llm", "hash-embed")
    assert isinstance(target.backend, BaseEmbeddingBackend)
    vectors = embed(target, ["red apple", "green pear", "red apple"])
    assert model.calls == [["red apple", "green pear"]]
    assert vectors == [
        bag_of_words("red apple"),
        bag_of_words("green pear"),
        bag_of_words("red apple"),
    ]


def test_the_service_caches_by_text(hash_model):
    model, _ = hash_model
    target = service("llm", "hashy")  # an alias of hash-embed
    assert target.backend.model == "hash-embed"
    embed(target, ["a b", "c"])
    assert embed(target, ["c", "a b", "d"]) == [
        bag_of_words("c"),
        bag_of_words("a b"),
        bag_of_words("d"),
    ]
    assert model.calls == [["a b", "c"], ["d"]]
    embed(service("llm", "hash-embed"), ["c"])  # another service, its own cache
    assert model.calls[-1] == ["c"]


def test_cached_vectors_cannot_be_mutated_by_callers(hash_model):
    target = service("llm", "hash-embed")
    first = target.embed_batch(["x"])
    first[0][0] = 99.0
    assert embed(target, ["x"]) == [bag_of_words("x")]


def test_empty_input_makes_no_call(hash_model):
    model, _ = hash_model
    assert service("llm", "hash-embed").embed_batch([]) == []
    assert model.calls == []


def test_a_single_string_is_rejected(hash_model):
    with pytest.raises(TypeError):
        service("llm", "hash-embed").embed_batch("not a list")


def test_llm_backend_unknown_model(hash_model):
    with pytest.raises(EmbeddingError) as info:
        service("llm", "no-such-embedder")
    assert "no-such-embedder" in str(info.value)
    assert "llm embed-models" in str(info.value)


def test_llm_backend_without_a_model_or_default(hash_model):
    with pytest.raises(EmbeddingError, match="llm embed-models"):
        service("llm", None)


def test_llm_backend_uses_the_default_embedding_model(hash_model):
    llm.set_default_embedding_model("hashy")
    assert service("llm", None).backend.model == "hash-embed"


def test_llm_backend_failure_is_one_line_and_not_cached(hash_model):
    target = service("llm", "broken-embed")
    with pytest.raises(EmbeddingError) as info:
        target.embed_batch(["x"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("llm embedding (broken-embed) failed")
    assert "RuntimeError: boom second line" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(EmbeddingError):
        target.embed_batch(["x"])  # tried again: failures are not cached


def test_wrong_number_of_vectors_is_an_error(hash_model):
    with pytest.raises(EmbeddingError, match="expected 2 vectors, got 0"):
        service("llm", "short-embed").embed_batch(["a", "b"])


# -- openai backend ------------------------------------------------------------


@pytest.fixture
def openai_env(monkeypatch, server):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    return server


def test_openai_backend_against_loopback(openai_env):
    target = service("openai")
    assert target.backend.model == "text-embedding-3-small"
    vectors = embed(target, ["first text", "second text"])
    assert vectors == [bag_of_words("first text"), bag_of_words("second text")]
    (request,) = openai_env.seen
    assert request["path"] == "/v1/embeddings"
    assert request["authorization"] == "Bearer dummy"
    assert request["body"]["model"] == "text-embedding-3-small"
    assert request["body"]["input"] == ["first text", "second text"]
    assert embed(target, ["second text"]) == [bag_of_words("second text")]
    assert len(openai_env.seen) == 1  # cached


def test_openai_backend_custom_model(openai_env):
    embed(service("openai", "text-embedding-3-large"), ["x"])
    assert openai_env.seen[0]["body"]["model"] == "text-embedding-3-large"


def test_openai_backend_http_error(openai_env):
    error = {"error": {"message": "bad\ninput", "type": "invalid_request_error"}}
    openai_env.reply = lambda path, body: (400, error)
    with pytest.raises(EmbeddingError) as info:
        embed(service("openai"), ["x"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("openai embedding (text-embedding-3-small) failed")
    assert "BadRequestError" in message and "400" in message
    assert len(openai_env.seen) == 1  # 400 is not retried


def test_openai_backend_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        service("openai")


def test_openai_backend_missing_package(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(MissingExtraError, match="openai"):
        service("openai")


# -- chutes backend ------------------------------------------------------------


def test_chutes_tei_style_endpoint(monkeypatch, server):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.url + "/embed")
    monkeypatch.setenv("CHUTES_API_TOKEN", "secret-token")
    target = service("chutes")
    assert embed(target, ["alpha beta", "gamma"]) == [
        bag_of_words("alpha beta"),
        bag_of_words("gamma"),
    ]
    (request,) = server.seen
    assert request["path"] == "/embed"
    assert request["authorization"] == "Bearer secret-token"
    assert request["body"] == {"inputs": ["alpha beta", "gamma"]}


def test_chutes_openai_style_endpoint(monkeypatch, server):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.url + "/v1/embeddings")
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    target = service("chutes")
    assert embed(target, ["one", "two two"]) == [
        bag_of_words("one"),
        bag_of_words("two two"),
    ]
    # As the original: no model unless one is given (the endpoint serves one).
    assert server.seen[0]["body"] == {"input": ["one", "two two"], "model": None}


def test_chutes_model_may_be_the_endpoint_url(monkeypatch, server):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", "http://127.0.0.1:9/unused")
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    target = service("chutes", server.url + "/embed")
    assert target.backend.url == server.url + "/embed"
    embed(target, ["x"])
    assert server.seen[0]["path"] == "/embed"


def test_chutes_batches_of_32(monkeypatch, server):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.url + "/embed")
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    texts = [f"text number {i}" for i in range(40)]
    assert embed(service("chutes"), texts) == [bag_of_words(t) for t in texts]
    assert [len(r["body"]["inputs"]) for r in server.seen] == [32, 8]


def test_chutes_default_url(monkeypatch):
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    assert service("chutes").backend.url == DEFAULT_CHUTES_URL


def test_chutes_without_token(monkeypatch, server):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.url + "/embed")
    with pytest.raises(EmbeddingError, match="CHUTES_API_TOKEN"):
        service("chutes")
    assert server.seen == []


def test_chutes_http_error(monkeypatch, server):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.url + "/embed")
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    server.reply = lambda path, body: (503, {"error": "model\nis cold"})
    with pytest.raises(EmbeddingError) as info:
        embed(service("chutes"), ["x"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("chutes embedding")
    assert "HTTP 503" in message and "is cold" in message


@pytest.mark.parametrize(
    "payload",
    [{"vectors": []}, b"not json", [["a", "b"]], [[1.0], [2.0]], {"data": [{"x": 1}]}],
)
def test_chutes_bad_responses(monkeypatch, server, payload):
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", server.url + "/embed")
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    server.reply = lambda path, body: (200, payload)
    with pytest.raises(EmbeddingError, match="^chutes embedding"):
        embed(service("chutes"), ["only one"])


def test_chutes_connection_refused(monkeypatch, server):
    url = server.url + "/embed"
    server.shutdown()
    server.server_close()
    monkeypatch.setenv("CHUTES_EMBEDDING_URL", url)
    monkeypatch.setenv("CHUTES_API_TOKEN", "tok")
    with pytest.raises(EmbeddingError, match="URLError"):
        embed(service("chutes"), ["x"])


# -- sentence-transformers backend -----------------------------------------------


def test_sentence_transformers_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError) as info:
        service("sentence-transformers")
    assert isinstance(info.value, ImportError)
    assert EXTRA_INSTALL_HINT in str(info.value)
    assert "sentence-transformers" in str(info.value)


def test_sentence_transformers_with_a_stand_in_module(monkeypatch):
    loaded = []

    class Encoded(list):
        def tolist(self):
            return [list(row) for row in self]

    class SentenceTransformer:
        def __init__(self, name):
            loaded.append(name)

        def encode(self, texts, convert_to_numpy, show_progress_bar):
            return Encoded(bag_of_words(t) for t in texts)

    module = types.ModuleType("sentence_transformers")
    module.__spec__ = importlib.machinery.ModuleSpec("sentence_transformers", None)
    module.SentenceTransformer = SentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    monkeypatch.setattr(embeddings.SentenceTransformerBackend, "_loaded", {})
    target = service("sentence-transformers")
    assert target.backend.model == "all-MiniLM-L6-v2"
    assert embed(target, ["a", "b"]) == [bag_of_words("a"), bag_of_words("b")]
    assert embed(target, ["c"]) == [bag_of_words("c")]
    assert loaded == ["all-MiniLM-L6-v2"]  # the model is loaded once
