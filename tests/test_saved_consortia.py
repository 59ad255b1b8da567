"""save / list / info / remove round trips through the real `llm` CLI."""

import json
import sqlite3

import pytest

MODELS = {
    "alpha": {"answer": "Paris", "confidence": 0.9},
    "beta": {"answer": "Paris", "confidence": 0.8},
    "judge": {"arbiter": True},
}


def test_save_prints_the_originals_messages(cli, fakes):
    with fakes(MODELS):
        result = cli("consortium", "save", "team", "-m", "alpha:2", "-m", "beta", "--arbiter", "judge")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Consortium configuration 'team' saved.",
        'You can now use it like: llm -m team "Your prompt here"',
    ]


def test_saved_config_round_trips_through_info_json(cli, fakes):
    with fakes(MODELS):
        cli(
            "consortium", "save", "team", "-m", "alpha:2", "-m", "beta", "-m", "alpha",
            "--arbiter", "judge", "--confidence-threshold", "85", "--max-iterations", "4",
            "--min-iterations", "2", "--system", "Be brief.", "--judging-method", "rank",
            "--manual-context", "--timeout", "30", "--retries", "1", "--min-responses", "2",
        )
        result = cli("consortium", "info", "team", "--json")
    data = json.loads(result.stdout)
    assert data["name"] == "team"
    assert data["models"] == {"alpha": 3, "beta": 1}
    assert data["arbiter"] == "judge"
    assert data["confidence_threshold"] == 0.85
    assert (data["minimum_iterations"], data["max_iterations"]) == (2, 4)
    assert data["system_prompt"] == "Be brief."
    assert data["judging_method"] == "rank"
    assert data["manual_context"] is True
    assert (data["timeout"], data["retries"], data["min_responses"]) == (30.0, 1, 2)


def test_list_shows_newest_first_in_the_originals_format(cli, fakes):
    with fakes(MODELS):
        cli("consortium", "save", "first", "-m", "alpha", "--arbiter", "judge")
        cli("consortium", "save", "second", "-m", "beta:2", "--arbiter", "judge", "--min-iterations", "3", "--max-iterations", "3")
        text = cli("consortium", "list").stdout
        data = json.loads(cli("consortium", "list", "--json").stdout)
    assert text.startswith("Available saved consortiums:\n\nName: second\n")
    assert text.index("Name: second") < text.index("Name: first")
    assert "  Models: beta:2\n" in text
    assert "  Threshold: 0.8 | Iterations: 3\n" in text
    assert "  Threshold: 0.8 | Iterations: 1-3\n" in text
    assert "  Judging: default | Context: Auto\n" in text
    assert [item["name"] for item in data] == ["second", "first"]


def test_list_without_consortia(cli):
    assert cli("consortium", "list").stdout == "No saved consortiums found.\n"
    assert json.loads(cli("consortium", "list", "--json").stdout) == []


def test_saving_an_existing_name_replaces_it(cli, fakes):
    with fakes(MODELS):
        cli("consortium", "save", "team", "-m", "alpha", "--arbiter", "judge")
        cli("consortium", "save", "team", "-m", "beta:3", "--arbiter", "judge")
        data = json.loads(cli("consortium", "list", "--json").stdout)
    assert [(item["name"], item["models"]) for item in data] == [("team", {"beta": 3})]


def test_remove_deletes_and_a_second_remove_is_an_error(cli, fakes):
    with fakes(MODELS):
        cli("consortium", "save", "team", "-m", "alpha", "--arbiter", "judge")
        removed = cli("consortium", "remove", "team")
        again = cli("consortium", "remove", "team")
    assert removed.stdout == "Consortium configuration 'team' removed.\n"
    assert again.exit_code == 1
    assert again.stderr == "Error: Consortium with name 'team' not found.\n"


def test_info_of_unknown_name_is_one_line(cli):
    result = cli("consortium", "info", "nope")
    assert result.exit_code == 1
    assert result.stderr == "Error: Consortium 'nope' not found.\n"


def test_saved_consortium_is_listed_as_an_llm_model(cli, fakes):
    with fakes(MODELS):
        cli("consortium", "save", "team", "-m", "alpha", "--arbiter", "judge")
        models = cli("models").stdout
    assert "Consortium: team" in models


def test_configs_are_stored_in_the_originals_table(cli, fakes, user_dir):
    with fakes(MODELS):
        cli("consortium", "save", "team", "-m", "alpha:2", "--arbiter", "judge")
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    name, config, created_at = conn.execute(
        "select name, config, created_at from consortium_configs"
    ).fetchone()
    assert name == "team"
    assert json.loads(config)["models"] == {"alpha": 2}
    assert created_at.endswith("+00:00")
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "alpha:0", "--arbiter", "judge"], "Invalid count in 'alpha:0': must be at least 1"),
        (["-m", "alpha:1001", "--arbiter", "judge"], "at most 1000"),
        (["--arbiter", "judge"], "Missing option '-m' / '--model'"),
        (["-m", "alpha"], "Missing option '--arbiter'"),
        (["-m", "alpha", "--arbiter", "judge", "--confidence-threshold", "101"], "between 0.0 and 1.0 (or 0 and 100)"),
        (["-m", "alpha", "--arbiter", "judge", "--confidence-threshold", "-1"], "between 0.0 and 1.0"),
        (["-m", "alpha", "--arbiter", "judge", "--min-iterations", "4"], "min_iterations (4) cannot exceed max_iterations (3)"),
        (["-m", "alpha", "--arbiter", "judge", "--max-iterations", "0"], "max_iterations must be at least 1"),
        (["-m", "alpha", "--arbiter", "judge", "--strategy", "nope"], "Unknown strategy: 'nope'. Available: "),
        (["-m", "alpha", "--arbiter", "judge", "--timeout", "0"], "timeout must be a positive number"),
    ],
)
def test_invalid_save_is_one_usage_line_and_changes_nothing(cli, fakes, args, message):
    with fakes(MODELS):
        cli("consortium", "save", "keep", "-m", "alpha", "--arbiter", "judge")
        before = cli("consortium", "list", "--json").stdout
        result = cli("consortium", "save", "keep", *args)
        after = cli("consortium", "list", "--json").stdout
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert before == after


def test_name_may_not_shadow_a_real_model(cli, fakes):
    with fakes(MODELS):
        result = cli("consortium", "save", "alpha", "-m", "beta", "--arbiter", "judge")
    assert result.exit_code == 2
    assert "'alpha' is already the id or an alias of the model 'alpha'" in result.stderr


def test_a_consortium_may_not_contain_itself(cli, fakes):
    with fakes(MODELS):
        assert cli("consortium", "save", "inner", "-m", "alpha", "--arbiter", "judge").exit_code == 0
        assert cli("consortium", "save", "outer", "-m", "inner", "-m", "beta", "--arbiter", "judge").exit_code == 0
        direct = cli("consortium", "save", "self", "-m", "self", "--arbiter", "judge")
        cyclic = cli("consortium", "save", "inner", "-m", "outer", "--arbiter", "judge")
    assert direct.exit_code == 2
    assert "would contain itself: self -> self" in direct.stderr
    assert cyclic.exit_code == 2
    assert "would contain itself: inner -> outer -> inner" in cyclic.stderr


def test_unknown_member_model_is_a_warning_not_an_error(cli, fakes):
    with fakes(MODELS):
        result = cli("consortium", "save", "team", "-m", "not-installed", "--arbiter", "judge")
    assert result.exit_code == 0
    assert "Warning: model 'not-installed' is not installed" in result.stderr
