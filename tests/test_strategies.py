"""The voting, elimination and role strategies, driven through `llm consortium save`
+ `llm -m NAME` and through `create_consortium`, with the database rows checked."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Literal
from pathlib import Path

import llm
import pytest
from llm.plugins import pm
from pydantic import Field, field_validator

from llm_consortium import create_consortium
from llm_consortium.results import members_from_models
from llm_consortium.strategies import ConsortiumStrategy, NonEmptyText, StrategyParams

from conftest import fake_models, db_rows as rows

PARIS = "Paris is the capital of France."
PARIS_LOWER = "paris is the capital of france"




def members(user_dir: Path) -> list[dict]:
    found = rows(
        user_dir,
        "SELECT * FROM consortium_members WHERE role != 'arbiter' ORDER BY iteration, position",
    )
    for row in found:
        row["extra"] = json.loads(row["extra_json"]) if row["extra_json"] else {}
    return found


def ids_by_iteration(user_dir: Path) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {}
    for row in members(user_dir):
        result.setdefault(row["iteration"], []).append(row["member_id"])
    return result


def the_run(user_dir: Path) -> dict:
    [run] = rows(user_dir, "SELECT * FROM consortium_runs")
    return run


def voting_groups(responses: list[dict]) -> list[list[int]]:
    """Member ids by the group the voting strategy put them in."""
    groups: dict[int, list[int]] = {}
    for response in responses:
        groups.setdefault(response["voting_group"], []).append(int(response["id"]))
    return [groups[number] for number in sorted(groups)]


def save_and_ask(cli, name: str, *options: str, prompt: str = "Question?"):
    saved = cli("consortium", "save", name, *options)
    assert saved.exit_code == 0, saved.output
    return cli("-m", name, prompt)


def arbiter_prompts(model_id: str = "fake-arbiter") -> list[str]:
    return [call["prompt"] for call in fake_models.ScriptedModel.calls.get(model_id, [])]


# -- discovery ---------------------------------------------------------------


def test_strategies_command_lists_each_builtin_with_its_parameters_and_defaults(cli):
    result = cli("consortium", "strategies")
    assert result.exit_code == 0
    out = result.stdout
    for name in ("default", "voting", "elimination", "role"):
        assert f"Name: {name}\n" in out
    assert "similarity_threshold (float, default 0.5)" in out
    assert "answer_length (int, default 2000)" in out
    assert "require_majority (bool, default false)" in out
    assert "fallback_to_all (bool, default true)" in out
    assert "eliminate_count (int, default 1)" in out
    assert "eliminate_fraction (float, default 0.0)" in out
    assert "keep_minimum (int, default 2)" in out
    assert "elimination_delay (int, default 1)" in out
    assert "use_dynamic_personalities (bool, default true)" in out
    assert "Judging: always rank" in out

    described = {item["name"]: item for item in json.loads(cli("consortium", "strategies", "--json").stdout)}
    assert described["elimination"]["forced_judging_method"] == "rank"
    assert [p["name"] for p in described["role"]["params"]] == ["roles", "use_dynamic_personalities", "seed"]
    assert described["role"]["params"][0]["default"] == ["generator", "devil's advocate", "fact checker"]


# -- voting --------------------------------------------------------------------

VOTERS = {
    "fake-paris": {"answer": PARIS},
    "fake-paris-lower": {"answer": PARIS_LOWER},
    "fake-lyon": {"answer": "Lyon, I believe."},
    "fake-rome": {"answer": "Rome"},
    "fake-arbiter": {"arbiter": True, "arbiter_confidence": 0.9},
}


def test_voting_passes_only_the_largest_group_of_similar_answers_to_the_arbiter(cli, fakes, user_dir):
    with fakes(VOTERS):
        result = save_and_ask(
            cli, "vote", "-m", "fake-paris:2", "-m", "fake-paris-lower", "-m", "fake-lyon",
            "--arbiter", "fake-arbiter", "--strategy", "voting",
        )
        prompts = arbiter_prompts()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == PARIS
    [prompt] = prompts
    assert 'id="1"' in prompt and 'id="2"' in prompt and 'id="3"' in prompt
    assert 'id="4"' not in prompt and "Lyon" not in prompt
    found = members(user_dir)
    assert [row["selected"] for row in found] == [1, 1, 1, 0]
    assert [row["extra"]["voting_selected"] for row in found] == [True, True, True, False]
    assert {row["extra"]["voting_group_size"] for row in found} == {3}
    assert {row["extra"]["voting_total"] for row in found} == {4}
    assert found[2]["extra"]["similarity_to_group"] == 1.0  # same once normalised
    assert voting_groups([{**row["extra"], "id": row["member_id"]} for row in found]) == [[1, 2, 3], [4]]
    run = the_run(user_dir)
    assert (run["strategy"], run["status"]) == ("voting", "success")


def test_voting_require_majority_keeps_the_group_when_it_is_a_majority(cli, fakes, user_dir):
    with fakes(VOTERS):
        result = save_and_ask(
            cli, "vote", "-m", "fake-paris:2", "-m", "fake-lyon",
            "--arbiter", "fake-arbiter", "--strategy", "voting",
            "--strategy-param", "require_majority=true",
        )
    assert result.exit_code == 0, result.output
    found = members(user_dir)
    assert [row["selected"] for row in found] == [1, 1, 0]
    assert [row["extra"]["voting_selected"] for row in found] == [True, True, False]


def test_voting_without_a_majority_falls_back_to_all_answers(cli, fakes, user_dir):
    with fakes(VOTERS):
        result = save_and_ask(
            cli, "vote", "-m", "fake-paris:2", "-m", "fake-lyon", "-m", "fake-rome",
            "--arbiter", "fake-arbiter", "--strategy", "voting",
            "--strategy-param", "require_majority=yes",
            "--strategy-param", "fallback_to_all=1",
        )
        [prompt] = arbiter_prompts()
    assert result.exit_code == 0, result.output
    assert all(f'id="{n}"' in prompt for n in "1234")
    found = members(user_dir)
    assert [row["selected"] for row in found] == [1, 1, 1, 1]
    assert [row["extra"]["voting_selected"] for row in found] == [False] * 4
    assert {row["extra"]["voting_group_size"] for row in found} == {2}


def test_voting_without_a_majority_or_fallback_ends_the_run_with_a_clear_error(cli, fakes, user_dir):
    # In-process llm re-raises the model's error (sys._called_from_test); a user
    # gets it as one line: "Error: Voting found no consensus ...".
    with fakes(VOTERS):
        saved = cli(
            "consortium", "save", "vote", "-m", "fake-paris", "-m", "fake-lyon", "-m", "fake-rome",
            "--arbiter", "fake-arbiter", "--strategy", "voting",
            "--strategy-param", "require_majority",
            "--strategy-param", "fallback_to_all=false",
        )
        assert saved.exit_code == 0, saved.output
        with pytest.raises(llm.ModelError) as caught:
            cli("-m", "vote", "Capital?")
        called = sorted(model for model in VOTERS if fake_models.ScriptedModel.calls.get(model))
    assert "\n" not in str(caught.value)
    assert "Strategy 'voting' passed no responses to the arbiter in iteration 1" in str(caught.value)
    assert called == ["fake-lyon", "fake-paris", "fake-rome"]  # never the arbiter
    run = the_run(user_dir)
    assert run["status"] == "failed"
    assert "passed no responses" in run["error"]
    found = members(user_dir)
    assert [row["extra"]["voting_selected"] for row in found] == [False, False, False]
    assert [row["selected"] for row in found] == [0, 0, 0]
    assert rows(user_dir, "SELECT * FROM arbiter_decisions") == []


def test_voting_no_consensus_raises_a_model_error_from_the_python_api(fakes):
    with fakes(VOTERS):
        orchestrator = create_consortium(
            ["fake-paris", "fake-lyon"], arbiter="fake-arbiter", strategy="voting",
            strategy_params={"require_majority": True, "fallback_to_all": "no"},
        )
        with pytest.raises(llm.ModelError, match="passed no responses to the arbiter"):
            orchestrator.orchestrate("Capital?")
        assert arbiter_prompts() == []


def test_voting_similarity_threshold_and_answer_length_decide_what_counts_as_the_same(fakes, user_dir):
    specs = {
        "fake-long-a": {"answer": "The answer is 42 because six times seven"},
        "fake-long-b": {"answer": "The answer is 42 since 7 * 6 is that"},
        "fake-other": {"answer": "Nobody knows that at all, sorry"},
        "fake-arbiter": {"arbiter": True, "arbiter_confidence": 0.9},
    }

    def groups(**params) -> list[list[str]]:
        with fakes(specs):
            result = create_consortium(
                ["fake-long-a", "fake-long-b", "fake-other"], arbiter="fake-arbiter",
                strategy="voting", strategy_params=params,
            ).orchestrate("6 x 7?")
        return voting_groups(result["iterations"][0]["model_responses"])

    assert groups() == [[1, 2], [3]]
    assert groups(similarity_threshold="1.0") == [[1], [2], [3]]
    # Only the first 16 normalised characters ("the answer is 42") are compared.
    assert groups(similarity_threshold="1", answer_length="16") == [[1, 2], [3]]


def test_voting_ties_go_to_the_group_whose_first_member_comes_first(fakes):
    with fakes(VOTERS):
        result = create_consortium(
            ["fake-lyon", "fake-rome:2", "fake-paris:2"], arbiter="fake-arbiter", strategy="voting"
        ).orchestrate("Capital?")
    responses = result["iterations"][0]["model_responses"]
    assert [r["voting_selected"] for r in responses] == [False, True, True, False, False]


# -- elimination ---------------------------------------------------------------

RANKED = {
    "fake-good": {"answer": "42"},
    "fake-odd": {"answer": "41"},
    "fake-other": {"answer": "forty"},
    "fake-broken": {"fail": "model exploded"},
    "fake-arbiter": {"arbiter": True},
}


def test_elimination_drops_the_worst_ranked_model_after_each_iteration(cli, fakes, user_dir):
    with fakes(RANKED):
        result = save_and_ask(
            cli, "elim", "-m", "fake-good:2", "-m", "fake-odd", "-m", "fake-other",
            "--arbiter", "fake-arbiter", "--strategy", "elimination",
            prompt="6 x 7?",
        )
        info = cli("consortium", "run-info")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "42"
    run = the_run(user_dir)
    assert (run["judging_method"], run["iteration_count"], run["status"]) == ("rank", 3, "success")
    # fake-other is ranked last and goes; then two models are left, the
    # keep_minimum (models, as in the original): nothing more is eliminated.
    assert ids_by_iteration(user_dir) == {1: ["1", "2", "3", "4"], 2: ["1", "2", "3"], 3: ["1", "2", "3"]}
    eliminated = [(row["iteration"], row["member_id"], row["extra"].get("eliminated_rank"))
                  for row in members(user_dir) if row["eliminated"]]
    assert eliminated == [(1, "4", 4)]
    assert "--- Iteration 3 ---" in info.stdout
    assert "Member #4" not in info.stdout.split("--- Iteration 2 ---")[1]


def test_elimination_keeps_iterating_under_rank_judging_until_min_iterations(cli, fakes, user_dir):
    sure = {**RANKED, "fake-arbiter": {"arbiter": True, "arbiter_confidence": 1.0}}
    with fakes(sure):
        result = save_and_ask(
            cli, "elim", "-m", "fake-good", "-m", "fake-odd", "-m", "fake-other",
            "--arbiter", "fake-arbiter", "--strategy", "elimination",
            "--judging-method", "default", "--min-iterations", "3",
            "--strategy-param", "keep_minimum=1",
        )
    assert result.exit_code == 0, result.output
    config = json.loads(cli("consortium", "info", "elim", "--json").stdout)
    assert config["judging_method"] == "rank"
    assert ids_by_iteration(user_dir) == {1: ["1", "2", "3"], 2: ["1", "2"], 3: ["1"]}


def test_elimination_counts_failed_members_as_worst(fakes, user_dir):
    with fakes(RANKED):
        result = create_consortium(
            ["fake-good:2", "fake-broken", "fake-odd"], arbiter="fake-arbiter",
            strategy="elimination", max_iterations=2,
        ).orchestrate("6 x 7?")
    assert result["metadata"]["config"]["judging_method"] == "rank"
    assert ids_by_iteration(user_dir) == {1: ["1", "2", "3", "4"], 2: ["1", "2", "4"]}
    [broken] = [row for row in members(user_dir) if row["member_id"] == "3"]
    assert broken["status"] == "failed"
    assert broken["eliminated"] == 1 and broken["extra"] == {"eliminated_rank": None}
    assert result["iterations"][1]["selected_models"] == {"fake-good": 2, "fake-odd": 1}


@pytest.mark.parametrize(
    "params, expected",
    [
        # three models: good (3 instances), odd (2), other (1), ranked in that order
        ({"eliminate_fraction": "0.5"}, {1: 6, 2: 5, 3: 5}),
        ({"eliminate_fraction": "0.5", "keep_minimum": "1"}, {1: 6, 2: 5, 3: 3}),
        ({"eliminate_fraction": "0.5", "keep_minimum": "4"}, {1: 6, 2: 6, 3: 6}),
        ({"eliminate_count": "0"}, {1: 6, 2: 6, 3: 6}),
        ({"elimination_delay": "2"}, {1: 6, 2: 6, 3: 5}),
        ({"eliminate_count": "2", "keep_minimum": "1"}, {1: 6, 2: 3, 3: 3}),
    ],
)
def test_elimination_parameters_set_how_many_members_go(fakes, user_dir, params, expected):
    with fakes(RANKED):
        create_consortium(
            ["fake-good:3", "fake-odd:2", "fake-other"], arbiter="fake-arbiter",
            strategy="elimination", strategy_params=params, max_iterations=3,
            minimum_iterations=3,
        ).orchestrate("6 x 7?")
    counts = {iteration: len(ids) for iteration, ids in ids_by_iteration(user_dir).items()}
    assert counts == expected


def test_elimination_removes_whole_models_as_the_original(fakes, user_dir):
    specs = {
        "fake-mixed": {"answers": ["42", "41"]},  # its two instances answer differently
        "fake-good": {"answer": "42"},
        "fake-arbiter": {"arbiter": True},
    }
    with fakes(specs):
        create_consortium(
            ["fake-mixed:2", "fake-good"], arbiter="fake-arbiter", strategy="elimination",
            strategy_params={"keep_minimum": 1}, max_iterations=2, minimum_iterations=2,
        ).orchestrate("6 x 7?")
    # the instance that answered 41 is ranked last: its model goes, both instances
    second = [row for row in members(user_dir) if row["iteration"] == 2]
    assert [row["model"] for row in second] == ["fake-good"]


# -- role --------------------------------------------------------------------

def test_role_gives_each_instance_its_own_role_and_keeps_it_across_iterations(cli, fakes, user_dir):
    specs = {
        "fake-a": {"answer": "42"},
        "fake-b": {"answer": "42"},
        "fake-arbiter": {"arbiter": True, "arbiter_confidence": 0.1},
    }
    with fakes(specs):
        result = save_and_ask(
            cli, "roles", "-m", "fake-a:3", "-m", "fake-b:2", "--arbiter", "fake-arbiter",
            "--strategy", "role", "--system", "Answer in one word.", "--max-iterations", "2",
        )
        received = {
            model: [call["system"] for call in fake_models.ScriptedModel.calls[model]]
            for model in ("fake-a", "fake-b")
        }
    assert result.exit_code == 0, result.output
    found = members(user_dir)
    assert len(found) == 10
    by_iteration = {n: [row for row in found if row["iteration"] == n] for n in (1, 2)}
    first = [row["member_role"] for row in by_iteration[1]]
    assert first[:3] == ["generator", "devil's advocate", "fact checker"]
    assert all(role.startswith("personality (") for role in first[3:])
    assert len(set(first)) == 5
    # The same instance keeps its role (and system prompt) in iteration 2.
    assert [(r["member_id"], r["member_role"], r["system"]) for r in by_iteration[1]] == [
        (r["member_id"], r["member_role"], r["system"]) for r in by_iteration[2]
    ]
    assert len({row["system"] for row in by_iteration[1]}) == 5
    for row in found:
        assert row["system"].startswith("Answer in one word.\n\nYour role in this consortium: ")
        assert "<thinking>" in row["system"]  # the member instructions are still there
    assert "Be the sceptic." in by_iteration[1][1]["system"]
    assert "trait matrix" in by_iteration[1][3]["system"]
    # What the models really received matches the stored system prompts.
    for model, systems in received.items():
        stored = [row["system"] for row in found if row["model"] == model]
        assert sorted(s.strip() for s in systems) == sorted(s.strip() for s in stored)


def test_role_uses_given_roles_in_order_and_no_role_beyond_them_without_dynamic_personalities(cli, fakes, user_dir):
    specs = {"fake-a": {"answer": "42"}, "fake-arbiter": {"arbiter": True}}
    with fakes(specs):
        result = save_and_ask(
            cli, "poets", "-m", "fake-a:5", "--arbiter", "fake-arbiter", "--strategy", "role",
            "--strategy-param", "roles=Poet: answer in rhyming verse",
            "--strategy-param", "roles=fact-checker",
            "--strategy-param", "use_dynamic_personalities=false",
        )
    assert result.exit_code == 0, result.output
    found = members(user_dir)
    # As the original: fewer roles than instances, the extra members get none.
    assert [row["member_role"] for row in found] == ["Poet", "fact checker", None, None, None]
    assert "Your role in this consortium: Poet.\nanswer in rhyming verse" in found[0]["system"]
    assert all("Your role in this consortium" not in row["system"] for row in found[2:])
    config = json.loads(cli("consortium", "info", "poets", "--json").stdout)
    assert config["strategy_params"]["roles"] == ["Poet: answer in rhyming verse", "fact-checker"]
    assert config["strategy_params"]["use_dynamic_personalities"] is False


def test_role_personalities_are_deterministic_given_a_seed(fakes, user_dir):
    specs = {"fake-a": {"answer": "42"}, "fake-arbiter": {"arbiter": True}}

    def roles(**params) -> list[str]:
        with fakes(specs):
            result = create_consortium(
                ["fake-a:6"], arbiter="fake-arbiter", strategy="role", strategy_params=params
            ).orchestrate("Hi")
        return [r["role"] for r in result["iterations"][0]["model_responses"]]

    seeded = roles(seed="7")
    assert seeded == roles(seed=7)
    assert len(set(seeded)) == 6
    assert seeded != roles(seed="8")
    assert seeded[:3] == roles(seed="8")[:3] == ["generator", "devil's advocate", "fact checker"]


def test_role_without_a_seed_derives_it_from_the_run_id():
    from llm_consortium.config import ConsortiumConfig
    from llm_consortium.strategies.role import RoleStrategy

    config = ConsortiumConfig(models={"fake-a": 5}, strategy="role")

    def prompts(run_id: str) -> list[str | None]:
        strategy = RoleStrategy(SimpleNamespace(consortium_id=run_id), config.strategy_params)
        strategy.initialize_state()
        # In config order, as the orchestrator asks (the original assigns roles in call order).
        return [strategy.get_instance_system_prompt("fake-a", instance, None) for instance in range(5)]

    assert prompts("run-one") == prompts("run-one")
    assert prompts("run-one")[3:] != prompts("run-two")[3:]
    assert prompts("run-one")[:3] == prompts("run-two")[:3]


# -- parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (["--strategy", "nosuch"], "Unknown strategy: 'nosuch'. Available: default, elimination, role, "),
        (["--strategy", "voting", "--strategy-param", "require_majority=perhaps"], "'require_majority': 'perhaps' is not"),
        (["--strategy", "voting", "--strategy-param", "similarity_threshold=1.5"], "similarity_threshold must be between 0 and 1, got 1.5"),
        (["--strategy", "voting", "--strategy-param", "answer_length=5"], "answer_length must be at least 10, got 5"),
        (["--strategy", "voting", "--strategy-param", "answer_length=many"], "'answer_length': expected a whole number"),
        (["--strategy", "elimination", "--strategy-param", "keep_minimum=0"], "keep_minimum must be at least 1, got 0"),
        (["--strategy", "elimination", "--strategy-param", "eliminate_fraction=-0.1"], "'eliminate_fraction'"),
        (["--strategy", "role", "--strategy-param", "seed=abc"], "'seed': expected a whole number"),
        (["--strategy", "voting", "--strategy-param", "fallback_to_all=1", "--strategy-param", "fallback_to_all=0"], "'fallback_to_all': given more than once"),
    ],
)
def test_bad_strategy_or_parameter_is_refused_at_save(cli, user_dir, options, message):
    result = cli("consortium", "save", "bad", "-m", "fake-a", "--arbiter", "fake-arbiter", *options)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        next(line for line in result.stderr.splitlines() if message in line)
    ]
    assert cli("consortium", "list").stdout.strip() == "No saved consortiums found."


@pytest.mark.parametrize(
    "strategy, params, message",
    [
        ("nosuch", {}, "Unknown strategy: 'nosuch'"),
        ("voting", {"require_majority": "perhaps"}, "'require_majority'"),
        ("elimination", {"eliminate_count": "-1"}, "eliminate_count must be at least 0, got -1"),
        ("role", {"roles": ["  "]}, "'roles'"),
    ],
)
def test_create_consortium_refuses_bad_strategy_parameters(strategy, params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        create_consortium(["fake-a"], arbiter="fake-arbiter", strategy=strategy, strategy_params=params)


@pytest.mark.parametrize("word, value", [
    ("false", False), ("False", False), ("no", False), ("0", False), ("off", False),
    ("true", True), ("YES", True), ("1", True), ("on", True),
])
def test_boolean_strategy_parameters_read_words_not_truthiness(cli, user_dir, word, value):
    saved = cli(
        "consortium", "save", "v", "-m", "fake-a", "--arbiter", "fake-arbiter",
        "--strategy", "voting", "--strategy-param", f"require_majority={word}",
    )
    assert saved.exit_code == 0, saved.output
    config = json.loads(cli("consortium", "info", "v", "--json").stdout)
    assert config["strategy_params"]["require_majority"] is value


def test_saved_parameters_are_typed_with_defaults_filled_in(cli, user_dir):
    saved = cli(
        "consortium", "save", "v", "-m", "fake-a", "--arbiter", "fake-arbiter",
        "--strategy", "VOTING", "--strategy-param", "similarity_threshold=0.75",
        "--strategy-param", "require_majority",
    )
    assert saved.exit_code == 0, saved.output
    [row] = rows(user_dir, "SELECT config FROM consortium_configs WHERE name = 'v'")
    stored = json.loads(row["config"])
    assert stored["strategy"] == "voting"
    assert stored["strategy_params"] == {
        "similarity_threshold": 0.75,
        "answer_length": 2000,
        "require_majority": True,
        "fallback_to_all": True,
    }


# -- third-party strategies ------------------------------------------------------


class ShortestAnswerStrategy(ConsortiumStrategy):
    """Written for the original plugin's API: only the shortest answers reach
    the arbiter. No name, no declared parameters."""

    def _validate_params(self):
        self.keep = int(self.params.get("keep", 1))
        if self.keep < 1:
            raise ValueError("keep must be at least 1")

    def select_models(self, available_models, current_prompt, iteration):
        return available_models.copy()

    def process_responses(self, successful_responses, iteration):
        ordered = sorted(successful_responses, key=lambda r: len(r["response"]))
        for rank, response in enumerate(ordered, start=1):
            response["shortest_rank"] = rank
        return ordered[: self.keep]


class ShortestPlugin:
    @llm.hookimpl
    def register_consortium_strategies(self, register):
        register(ShortestAnswerStrategy)


def test_a_plugin_strategy_is_listed_saved_and_used(cli, fakes, user_dir):
    specs = {
        "fake-wordy": {"answer": "It is forty-two, as everybody knows"},
        "fake-terse": {"answer": "42"},
        "fake-arbiter": {"arbiter": True},
    }
    pm.register(ShortestPlugin(), name="undo-shortest-strategy")
    try:
        listed = cli("consortium", "strategies")
        assert "Name: shortest_answer\n  Class: ShortestAnswerStrategy\n" in listed.stdout
        bad = cli(
            "consortium", "save", "s", "-m", "fake-terse", "--arbiter", "fake-arbiter",
            "--strategy", "shortest_answer", "--strategy-param", "keep=0",
        )
        assert bad.exit_code == 2 and "keep must be at least 1" in bad.stderr
        with fakes(specs):
            result = save_and_ask(
                cli, "short", "-m", "fake-wordy", "-m", "fake-terse", "--arbiter", "fake-arbiter",
                "--strategy", "shortest_answer", "--strategy-param", "keep=1",
            )
            [prompt] = arbiter_prompts()
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "42"
        assert "forty-two" not in prompt
        assert the_run(user_dir)["strategy"] == "shortest_answer"
        assert [row["selected"] for row in members(user_dir)] == [0, 1]
        assert [json.loads(row["extra_json"])["shortest_rank"] for row in members(user_dir)] == [2, 1]
        with fakes(specs):
            api = create_consortium(
                ["fake-wordy", "fake-terse"], arbiter="fake-arbiter", strategy="shortest_answer"
            ).orchestrate("Answer?")
        assert api["synthesis"]["synthesis"] == "42"
    finally:
        pm.unregister(name="undo-shortest-strategy")
    gone = cli("consortium", "strategies")
    assert "Name: shortest_answer" not in gone.stdout


class KeepFirstStrategy(ConsortiumStrategy):
    """A plugin strategy declaring its parameters with pydantic (the pattern
    docs/strategies.md shows)."""

    name = "keep_first"
    description = "Pass only the first answers to the arbiter."

    class Params(StrategyParams):
        keep: int = Field(1, ge=1, le=5, description="How many answers to keep.")
        label: Literal["plain", "ranked"] = Field("plain", description="How answers are marked.")
        tags: list[NonEmptyText] = Field(default_factory=list, description="Tags added to each answer.")
        strict: bool = Field(False, description="Refuse runs with fewer answers than keep.")

        @field_validator("tags")
        @classmethod
        def _no_duplicates(cls, tags: list[str]) -> list[str]:
            if len(set(tags)) != len(tags):
                raise ValueError("tags must differ")
            return tags

    def select_models(self, available_models, current_prompt, iteration):
        return available_models.copy()

    def process_responses(self, successful_responses, iteration):
        for response in successful_responses:
            response["tags"] = self.tags
        return successful_responses[: self.keep]


class KeepFirstPlugin:
    @llm.hookimpl
    def register_consortium_strategies(self, register):
        register(KeepFirstStrategy)


@pytest.mark.parametrize(
    "params, message",
    [
        (["keep=0"], "Invalid strategy parameter 'keep': keep must be between 1 and 5, got 0"),
        (["keep"], "Invalid strategy parameter 'keep': needs a value, as in keep=NUMBER"),
        (["keep=two"], "Invalid strategy parameter 'keep': expected a whole number, got 'two'"),
        (["label=fancy"], "Invalid strategy parameter 'label': 'fancy'; choose one of plain, ranked"),
        (["strict=maybe"], "Invalid strategy parameter 'strict': 'maybe' is not true/false/yes/no/1/0"),
        (["tags=a", "tags=a"], "Invalid strategy parameter 'tags': tags must differ"),
        (["tags= "], "Invalid strategy parameter 'tags': expected non-empty text values"),
    ],
)
def test_a_plugin_strategy_declaring_pydantic_params_is_checked_the_cli_way(cli, user_dir, params, message):
    pm.register(KeepFirstPlugin(), name="undo-keep-first-strategy")
    try:
        options = [option for param in params for option in ("--strategy-param", param)]
        bad = cli(
            "consortium", "save", "k", "-m", "fake-a", "--arbiter", "fake-arbiter",
            "--strategy", "keep_first", *options,
        )
    finally:
        pm.unregister(name="undo-keep-first-strategy")
    assert bad.exit_code == 2
    assert [line for line in bad.stderr.splitlines() if line.startswith("Error:")] == [f"Error: {message}"]
    assert "Traceback" not in bad.output


def test_a_plugin_strategy_declaring_pydantic_params_is_listed_saved_typed_and_used(cli, fakes, user_dir):
    pm.register(KeepFirstPlugin(), name="undo-keep-first-strategy")
    try:
        listed = cli("consortium", "strategies")
        assert "    keep (int, default 1): How many answers to keep.\n" in listed.stdout
        assert "    label (str, default plain): How answers are marked.\n" in listed.stdout
        assert "    tags (list, default []): Tags added to each answer.\n" in listed.stdout
        described = {item["name"]: item for item in json.loads(cli("consortium", "strategies", "--json").stdout)}
        assert described["keep_first"]["params"][0] == {
            "name": "keep", "type": "int", "default": 1, "help": "How many answers to keep.", "min": 1, "max": 5,
        }
        assert described["keep_first"]["params"][1]["choices"] == ["plain", "ranked"]
        with fakes({"fake-one": {"answer": "one"}, "fake-two": {"answer": "two"}, "fake-arbiter": {"arbiter": True}}):
            result = save_and_ask(
                cli, "k", "-m", "fake-one", "-m", "fake-two", "--arbiter", "fake-arbiter",
                "--strategy", "keep_first", "--strategy-param", "keep=1", "--strategy-param", "label=RANKED",
                "--strategy-param", "tags=x", "--strategy-param", "tags= y ", "--strategy-param", "strict",
            )
            [prompt] = arbiter_prompts()
        assert result.exit_code == 0, result.output
        assert "two" not in prompt
        config = json.loads(cli("consortium", "info", "k", "--json").stdout)
        assert config["strategy_params"] == {"keep": 1, "label": "ranked", "tags": ["x", "y"], "strict": True}
        assert [json.loads(row["extra_json"])["tags"] for row in members(user_dir) if row["selected"]] == [["x", "y"]]
    finally:
        pm.unregister(name="undo-keep-first-strategy")
