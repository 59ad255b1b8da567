"""`llm consortium batch`: output rows and order, input formats, resume
without sending a prompt twice, failures recorded, --fail-fast, bad input.
In-process through the real CLI; the Ctrl-C test is in test_batch_interrupt.py."""

from __future__ import annotations

import json

import pytest

from conftest import db_rows, fake_models

RESULT_KEYS = [
    "id", "prompt", "answer", "model", "confidence", "run_id",
    "input_tokens", "output_tokens", "duration_s", "error",
]
MODELS = {
    "echo-a": {"reply": "A:{prompt}", "latency": 0.01},
    "bad": {"fail": "quota exceeded"},
    "flaky": {"reply": "ok {prompt}", "fail": "temporary", "fail_times": 1},
    "m1": {"answer": "7"},
    "m2": {"answer": "7"},
    "arb": {"arbiter": True},
}


def calls(model_id):
    return [call["prompt"] for call in fake_models.ScriptedModel.calls.get(model_id, [])]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_each_row_gives_one_line_in_input_order_with_the_documented_keys(cli, fakes, tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": f"r{n}", "prompt": f"p{n}", "topic": "t"} for n in range(1, 21)]
        + [{"prompt": "no id here", "answer": "gold"}],
    )
    with fakes(MODELS):
        result = cli("consortium", "batch", str(source), "-m", "echo-a", "--concurrency", "6")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["id"] for row in rows] == [f"r{n}" for n in range(1, 21)] + [21]
    first = rows[0]
    assert list(first)[: len(RESULT_KEYS)] == RESULT_KEYS
    assert first["prompt"] == "p1" and first["answer"] == "A:p1" and first["model"] == "echo-a"
    assert first["confidence"] is None and first["run_id"] is None and first["error"] is None
    assert (first["input_tokens"], first["output_tokens"]) == (1, 1)  # the fake counts words
    assert first["duration_s"] >= 0.01
    assert first["topic"] == "t"  # other input fields are kept
    # An input field named like a result key is kept under input_NAME.
    assert rows[-1]["answer"] == "A:no id here" and rows[-1]["input_answer"] == "gold"
    assert sorted(calls("echo-a")) == sorted([f"p{n}" for n in range(1, 21)] + ["no id here"])


def test_a_consortium_row_carries_its_confidence_and_run_id(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "what?"}])
    out = tmp_path / "out.jsonl"
    with fakes(MODELS):
        cli("consortium", "save", "duo", "-m", "m1", "-m", "m2", "--arbiter", "arb")
        result = cli("consortium", "batch", str(source), "-m", "duo", "-o", str(out))
    assert result.exit_code == 0, result.output
    (row,) = lines(out)
    assert row["answer"] == "7" and row["model"] == "duo" and row["confidence"] == 1.0
    (run,) = db_rows(
        __import__("llm").user_dir(), "select id, status, user_prompt from consortium_runs"
    )
    assert row["run_id"] == run["id"] and run["status"] == "success"
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0


def test_csv_text_and_stdin_inputs(cli, fakes, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,prompt,note\na,"first, with comma",x\nb,second,y\n')
    text_file = tmp_path / "in.txt"
    text_file.write_text("one\n\ntwo\n")
    with fakes(MODELS):
        from_csv = cli("consortium", "batch", str(csv_file), "-m", "echo-a")
        from_text = cli("consortium", "batch", str(text_file), "-m", "echo-a")
        from_stdin = cli("consortium", "batch", "-", "-m", "echo-a", input='{"prompt": "s"}\n')
        piped_text = cli("consortium", "batch", "-", "-m", "echo-a", input="plain\n")
    csv_rows = [json.loads(line) for line in from_csv.stdout.splitlines()]
    assert [(r["id"], r["answer"], r["note"]) for r in csv_rows] == [
        ("a", "A:first, with comma", "x"), ("b", "A:second", "y"),
    ]
    text_rows = [json.loads(line) for line in from_text.stdout.splitlines()]
    assert [(r["id"], r["answer"]) for r in text_rows] == [(1, "A:one"), (2, "A:two")]
    assert json.loads(from_stdin.stdout)["answer"] == "A:s"
    assert json.loads(piped_text.stdout)["answer"] == "A:plain"


def test_rerunning_with_the_same_output_sends_no_prompt_twice(cli, fakes, tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET")  # for the summary line
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"p{n}"} for n in range(1, 7)])
    out = tmp_path / "out.jsonl"
    with fakes(MODELS):
        assert cli("consortium", "batch", str(source), "-m", "echo-a", "-o", str(out)).exit_code == 0
        # A crash after three rows: the fourth line was cut off mid-write.
        text = out.read_text().splitlines(keepends=True)
        out.write_text("".join(text[:3]) + text[3][:12])
        fake_models.ScriptedModel.reset(["echo-a"])
        result = cli("consortium", "batch", str(source), "-m", "echo-a", "-o", str(out))
        assert result.exit_code == 0, result.output
        assert sorted(calls("echo-a")) == ["p4", "p5", "p6"]
        again = cli("consortium", "batch", str(source), "-m", "echo-a", "-o", str(out))
    assert calls("echo-a") == ["p4", "p5", "p6"]  # nothing sent the third time
    assert "6 already answered" in again.stderr
    rows = lines(out)
    assert sorted(row["id"] for row in rows) == [1, 2, 3, 4, 5, 6]
    assert all(row["answer"] == f"A:p{row['id']}" for row in rows)


def test_a_failing_row_is_recorded_and_retried_on_resume(cli, fakes, tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET")  # for the summary line
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": n, "prompt": f"p{n}"} for n in (1, 2, 3)])
    out = tmp_path / "out.jsonl"
    with fakes(MODELS):
        first = cli("consortium", "batch", str(source), "-m", "flaky", "-o", str(out),
                    "--concurrency", "1")
        assert first.exit_code == 0, first.output
        assert [(row["id"], row["error"], row["answer"]) for row in lines(out)] == [
            (1, "temporary", None), (2, None, "ok p2"), (3, None, "ok p3"),
        ]
        assert "2 answered, 1 failed" in first.stderr
        second = cli("consortium", "batch", str(source), "-m", "flaky", "-o", str(out))
    assert second.exit_code == 0
    assert calls("flaky") == ["p1", "p2", "p3", "p1"]  # only the failed row again
    assert sorted((row["id"], row["error"], row["answer"]) for row in lines(out)) == [
        (1, None, "ok p1"), (2, None, "ok p2"), (3, None, "ok p3"),
    ]


def test_fail_fast_stops_at_the_first_failure(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{n}"} for n in range(1, 30)])
    out = tmp_path / "out.jsonl"
    with fakes(MODELS):
        result = cli("consortium", "batch", str(source), "-m", "bad", "-o", str(out),
                     "--fail-fast", "--concurrency", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Row 1 failed: quota exceeded (stopped by --fail-fast")
    assert calls("bad") == ["p1"]  # nothing started after it
    assert [row["error"] for row in lines(out)] == ["quota exceeded"] * len(lines(out))


def test_without_fail_fast_every_failing_row_is_recorded(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{n}"} for n in range(1, 6)])
    with fakes(MODELS):
        result = cli("consortium", "batch", str(source), "-m", "bad")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["id"], row["error"]) for row in rows] == [(n, "quota exceeded") for n in range(1, 6)]


@pytest.mark.parametrize(
    "content, name, message",
    [
        ('{"prompt": "a"}\nnot json\n', "in.jsonl", "in.jsonl line 2: not valid JSON"),
        ('{"text": "a"}\n', "in.jsonl", "in.jsonl line 1: no 'prompt' text"),
        ('{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}\n', "in.jsonl",
         "row 2: the id '1' is used by an earlier row"),
        ("question,answer\nx,y\n", "in.csv", "in.csv: no 'prompt' column (columns: question, answer)"),
        ('{"id": [1], "prompt": "a"}\n', "in.jsonl", "in.jsonl line 1: 'id' must be a string or a number"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_sent(cli, fakes, tmp_path, content, name, message):
    source = tmp_path / name
    source.write_text(content)
    with fakes(MODELS):
        result = cli("consortium", "batch", str(source), "-m", "echo-a")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert calls("echo-a") == [] and result.stdout == ""


def test_unknown_model_and_missing_file_are_usage_errors(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])
    with fakes(MODELS):
        unknown = cli("consortium", "batch", str(source), "-m", "nope")
        missing = cli("consortium", "batch", str(tmp_path / "missing.jsonl"), "-m", "echo-a")
        zero = cli("consortium", "batch", str(source), "-m", "echo-a", "--concurrency", "0")
    assert unknown.exit_code == 2 and "Unknown model: nope" in unknown.stderr
    assert missing.exit_code == 2 and "Cannot read" in missing.stderr
    assert zero.exit_code == 2 and "--concurrency" in zero.stderr
    assert "Traceback" not in unknown.stderr + missing.stderr + zero.stderr


def test_system_prompt_from_the_row_or_the_option(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a", "system": "row system"}, {"prompt": "b"}])
    with fakes({"sys": {"reply": "[{system}] {prompt}"}}):
        result = cli("consortium", "batch", str(source), "-m", "sys", "--system", "default system")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["answer"] for row in rows] == ["[row system] a", "[default system] b"]


def test_progress_is_drawn_only_on_a_terminal_and_only_on_stderr(monkeypatch):
    import io

    from llm_consortium.batch_progress import BatchProgress
    from llm_consortium.progress import Reporter

    monkeypatch.delenv("LLM_CONSORTIUM_QUIET")
    monkeypatch.setenv("TERM", "xterm")
    assert BatchProgress(3, "batch", stream=io.StringIO()).live is False  # not a terminal

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = BatchProgress(3, "batch · m", stream=screen)
    assert bar.live is True
    with bar:
        # consortium runs inside the batch draw no display of their own
        assert Reporter(stream=screen, live=True)._claim_display() is False
        bar.advance(True)
        bar.advance(False)
        bar._bar.refresh()
        drawn = screen.getvalue()
    assert "batch · m" in drawn and "2/3" in drawn and "1 failed" in drawn
    after = Reporter(stream=screen, live=True)
    assert after._claim_display() is True  # released afterwards
    after._release_display()
    monkeypatch.setenv("LLM_CONSORTIUM_QUIET", "1")
    assert BatchProgress(3, "batch", stream=screen).live is False


def test_a_missing_key_stops_the_batch_with_one_line(cli, tmp_path, monkeypatch):
    import llm
    from llm.plugins import pm

    class Keyed(llm.KeyModel):
        model_id = "keyed"
        needs_key = "keyed-service"
        key_env_var = "KEYED_SERVICE_KEY"

        def execute(self, prompt, stream, response, conversation, key):
            yield "never"

    class Plugin:
        @llm.hookimpl
        def register_models(self, register):
            register(Keyed())

    monkeypatch.delenv("KEYED_SERVICE_KEY", raising=False)
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{n}"} for n in range(1, 50)])
    out = tmp_path / "out.jsonl"
    pm.register(Plugin(), name="undo-keyed")
    try:
        result = cli("consortium", "batch", str(source), "-m", "keyed", "-o", str(out))
    finally:
        pm.unregister(name="undo-keyed")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: keyed: ") and "key" in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1
    assert out.read_text() == ""  # no row is recorded as failed: rerun once the key is set


def test_an_output_file_of_another_model_is_not_taken_for_answers(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])
    out = tmp_path / "out.jsonl"
    with fakes(MODELS):
        cli("consortium", "batch", str(source), "-m", "echo-a", "-o", str(out))
        before = out.read_text()
        result = cli("consortium", "batch", str(source), "-m", "flaky", "-o", str(out))
    assert result.exit_code == 2
    assert f"{out} holds answers from the model 'echo-a', not 'flaky'" in result.stderr
    assert out.read_text() == before and calls("flaky") == []


def test_options_reach_every_call_and_a_consortium_takes_its_own(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    specs = {**MODELS, "arb": {"arbiter": True, "arbiter_confidence": 0.3}}  # always wants more
    with fakes(specs):
        plain = cli("consortium", "batch", str(source), "-m", "echo-a",
                    "--option", "temperature", "0.2", "--option", "max_tokens", "5")
        cli("consortium", "save", "duo", "-m", "m1", "-m", "m2", "--arbiter", "arb", "--max-iterations", "3")
        team = cli("consortium", "batch", str(source), "-m", "duo", "--option", "max_iterations", "1")
    assert plain.exit_code == 0, plain.output
    options = [call["options"] for call in fake_models.ScriptedModel.calls["echo-a"]]
    assert options == [{"temperature": 0.2, "max_tokens": 5}] * 2
    assert team.exit_code == 0, team.output
    runs = db_rows(__import__("llm").user_dir(), "select iteration_count, max_iterations from consortium_runs")
    assert [run["iteration_count"] for run in runs] == [1, 1]  # not the saved 3


def test_a_bad_option_is_one_line_and_nothing_is_sent(cli, fakes, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])
    with fakes(MODELS):
        cli("consortium", "save", "duo", "-m", "m1", "-m", "m2", "--arbiter", "arb")
        unknown = cli("consortium", "batch", str(source), "-m", "duo", "--option", "temperature", "0")
        wrong = cli("consortium", "batch", str(source), "-m", "echo-a", "--option", "temperature", "hot")
    assert unknown.exit_code == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "--option: Unknown option 'temperature' for a consortium; valid options: max_iterations" in unknown.stderr
    assert wrong.exit_code == 2 and "--option temperature: Input should be a valid number" in wrong.stderr
    assert calls("echo-a") == [] and calls("m1") == [] and unknown.stdout == wrong.stdout == ""
