"""`runs` and `run-info`: what each model said, what it cost, how long it took."""

import json

from llm_consortium.calls import CallOutcome
from llm_consortium.config import ConsortiumConfig
from llm_consortium.db import shared_store
from llm_consortium.results import Decision, Member, MemberResult
from conftest import db_rows as rows

# Known usage per call, so every sum is exact: one iteration costs
# 10+10+7 (members) + 100 (arbiter) = 127 in and 5+5+3 + 20 = 33 out.
MODELS = {
    "fake-a": {"answer": "42", "confidence": 0.9, "usage": [10, 5]},
    "fake-b": {"answer": "41", "confidence": 0.6, "usage": [7, 3]},
    "fake-arb": {"arbiter": True, "usage": [100, 20]},
}




def two_iteration_run(cli, fakes, prompt="What is six times seven?"):
    """A saved consortium run through `llm -m`, forced to two iterations."""
    with fakes(MODELS):
        saved = cli(
            "consortium", "save", "team", "-m", "fake-a:2", "-m", "fake-b",
            "--arbiter", "fake-arb", "--min-iterations", "2", "--max-iterations", "2",
        )
        assert saved.exit_code == 0, saved.output
        result = cli("-m", "team", prompt)
    assert result.exit_code == 0, result.output
    return result


def hand_made_run(run_id, created_at=None):
    """A run written through the Store API: member 3 left out by the
    strategy, member 2 an outlier, geometric confidence recorded."""
    store = shared_store()
    config = ConsortiumConfig(
        models={"m-one": 2, "m-two": 1}, arbiter="judge", strategy="semantic",
        embedding_backend="llm", max_iterations=1,
    )
    store.start_run(run_id, "Best sorting algorithm?", config, config_name="semantic-team", created_at=created_at)
    members = [
        ("1", "m-one", 0, "Merge sort", 0.8, 11, 4, 120),
        ("2", "m-one", 1, "Bogo sort", 0.3, 12, 5, 130),
        ("3", "m-two", 0, "Quick sort", 0.7, 13, 6, 140),
    ]
    results = [
        MemberResult(
            member=Member(mid, model, instance, int(mid) - 1), iteration=1,
            response_id=f"{run_id}:1:{mid}", text=f"<answer>{answer}</answer>", answer=answer,
            confidence=confidence, input_tokens=tin, output_tokens=tout, duration_ms=ms, attempts=1,
        )
        for mid, model, instance, answer, confidence, tin, tout, ms in members
    ]
    store.record_members(run_id, results)
    store.record_judged(run_id, results, results[:2])
    decision = Decision(
        synthesis="Merge sort", confidence=0.85, analysis="Most agree.", dissent="One says bogo.",
        refinement_areas=["stability"], ranking=["1", "2"], chosen_response_id=f"{run_id}:1:1",
        geometric_confidence=0.6125, outliers=["2"],
    )
    call = CallOutcome(
        text=None, error=None, response_id="arb-1", input_tokens=200, output_tokens=30,
        duration_ms=500, attempts=1,
    )
    store.record_decision(run_id, 1, decision, arbiter="judge", call=call)
    store.finish_run(
        run_id, status="success", iteration_count=1, final_confidence=0.85,
        final_synthesis="Merge sort", input_tokens=236, output_tokens=45, duration_ms=700,
    )


def test_token_sums_are_exact_in_runs_run_info_the_store_and_llm_logs(cli, fakes, user_dir):
    two_iteration_run(cli, fakes)

    [run] = rows(user_dir, "select * from consortium_runs")
    assert (run["input_tokens"], run["output_tokens"]) == (254, 66)
    assert isinstance(run["duration_ms"], int) and run["duration_ms"] >= 0
    members = rows(user_dir, "select * from consortium_members where role != 'arbiter' order by iteration, position")
    assert [(m["input_tokens"], m["output_tokens"]) for m in members] == [(10, 5), (10, 5), (7, 3)] * 2
    decisions = rows(user_dir, "select * from arbiter_decisions order by iteration")
    assert [(d["input_tokens"], d["output_tokens"]) for d in decisions] == [(100, 20), (100, 20)]

    [listed] = json.loads(cli("consortium", "runs", "--json").stdout)
    assert (listed["input_tokens"], listed["output_tokens"]) == (254, 66)
    assert listed["duration_ms"] == run["duration_ms"]

    info = json.loads(cli("consortium", "run-info", "--json").stdout)
    assert (info["run"]["input_tokens"], info["run"]["output_tokens"]) == (254, 66)
    assert [(i["iteration"], i["input_tokens"], i["output_tokens"]) for i in info["iterations"]] == [
        (1, 127, 33),
        (2, 127, 33),
    ]
    assert [i["members"] for i in info["iterations"]] == [3, 3]

    [logged] = json.loads(cli("logs", "--json", "-n", "1").stdout)
    assert (logged["input_tokens"], logged["output_tokens"]) == (254, 66)
    assert logged["response_json"]["run_id"] == run["id"]
    assert "254 input, 66 output" in cli("logs", "-u", "-n", "1").stdout


def test_runs_lists_tokens_and_wall_time_per_run(cli, fakes):
    two_iteration_run(cli, fakes)
    result = cli("consortium", "runs")
    assert result.exit_code == 0
    assert "Consortium: team | Status: success" in result.stdout
    assert "Iterations: 2/2 | Final Confidence: 0.667" in result.stdout
    assert "Tokens: 254 in / 66 out | Wall time: " in result.stdout


def test_runs_since_filters_and_rejects_a_bad_date(cli, fakes):
    two_iteration_run(cli, fakes)
    hand_made_run("old-run", created_at="2020-01-01T00:00:00.000000+00:00")
    ids = [row["id"] for row in json.loads(cli("consortium", "runs", "--json").stdout)]
    assert len(ids) == 2
    recent = json.loads(cli("consortium", "runs", "--json", "--since", "2021-06-01").stdout)
    assert "old-run" not in [row["id"] for row in recent] and len(recent) == 1
    assert len(json.loads(cli("consortium", "runs", "--json", "--since", "2019-12-31T23:00:00Z").stdout)) == 2
    bad = cli("consortium", "runs", "--since", "last tuesday")
    assert bad.exit_code == 2
    assert "is not a date or ISO timestamp" in bad.stderr
    assert "Traceback" not in bad.output


def test_run_info_shows_every_iteration_member_and_decision_with_sums(cli, fakes):
    two_iteration_run(cli, fakes)
    out = cli("consortium", "run-info").stdout
    assert "Members: fake-a x2, fake-b x1 | Arbiter: fake-arb" in out
    assert "Tokens: 254 in / 66 out" in out
    assert out.count("3/3 members answered, 3 passed to the arbiter | Tokens: 127 in / 33 out | Time: ") == 2
    assert "--- Iteration 1 ---" in out and "--- Iteration 2 ---" in out
    assert out.count("Member #1 fake-a[0]: confidence 0.9, 10 in / 5 out") == 2
    assert out.count("Member #3 fake-b[0]: confidence 0.6, 7 in / 3 out") == 2
    assert out.count("    <answer>41</answer>") == 2
    assert out.count("Arbiter Decision (Confidence: 0.667) by fake-arb, 100 in / 20 out") == 2
    assert "Ranking: #1 fake-a[0] > #2 fake-a[1] > #3 fake-b[0]" in out
    assert "Chosen: #1 fake-a[0]" in out
    assert "Dissent: 3: 41" in out
    assert out.rstrip().endswith("=== Final Synthesis ===\n42")


def test_run_info_marks_left_out_members_outliers_and_geometric_confidence(cli):
    hand_made_run("semantic-run-1")
    out = cli("consortium", "run-info", "semantic").stdout
    assert "3/3 members answered, 2 passed to the arbiter | Tokens: 236 in / 45 out" in out
    assert "Member #1 m-one[0]: confidence 0.8, 11 in / 4 out, 0.1s\n" in out
    assert "Member #2 m-one[1]: confidence 0.3, 12 in / 5 out, 0.1s (outlier)" in out
    assert "Member #3 m-two[0]: confidence 0.7, 13 in / 6 out, 0.1s (not passed to arbiter)" in out
    assert "Arbiter Decision (Confidence: 0.85, Geometric: 0.613) by judge, 200 in / 30 out, 0.5s" in out
    assert "Outliers: #2 m-one[1]" in out
    assert "Refinement areas:\n      - stability" in out


def test_run_info_shows_failed_members_with_their_error(cli, fakes):
    with fakes({**MODELS, "fake-b": {"fail": "rate limited", "usage": [7, 3]}}):
        cli("consortium", "save", "team", "-m", "fake-a", "-m", "fake-b", "--arbiter", "fake-arb",
            "--max-iterations", "1")
        cli("-m", "team", "hello")
    out = cli("consortium", "run-info").stdout
    assert "1/2 members answered, 1 passed to the arbiter" in out
    assert "Member #2 fake-b[0]: FAILED after " in out and "rate limited" in out
    info = json.loads(cli("consortium", "run-info", "--json").stdout)
    assert info["iterations"][0]["failed"] == 1
    assert [m["error"] for m in info["members"]][1].endswith("rate limited")


def test_run_info_json_holds_every_stored_row(cli, fakes):
    two_iteration_run(cli, fakes)
    info = json.loads(cli("consortium", "run-info", "--json-output").stdout)
    assert set(info) == {"run", "members", "decisions", "embeddings", "clusters", "iterations"}
    assert info["run"]["member_models"] == {"fake-a": 2, "fake-b": 1}
    assert len(info["members"]) == 6 and len(info["decisions"]) == 2
    assert all("<answer>" in member["response"] for member in info["members"])
    assert all(decision["prompt"] and decision["raw_response"] for decision in info["decisions"])


def test_run_info_accepts_a_unique_prefix_and_rejects_ambiguous_and_missing_ids(cli):
    hand_made_run("abc-111")
    hand_made_run("abc-222")
    assert json.loads(cli("consortium", "run-info", "abc-2", "--json").stdout)["run"]["id"] == "abc-222"

    ambiguous = cli("consortium", "run-info", "abc")
    assert ambiguous.exit_code == 1
    assert ambiguous.stderr == "Error: Run id prefix 'abc' is ambiguous; give more characters.\n"

    missing = cli("consortium", "run-info", "zzz")
    assert missing.exit_code == 1
    assert missing.stderr == "Error: Consortium run 'zzz' not found.\n"
    assert missing.stdout == ""


def test_run_info_without_runs_is_one_line(cli):
    result = cli("consortium", "run-info")
    assert result.exit_code == 1
    assert result.stderr == "Error: No consortium runs found.\n"


def test_run_info_without_id_shows_the_latest_run(cli, fakes):
    hand_made_run("older-run", created_at="2020-01-01T00:00:00.000000+00:00")
    two_iteration_run(cli, fakes, prompt="the newest prompt")
    out = cli("consortium", "run-info").stdout
    assert "Prompt: the newest prompt" in out


def test_run_info_shows_the_system_prompt_and_earlier_turns(cli, fakes):
    with fakes(MODELS):
        cli("consortium", "save", "team", "-m", "fake-a", "--arbiter", "fake-arb", "--max-iterations", "1",
            "--system", "Be brief.")
        cli("-m", "team", "What is six times seven?")
        cli("-c", "And times eight?")
    out = cli("consortium", "run-info").stdout
    assert "System: Be brief.\nEarlier user: What is six times seven?\nEarlier assistant: 42\n" in out
    assert "Prompt: And times eight?" in out


def test_run_info_says_why_each_iteration_followed_and_why_the_run_stopped(cli, fakes):
    models = {**MODELS, "fake-arb": {"arbiter": True, "arbiter_confidence": [0.5, 0.9, 0.9],
                                     "needs_iteration": [False, True, False]}}
    with fakes(models):
        saved = cli("consortium", "save", "why", "-m", "fake-a", "-m", "fake-b",
                    "--arbiter", "fake-arb", "--max-iterations", "5")
        assert saved.exit_code == 0, saved.output
        assert cli("-m", "why", "Six times seven?").exit_code == 0
    out = cli("consortium", "run-info").output
    assert [line.strip() for line in out.splitlines() if line.startswith("    Another") or line.startswith("    Stopped")] == [
        "Another iteration: confidence below the threshold 0.8",
        "Another iteration: the arbiter asked for another iteration",
        "Stopped: confidence reached the threshold 0.8",
    ]


def test_run_info_names_the_minimum_and_maximum_iterations_as_reasons(cli, fakes):
    two_iteration_run(cli, fakes)
    out = cli("consortium", "run-info").output
    assert "    Another iteration: confidence below the threshold 0.8; minimum of 2 iterations not reached\n" in out
    assert "    Stopped: maximum of 2 iterations reached\n" in out
