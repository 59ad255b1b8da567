"""A loopback OpenAI-compatible HTTP server for tests (127.0.0.1 only).

Usage::

    with serve({"ok-custom": "my reply"}) as server:
        write_extra_openai_models(user_dir, server.base_url, ["ok", "err500"])
        ...  # llm -m ok "hi"  → reaches this server through llm's OpenAI plugin
        server.requests  # [{"path", "method", "model", "body", "headers", ...}]

Behaviour is chosen by the request's ``model`` (a model named ``KIND`` or
``KIND-anything`` behaves as KIND; every model has its own request counter):
``ok`` (text from ``behaviours[model]`` if it is a string), ``err500``,
``err400``, ``flaky500`` (500 once, then ok), ``rate429`` (429 with
``Retry-After: 1`` once, then ok), ``hang`` (sleeps ``behaviours[model]``
seconds if a number, else 60, capped at 60 and cut short by close()),
``badjson``, ``cutstream``, ``empty`` and ``arbiter``. Any other model gets a
404. The error kinds also apply to ``/v1/embeddings`` (by model) and to the
chutes-style endpoint (by ``behaviours["chutes"]``).

Findings: how llm 0.36's OpenAI plugin (openai-python 3.57, httpx2) behaves
--------------------------------------------------------------------------
(checked by reading llm/default_plugins/openai_models.py and
openai/_base_client.py, and by tests/test_openai_server.py)

* ``extra-openai-models.yaml`` is read on every ``register_models`` call from
  ``llm.user_dir()``. Entries need ``model_id`` and ``model_name``; optional
  keys include ``api_base``, ``aliases``, ``headers``, ``api_key_name``,
  ``can_stream`` (only an explicit ``false`` matters), ``supports_schema``,
  ``supports_tools``, ``vision``, ``audio``, ``reasoning``, ``completion``,
  ``responses``. With ``api_base`` set and no ``api_key_name`` the model needs
  no key: the client is built with ``api_key="DUMMY_KEY"`` (so the server sees
  ``Authorization: Bearer DUMMY_KEY``); OPENAI_API_KEY is not needed.
* ``Chat.get_client()`` builds ``openai.OpenAI(base_url=..., api_key=...)``
  and passes NO ``timeout`` and NO ``max_retries``, so the SDK defaults apply:
  ``timeout = Timeout(600, connect=5.0)`` (a hung server blocks a call for
  ten minutes) and ``max_retries = 2`` (3 attempts in all). A new client is
  built for every prompt (``AsyncChat`` uses ``openai.AsyncOpenAI`` the same
  way). llm never raises ``llm.ModelError`` for these failures.
* The SDK retries by itself on 408, 409, 429 and every 5xx, on connection
  errors and on timeouts (unless the server sends ``x-should-retry: false``).
  Delay: ``Retry-After``/``retry-after-ms`` when 0 < value <= 120 s, otherwise
  exponential backoff 0.5 s, 1 s, ... (max 8 s) minus up to 25 % jitter.
  So ``flaky500`` and ``rate429`` succeed on the SDK's own retry (the 429
  case after ~1 s), and ``err500`` fails after 3 requests (~1.1-1.5 s of
  backoff). 400 is not retried (1 request).
* Errors are NOT wrapped by llm: ``response.text()`` raises the openai
  exception itself (the CLI turns it into ``Error: <str(ex)>``, exit 1, e.g.
  ``Error: Error code: 500 - simulated internal error`` - the SDK puts the
  body's ``error.message`` into str(ex); a cut stream prints the partial text
  and then ``Error: Connection error.``). Useful for a retry
  classifier: every SDK error subclasses ``openai.OpenAIError`` →
  ``openai.APIError`` (``.message``, ``.body``, ``.code``, ``.type``,
  ``.request``; ``.body`` is the JSON ``error`` object, e.g.
  ``{"message", "type", "param", "code"}``). ``openai.APIStatusError`` adds ``.status_code``,
  ``.response`` (an ``httpx2.Response``: ``.response.headers["retry-after"]``)
  and ``.request_id``; its subclasses are ``BadRequestError`` 400,
  ``AuthenticationError`` 401, ``PermissionDeniedError`` 403,
  ``NotFoundError`` 404, ``ConflictError`` 409, ``UnprocessableEntityError``
  422, ``RateLimitError`` 429, ``InternalServerError`` >= 500.
  ``openai.APIConnectionError`` (no status_code) covers refused/reset
  connections, and its subclass ``openai.APITimeoutError`` covers timeouts.
  ``openai.APIResponseValidationError`` has ``.status_code``/``.response``.
* ``badjson`` (200 + a body that is not JSON): non-stream, the SDK raises
  ``json.JSONDecodeError`` (a ``ValueError``; no status_code, not retried);
  streamed, no SSE events are found and llm returns "" without raising
  (the CLI prints an empty line and exits 0).
* ``cutstream``: both cases raise ``openai.APIConnectionError`` whose
  ``__cause__`` is ``httpx2.RemoteProtocolError`` ("peer closed connection
  without sending complete message body"). A cut stream is not retried (1
  request; text already streamed has been yielded); a half-sent non-stream
  body is retried like any connection error (3 requests).
* A timeout (e.g. a client built with ``timeout=0.5, max_retries=0`` against
  ``hang``) raises ``openai.APITimeoutError`` (cause ``httpx2.ReadTimeout``).
* Retry bookkeeping is visible on the wire: every request carries
  ``x-stainless-retry-count`` (0, 1, 2) and ``x-stainless-read-timeout``
  (600 by default), both kept in ``Server.requests[i]["headers"]``.
* ``empty`` content: llm returns "" without raising.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Optional

MAX_SLEEP = 60.0
EMBED_DIMS = 32
CHUNK_SIZE = 8
DEFAULT_REPLY = "<thinking>t</thinking><answer>42</answer><confidence>0.9</confidence>"
KINDS = (
    "ok",
    "err500",
    "err400",
    "flaky500",
    "rate429",
    "hang",
    "badjson",
    "cutstream",
    "empty",
    "arbiter",
)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
WORD_RE = re.compile(r"[a-z0-9]+")


def _sha256(value: Optional[str]) -> Optional[str]:
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


def kind_of(model: Any) -> Optional[str]:
    """The behaviour for a model name: ``KIND`` or ``KIND-anything``."""
    if not isinstance(model, str):
        return None
    for kind in KINDS:
        if model == kind or model.startswith(kind + "-"):
            return kind
    return None


def hash_embedding(text: Any, dims: int = EMBED_DIMS) -> list[float]:
    """Deterministic bag-of-words hashing embedding, L2-normalised."""
    vector = [0.0] * dims
    for word in WORD_RE.findall(str(text).lower()):
        vector[zlib.crc32(word.encode("utf-8")) % dims] += 1.0
    norm = sum(v * v for v in vector) ** 0.5
    return [v / norm for v in vector] if norm else vector


def _word_count(text: Any) -> int:
    return len(str(text or "").split())


def _content_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class Server:
    """A running server; also a context manager (``with serve() as s``)."""

    def __init__(
        self,
        behaviours: Optional[dict] = None,
        chutes_path: str = "/chutes/embed",
    ):
        self.behaviours = dict(behaviours or {})
        self.chutes_path = chutes_path
        self.requests: list[dict] = []
        self.counts: dict[str, int] = {}
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._connections: set = set()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        self.chutes_url = f"{self.root_url}{chutes_path}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"openai-fake-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; wake sleeping handlers; drop open connections."""
        if self.closing.is_set():
            return
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def sleep(self, seconds: float) -> bool:
        """Bounded sleep (max 60 s); returns False if cut short by close()."""
        return not self.closing.wait(max(0.0, min(float(seconds), MAX_SLEEP)))

    def count(self, model: str) -> int:
        """Bump and return the 1-based request number for ``model``."""
        with self._lock:
            self.counts[model] = self.counts.get(model, 0) + 1
            return self.counts[model]

    def requests_for(self, model: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r.get("model") == model]

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)


def serve(behaviours: Optional[dict] = None, chutes_path: str = "/chutes/embed") -> Server:
    """Start a server on 127.0.0.1 (random port) in a daemon thread."""
    return Server(behaviours, chutes_path=chutes_path)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: fifty members connecting at
    # once overflowed it, and the refused connections retried a second later.
    request_queue_size = 128
    block_on_close = False  # never wait for keep-alive handler threads
    owner: Server

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-response are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end eventually
    # TCP_NODELAY, as production servers set it: the headers and the body
    # are two writes, and with Nagle's algorithm the body waited for the
    # client's delayed ACK of the headers — about 40 ms on every response.
    disable_nagle_algorithm = True
    server: _HTTPServer

    # -- plumbing ------------------------------------------------------------

    @property
    def owner(self) -> Server:
        return self.server.owner

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:
        pass

    def _send_json(self, status: int, payload: Any, headers: Optional[dict] = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode("utf-8"), headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        headers: Optional[dict] = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, headers: Optional[dict] = None) -> None:
        error_type = {
            400: "invalid_request_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "server_error")
        self._send_json(
            status,
            {"error": {"message": message, "type": error_type, "param": None, "code": str(status)}},
            headers,
        )

    def _drop(self) -> None:
        """Close the connection abruptly."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_event(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(b"data: " + text.encode("utf-8") + b"\n\n")

    # -- request entry points -----------------------------------------------

    def do_GET(self) -> None:
        self._safely(self._route_get)

    def do_POST(self) -> None:
        self._safely(self._route_post)

    def _safely(self, handler) -> None:
        try:
            handler()
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.close_connection = True

    def _read_body(self) -> tuple[Any, Optional[str]]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return (json.loads(raw) if raw else {}), None
        except ValueError as ex:
            return raw.decode("utf-8", errors="replace"), str(ex)

    def _record(self, body: Any) -> None:
        headers = {}
        for name, value in self.headers.items():
            headers[name] = "<redacted>" if name.lower() == "authorization" else value
        self.owner._record(
            {
                "path": self.path,
                "method": self.command,
                "model": body.get("model") if isinstance(body, dict) else None,
                "body": body,
                "headers": headers,
                "authorization": self.headers.get("Authorization") is not None,
                # Which credential came, without keeping it: sha256 of the header.
                "authorization_sha256": _sha256(self.headers.get("Authorization")),
                "time": time.time(),
            }
        )

    def _route_get(self) -> None:
        self._record(None)
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": kind, "object": "model", "owned_by": "fake"} for kind in KINDS]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_error(404, f"no route for GET {self.path}")

    def _route_post(self) -> None:
        body, error = self._read_body()
        self._record(body)
        path = self.path.split("?", 1)[0].rstrip("/")
        if error is not None or not isinstance(body, dict):
            self._send_error(400, f"request body must be a JSON object: {error}")
        elif path == "/v1/chat/completions":
            self._chat(body)
        elif path == "/v1/embeddings":
            self._embeddings(body)
        elif path == self.owner.chutes_path.rstrip("/"):
            self._chutes(body)
        else:
            self._send_error(404, f"no route for POST {self.path}")

    # -- shared failure modes -------------------------------------------------

    def _failure(self, kind: Optional[str], model: str) -> bool:
        """Handle the error kinds; True if a response (or drop) was sent."""
        if kind == "err500":
            self._send_error(500, "simulated internal error")
        elif kind == "err400":
            self._send_error(400, "simulated bad request")
        elif kind == "flaky500" and self.owner.count(model) == 1:
            self._send_error(500, "simulated transient error")
        elif kind == "rate429" and self.owner.count(model) == 1:
            self._send_error(429, "simulated rate limit", {"Retry-After": "1"})
        elif kind == "badjson":
            self._send_bytes(200, b"this is not json")
        elif kind == "hang":
            seconds = self.owner.behaviours.get(model)
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                seconds = MAX_SLEEP
            if not self.owner.sleep(seconds):
                self._drop()  # server closing
                return True
            return False
        else:
            return False
        return True

    # -- chat completions -----------------------------------------------------

    def _reply_text(self, kind: Optional[str], model: str, body: dict) -> str:
        if kind == "empty":
            return ""
        if kind == "arbiter":
            user_texts = [
                _content_text(m.get("content"))
                for m in body.get("messages") or []
                if isinstance(m, dict) and m.get("role") == "user"
            ]
            found = ANSWER_RE.search(user_texts[-1]) if user_texts else None
            synthesis = found.group(1).strip() if found else "none"
            return (
                "<confidence>0.9</confidence><needs_iteration>false</needs_iteration>"
                f"<analysis>a</analysis><synthesis>{synthesis}</synthesis>"
            )
        reply = self.owner.behaviours.get(model)
        return reply if isinstance(reply, str) else DEFAULT_REPLY

    def _chat(self, body: dict) -> None:
        model = body.get("model")
        kind = kind_of(model)
        if kind is None:
            self._send_error(404, f"The model `{model}` does not exist")
            return
        if self._failure(kind, model):
            return
        text = self._reply_text(kind, model, body)
        prompt_tokens = sum(
            _word_count(_content_text(m.get("content")))
            for m in body.get("messages") or []
            if isinstance(m, dict)
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _word_count(text),
            "total_tokens": prompt_tokens + _word_count(text),
        }
        completion_id = f"chatcmpl-fake-{self.owner.port}-{len(self.owner.requests)}"
        created = int(time.time())
        if body.get("stream"):
            self._chat_stream(kind, model, text, usage, completion_id, created, body)
            return
        if kind == "cutstream":
            payload = json.dumps(self._completion(model, text, usage, completion_id, created))
            data = payload.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self._drop()
            return
        self._send_json(200, self._completion(model, text, usage, completion_id, created))

    @staticmethod
    def _completion(model, text, usage, completion_id, created) -> dict:
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    def _chat_stream(self, kind, model, text, usage, completion_id, created, body) -> None:
        def chunk(delta: dict, finish_reason: Optional[str] = None) -> dict:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        self._start_chunked()
        self._write_event(chunk({"role": "assistant", "content": ""}))
        pieces = [text[i : i + CHUNK_SIZE] for i in range(0, len(text), CHUNK_SIZE)]
        if kind == "cutstream":
            for piece in (pieces + ["", ""])[:2]:
                self._write_event(chunk({"content": piece}))
            self._drop()
            return
        for piece in pieces:
            self._write_event(chunk({"content": piece}))
        self._write_event(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            self._write_event(final)
        self._write_event("[DONE]")
        self._write_chunk(b"")  # zero-length chunk ends the body

    # -- embeddings -------------------------------------------------------------

    @staticmethod
    def _inputs(value: Any) -> list:
        if value is None:
            return []
        if isinstance(value, (str, int)):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return [value]  # one pre-tokenised input
        return list(value) if isinstance(value, list) else [value]

    @staticmethod
    def _text_of(item: Any) -> str:
        if isinstance(item, list):  # token ids: hash them as words
            return " ".join(str(t) for t in item)
        return str(item)

    def _embeddings(self, body: dict) -> None:
        model = body.get("model") or "embed"
        if self._failure(kind_of(model), model):
            return
        dims = body.get("dimensions")
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            dims = EMBED_DIMS
        items = self._inputs(body.get("input"))
        data = []
        for index, item in enumerate(items):
            vector = hash_embedding(self._text_of(item), dims)
            if body.get("encoding_format") == "base64":
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding: Any = base64.b64encode(packed).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_word_count(self._text_of(item)) for item in items)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chutes(self, body: dict) -> None:
        kind = self.owner.behaviours.get("chutes")
        if self._failure(kind if isinstance(kind, str) else None, "chutes"):
            return
        value = body.get("inputs", body.get("input"))
        items = self._inputs(value)
        self._send_json(200, [hash_embedding(self._text_of(item)) for item in items])


def write_extra_openai_models(
    user_dir: Any,
    base_url: str,
    model_ids: Iterable[Any],
) -> Path:
    """Write ``extra-openai-models.yaml`` in ``user_dir`` pointing at ``base_url``.

    ``model_ids`` holds ids, or dicts merged into the entry (e.g.
    ``{"model_id": "ok-2", "can_stream": False, "aliases": ["two"]}``).
    The file is JSON-flavoured YAML, so every value is quoted safely.
    """
    entries = []
    for item in model_ids:
        if isinstance(item, str):
            entry = {"model_id": item}
        else:
            entry = dict(item)
        entry.setdefault("model_name", entry["model_id"])
        entry.setdefault("api_base", base_url)
        entries.append(entry)
    lines = []
    for entry in entries:
        first = True
        for key, value in entry.items():
            prefix = "- " if first else "  "
            lines.append(f"{prefix}{key}: {json.dumps(value)}")
            first = False
    path = Path(user_dir) / "extra-openai-models.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" if lines else "[]\n", encoding="utf-8")
    return path
