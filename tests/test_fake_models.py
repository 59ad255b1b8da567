"""Tests for the offline fake-model plugin in tests/fake_models/."""

import asyncio
import json
import os
import subprocess
import threading
import time
from importlib import metadata

import llm
import pytest

from conftest import LLM_BIN
from conftest import fake_models as fm
from conftest import registered_fakes as fakes


@pytest.fixture
def isolated_user_dir(user_dir):
    """conftest's per-test LLM_USER_PATH (spec and log variables cleared)."""
    return user_dir


def ask(model_id, prompt="hi", **kwargs):
    kwargs.setdefault("stream", False)
    return llm.get_model(model_id).prompt(prompt, **kwargs).text()


# -- replies ----------------------------------------------------------------


def test_reply_placeholders():
    with fakes({"models": {"fake-r": {"reply": "n={n} p={prompt} s={system}"}}}):
        assert ask("fake-r", "hello", system="sys") == "n=1 p=hello s=sys"
        assert ask("fake-r", "again") == "n=2 p=again s="


def test_placeholders_are_single_pass():
    # A prompt that itself contains "{n}" is inserted verbatim.
    with fakes({"fake-r": {"reply": "[{prompt}] {model}"}}):  # bare mapping
        assert ask("fake-r", "literal {n}") == "[literal {n}] fake-r"


def test_replies_in_turn():
    with fakes({"models": {"fake-r": {"replies": ["a{n}", "b{n}"]}}}):
        assert [ask("fake-r") for _ in range(3)] == ["a1", "b2", "a3"]


def test_string_spec_is_reply_shorthand():
    with fakes({"models": {"fake-s": "plain"}}):
        assert ask("fake-s") == "plain"


def test_answer_shorthand_defaults():
    with fakes({"models": {"fake-a": {"answer": "Paris"}}}):
        assert ask("fake-a") == (
            "<thinking>Reasoning about it.</thinking>\n"
            "<answer>Paris</answer>\n"
            "<confidence>0.8</confidence>"
        )


def test_answers_in_turn_with_confidence_and_thinking():
    spec = {"answers": ["x", "y"], "confidence": [0.1, 0.9], "thinking": "hmm {n}"}
    with fakes({"models": {"fake-a": spec}}):
        first, second = ask("fake-a"), ask("fake-a")
    assert first == "<thinking>hmm 1</thinking>\n<answer>x</answer>\n<confidence>0.1</confidence>"
    assert "<answer>y</answer>" in second and "<confidence>0.9</confidence>" in second


def test_no_keys_gives_default_answer():
    with fakes({"models": {"fake-d": {}}}):
        assert "<answer>42</answer>" in ask("fake-d")


def test_echo_renders_messages():
    with fakes({"models": {"fake-e": {"echo": True}}}):
        assert ask("fake-e", "hello", system="be brief") == (
            "[system] be brief\n[user] hello"
        )
        conversation = llm.get_model("fake-e").conversation()
        conversation.prompt("first", stream=False).text()
        text = conversation.prompt("second", stream=False).text()
    assert text == "[user] first\n[assistant] [user] first\n[user] second"


def test_echo_with_explicit_messages():
    messages = [llm.parts.system("S"), llm.parts.user("u1"), llm.parts.assistant("a1")]
    with fakes({"models": {"fake-e": {"echo": True}}}):
        text = llm.get_model("fake-e").prompt("u2", messages=messages, stream=False).text()
        call = fm.ScriptedModel.calls["fake-e"][-1]
    assert text == "[system] S\n[user] u1\n[assistant] a1\n[user] u2"
    assert call["prompt"] == "u2"
    assert call["system"] == "S"


# -- arbiter ----------------------------------------------------------------

ARBITER_PROMPT = """<original_prompt>q</original_prompt>
<model_responses>
<model_response model="m1" id="11"><answer>Paris</answer></model_response>
<model_response model="m2" id="12"><answer> Lyon </answer></model_response>
<model_response model="m3" id="13"><answer>Paris</answer></model_response>
</model_responses>"""


def test_arbiter_majority():
    with fakes({"models": {"fake-arb": {"arbiter": True}}}):
        text = ask("fake-arb", ARBITER_PROMPT)
    assert text == (
        "<confidence>0.667</confidence>\n"
        "<needs_iteration>false</needs_iteration>\n"
        "<analysis>3 responses; 2 agree.</analysis>\n"
        "<dissent>12: Lyon</dissent>\n"
        "<refinement_areas></refinement_areas>\n"
        '<ranking><rank position="1">11</rank><rank position="2">13</rank>'
        '<rank position="3">12</rank></ranking>\n'
        "<synthesis>Paris</synthesis>"
    )


def test_arbiter_tie_first_seen_and_overrides():
    prompt = (
        '<model_response id="a"><answer>B</answer></model_response>'
        '<model_response id="b"><answer>A</answer></model_response>'
    )
    spec = {"arbiter": True, "arbiter_confidence": [0.3, 0.95], "needs_iteration": [True, False]}
    with fakes({"models": {"fake-arb": spec}}):
        first, second = ask("fake-arb", prompt), ask("fake-arb", prompt)
    assert "<synthesis>B</synthesis>" in first
    assert "<confidence>0.3</confidence>" in first
    assert "<needs_iteration>true</needs_iteration>" in first
    assert '<rank position="1">a</rank><rank position="2">b</rank>' in first
    assert "<confidence>0.95</confidence>" in second
    assert "<needs_iteration>false</needs_iteration>" in second


def test_arbiter_without_answers():
    with fakes({"models": {"fake-arb": {"arbiter": True}}}):
        text = ask("fake-arb", "nothing to judge")
    assert "<confidence>0.0</confidence>" in text
    assert "<synthesis></synthesis>" in text
    assert "<ranking></ranking>" in text


def test_arbiter_votes_once_per_block():
    # The consortium's format: extra attributes, answers outside the blocks
    # (e.g. in the iteration history) and a member repeating its answer.
    prompt = (
        "<iteration_history><answer>old</answer><answer>old</answer></iteration_history>\n"
        '<model_response id="m1-1" confidence="0.9">\n<answer>x</answer> <answer>y</answer>\n</model_response>\n'
        '<model_response id="m2-1">\nno tags at all\n</model_response>\n'
        '<model_response id="m3-1" confidence="0.5">\n<answer>y</answer>\n</model_response>'
    )
    text = fm.arbiter_reply(prompt)
    assert "<analysis>2 responses; 2 agree.</analysis>" in text
    assert "<confidence>1.0</confidence>" in text
    assert "<synthesis>y</synthesis>" in text
    assert '<rank position="1">m1-1</rank><rank position="2">m3-1</rank><rank position="3">m2-1</rank>' in text


def test_arbiter_reply_helper_pairs_ids_without_blocks():
    text = fm.arbiter_reply('<model_response id="x"> <model_response id="y"> '
                            "<answer>1</answer><answer>2</answer><answer>2</answer>")
    assert '<rank position="1">y</rank><rank position="2">x</rank>' in text
    assert "<synthesis>2</synthesis>" in text


# -- timing and streaming --------------------------------------------------


def test_latency():
    with fakes({"models": {"fake-l": {"latency": 0.3, "reply": "ok"}}}):
        start = time.monotonic()
        assert ask("fake-l") == "ok"
        assert time.monotonic() - start >= 0.3


def test_streaming_chunks_and_delay():
    reply = "abcdefghijklmnopqrstu"  # 21 chars -> 3 chunks
    with fakes({"models": {"fake-s": {"reply": reply, "chunk_delay": 0.1}}}):
        model = llm.get_model("fake-s")
        assert model.can_stream is True
        start = time.monotonic()
        chunks = list(model.prompt("hi", stream=True))
        elapsed = time.monotonic() - start
        assert chunks == ["abcdefgh", "ijklmnop", "qrstu"]
        assert elapsed >= 0.2
        assert list(model.prompt("hi", stream=False)) == [reply]
        calls = fm.ScriptedModel.calls["fake-s"]
    assert [c["stream"] for c in calls] == [True, False]


def test_can_stream_false():
    with fakes({"models": {"fake-ns": {"reply": "abcdefghijklmnop", "can_stream": False}}}):
        model = llm.get_model("fake-ns")
        assert model.can_stream is False
        assert list(model.prompt("hi", stream=True)) == ["abcdefghijklmnop"]


# -- failures ---------------------------------------------------------------


def test_fail():
    with fakes({"models": {"fake-f": {"fail": "boom"}}}):
        with pytest.raises(llm.ModelError, match="boom"):
            ask("fake-f")


def test_fail_times():
    with fakes({"models": {"fake-f": {"fail": "flaky", "fail_times": 2, "reply": "ok {n}"}}}):
        for _ in range(2):
            with pytest.raises(llm.ModelError, match="flaky"):
                ask("fake-f")
        assert ask("fake-f") == "ok 3"
        assert len(fm.ScriptedModel.calls["fake-f"]) == 3


def test_empty():
    with fakes({"models": {"fake-empty": {"empty": True}}}):
        assert ask("fake-empty") == ""


def test_hang_raises_after_timeout():
    with fakes({"models": {"fake-h": {"hang": 0.2}}}):
        start = time.monotonic()
        with pytest.raises(llm.ModelError, match="hung"):
            ask("fake-h")
        assert time.monotonic() - start >= 0.2


def test_stop_event_cuts_hang_short():
    with fakes({"models": {"fake-h": {"hang": 30}}}):
        timer = threading.Timer(0.2, fm.STOP.set)
        timer.start()
        start = time.monotonic()
        try:
            with pytest.raises(llm.ModelError, match="hung"):
                ask("fake-h")
        finally:
            timer.cancel()
        assert time.monotonic() - start < 5


# -- usage, options, attachments, records ----------------------------------


def test_usage_explicit_and_default():
    with fakes({"models": {"fake-u": {"usage": [7, 3]}, "fake-w": {"reply": "one two three"}}}):
        response = llm.get_model("fake-u").prompt("hi", stream=False)
        response.text()
        assert (response.input_tokens, response.output_tokens) == (7, 3)
        response = llm.get_model("fake-w").prompt("a b c d", system="s t", stream=False)
        response.text()
        assert (response.input_tokens, response.output_tokens) == (6, 3)


def test_calls_record_options_and_attachments():
    attachment = llm.Attachment(type="image/png", content=b"\x89PNG fake")
    with fakes({"models": {"fake-o": {"reply": "ok"}}}):
        llm.get_model("fake-o").prompt(
            "look", attachments=[attachment], temperature=0.5, custom_opt="x", stream=False
        ).text()
        (call,) = fm.ScriptedModel.calls["fake-o"]
    assert call["model"] == "fake-o"
    assert call["n"] == 1
    assert call["prompt"] == "look"
    assert call["options"] == {"temperature": 0.5, "custom_opt": "x"}
    assert call["attachments"] == ["image/png"]
    assert call["messages"] == [{"role": "user", "text": "look"}]
    assert call["pid"] == os.getpid()


def test_new_fakemodels_resets_counters():
    with fakes({"models": {"fake-c": {"reply": "{n}"}}}):
        assert ask("fake-c") == "1"
        assert ask("fake-c") == "2"
    with fakes({"models": {"fake-c": {"reply": "{n}"}}}):
        assert ask("fake-c") == "1"


def test_log_file_from_threads(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(fm.LOG_ENV, str(log))
    with fakes({"models": {"fake-t": {"reply": "ok", "latency": 0.05}}}):
        model = llm.get_model("fake-t")
        threads = [
            threading.Thread(target=lambda i=i: model.prompt(f"q{i}", stream=False).text())
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    records = fm.read_log(log)
    assert len(records) == 8
    assert sorted(r["n"] for r in records) == list(range(1, 9))
    assert sorted(r["prompt"] for r in records) == [f"q{i}" for i in range(8)]
    assert set(records[0]) >= {
        "model", "n", "prompt", "system", "messages", "stream", "options",
        "attachments", "pid",
    }


def test_async_model():
    with fakes({"models": {"fake-async": {"reply": "async {prompt}", "latency": 0.05}}}):
        model = llm.get_async_model("fake-async")

        async def run():
            return await model.prompt("yo").text()

        assert asyncio.run(run()) == "async yo"


def test_aliases():
    with fakes({"models": {"fake-al": {"reply": "ok", "aliases": ["fa"]}}}):
        assert ask("fa") == "ok"


# -- embeddings -------------------------------------------------------------


def test_hash_embedding_model():
    with fakes({"embedding_models": {"fake-embed": {"dims": 16}}}):
        model = llm.get_embedding_model("fake-embed")
        assert model.supports_text and model.batch_size == 32
        vector = model.embed("Hello hello WORLD")
        assert len(vector) == 16
        assert abs(sum(v * v for v in vector) - 1.0) < 1e-9
        assert vector == model.embed("world hello, hello!")  # bag of words
        assert model.embed("!!!") == [0.0] * 16
        assert vector == fm.hash_embedding("hello hello world", 16)


def test_default_dims_and_batching():
    with fakes({"embedding_models": {"fake-embed": {}}}):
        model = llm.get_embedding_model("fake-embed")
        vectors = list(model.embed_multi([f"text {i}" for i in range(70)]))
    assert len(vectors) == 70 and len(vectors[0]) == 64
    assert fm.HashEmbedding.batches == [32, 32, 6]
    assert fm.HashEmbedding.batches_by_model == {"fake-embed": [32, 32, 6]}


def test_embedding_fail():
    with fakes({"embedding_models": {"fake-embed": {"fail": "no vectors"}}}):
        with pytest.raises(llm.ModelError, match="no vectors"):
            llm.get_embedding_model("fake-embed").embed("x")


# -- spec loading -----------------------------------------------------------


def test_invalid_specs_raise_in_process():
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        fm.FakeModels({"models": {"x": {"bogus": 1}}})
    with pytest.raises(ValueError, match="'latency' must be"):
        fm.FakeModels({"models": {"x": {"latency": "slow"}}})


def _collect(hook):
    registered = []
    hook(lambda model, *args, **kwargs: registered.append(model.model_id))
    return registered


def test_module_hooks_read_user_dir_file(isolated_user_dir):
    assert _collect(fm.register_models) == []
    (isolated_user_dir / "fake_models.json").write_text(
        json.dumps({"models": {"file-a": {}}, "embedding_models": {"file-e": {}}})
    )
    assert _collect(fm.register_models) == ["file-a"]
    assert _collect(fm.register_embedding_models) == ["file-e"]


def test_module_hooks_prefer_env_file(tmp_path, monkeypatch, isolated_user_dir):
    (isolated_user_dir / "fake_models.json").write_text('{"models": {"file-a": {}}}')
    env_file = tmp_path / "elsewhere.json"
    env_file.write_text('{"models": {"env-a": {"reply": "from env"}}}')
    monkeypatch.setenv(fm.SPEC_ENV, str(env_file))
    assert _collect(fm.register_models) == ["env-a"]


def test_malformed_file_warns_once(isolated_user_dir, capsys):
    (isolated_user_dir / "fake_models.json").write_text('{"models": {"x": {"reply": 5}}}')
    assert _collect(fm.register_models) == []
    assert _collect(fm.register_embedding_models) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed" in err


# -- through the installed plugin and the real CLI --------------------------


def _cli_env(user_dir, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env["LLM_USER_PATH"] = str(user_dir)
    env["LLM_LOAD_PLUGINS"] = "llm-consortium-fake-models"
    env.update(extra)
    return env


def _require_installed():
    try:
        metadata.distribution("llm-consortium-fake-models")
    except metadata.PackageNotFoundError:
        pytest.fail("run: .venv/bin/pip install -e tests/fake_models")


@pytest.mark.slow
def test_cli_uses_spec_file(isolated_user_dir, tmp_path):
    _require_installed()
    log = tmp_path / "log.jsonl"
    (isolated_user_dir / "fake_models.json").write_text(
        json.dumps({"models": {"fake-cli": {"reply": "cli says {prompt} #{n}"}}})
    )
    env = _cli_env(isolated_user_dir, LLM_CONSORTIUM_FAKE_LOG=str(log))
    for _ in range(2):
        result = subprocess.run(
            [str(LLM_BIN), "-m", "fake-cli", "hi", "--no-log"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "cli says hi #1"  # a fresh process each time
    records = fm.read_log(log)
    assert [r["prompt"] for r in records] == ["hi", "hi"]
    assert len({r["pid"] for r in records}) == 2
    assert all(r["stream"] for r in records)


@pytest.mark.slow
def test_cli_env_spec_and_malformed_warning(isolated_user_dir, tmp_path):
    _require_installed()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"models": {"fake-env": {"answer": "9"}}}))
    env = _cli_env(isolated_user_dir, LLM_CONSORTIUM_FAKE_MODELS=str(spec))
    result = subprocess.run(
        [str(LLM_BIN), "-m", "fake-env", "hi", "--no-log", "--no-stream"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "<answer>9</answer>" in result.stdout

    spec.write_text("{not json")
    result = subprocess.run(
        [str(LLM_BIN), "models"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stderr.count("llm-consortium-fake-models:") == 1
