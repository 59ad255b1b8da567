"""A saved consortium answering through `llm -m NAME`, end to end."""

import json
import sqlite3

import llm
import pytest

from conftest import db_rows as rows, fake_models

CALLS = fake_models.ScriptedModel.calls

MEMBERS = {
    "alpha": {"answer": "Paris", "confidence": 0.9, "usage": [10, 2]},
    "beta": {"reply": "<thinking>t</thinking><answer>Paris</answer><confidence> 80% </confidence>", "usage": [20, 3]},
    "gamma": {"answer": "Lyon", "confidence": 0.4, "usage": [30, 4]},
    "judge": {"arbiter": True, "usage": [100, 7]},
}


def save(cli, *extra):
    result = cli("consortium", "save", "team", "-m", "alpha:2", "-m", "beta", "-m", "gamma", "--arbiter", "judge", *extra)
    assert result.exit_code == 0, result.output




def test_llm_m_prints_the_synthesis_and_records_a_successful_run(cli, fakes, user_dir):
    with fakes(MEMBERS):
        save(cli)
        result = cli("-m", "team", "Capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"
    [run] = rows(user_dir, "select * from consortium_runs")
    assert run["status"] == "success"
    assert run["config_name"] == "team"
    assert run["user_prompt"] == "Capital of France?"
    assert run["final_synthesis"] == "Paris"
    # 3 of 4 agree -> 0.75 < 0.8, so it iterates to the maximum of 3.
    assert run["iteration_count"] == 3
    assert run["final_confidence"] == 0.75
    assert run["finished_at"] >= run["created_at"]


def test_member_ids_follow_config_order_and_texts_are_stored(cli, fakes, user_dir):
    with fakes({**MEMBERS, "alpha": {**MEMBERS["alpha"], "latency": 0.3}}):
        save(cli, "--max-iterations", "1")
        cli("-m", "team", "Capital of France?")
    members = rows(user_dir, "select * from consortium_members where role != 'arbiter' order by position")
    assert [(m["member_id"], m["model"], m["instance"]) for m in members] == [
        ("1", "alpha", 0),
        ("2", "alpha", 1),
        ("3", "beta", 0),
        ("4", "gamma", 0),
    ]
    assert [m["confidence"] for m in members] == [0.9, 0.9, 0.8, 0.4]
    assert all("<answer>" in m["response"] for m in members)
    assert [m["answer"] for m in members] == ["Paris", "Paris", "Paris", "Lyon"]
    assert len({m["response_id"] for m in members}) == 4
    [decision] = rows(user_dir, "select * from arbiter_decisions")
    assert json.loads(decision["ranking_json"]) == ["1", "2", "3", "4"]
    assert decision["raw_response"].startswith("<confidence>0.75</confidence>")
    assert "Lyon" in decision["prompt"]


def test_usage_is_summed_over_members_and_arbiter(cli, fakes, user_dir):
    with fakes(MEMBERS):
        save(cli, "--max-iterations", "1")
        result = cli("-m", "team", "Capital of France?", "-u")
    # members 10+10+20+30, arbiter 100; outputs 2+2+3+4, 7
    assert "Token usage: 170 input, 18 output" in result.stderr
    [run] = rows(user_dir, "select input_tokens, output_tokens from consortium_runs")
    assert run == {"input_tokens": 170, "output_tokens": 18}


def test_response_json_and_usage_are_logged_by_llm(cli, fakes, user_dir):
    with fakes(MEMBERS):
        save(cli, "--max-iterations", "1")
        cli("-m", "team", "Capital of France?")
        logged = json.loads(cli("logs", "--json", "-n", "1").stdout)[0]
    run_id = rows(user_dir, "select id from consortium_runs")[0]["id"]
    assert logged["model"] == "team"
    assert logged["response"] == "Paris"
    assert logged["response_json"]["run_id"] == run_id
    assert logged["response_json"]["status"] == "success"
    assert logged["response_json"]["iterations"] == 1
    assert logged["input_tokens"] == 170 and logged["output_tokens"] == 18


def test_options_change_the_run(cli, fakes, user_dir):
    with fakes(MEMBERS):
        save(cli)
        cli("-m", "team", "q1", "-o", "max_iterations", "1")
        cli("-m", "team", "q2", "-o", "confidence_threshold", "70")
        cli("-m", "team", "q3", "-o", "min_iterations", "2", "-o", "confidence_threshold", "0.5")
    runs = {r["user_prompt"]: r for r in rows(user_dir, "select * from consortium_runs")}
    assert runs["q1"]["iteration_count"] == 1  # capped at 1
    assert runs["q2"]["iteration_count"] == 1  # 0.75 >= 0.70
    assert runs["q2"]["confidence_threshold"] == 0.7
    assert runs["q3"]["iteration_count"] == 2  # at least 2


def test_system_prompt_option_and_s_reach_members_and_arbiter(cli, fakes):
    with fakes(MEMBERS):
        save(cli, "--max-iterations", "1", "--system", "Saved system.")
        cli("-m", "team", "q", "-s", "Answer in French.")
        assert CALLS["alpha"][-1]["system"].startswith("Answer in French.")
        assert "Saved system." not in CALLS["alpha"][-1]["system"]
        assert "<user_instructions>\nAnswer in French.\n</user_instructions>" in CALLS["judge"][-1]["prompt"]
        cli("-m", "team", "q", "-o", "system_prompt", "Be terse.")
        assert CALLS["beta"][-1]["system"].startswith("Be terse.")
        cli("-m", "team", "q")
        assert CALLS["gamma"][-1]["system"].startswith("Saved system.")


def test_invalid_option_is_one_line(cli, fakes):
    with fakes(MEMBERS):
        save(cli)
        result = cli("-m", "team", "q", "-o", "max_iterations", "0")
    assert result.exit_code == 1
    assert "max_iterations" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("continue_args", [["-c"], ["--cid", None]])
def test_continuing_a_conversation_continues_each_members_own_thread(cli, fakes, user_dir, continue_args):
    with fakes(MEMBERS):
        save(cli, "--max-iterations", "1")
        cli("-m", "team", "Capital of France?")
        conversation_id = json.loads(cli("logs", "--json", "-n", "1").stdout)[0]["conversation_id"]
        args = [conversation_id if arg is None else arg for arg in continue_args]
        result = cli("What about Italy?", *args)
        assert result.exit_code == 0, result.output
        member_messages = CALLS["alpha"][-1]["messages"]
        [first_answer] = [row["response"] for row in rows(user_dir, "select response from consortium_members where model = 'alpha' order by rowid limit 1")]
        arbiter = CALLS["judge"][-1]
        logged = json.loads(cli("logs", "--json", "-n", "1").stdout)[0]
    # Each member continues its own thread, rebuilt from the store: its own
    # first prompt and its own whole answer, once, then the new prompt.
    assert [(m["role"], m["text"]) for m in member_messages[1:]] == [
        ("user", "Capital of France?"),
        ("assistant", first_answer),
        ("user", "What about Italy?"),
    ]
    # The arbiter continues its own: its earlier prompt and answer are in its
    # messages, so the new prompt does not repeat the conversation.
    assert [m["role"] for m in arbiter["messages"]] == ["user", "assistant", "user"]
    assert "Capital of France?" in arbiter["messages"][0]["text"]
    assert "Capital of France?" not in arbiter["prompt"]
    assert logged["conversation_id"] == conversation_id
    assert logged["model"] == "team"


def test_member_calls_are_not_logged_as_llm_conversations(cli, fakes):
    with fakes(MEMBERS):
        save(cli, "--max-iterations", "1")
        cli("-m", "team", "Capital of France?")
        logged = json.loads(cli("logs", "--json", "-n", "0").stdout)
    assert [entry["model"] for entry in logged] == ["team"]


def test_a_failing_member_is_recorded_and_the_run_goes_on(cli, fakes, user_dir):
    with fakes({**MEMBERS, "gamma": {"fail": "provider exploded"}}):
        save(cli, "--max-iterations", "1", "--retries", "0")
        result = cli("-m", "team", "q")
    assert result.exit_code == 0
    assert result.stdout == "Paris\n"
    assert "member gamma[0] failed: provider exploded" in result.stderr
    failed = rows(user_dir, "select * from consortium_members where model = 'gamma'")
    assert failed[0]["status"] == "failed"
    assert failed[0]["error"] == "provider exploded"
    assert failed[0]["response"] is None


def test_all_members_failing_fails_the_run_with_each_error(cli, fakes, user_dir):
    with fakes({"alpha": {"fail": "quota"}, "beta": {"fail": "down"}, "judge": {"arbiter": True}}):
        cli("consortium", "save", "team", "-m", "alpha", "-m", "beta", "--arbiter", "judge", "--retries", "0")
        with pytest.raises(Exception) as info:
            cli("-m", "team", "q")
    message = str(info.value)
    assert "Only 0 of 2 members answered in iteration 1" in message
    assert "alpha[0]: quota" in message and "beta[0]: down" in message
    [run] = rows(user_dir, "select status, error from consortium_runs")
    assert run["status"] == "failed"
    assert "alpha[0]: quota" in run["error"]
    assert len(rows(user_dir, "select * from consortium_members")) == 2


def test_arbiter_failure_fails_the_run(cli, fakes, user_dir):
    with fakes({**MEMBERS, "judge": {"fail": "arbiter down"}}):
        save(cli, "--retries", "0")
        with pytest.raises(Exception) as info:
            cli("-m", "team", "q")
    assert "Arbiter judge failed: arbiter down" in str(info.value)
    [run] = rows(user_dir, "select status from consortium_runs")
    assert run["status"] == "failed"
    [decision] = rows(user_dir, "select error from arbiter_decisions")
    assert decision["error"] == "arbiter down"
    assert len(rows(user_dir, "select * from consortium_members where status = 'ok'")) == 4


def test_rank_judging_returns_the_top_ranked_answer(cli, fakes, user_dir):
    with fakes({**MEMBERS, "judge": {"reply": '<ranking><rank position="1">4</rank><rank position="2">1</rank></ranking>'}}):
        save(cli, "--judging-method", "rank")
        result = cli("-m", "team", "q")
    assert result.stdout == "Lyon\n"
    [decision] = rows(user_dir, "select * from arbiter_decisions")
    assert decision["confidence"] == 1.0
    assert json.loads(decision["ranking_json"]) == ["4", "1"]
    member = rows(user_dir, "select response_id from consortium_members where member_id = '4'")[0]
    assert decision["chosen_response_id"] == member["response_id"]


def test_rank_judging_iterates_while_confidence_is_low(cli, fakes, user_dir):
    ranking = '<confidence>{n}0%</confidence><ranking><rank position="1">2</rank></ranking>'
    with fakes({**MEMBERS, "judge": {"reply": ranking}}):
        save(cli, "--judging-method", "rank", "--confidence-threshold", "0.2")
        cli("-m", "team", "q")
    # call 1 -> 10% (< 20%), call 2 -> 20%: stops after iteration 2
    [run] = rows(user_dir, "select iteration_count, final_confidence from consortium_runs")
    assert run == {"iteration_count": 2, "final_confidence": 0.2}


def test_arbiter_asking_for_another_iteration_is_honoured(cli, fakes, user_dir):
    with fakes({**MEMBERS, "judge": {"arbiter": True, "arbiter_confidence": 1.0, "needs_iteration": [True, False]}}):
        save(cli)
        cli("-m", "team", "q")
    [run] = rows(user_dir, "select iteration_count from consortium_runs")
    assert run["iteration_count"] == 2


def test_second_iteration_prompts_carry_the_previous_synthesis(cli, fakes):
    with fakes({**MEMBERS, "judge": {"reply": "<confidence>0.1</confidence><synthesis>Draft {n}</synthesis><refinement_areas><area>Cite a source</area></refinement_areas>"}}):
        save(cli, "--max-iterations", "2")
        cli("-m", "team", "Capital of France?")
        second = CALLS["beta"][-1]
        arbiter_second = CALLS["judge"][-1]
    assert "Capital of France?" in second["prompt"]
    assert "Draft 1" in second["prompt"] and "Cite a source" in second["prompt"]
    # auto context: the member also sees its own first turn
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    # auto context: the arbiter continues its own conversation, which holds
    # its first judgement (with the synthesis) once
    assert [m["role"] for m in arbiter_second["messages"]] == ["user", "assistant", "user"]
    assert "<synthesis>Draft 1</synthesis>" in arbiter_second["messages"][1]["text"]


def test_manual_context_sends_one_fresh_prompt_per_iteration(cli, fakes):
    with fakes({**MEMBERS, "judge": {"reply": "<confidence>0.1</confidence><synthesis>Draft {n}</synthesis>"}}):
        save(cli, "--max-iterations", "2", "--manual-context")
        cli("-m", "team", "Capital of France?")
        second = CALLS["beta"][-1]
    assert [m["role"] for m in second["messages"]] == ["system", "user"]
    assert "Draft 1" in second["prompt"]


def test_no_state_leaks_between_prompts(cli, fakes):
    with fakes(MEMBERS):
        save(cli, "--max-iterations", "1")
        cli("-m", "team", "first question")
        cli("-m", "team", "second question")
        messages = CALLS["alpha"][-1]["messages"]
    assert [m["text"] for m in messages if m["role"] != "system"] == ["second question"]


def test_a_consortium_can_be_a_member_of_another(cli, fakes, user_dir):
    with fakes(MEMBERS):
        cli("consortium", "save", "inner", "-m", "alpha", "-m", "beta", "--arbiter", "judge", "--max-iterations", "1")
        cli("consortium", "save", "outer", "-m", "inner", "-m", "gamma", "--arbiter", "judge", "--max-iterations", "1")
        result = cli("-m", "outer", "Capital of France?")
    assert result.exit_code == 0, result.output
    runs = {r["config_name"]: r for r in rows(user_dir, "select * from consortium_runs")}
    assert set(runs) == {"inner", "outer"}
    assert all(run["status"] == "success" for run in runs.values())
    inner_member = rows(user_dir, "select response from consortium_members where model = 'inner'")[0]
    assert inner_member["response"] == "Paris"


def test_a_cycle_introduced_after_saving_is_refused_at_run_time(cli, fakes, user_dir):
    with fakes(MEMBERS):
        cli("consortium", "save", "first", "-m", "alpha", "--arbiter", "judge")
        cli("consortium", "save", "second", "-m", "first", "--arbiter", "judge")
        conn = sqlite3.connect(user_dir / "consortium_logs.db")
        config = json.loads(conn.execute("select config from consortium_configs where name = 'first'").fetchone()[0])
        config["models"] = {"second": 1}
        conn.execute("update consortium_configs set config = ? where name = 'first'", [json.dumps(config)])
        conn.commit()
        with pytest.raises(Exception) as info:
            cli("-m", "second", "q")
    assert "would contain itself: second -> first -> second" in str(info.value)
    assert rows(user_dir, "select * from consortium_runs") == []


def test_an_unknown_option_from_python_is_a_model_error_naming_the_valid_ones(cli, fakes):
    with fakes({"alpha": {"answer": "A"}, "judge": {"arbiter": True}}):
        assert cli("consortium", "save", "team", "-m", "alpha", "--arbiter", "judge").exit_code == 0
        with pytest.raises(llm.ModelError, match="Unknown option 'temperature' for a consortium; valid options: max_iterations"):
            llm.get_model("team").prompt("hi", temperature=0.5).text()
