"""Timeouts, retries and partial failure, through llm's real OpenAI plugin.

A loopback OpenAI-compatible server (tests/openai_server.py) stands in for the
providers; its models misbehave on purpose. The consortium reaches them the
way a user's would: ``extra-openai-models.yaml`` in the temp user dir, and
``llm -m NAME`` run as a subprocess. llm's OpenAI client retries by itself
(``max_retries=2``) and waits up to 600 s per request; our per-attempt
timeout and retry count must bound the wall time anyway.
"""

from __future__ import annotations

import json
import sqlite3
import time
from types import SimpleNamespace

import llm
import pytest
from llm.plugins import pm

from conftest import run_llm, write_fake_spec
from llm_consortium import create_consortium
from llm_consortium.db import Store
from openai_server import serve, write_extra_openai_models

pytestmark = pytest.mark.slow  # a loopback HTTP server, real time-outs and retries

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
HTTP_MODELS = [
    "ok", "ok-2", "err500", "err400", "rate429", "hang", "badjson", "cutstream", "empty",
    "arbiter", "err500-judge", "hang-judge",
]
# "Did not wait for the 60 s hang": far below 60 s, far above the expected
# few seconds, so a busy machine does not make the test flaky.
WALL_BOUND_S = 20
PROCESS_BOUND_S = 45


@pytest.fixture
def server(user_dir, monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with serve() as running:
        write_extra_openai_models(user_dir, running.base_url, HTTP_MODELS)
        yield running


def save(cli, name, *args):
    result = cli("consortium", "save", name, *args)
    assert result.exit_code == 0, result.output
    return result


def db(user_dir):
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    conn.row_factory = sqlite3.Row
    return conn


def only_run(user_dir):
    (run,) = db(user_dir).execute("select * from consortium_runs").fetchall()
    return run


def members_by_model(user_dir, run_id):
    rows = db(user_dir).execute(
        "select * from consortium_members where run_id = ? and role != 'arbiter' order by position", (run_id,)
    )
    return {row["model"]: row for row in rows}


def timed_llm(*args, **kwargs):
    started = time.monotonic()
    result = run_llm(*args, timeout=120, **kwargs)
    return result, time.monotonic() - started


def from_error_line(stderr):
    """stderr from the CLI's ``Error:`` line on (after any progress lines)."""
    lines = stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Error: "))
    return lines[first:]


# -- timeouts and retries over HTTP ----------------------------------------


def test_misbehaving_http_members_fail_with_their_reason_and_healthy_ones_answer(cli, server, user_dir):
    members = ["ok", "err500", "err400", "rate429", "hang", "badjson", "cutstream", "empty"]
    save(
        cli, "flaky-team", *[arg for model in members for arg in ("-m", model)],
        # 6 s: room for llm's OpenAI client's own retries of a 500 (1.5-3 s of
        # backoff) inside one attempt, even on a busy machine.
        "--arbiter", "arbiter", "--timeout", "6", "--retries", "1", "--max-iterations", "1",
    )

    result, elapsed = timed_llm("-m", "flaky-team", "What is 6 x 7?", "--no-log")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    assert "Traceback" not in result.stderr
    assert elapsed < PROCESS_BOUND_S  # the hang member's server sleeps 60 s
    run = only_run(user_dir)
    assert run["status"] == "success"
    # Bound: iterations x timeout x attempts (1 x 6 s x 2) plus backoff.
    assert run["duration_ms"] < WALL_BOUND_S * 1000
    rows = members_by_model(user_dir, run["id"])
    assert set(rows) == set(members)
    for healthy in ("ok", "rate429"):
        assert rows[healthy]["status"] == "ok"
        assert "<answer>42</answer>" in rows[healthy]["response"]
    errors = {model: rows[model]["error"] for model in members if rows[model]["error"]}
    assert set(errors) == {"err500", "err400", "hang", "badjson", "cutstream", "empty"}
    assert errors["hang"] == "timed out after 6 s (after 2 attempts)"
    assert errors["err500"].startswith("HTTP 500: simulated internal error")
    assert errors["err400"] == "HTTP 400: simulated bad request"
    assert errors["empty"] == "empty response"
    assert errors["badjson"].startswith("JSONDecodeError: ")
    assert "Connection error" in errors["cutstream"]
    for model, error in errors.items():
        assert rows[model]["response"] is None
        assert f"member {model}[0] failed: {error}" in result.stderr
    # 5xx, connection errors and time-outs are retried (2 attempts with
    # --retries 1); llm's OpenAI client also retries a 500 by itself inside
    # each attempt (3 requests), so the server sees 2 x 3.
    assert rows["err500"]["attempts"] == rows["hang"]["attempts"] == 2
    assert len(server.requests_for("err500")) == 6
    assert len(server.requests_for("hang")) == 2
    # A 400 is final: one attempt, one request on the wire. So are an empty
    # answer and a body that is not JSON.
    assert rows["err400"]["attempts"] == rows["empty"]["attempts"] == 1
    assert len(server.requests_for("err400")) == 1
    assert rows["badjson"]["attempts"] == 1
    # A 429 is retried after its Retry-After (1 s) and then succeeds.
    first, second = server.requests_for("rate429")[:2]  # a busy machine may time an attempt out
    assert second["time"] - first["time"] >= 0.9


def test_llm_exits_while_a_timed_out_http_call_is_still_hanging(cli, server, user_dir):
    save(
        cli, "hang-team", "-m", "ok", "-m", "hang", "--arbiter", "arbiter",
        "--timeout", "50", "--retries", "2", "--max-iterations", "1",
    )

    # -o timeout / -o retries apply to this call only. (8 s, not less: on a
    # loaded machine a healthy first call can take seconds.)
    result, elapsed = timed_llm("-m", "hang-team", "q", "--no-log", "-o", "timeout", "8", "-o", "retries", "0")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    # The server is still sleeping on the hang request (60 s): the process
    # did not wait for that abandoned worker thread to finish.
    assert elapsed < PROCESS_BOUND_S
    assert len(server.requests_for("hang")) == 1
    rows = members_by_model(user_dir, only_run(user_dir)["id"])
    assert rows["hang"]["error"] == "timed out after 8 s"
    assert rows["hang"]["attempts"] == 1


@pytest.mark.parametrize(
    "arbiter, timeout, reason",
    [
        # llm's OpenAI client retries a 500 twice by itself, backing off 1.5-3 s
        # inside one attempt: the attempt needs room for that, even on a busy machine.
        ("err500-judge", "8", "HTTP 500: simulated internal error (after 2 attempts)"),
        ("hang-judge", "2", "timed out after 2 s (after 2 attempts)"),
    ],
)
def test_arbiter_failure_is_retried_then_fails_the_run_in_one_line(cli, server, user_dir, arbiter, timeout, reason):
    save(
        cli, "judged", "-m", "ok", "-m", "ok-2", "--arbiter", arbiter,
        "--timeout", timeout, "--retries", "1", "--max-iterations", "1",
    )

    result, elapsed = timed_llm("-m", "judged", "q", "--no-log")

    assert result.returncode == 1
    assert result.stdout.strip() == ""
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"Error: Arbiter {arbiter} failed: {reason}"
    ]
    assert elapsed < PROCESS_BOUND_S
    run = only_run(user_dir)
    assert run["status"] == "failed"
    assert arbiter in run["error"]
    decision = db(user_dir).execute("select * from arbiter_decisions").fetchone()
    assert decision["attempts"] == 2
    assert decision["error"] == reason
    # What the members said is kept.
    rows = members_by_model(user_dir, run["id"])
    assert all(row["status"] == "ok" and row["response"] for row in rows.values())


# -- our own retry logic, with a model that reports HTTP details ------------


class HTTPStatusError(Exception):
    """Shaped like openai's/httpx's status errors: ``status_code`` and a
    ``response`` with headers."""

    def __init__(self, status, headers=None):
        super().__init__(f"server said {status}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers=headers or {})


class ScriptedFailures(llm.Model):
    """Raises the queued exceptions one call at a time, then answers."""

    can_stream = False

    def __init__(self, model_id, failures):
        self.model_id = model_id
        self.failures = list(failures)
        self.call_times = []

    def execute(self, prompt, stream, response, conversation=None):
        self.call_times.append(time.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        yield "<answer>42</answer><confidence>0.9</confidence>"


class Register:
    def __init__(self, *models):
        self.models = models

    @llm.hookimpl
    def register_models(self, register):
        for model in self.models:
            register(model)


@pytest.fixture
def scripted():
    registered = []

    def add(*models):
        plugin = Register(*models)
        pm.register(plugin, name=f"undo-scripted-{len(registered)}")
        registered.append(f"undo-scripted-{len(registered)}")
        return models

    yield add
    for name in registered:
        pm.unregister(name=name)


def run_one_member(model, tmp_path, **settings):
    orchestrator = create_consortium(
        [model.model_id], store=Store(tmp_path / "c.db"), max_iterations=1, **settings
    )
    result = orchestrator.orchestrate("q")
    (member,) = result["iterations"][0]["model_responses"]
    return member, orchestrator.consortium_id


def test_our_retry_waits_for_retry_after_then_succeeds(scripted, tmp_path):
    (model,) = scripted(ScriptedFailures("limited", [HTTPStatusError(429, {"retry-after": "1"})]))

    member, _ = run_one_member(model, tmp_path, timeout=5, retries=2)

    assert member["response"].startswith("<answer>42")
    assert len(model.call_times) == 2
    assert model.call_times[1] - model.call_times[0] >= 1.0


@pytest.mark.parametrize(
    "failures, calls, error",
    [
        ([HTTPStatusError(400)], 1, "HTTP 400: server said 400"),
        ([HTTPStatusError(401)], 1, "HTTP 401: server said 401"),
        ([HTTPStatusError(404)], 1, "HTTP 404: server said 404"),
        ([HTTPStatusError(503)] * 3, 3, "HTTP 503: server said 503 (after 3 attempts)"),
        ([HTTPStatusError(408)] * 3, 3, "HTTP 408: server said 408 (after 3 attempts)"),
        ([ConnectionResetError("reset by peer")] * 3, 3, "ConnectionResetError: reset by peer (after 3 attempts)"),
        (
            [HTTPStatusError(429, {"retry-after": "3600"})],
            1,
            "HTTP 429: server said 429 (Retry-After 3600 s is longer than the 5 s timeout)",
        ),
    ],
)
def test_retry_classification(scripted, tmp_path, failures, calls, error):
    (model,) = scripted(ScriptedFailures("classified", failures))

    with pytest.raises(llm.ModelError) as info:
        run_one_member(model, tmp_path, timeout=5, retries=2)

    assert len(model.call_times) == calls
    assert f"classified[0]: {error}" in str(info.value)
    row = Store(tmp_path / "c.db").query("select error, attempts from consortium_members")[0]
    assert row == {"error": error, "attempts": calls}


def test_retries_recover_from_a_transient_failure(scripted, tmp_path):
    (model,) = scripted(ScriptedFailures("flaky", [HTTPStatusError(502)]))

    member, _ = run_one_member(model, tmp_path, timeout=5, retries=1)

    assert member["response"].startswith("<answer>42")
    assert len(model.call_times) == 2


# -- partial failure -------------------------------------------------------

PARTIAL = {
    "good": {"answer": "42"},
    "quota": {"fail": "quota exceeded"},
    "overloaded": {"fail": "model overloaded"},
    "judge": {"arbiter": True},
}


def test_min_responses_not_met_fails_the_run_listing_each_member_error(user_dir, cli, fakes):
    write_fake_spec(user_dir, PARTIAL)  # for the llm subprocess
    with fakes(PARTIAL):
        save(
            cli, "strict", "-m", "good", "-m", "quota", "-m", "overloaded",
            "--arbiter", "judge", "--min-responses", "2",
        )

    result = run_llm("-m", "strict", "q", "--no-log")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert from_error_line(result.stderr) == [
        "Error: Only 1 of 3 members answered in iteration 1 (at least 2 needed):",
        "  quota[0]: quota exceeded",
        "  overloaded[0]: model overloaded",
    ]
    run = only_run(user_dir)
    assert run["status"] == "failed"
    rows = members_by_model(user_dir, run["id"])
    assert "<answer>42</answer>" in rows["good"]["response"]
    assert rows["quota"]["error"] == "quota exceeded"


def test_enough_responses_go_on_and_run_info_shows_the_failures(user_dir, cli, fakes):
    with fakes(PARTIAL):
        save(cli, "tolerant", "-m", "good", "-m", "quota", "-m", "overloaded", "--arbiter", "judge")
        result = cli("-m", "tolerant", "q")
        info = cli("consortium", "run-info")
        info_json = json.loads(cli("consortium", "run-info", "--json").stdout)
    assert result.exit_code == 0
    assert result.stdout.strip() == "42"
    assert "quota exceeded" in info.stdout and "model overloaded" in info.stdout
    errors = {member["model"]: member["error"] for member in info_json["members"]}
    assert errors == {"good": None, "quota": "quota exceeded", "overloaded": "model overloaded"}


def test_all_http_members_failing_raises_model_error_with_one_line_each(cli, server, user_dir):
    save(
        cli, "doomed", "-m", "err400", "-m", "empty", "-m", "badjson",
        "--arbiter", "arbiter", "--timeout", "3", "--retries", "0",
    )

    result, _ = timed_llm("-m", "doomed", "q", "--no-log")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = from_error_line(result.stderr)
    assert lines[0] == "Error: Only 0 of 3 members answered in iteration 1 (at least 1 needed):"
    assert lines[1] == "  err400[0]: HTTP 400: simulated bad request"
    assert lines[2] == "  empty[0]: empty response"
    assert lines[3].startswith("  badjson[0]: JSONDecodeError: ")
    assert len(lines) == 4
    assert only_run(user_dir)["status"] == "failed"


def test_api_raises_model_error_naming_every_failed_member(fakes, tmp_path):
    with fakes(PARTIAL):
        orchestrator = create_consortium(
            ["quota", "overloaded:2"], arbiter="judge", store=Store(tmp_path / "c.db")
        )
        with pytest.raises(llm.ModelError) as info:
            orchestrator.orchestrate("q")
    assert str(info.value).splitlines()[1:] == [
        "  quota[0]: quota exceeded",
        "  overloaded[0], overloaded[1]: model overloaded",  # one line per distinct error
    ]
