"""``llm consortium run``: a one-off consortium; nothing saved but the run."""

from __future__ import annotations

import json
import sqlite3

from conftest import fake_models, llm_cli

CALLS = fake_models.ScriptedModel.calls

MODELS = {
    "alpha": {"answer": "Paris"},
    "beta": {"answer": "Paris"},
    "judge": {"arbiter": True, "chunk_delay": 0.001},
    "broken": {"fail": "boom"},
}


def rows(user_dir, sql, *params):
    path = user_dir / "consortium_logs.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def test_run_prints_the_answer_and_saves_no_configuration(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli("consortium", "run", "Capital of France?", "-m", "alpha", "-m", "beta", "--arbiter", "judge")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"
    assert result.stderr == ""
    assert rows(user_dir, "select * from consortium_configs") == []
    [run] = rows(user_dir, "select * from consortium_runs")
    assert run["config_name"] is None
    assert (run["status"], run["user_prompt"], run["final_synthesis"]) == ("success", "Capital of France?", "Paris")
    assert json.loads(run["config_json"])["models"] == {"alpha": 1, "beta": 1}


def test_run_with_save_keeps_the_configuration_under_that_name(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli(
            "consortium", "run", "Capital of France?", "-m", "alpha:2", "--arbiter", "judge",
            "--max-iterations", "2", "--save", "capitals",
        )
        assert result.exit_code == 0, result.output
        assert result.stdout == "Paris\n"  # the saved message goes to stderr
        assert "Consortium configuration 'capitals' saved." in result.stderr
        info = json.loads(cli("consortium", "info", "capitals", "--json").stdout)
        again = cli("-m", "capitals", "Capital of France?")
    assert (info["models"], info["arbiter"], info["max_iterations"]) == ({"alpha": 2}, "judge", 2)
    assert again.stdout == "Paris\n"
    runs = rows(user_dir, "select config_name from consortium_runs")
    assert [run["config_name"] for run in runs] == ["capitals", "capitals"]


def test_run_reads_the_prompt_from_stdin(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli("consortium", "run", "-m", "alpha", "--arbiter", "judge", input="Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"
    assert CALLS["alpha"][0]["prompt"] == "Capital of France?"
    [run] = rows(user_dir, "select user_prompt from consortium_runs")
    assert run["user_prompt"] == "Capital of France?"


def test_run_puts_piped_stdin_before_the_prompt_like_llm(cli, fakes):
    with fakes(MODELS):
        result = cli("consortium", "run", "Summarise it", "-m", "alpha", "--arbiter", "judge", input="Some text.")
    assert result.exit_code == 0, result.output
    assert CALLS["alpha"][0]["prompt"] == "Some text. Summarise it"


def test_run_without_a_prompt_is_a_usage_error(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli("consortium", "run", "-m", "alpha", "--arbiter", "judge", input="")
    assert result.exit_code == 2
    assert "No prompt given" in result.stderr
    assert "Traceback" not in result.output
    assert rows(user_dir, "select * from consortium_runs") == []


def test_run_no_stream_prints_the_answer_at_the_end(cli, fakes):
    with fakes(MODELS):
        result = cli("consortium", "run", "Q?", "-m", "alpha", "--arbiter", "judge", "--no-stream")
        streamed = cli("consortium", "run", "Q?", "-m", "alpha", "--arbiter", "judge")
    assert result.stdout == streamed.stdout == "Paris\n"
    assert [call["stream"] for call in CALLS["judge"]] == [False, True]


def test_run_without_an_arbiter_takes_the_first_successful_answer(cli, fakes, user_dir):
    with fakes({**MODELS, "beta": {"answer": "Lyon"}}):
        result = cli("consortium", "run", "Capital of France?", "-m", "broken", "-m", "alpha", "-m", "beta")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"
    assert result.stderr == "llm-consortium: member broken[0] failed: boom\n"
    [decision] = rows(user_dir, "select * from arbiter_decisions")
    assert (decision["confidence"], decision["model"]) == (1.0, None)


def test_run_save_without_an_arbiter_is_a_usage_error(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli("consortium", "run", "Q?", "-m", "alpha", "--save", "team")
    assert result.exit_code == 2
    assert "--save needs --arbiter" in result.stderr
    assert rows(user_dir, "select * from consortium_configs") == []
    assert rows(user_dir, "select * from consortium_runs") == []


def test_run_without_models_is_a_usage_error(cli):
    result = cli("consortium", "run", "Q?", "--arbiter", "judge")
    assert result.exit_code == 2
    assert "--model" in result.stderr


def test_run_applies_every_save_option(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli(
            "consortium", "run", "Q?", "-m", "alpha", "-m", "beta:2", "-n", "1", "--arbiter", "judge",
            "--confidence-threshold", "90", "--max-iterations", "4", "--min-iterations", "2",
            "--system", "Be brief.", "--judging-method", "default", "--manual-context",
            "--strategy", "default", "--timeout", "30", "--retries", "1", "--min-responses", "2",
        )
    assert result.exit_code == 0, result.output
    [run] = rows(user_dir, "select * from consortium_runs")
    config = json.loads(run["config_json"])
    assert config["models"] == {"alpha": 1, "beta": 2}
    assert config["confidence_threshold"] == 0.9
    assert (config["max_iterations"], config["minimum_iterations"]) == (4, 2)
    assert (config["system_prompt"], config["manual_context"]) == ("Be brief.", True)
    assert (config["timeout"], config["retries"], config["min_responses"]) == (30.0, 1, 2)
    assert run["iteration_count"] == 2  # --min-iterations 2 was honoured
    assert "Be brief." in CALLS["alpha"][0]["system"]


def test_run_accepts_every_option_that_save_accepts():
    group = llm_cli.commands["consortium"]
    save_options = {param.name for param in group.commands["save"].params} - {"name"}
    run_options = {param.name for param in group.commands["run"].params}
    assert save_options <= run_options


def test_run_failure_is_one_error_and_a_failed_run(cli, fakes, user_dir):
    with fakes(MODELS):
        result = cli("consortium", "run", "Q?", "-m", "broken", "--arbiter", "judge")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("llm-consortium: member broken[0] failed: boom\nError: ")
    [run] = rows(user_dir, "select status from consortium_runs")
    assert run["status"] == "failed"
