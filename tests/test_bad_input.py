"""Every malformed value gets one clear line and a non-zero exit (2 for usage
errors), never a traceback, and leaves the saved configurations untouched.

"One line": exactly one ``Error: …`` line on stderr. For usage errors click
puts its standard ``Usage: …`` / ``Try '… --help'`` lines before it; nothing
else may appear.
"""

from __future__ import annotations

import llm
import pytest

from conftest import run_llm, write_fake_spec

MODELS = {
    "alpha": {"answer": "A"},
    "beta": {"answer": "B", "aliases": ["b-alias"]},
    "judge": {"arbiter": True},
}
OK = ["-m", "alpha", "--arbiter", "judge"]
CLICK_PREAMBLE = ("Usage: ", "Try '")


def assert_one_error_line(stderr, message):
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    assert message in errors[0], errors[0]
    assert all(line in errors or line.startswith(CLICK_PREAMBLE) for line in lines), stderr


@pytest.fixture
def saved(cli, fakes):
    """Some saved consortia (one nested in another), with the fake models
    registered for the whole test; yields a function that returns
    ``list --json`` to compare before and after."""
    with fakes(MODELS):
        for name, args in {
            "keep": OK,
            "inner": OK,
            "outer": ["-m", "inner", "-m", "beta", "--arbiter", "judge"],
        }.items():
            assert cli("consortium", "save", name, *args).exit_code == 0

        def listing():
            result = cli("consortium", "list", "--json")
            assert result.exit_code == 0
            return result.stdout

        yield listing


BAD_SAVES = [
    # member counts
    ("count-zero", ["keep", "-m", "alpha:0", "--arbiter", "judge"], "Invalid count in 'alpha:0': must be at least 1"),
    ("count-negative", ["keep", "-m", "alpha:-2", "--arbiter", "judge"], "Invalid count in 'alpha:-2': must be at least 1"),
    ("count-absurd", ["keep", "-m", "alpha:1001", "--arbiter", "judge"], "Invalid count in 'alpha:1001': at most 1000"),
    ("count-adds-up-too-far", ["keep", "-m", "alpha:600", "-m", "alpha:600", "--arbiter", "judge"], "Too many instances of 'alpha': at most 1000"),
    ("default-count-zero", ["keep", *OK, "-n", "0"], "Invalid count in '--count 0': must be at least 1"),
    ("default-count-absurd", ["keep", *OK, "-n", "5000"], "at most 1000"),
    ("default-count-not-a-number", ["keep", *OK, "-n", "two"], "'two' is not a valid integer"),
    ("empty-model-spec", ["keep", "-m", "", "--arbiter", "judge"], "Empty model spec"),
    # thresholds
    ("threshold-negative", ["keep", *OK, "--confidence-threshold", "-0.1"], "Confidence threshold must be between 0.0 and 1.0 (or 0 and 100), got -0.1"),
    ("threshold-above-100", ["keep", *OK, "--confidence-threshold", "101"], "got 101"),
    ("threshold-nan", ["keep", *OK, "--confidence-threshold", "nan"], "got nan"),
    ("threshold-not-a-number", ["keep", *OK, "--confidence-threshold", "high"], "'high' is not a valid float"),
    # iterations
    ("min-above-max", ["keep", *OK, "--min-iterations", "4", "--max-iterations", "3"], "min_iterations (4) cannot exceed max_iterations (3)"),
    ("max-zero", ["keep", *OK, "--max-iterations", "0"], "max_iterations must be at least 1"),
    ("min-zero", ["keep", *OK, "--min-iterations", "0"], "min_iterations must be at least 1"),
    ("max-not-a-number", ["keep", *OK, "--max-iterations", "lots"], "'lots' is not a valid integer"),
    # time-outs, retries, responses
    ("timeout-zero", ["keep", *OK, "--timeout", "0"], "timeout must be a positive number of seconds"),
    ("timeout-infinite", ["keep", *OK, "--timeout", "inf"], "timeout must be a positive number of seconds"),
    ("retries-negative", ["keep", *OK, "--retries", "-1"], "retries cannot be negative"),
    ("min-responses-zero", ["keep", *OK, "--min-responses", "0"], "min_responses must be at least 1"),
    ("min-responses-above-members", ["keep", *OK, "--min-responses", "2"], "min_responses (2) cannot exceed the number of members (1)"),
    # strategies and their parameters
    ("unknown-strategy", ["keep", *OK, "--strategy", "nope"], "Unknown strategy: 'nope'. Available: "),
    ("parameter-without-key", ["keep", *OK, "--strategy-param", "=1"], "Invalid --strategy-param '=1': expected KEY=VALUE"),
    ("parameter-wrong-type", ["keep", *OK, "--strategy", "voting", "--strategy-param", "similarity_threshold=abc"], "Invalid strategy parameter 'similarity_threshold': expected a number, got 'abc'"),
    ("parameter-not-a-boolean", ["keep", *OK, "--strategy", "role", "--strategy-param", "use_dynamic_personalities=maybe"], "'maybe' is not true/false"),
    ("parameter-out-of-range", ["keep", *OK, "--strategy", "semantic", "--cluster-eps", "-1"], "Invalid strategy parameter 'eps'"),
    ("unknown-clustering-algorithm", ["keep", *OK, "--strategy", "semantic", "--clustering-algorithm", "kmeans"], "Invalid value for '--clustering-algorithm'"),
    ("unknown-embedding-backend", ["keep", *OK, "--strategy", "semantic", "--embedding-backend", "word2vec"], "Invalid value for '--embedding-backend'"),
    ("unknown-judging-method", ["keep", *OK, "--judging-method", "vibes"], "Invalid value for '--judging-method'"),
    # missing parts
    ("missing-models", ["keep", "--arbiter", "judge"], "Missing option '-m' / '--model'"),
    ("missing-arbiter", ["keep", "-m", "alpha"], "Missing option '--arbiter'"),
    ("missing-name", [], "Missing argument 'NAME'"),
    # names
    ("shadows-a-model-id", ["alpha", "-m", "beta", "--arbiter", "judge"], "'alpha' is already the id or an alias of the model 'alpha'"),
    ("shadows-a-model-alias", ["b-alias", *OK], "'b-alias' is already the id or an alias of the model 'beta'"),
    # nesting cycles
    ("contains-itself", ["self", "-m", "self", "--arbiter", "judge"], "Consortium 'self' would contain itself: self -> self"),
    ("judges-itself", ["self", "-m", "alpha", "--arbiter", "self"], "would contain itself: self -> self"),
    ("cycle-through-a-member", ["inner", "-m", "outer", "--arbiter", "judge"], "would contain itself: inner -> outer -> inner"),
    ("cycle-through-the-arbiter", ["inner", "-m", "alpha", "--arbiter", "outer"], "would contain itself: inner -> outer -> inner"),
]


@pytest.mark.parametrize("args, message", [case[1:] for case in BAD_SAVES], ids=[case[0] for case in BAD_SAVES])
def test_bad_save_is_one_usage_line_and_changes_nothing(cli, saved, args, message):
    before = saved()
    result = cli("consortium", "save", *args)
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, message)
    assert result.stdout == ""
    assert saved() == before


BAD_RUNS = [
    ("empty-prompt", ["consortium", "run", "  ", *OK], 2, "No prompt given"),
    ("run-without-models", ["consortium", "run", "q", "--arbiter", "judge"], 2, "Missing option '-m' / '--model'"),
    ("run-bad-count", ["consortium", "run", "q", "-m", "alpha:0", "--arbiter", "judge"], 2, "Invalid count in 'alpha:0'"),
    ("run-save-as-a-model-name", ["consortium", "run", "q", *OK, "--save", "beta"], 2, "'beta' is already the id or an alias"),
    ("info-unknown-name", ["consortium", "info", "nope"], 1, "Consortium 'nope' not found."),
    ("remove-unknown-name", ["consortium", "remove", "nope"], 1, "Consortium with name 'nope' not found."),
    ("run-info-unknown-id", ["consortium", "run-info", "no-such-run"], 1, "Consortium run 'no-such-run' not found."),
    ("run-info-without-runs", ["consortium", "run-info"], 1, "No consortium runs found."),
    ("visualize-unknown-id", ["consortium", "visualize", "no-such-run"], 1, "Consortium run 'no-such-run' not found."),
    ("runs-bad-date", ["consortium", "runs", "--since", "yesterday-ish"], 2, "is not a date or ISO timestamp"),
    ("option-out-of-range", ["-m", "keep", "q", "-o", "confidence_threshold", "101"], 1, "confidence_threshold"),
    ("option-not-a-number", ["-m", "keep", "q", "-o", "max_iterations", "many"], 1, "max_iterations"),
    ("unknown-option", ["-m", "keep", "q", "-o", "temperature", "0.5"], 2, "Unknown option 'temperature' for a consortium; valid options: max_iterations, min_iterations, confidence_threshold, system_prompt, timeout, retries"),
    ("leaderboard-unknown-consortium", ["consortium", "leaderboard", "--consortium", "nope"], 1, "Consortium 'nope' not found."),
    ("parameter-without-a-value", ["consortium", "save", "x", *OK, "--strategy", "voting", "--strategy-param", "similarity_threshold"], 2, "Invalid strategy parameter 'similarity_threshold': needs a value, as in similarity_threshold=NUMBER"),
]


@pytest.mark.parametrize("args, code, message", [case[1:] for case in BAD_RUNS], ids=[case[0] for case in BAD_RUNS])
def test_bad_command_is_one_clear_error_and_changes_nothing(cli, saved, args, code, message):
    before = saved()
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if args[0] == "-m" and code == 1:  # llm formats option validation itself: "Error: NAME\n  reason"
        assert result.stderr.startswith("Error: ") and message in result.stderr
    else:
        assert_one_error_line(result.stderr, message)
    assert saved() == before


def test_an_option_that_breaks_the_saved_config_is_one_line(cli, saved):
    # In-process llm re-raises the model's error (sys._called_from_test); a user
    # gets "Error: min_iterations (5) cannot exceed max_iterations (3)".
    before = saved()
    with pytest.raises(llm.ModelError) as caught:
        cli("-m", "keep", "q", "-o", "min_iterations", "5", "--no-log")
    assert str(caught.value) == "min_iterations (5) cannot exceed max_iterations (3)"
    assert saved() == before


@pytest.mark.slow
def test_a_name_that_shadows_an_installed_plugin_model_is_refused(user_dir):
    """``echo`` comes from llm-echo, loaded (like every installed plugin) by
    the real ``llm`` executable."""
    write_fake_spec(user_dir, MODELS)

    result = run_llm("consortium", "save", "echo", *OK)

    assert result.returncode == 2
    assert_one_error_line(result.stderr, "'echo' is already the id or an alias of the model 'echo'")
    assert run_llm("consortium", "list", "--json").stdout.strip() == "[]"


def test_a_longer_cycle_is_refused(cli, saved):
    assert cli("consortium", "save", "third", "-m", "outer", "--arbiter", "judge").exit_code == 0
    before = saved()
    result = cli("consortium", "save", "inner", "-m", "third", "--arbiter", "judge")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "would contain itself: inner -> third -> outer -> inner")
    assert saved() == before
