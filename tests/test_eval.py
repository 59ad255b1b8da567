"""`llm consortium eval` and `eval-report`: accuracies equal hand-computed
ones for every scorer on a fixed dataset, the judge's verdicts are stored,
the JSON report has the documented keys, and an evaluation continues
without re-sending answered rows. In-process through the real CLI."""

from __future__ import annotations

import json
import re

import pytest

from conftest import db_rows, fake_models
from llm_consortium.scoring import last_number, parse_verdict, wilson_interval

SYSTEM_KEYS = {
    "name", "kind", "n", "correct", "accuracy", "ci_low", "ci_high", "input_tokens",
    "output_tokens", "mean_latency_s", "p95_latency_s", "failures",
}
DATASET = [
    {"id": "r1", "prompt": "q1", "expected": "Paris"},
    {"id": "r2", "prompt": "q2", "expected": "42"},
    {"id": "r3", "prompt": "q3", "expected": ["blue", "azure"]},
    {"id": "r4", "prompt": "q4", "expected": 7},
    {"id": "r5", "prompt": "q5", "expected": "1,234"},
]
# With --concurrency 1 every model is called in row order, so replies[i] answers row i+1.
MODELS = {
    "alpha": {"replies": ["Paris", " 42\n", "Azure", "The answer is 7.", "about 1234 units"],
              "usage": [3, 2]},
    "beta": {"replies": ["paris", "It is 42", "I think blue", "7.0", "1,234"], "usage": [5, 1]},
    "broken": {"fail": "rate limited"},
    "grader": {"replies": ["Yes.", "No", "yes", "**Yes**", "I'd say no.", "YES", "no",
                           "Yes, it agrees.", "maybe", "no"]},
}
# Hand-computed: (alpha correct, beta correct) out of 5 for each scorer.
EXPECTED_CORRECT = {
    # exact: stripped, case-sensitive. alpha: Paris, 42. beta: 1,234.
    "exact": (2, 1),
    # contains: case-sensitive. alpha: Paris, 42, 7. beta: 42, blue, 7, 1,234.
    "contains": (3, 4),
    # number: last number. alpha: 42, 7, 1234. beta: 42, 7.0, 1,234.
    "number": (3, 3),
    # regex: re.search. alpha: " 42". beta: "7.0", "1,234".
    r"regex:^\s*\d": (1, 2),
    # {expected} stands for the expected text. alpha: Paris, Azure. beta: paris, 1,234.
    "regex:(?i)^{expected}$": (2, 2),
    # judge: the verdicts in the order asked (alpha then beta for each row).
    "judge:grader": (2, 3),
}


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in DATASET))
    return path


def run_eval(cli, dataset, *args):
    result = cli("consortium", "eval", str(dataset), "--baseline", "alpha", "--baseline", "beta",
                 "--concurrency", "1", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("scorer", list(EXPECTED_CORRECT))
def test_accuracy_equals_the_hand_computed_one_for_each_scorer(cli, fakes, dataset, scorer):
    with fakes(MODELS):
        report = run_eval(cli, dataset, "--scorer", scorer)
    alpha, beta = report["systems"]
    assert (alpha["correct"], beta["correct"]) == EXPECTED_CORRECT[scorer]
    for system in (alpha, beta):
        assert system["n"] == 5 and system["failures"] == 0
        assert system["accuracy"] == system["correct"] / 5
        assert (system["ci_low"], system["ci_high"]) == wilson_interval(system["correct"], 5)


def test_json_report_has_the_documented_shape(cli, fakes, dataset):
    with fakes(MODELS):
        report = run_eval(cli, dataset, "--baseline", "broken")
    assert report["dataset"] == str(dataset)
    assert [(s["name"], s["kind"]) for s in report["systems"]] == [
        ("alpha", "model"), ("beta", "model"), ("broken", "model"),
    ]
    for system in report["systems"]:
        assert SYSTEM_KEYS <= set(system)
    alpha, _, broken = report["systems"]
    assert (alpha["input_tokens"], alpha["output_tokens"]) == (15, 10)
    assert isinstance(alpha["mean_latency_s"], float) and isinstance(alpha["p95_latency_s"], float)
    # A failure counts in n and is not correct; there is no latency to report.
    assert (broken["n"], broken["correct"], broken["failures"], broken["accuracy"]) == (5, 0, 5, 0.0)
    assert broken["mean_latency_s"] is None and broken["input_tokens"] is None


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(2, 5)
    assert round(low, 4) == 0.1176 and round(high, 4) == 0.7693
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (None, None)


def test_the_judges_verdicts_and_prompts_are_stored(cli, fakes, dataset, user_dir):
    with fakes(MODELS):
        run_eval(cli, dataset, "--scorer", "judge:grader")
    rows = db_rows(
        user_dir,
        "select system, row_key, answer, correct, judge_model, judge_verdict, judge_prompt, "
        "score_detail from consortium_eval_results order by row_number, system",
    )
    assert [row["judge_verdict"] for row in rows] == MODELS["grader"]["replies"]
    assert [row["correct"] for row in rows] == [1, 0, 1, 1, 0, 1, 0, 1, 0, 0]
    assert all(row["judge_model"] == "grader" for row in rows)
    first = rows[0]
    assert "<expected_answer>\nParis\n</expected_answer>" in first["judge_prompt"]
    assert "<answer_to_grade>\nParis\n</answer_to_grade>" in first["judge_prompt"]
    assert rows[8]["score_detail"] == "the judge replied neither yes nor no"


def test_consortium_members_and_their_kinds(cli, fakes, dataset):
    models = {"m1": {"answer": "Paris"}, "m2": {"answer": "Paris"}, "arb": {"arbiter": True}}
    with fakes(models):
        cli("consortium", "save", "duo", "-m", "m1", "-m", "m2:2", "--arbiter", "arb")
        result = cli("consortium", "eval", str(dataset), "--consortium", "duo", "--members",
                     "--baseline", "m1", "--json", "--scorer", "contains")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(s["name"], s["kind"], s["correct"]) for s in report["systems"]] == [
        ("duo", "consortium", 1), ("m1", "model", 1), ("m2", "model", 1),
    ]
    # These fakes answer in the member format even alone: their <answer> is what is scored.
    with fakes(models):
        exact = json.loads(cli("consortium", "eval", str(dataset), "--consortium", "duo", "--members",
                               "--json").stdout)
    assert [s["correct"] for s in exact["systems"]] == [1, 1, 1]
    # each member alone is asked once per row (one instance), the consortium three times
    assert len(fake_models.ScriptedModel.calls["m2"]) == 5 * 2 + 5


def test_the_same_command_continues_the_evaluation_without_resending(cli, fakes, dataset, user_dir):
    models = {"steady": {"reply": "Paris"}}
    with fakes(models):
        first = json.loads(cli("consortium", "eval", str(dataset), "--baseline", "steady",
                               "--json").stdout)
        # As if interrupted after two rows: the rest were never stored.
        import sqlite3

        conn = sqlite3.connect(user_dir / "consortium_logs.db")
        conn.execute("delete from consortium_eval_results where row_key in ('r3', 'r4', 'r5')")
        conn.execute("update consortium_evals set status = 'interrupted'")
        conn.commit()
        conn.close()
        fake_models.ScriptedModel.reset(["steady"])
        second = json.loads(cli("consortium", "eval", str(dataset), "--baseline", "steady",
                                "--json").stdout)
        assert [call["prompt"] for call in fake_models.ScriptedModel.calls["steady"]] == ["q3", "q4", "q5"]
        # Finished: the same command measures afresh, in a new evaluation.
        fresh = json.loads(cli("consortium", "eval", str(dataset), "--baseline", "steady",
                               "--json").stdout)
    assert second["eval_id"] == first["eval_id"] and second["status"] == "finished"
    assert second["systems"][0]["correct"] == first["systems"][0]["correct"] == 1
    assert second["systems"][0]["n"] == 5
    assert fresh["eval_id"] != first["eval_id"]
    assert len(fake_models.ScriptedModel.calls["steady"]) == 8


def test_new_starts_afresh_even_when_one_is_unfinished(cli, fakes, dataset):
    models = {"down": {"fail": "unavailable"}}
    with fakes(models):
        args = ("consortium", "eval", str(dataset), "--baseline", "down", "--json")
        first = json.loads(cli(*args).stdout)
        again = json.loads(cli(*args).stdout)
        fresh = json.loads(cli(*args, "--new").stdout)
    assert first["status"] == again["status"] == "incomplete"
    assert again["eval_id"] == first["eval_id"] != fresh["eval_id"]
    assert len(fake_models.ScriptedModel.calls["down"]) == 15  # failed rows are always retried


def test_failed_rows_are_retried_and_a_failed_judge_only_rejudged(cli, fakes, dataset):
    models = {
        "shaky": {"reply": "Paris", "fail": "overloaded", "fail_times": 2},
        "slow-judge": {"reply": "yes", "fail": "judge down", "fail_times": 1},
    }
    with fakes(models):
        args = ("consortium", "eval", str(dataset), "--baseline", "shaky",
                "--scorer", "judge:slow-judge", "--concurrency", "1", "--json")
        first = json.loads(cli(*args).stdout)["systems"][0]
        assert (first["failures"], first["unscored"], first["correct"]) == (2, 1, 2)
        second = json.loads(cli(*args).stdout)["systems"][0]
    assert (second["failures"], second["unscored"], second["correct"]) == (0, 0, 5)
    # 5 + the 2 failed rows again; the judge: 3 first, then 1 re-judged + 2 new answers
    assert len(fake_models.ScriptedModel.calls["shaky"]) == 7
    assert len(fake_models.ScriptedModel.calls["slow-judge"]) == 6


def test_eval_report_reprints_a_stored_evaluation(cli, fakes, dataset, tmp_path):
    with fakes(MODELS):
        report = run_eval(cli, dataset, "--scorer", "contains")
        fake_models.ScriptedModel.reset()
        again = cli("consortium", "eval-report", report["eval_id"][:6], "--json")
        latest = cli("consortium", "eval-report")
    assert json.loads(again.stdout) == report
    assert fake_models.ScriptedModel.calls == {}
    table = latest.stdout.splitlines()
    assert table[0].startswith(f"Eval {report['eval_id'][:8]} · {dataset} · 5 rows · scorer contains")
    header, alpha, beta = table[2:5]
    assert header.split()[:5] == ["System", "Kind", "n", "Correct", "Accuracy"]
    assert alpha.split()[:5] == ["alpha", "model", "5", "3", "60.0%"]
    assert beta.split()[:5] == ["beta", "model", "5", "4", "80.0%"]


def test_html_page_plots_accuracy_against_tokens(cli, fakes, dataset, tmp_path):
    page = tmp_path / "eval.html"
    with fakes(MODELS):
        report = run_eval(cli, dataset, "--html", str(page))
    from test_visualize import figure

    data, layout = figure(page)
    (trace,) = data
    assert trace["text"] == ["alpha", "beta"]
    assert trace["y"] == [s["accuracy"] for s in report["systems"]]
    assert trace["x"] == [25, 30]
    assert "Accuracy" in json.dumps(layout["yaxis"])
    text = page.read_text()
    assert "plotly.js v" in text and not re.search(r"<script[^>]*\bsrc=", text)  # offline
    small = tmp_path / "cdn.html"
    with fakes(MODELS):
        cli("consortium", "eval-report", report["eval_id"], "--html", str(small), "--cdn")
    assert small.stat().st_size < page.stat().st_size / 10
    assert 'src="https://cdn.plot.ly/' in small.read_text()


def test_html_without_plotly_is_refused_before_anything_is_sent(cli, fakes, dataset, tmp_path,
                                                                   monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with fakes(MODELS):
        result = cli("consortium", "eval", str(dataset), "--baseline", "alpha",
                     "--html", str(tmp_path / "e.html"))
    assert result.exit_code == 1
    assert result.stderr == "Error: visualize needs plotly: pip install 'llm-consortium[visualize]'\n"
    assert "alpha" not in fake_models.ScriptedModel.calls


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scorer", "fuzzy"], "Unknown --scorer 'fuzzy'"),
        (["--scorer", "regex:("], "invalid pattern"),
        (["--scorer", "judge:nope"], "Unknown model: nope"),
        (["--members"], "Give at least one --consortium or --baseline"),
        (["--baseline", "alpha", "--members"], "--members needs at least one --consortium"),
        (["--consortium", "alpha"], "'alpha' is not a saved consortium"),
    ],
)
def test_bad_options_are_one_line_usage_errors(cli, fakes, dataset, args, message):
    with fakes(MODELS):
        result = cli("consortium", "eval", str(dataset), *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_row_without_expected_is_reported_before_anything_is_sent(cli, fakes, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "expected": "x"}\n{"prompt": "b"}\n')
    with fakes(MODELS):
        result = cli("consortium", "eval", str(path), "--baseline", "alpha")
    assert result.exit_code == 2
    assert "row 2 has no 'expected' field" in result.stderr
    assert "alpha" not in fake_models.ScriptedModel.calls


def test_field_names_can_be_overridden(cli, fakes, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"key": "k1", "question": "q1", "gold": "Paris"}\n')
    with fakes(MODELS):
        result = cli("consortium", "eval", str(path), "--baseline", "alpha", "--json",
                     "--prompt-field", "question", "--expected-field", "gold", "--id-field", "key")
    assert json.loads(result.stdout)["systems"][0]["correct"] == 1


@pytest.mark.parametrize(
    "text, number",
    [("The answer is 42.", 42), ("-7", -7), ("5-3=2", 2), ("total: 1,234.5 units", 1234.5),
     ("50%", 50), ("2e3", 2000), ("none", None), ("v2", None)],
)
def test_number_scorer_reads_the_last_number(text, number):
    assert last_number(text) == number


@pytest.mark.parametrize(
    "reply, verdict",
    [("Yes", True), ("no.", False), ("**YES**", True), ("Correct", True), ("I think yes", True),
     ("maybe", None), ("", None)],
)
def test_judge_verdicts(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_the_demo_consortium_of_five_65_percent_members_beats_each_of_them(cli, fakes, tmp_path):
    """What `make demo-eval` shows, on its own dataset and models."""
    import importlib.util
    from pathlib import Path

    scripts = Path(__file__).parent.parent / "scripts"
    spec = importlib.util.spec_from_file_location("make_dataset", scripts / "make_arithmetic_dataset.py")
    make_dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_dataset)
    path = tmp_path / "arithmetic.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in make_dataset.questions(200, 2024)))
    members = [f"math-65-{letter}" for letter in "abcde"]
    with fakes(json.loads((scripts / "demo_eval_models.json").read_text())):
        cli("consortium", "save", "five-65", *[f"-m{m}" for m in members],
            "--arbiter", "majority-arbiter", "--max-iterations", "1")
        result = cli("consortium", "eval", str(path), "--consortium", "five-65", "--members",
                     "--baseline", "math-80", "--scorer", "number", "--concurrency", "8", "--json")
    systems = {system["name"]: system for system in json.loads(result.stdout)["systems"]}
    assert all(0.55 <= systems[m]["accuracy"] <= 0.75 for m in members)
    best_single = max(systems[name]["ci_high"] for name in [*members, "math-80"])
    assert systems["five-65"]["ci_low"] > best_single  # clearly above, intervals apart
