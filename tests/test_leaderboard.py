"""`leaderboard`: per member model across runs, counted from the stored rows."""

import json

from llm_consortium.calls import CallOutcome
from llm_consortium.config import ConsortiumConfig
from llm_consortium.db import shared_store
from llm_consortium.results import Decision, Member, MemberResult

from test_reports import two_iteration_run


def member(mid, model, instance, confidence=None, tokens=(None, None), ms=100, error=None, eliminated=False):
    return dict(
        member_id=mid, model=model, instance=instance, confidence=confidence,
        input_tokens=tokens[0], output_tokens=tokens[1], duration_ms=ms, error=error, eliminated=eliminated,
    )


def add_run(run_id, name, strategy, created_at, iterations):
    """Write a run through the Store API. ``iterations``: a list of
    ``(members, ranking, chosen member id)``."""
    store = shared_store()
    models = {}
    for members, _, _ in iterations:
        for m in members:
            models[m["model"]] = max(models.get(m["model"], 0), m["instance"] + 1)
    config = ConsortiumConfig(models=models, strategy=strategy, max_iterations=len(iterations))
    store.start_run(run_id, f"prompt of {run_id}", config, config_name=name, created_at=created_at)
    for number, (members, ranking, chosen) in enumerate(iterations, 1):
        results = [
            MemberResult(
                member=Member(m["member_id"], m["model"], m["instance"], index), iteration=number,
                response_id=f"{run_id}:{number}:{m['member_id']}",
                text=None if m["error"] else "an answer", error=m["error"], confidence=m["confidence"],
                input_tokens=m["input_tokens"], output_tokens=m["output_tokens"], duration_ms=m["duration_ms"],
                eliminated=m["eliminated"],
            )
            for index, m in enumerate(members)
        ]
        store.record_members(run_id, results)
        decision = Decision(
            synthesis="s", confidence=0.5, ranking=ranking,
            chosen_response_id=f"{run_id}:{number}:{chosen}" if chosen else None,
        )
        call = CallOutcome(None, None, None, 1000, 1000, 0, 1)
        store.record_decision(run_id, number, decision, arbiter="judge", call=call)
    store.finish_run(run_id, status="success", iteration_count=len(iterations))


def hand_made_runs():
    add_run("r1", "team-x", "default", "2026-01-10T00:00:00.000000+00:00", [
        (
            [member("1", "alpha", 0, 0.9, (10, 2), 100), member("2", "alpha", 1, 0.7, (10, 2), 300),
             member("3", "beta", 0, 0.5, (20, 4), 200), member("4", "gamma", 0, None, (None, None), 50, "timed out")],
            ["3", "1", "2"], "3",
        ),
        (
            [member("1", "alpha", 0, 0.8, (10, 2), 100), member("2", "alpha", 1, 0.8, (10, 2), 100),
             member("3", "beta", 0, 0.6, (20, 4), 400), member("4", "gamma", 0, 0.4, (5, 1), 600)],
            ["1", "3", "4", "2"], "1",
        ),
    ])
    # An elimination run: gamma is ranked last and eliminated after
    # iteration 1; alpha's instance is eliminated after iteration 2.
    add_run("r2", "elim-team", "elimination", "2026-02-01T00:00:00.000000+00:00", [
        (
            [member("1", "alpha", 0, 0.6, (1, 1)), member("2", "beta", 0, 0.9, (2, 2)),
             member("3", "gamma", 0, 0.2, (3, 3), eliminated=True)],
            ["2", "1", "3"], "2",
        ),
        (
            [member("1", "alpha", 0, 0.6, (1, 1), eliminated=True),
             member("2", "beta", 0, 0.9, (2, 2))],
            ["2", "1"], "2",
        ),
    ])
    add_run("r3", "team-x", "default", "2020-01-01T00:00:00.000000+00:00", [
        ([member("1", "alpha", 0, 1.0, (5, 5), 700)], ["1"], "1"),
    ])


def board(cli, *args):
    result = cli("consortium", "leaderboard", "--json", *args)
    assert result.exit_code == 0, result.output
    return {row["model"]: row for row in json.loads(result.stdout)}, json.loads(result.stdout)


def test_counts_per_member_model_across_runs(cli):
    hand_made_runs()
    rows, ordered = board(cli)
    assert [row["model"] for row in ordered] == ["beta", "alpha", "gamma"]  # most often chosen first
    assert rows["alpha"] == {
        "model": "alpha", "runs": 3, "responses": 7, "failures": 0,
        "ranked_first": 2, "chosen": 2,
        "mean_rank": round((2 + 3 + 1 + 4 + 2 + 2 + 1) / 7, 4),
        "mean_confidence": round((0.9 + 0.7 + 0.8 + 0.8 + 0.6 + 0.6 + 1.0) / 7, 4),
        "eliminated": 1,
        "input_tokens": 10 * 4 + 1 + 1 + 5, "output_tokens": 2 * 4 + 1 + 1 + 5,
        "mean_latency_ms": round((100 + 300 + 100 + 100 + 100 + 100 + 700) / 7, 4),
    }
    assert rows["beta"] == {
        "model": "beta", "runs": 2, "responses": 4, "failures": 0,
        "ranked_first": 3, "chosen": 3, "mean_rank": 1.25,
        "mean_confidence": round((0.5 + 0.6 + 0.9 + 0.9) / 4, 4), "eliminated": 0,
        "input_tokens": 44, "output_tokens": 12, "mean_latency_ms": 200.0,
    }
    assert rows["gamma"] == {
        "model": "gamma", "runs": 2, "responses": 2, "failures": 1,
        "ranked_first": 0, "chosen": 0, "mean_rank": 3.0,
        "mean_confidence": 0.3, "eliminated": 1,
        "input_tokens": 8, "output_tokens": 4, "mean_latency_ms": 350.0,
    }


def test_consortium_and_since_filters(cli, fakes):
    hand_made_runs()
    rows, _ = board(cli, "--consortium", "elim-team")
    assert {model: row["responses"] for model, row in rows.items()} == {"alpha": 2, "beta": 2, "gamma": 1}
    assert rows["gamma"]["eliminated"] == 1

    rows, _ = board(cli, "--consortium", "team-x", "--since", "2025-01-01")
    assert rows["alpha"]["runs"] == 1 and rows["alpha"]["responses"] == 4
    assert rows["alpha"]["eliminated"] == 0
    assert (rows["alpha"]["ranked_first"], rows["alpha"]["chosen"]) == (1, 1)

    rows, _ = board(cli, "--since", "2026-01-15")
    assert set(rows) == {"alpha", "beta", "gamma"} and rows["alpha"]["runs"] == 1

    # A name that is neither saved nor in any run is an error ...
    unknown = cli("consortium", "leaderboard", "--consortium", "nobody")
    assert (unknown.exit_code, unknown.stdout, unknown.stderr) == (1, "", "Error: Consortium 'nobody' not found.\n")
    # ... a saved consortium that has not run yet is not.
    with fakes({"alpha": {}, "judge": {"arbiter": True}}):
        assert cli("consortium", "save", "nobody", "-m", "alpha", "--arbiter", "judge").exit_code == 0
    assert board(cli, "--consortium", "nobody")[1] == []
    assert cli("consortium", "leaderboard", "--consortium", "nobody").stdout == "No member responses found.\n"


def test_table_has_aligned_columns(cli):
    hand_made_runs()
    result = cli("consortium", "leaderboard")
    assert result.exit_code == 0
    header, rule, *lines = result.stdout.splitlines()
    assert header.split() == [
        "Model", "Runs", "Responses", "Failures", "Ranked", "1st", "Chosen", "Mean", "rank",
        "Mean", "conf", "Eliminated", "Tokens", "in", "Tokens", "out", "Mean", "latency",
    ]
    assert [line.split()[0] for line in lines] == ["beta", "alpha", "gamma"]
    # The model column starts, and every number ends, where its rule does.
    edges = _edges(rule)
    for line in lines:
        assert _edges(line) == edges
    assert lines[1].split()[1:7] == ["3", "7", "0", "2", "2", "2.14"]
    assert lines[2].split()[-1] == "0.35s"


def _edges(line):
    cells = _cells(line)
    return [cells[0][0]] + [index + len(cell) for index, cell in cells[1:]]


def _cells(line):
    cells, index = [], 0
    for part in line.split("  "):
        if part.strip():
            cells.append((index + len(part) - len(part.lstrip()), part.strip()))
        index += len(part) + 2
    return cells


def test_leaderboard_of_real_runs(cli, fakes):
    two_iteration_run(cli, fakes)
    rows, ordered = board(cli)
    assert [row["model"] for row in ordered] == ["fake-a", "fake-b"]
    assert rows["fake-a"]["responses"] == 4 and rows["fake-b"]["responses"] == 2
    assert (rows["fake-a"]["ranked_first"], rows["fake-a"]["chosen"]) == (2, 2)
    assert rows["fake-a"]["mean_rank"] == 1.5 and rows["fake-b"]["mean_rank"] == 3.0
    assert (rows["fake-a"]["input_tokens"], rows["fake-a"]["output_tokens"]) == (40, 20)
    assert (rows["fake-b"]["input_tokens"], rows["fake-b"]["output_tokens"]) == (14, 6)
    assert rows["fake-a"]["mean_confidence"] == 0.9
    assert "fake-arb" not in rows  # the arbiter is not a member


def test_leaderboard_with_no_runs(cli):
    result = cli("consortium", "leaderboard")
    assert result.exit_code == 0
    assert result.stdout == "No member responses found.\n"
    assert cli("consortium", "leaderboard", "--json").stdout.strip() == "[]"


def test_eliminations_of_a_real_elimination_run_are_counted(cli, fakes):
    models = {
        "fake-a": {"answer": "42", "confidence": 0.9},
        "fake-b": {"answer": "42", "confidence": 0.8},
        "fake-c": {"answer": "41", "confidence": 0.4},
        "fake-arb": {"arbiter": True, "needs_iteration": True},
    }
    with fakes(models):
        cli("consortium", "save", "knockout", "-m", "fake-a", "-m", "fake-b", "-m", "fake-c",
            "--arbiter", "fake-arb", "--strategy", "elimination", "--max-iterations", "2")
        assert cli("-m", "knockout", "q").exit_code == 0
    rows, _ = board(cli)
    assert {model: row["eliminated"] for model, row in rows.items()} == {"fake-a": 0, "fake-b": 0, "fake-c": 1}
    assert {model: row["responses"] for model, row in rows.items()} == {"fake-a": 2, "fake-b": 2, "fake-c": 1}
    assert "    Eliminated: #3 fake-c[0]\n" in cli("consortium", "run-info").stdout
