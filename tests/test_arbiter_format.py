"""How an arbiter's reply is read: one rule whether it streams or not, and
what happens when the arbiter ignores the reply format.

The rule (``llm_consortium.arbiter``): only top-level blocks count (a draft
``<synthesis>`` quoted inside ``<analysis>`` is analysis text); the answer is
the first top-level ``<synthesis>`` after a usable ``<confidence>``; an
unclosed ``<synthesis>`` runs to the end. A streamed answer, a ``--no-stream``
answer and the stored final synthesis are the same text.

An arbiter whose reply has no ``<synthesis>`` or no usable ``<confidence>``
(rank judging: no usable ``<ranking>``) is asked once more with a format
reminder; if it ignores that too, the best-ranked member answer (else the
first one passed to the arbiter) is the answer and the run stops there. Either
way one stderr line names the arbiter, and the decision records it.
"""

from __future__ import annotations

import json

import pytest
from llm.plugins import pm

from conftest import db_rows, fake_models
from llm_consortium import create_consortium
from llm_consortium.db import Store

RANK_1 = '<ranking><rank position="1">1</rank><rank position="2">2</rank></ranking>'
REPLIES = {
    "draft-in-analysis": (
        "<confidence>0.9</confidence>\n<needs_iteration>false</needs_iteration>\n"
        "<analysis>My first draft was <synthesis>DRAFT</synthesis>, but it lacked the units."
        "</analysis>\n" + RANK_1 + "\n<synthesis>REAL answer</synthesis>"
    ),
    "afterthought": (
        "<confidence>0.9</confidence><needs_iteration>false</needs_iteration>\n"
        "<synthesis>REAL answer</synthesis>\nOn reflection I might also say "
        "<synthesis>AFTERTHOUGHT</synthesis>"
    ),
    "draft-before-confidence": (
        "<synthesis>EARLY</synthesis>\n<confidence>0.9</confidence>\n"
        "<synthesis>\n  REAL answer\n</synthesis>"
    ),
    "unclosed": "<confidence>0.9</confidence>\n<analysis>fine</analysis>\n<synthesis>REAL answer",
}
MEMBERS = {"alpha": {"answer": "41"}, "beta": {"answer": "42"}}


@pytest.mark.parametrize("reply", REPLIES.values(), ids=REPLIES.keys())
def test_streamed_and_no_stream_answers_and_the_stored_synthesis_are_the_same(cli, fakes, user_dir, reply):
    with fakes({**MEMBERS, "judge": {"reply": reply, "chunk_delay": 0.001}}):
        assert cli("consortium", "save", "team", "-m", "alpha", "-m", "beta", "--arbiter", "judge").exit_code == 0
        answers = [
            cli("-m", "team", "q"),
            cli("-m", "team", "--no-stream", "q"),
            cli("consortium", "run", "q", "-m", "alpha", "-m", "beta", "--arbiter", "judge"),
            cli("consortium", "run", "q", "-m", "alpha", "-m", "beta", "--arbiter", "judge", "--no-stream"),
        ]
        streamed_calls = [call["stream"] for call in fake_models.ScriptedModel.calls["judge"]]
    assert streamed_calls == [True, False, True, False]  # both paths really were taken
    assert [result.stdout.strip() for result in answers] == ["REAL answer"] * 4
    assert all(not result.stderr for result in answers)
    runs = db_rows(user_dir, "select status, final_synthesis, final_confidence from consortium_runs")
    assert runs == [{"status": "success", "final_synthesis": "REAL answer", "final_confidence": 0.9}] * 4
    decisions = db_rows(user_dir, "select synthesis from arbiter_decisions")
    assert decisions == [{"synthesis": "REAL answer"}] * 4


def test_a_confidence_quoted_in_the_analysis_does_not_decide(tmp_path, fakes):
    reply = (
        "<confidence>0.3</confidence><needs_iteration>false</needs_iteration>"
        "<analysis>Had I been sure I would say <confidence>1.0</confidence>.</analysis>"
        "<synthesis>tentative</synthesis>"
    )
    with fakes({**MEMBERS, "judge": {"reply": reply}}):
        result = create_consortium(["alpha"], arbiter="judge", max_iterations=1,
                                   store=Store(tmp_path / "c.db")).orchestrate("q")
    assert result["synthesis"]["confidence"] == 0.3
    assert result["synthesis"]["format_problem"] is None


CHATTY = "Both members are close; I would go with 42, since beta shows its work."
RANKED_ONLY = 'No tags for the answer, but <ranking><rank position="1">2</rank></ranking>.'
PROPER = "<confidence>0.95</confidence><needs_iteration>false</needs_iteration><synthesis>forty-two</synthesis>"


def save_team(cli, arbiter="judge", *extra):
    assert cli(
        "consortium", "save", "team", "-m", "alpha", "-m", "beta", "--arbiter", arbiter, "--max-iterations", "3",
        *extra,
    ).exit_code == 0


def test_an_arbiter_ignoring_the_format_twice_falls_back_to_the_best_ranked_member(cli, fakes, user_dir):
    with fakes({**MEMBERS, "judge": {"replies": [CHATTY, RANKED_ONLY]}}):
        save_team(cli)
        result = cli("-m", "team", "What is 6 x 7?")
        calls = fake_models.ScriptedModel.calls["judge"]
        info = cli("consortium", "run-info")
    assert result.exit_code == 0
    assert result.stdout.strip() == "42"  # beta's answer: ranked first by the second reply
    (line,) = result.stderr.splitlines()
    assert line == (
        "llm-consortium: arbiter judge in iteration 1 ignored the reply format "
        "(no <synthesis>, no usable <confidence>); it ignored a format reminder too, "
        "so the answer is member #2 beta[0] (best ranked)'s, not a synthesis"
    )
    assert len(calls) == 2  # asked once more, then the run stopped (not 3 iterations)
    # In the arbiter's own conversation, the reminder follows its first reply.
    assert calls[1]["prompt"].startswith("IMPORTANT: a reply to this prompt could not be used")
    assert "did not follow the required reply format (no <synthesis>, no usable <confidence>)" in calls[1]["prompt"]
    assert [m["text"] for m in calls[1]["messages"][-3:-1]] == [calls[0]["prompt"], CHATTY]
    (run,) = db_rows(user_dir, "select status, iteration_count, final_synthesis from consortium_runs")
    assert run == {"status": "success", "iteration_count": 1, "final_synthesis": "42"}
    (decision,) = db_rows(user_dir, "select decision_json, confidence, raw_response from arbiter_decisions")
    recorded = json.loads(decision["decision_json"])
    assert recorded["format_problem"] == "no <synthesis>, no usable <confidence>"
    assert recorded["fallback"] == "member #2 beta[0] (best ranked)"
    assert recorded["reply_ignoring_format"] == CHATTY
    assert decision["confidence"] == 0.0 and decision["raw_response"] == RANKED_ONLY
    assert "Format: the arbiter ignored the reply format (no <synthesis>, no usable <confidence>)" in info.stdout
    assert "answer is member #2 beta[0] (best ranked)'s" in info.stdout
    assert "Stopped: the arbiter ignored the reply format" in info.stdout


def test_with_manual_context_the_reminder_repeats_the_prompt(fakes, tmp_path):
    with fakes({**MEMBERS, "judge": {"replies": [CHATTY, PROPER]}}):
        result = create_consortium(["alpha", "beta"], arbiter="judge", manual_context=True,
                                   store=Store(tmp_path / "c.db")).orchestrate("q")
        calls = fake_models.ScriptedModel.calls["judge"]
    assert result["synthesis"]["synthesis"] == "forty-two"
    assert calls[1]["prompt"].startswith(calls[0]["prompt"])
    assert "did not follow the required reply format" in calls[1]["prompt"]


def test_an_arbiter_that_follows_the_reminder_gives_the_answer(cli, fakes, user_dir):
    with fakes({**MEMBERS, "judge": {"replies": [CHATTY, PROPER], "chunk_delay": 0.001}}):
        save_team(cli)
        result = cli("-m", "team", "q")
    assert result.stdout.strip() == "forty-two"
    assert result.stderr.strip() == (
        "llm-consortium: arbiter judge in iteration 1 ignored the reply format "
        "(no <synthesis>, no usable <confidence>); asked again with a format reminder, it followed the format"
    )
    (run,) = db_rows(user_dir, "select final_synthesis, final_confidence from consortium_runs")
    assert run == {"final_synthesis": "forty-two", "final_confidence": 0.95}


def test_rank_judging_without_a_usable_ranking_falls_back_to_the_first_response(tmp_path, fakes):
    with fakes({**MEMBERS, "judge": {"reply": "The second one is best."}}):
        result = create_consortium(["alpha", "beta"], arbiter="judge", judging_method="rank",
                                   store=Store(tmp_path / "c.db")).orchestrate("q")
    assert result["synthesis"]["synthesis"] == "41"
    assert result["synthesis"]["format_problem"] == "no <ranking> of the response ids"
    assert result["synthesis"]["fallback"] == "member #1 alpha[0] (first response; no usable ranking)"
    assert len(result["iterations"]) == 1


def test_llm_echo_as_arbiter_does_not_return_the_prompt_template(cli, fakes, user_dir):
    import llm_echo

    pm.register(llm_echo, name="undo-llm-echo")
    try:
        with fakes(MEMBERS):
            save_team(cli, "echo")
            result = cli("-m", "team", "What is 6 x 7?")
    finally:
        pm.unregister(name="undo-llm-echo")
    assert result.exit_code == 0
    assert result.stdout.strip() == "41"
    assert "your final answer" not in result.stdout
    assert "arbiter echo in iteration 1 ignored the reply format" in result.stderr


def test_an_echoed_template_confidence_is_not_a_number():
    from llm_consortium.arbiter import parse_confidence

    assert parse_confidence("a number between 0 and 1") is None
    assert parse_confidence("8/10") == 0.8 and parse_confidence("0.8 out of 1") == 0.8
    assert parse_confidence(" 0.85 (high) ") == 0.85 and parse_confidence("85%") == 0.85
    assert parse_confidence("\u0663") is None  # not an ASCII digit
