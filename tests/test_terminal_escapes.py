"""Control sequences from models and providers never reach the terminal.

A member can put ``ESC ] 52`` (write the clipboard), ``ESC ] 0`` (window
title), ``ESC [ 2 J`` (clear screen) or their 8-bit C1 forms in its answer,
and a provider can put them in an error message. Everything we print that came
from them — the live failure lines, error messages, ``run-info``, ``runs`` —
shows them as visible stand-ins instead, on a terminal and in a pipe. Only the
final answer on stdout is printed raw (as ``llm`` prints any model's output).
"""

from __future__ import annotations

import json
import re

import llm
import pytest

from conftest import write_fake_spec
from llm_consortium.terminal import json_dumps, printable
from test_progress import environment, run_on_terminal

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ATTACK = "\x1b]52;c;cHduZWQ=\x07\x1b]0;PWNED\x07\x1b[2J\x9b2J\x9d0;t\x9c\rX"
SPECS = {
    "honest-a": {"answer": "42"},
    "honest-b": {"answer": "42"},
    "hostile": {"answer": f"7{ATTACK}", "thinking": f"think{ATTACK}"},
    "broken": {"fail": f"HTTP 500 {ATTACK} upstream"},
    "judge": {"arbiter": True, "arbiter_confidence": 0.9},
}
MEMBERS = ["-m", "honest-a", "-m", "honest-b", "-m", "hostile", "-m", "broken"]


def control_bytes(text: str) -> int:
    return len(CONTROL.findall(text.replace("\r\n", "\n")))


def test_printable_makes_every_control_character_visible():
    shown = printable(ATTACK + "\ttab\nnext\r\nline")
    assert control_bytes(shown) == 0
    assert shown.startswith("\u241b]52;c;cHduZWQ=\u2407\u241b]0;PWNED")
    assert "<U+009B>2J" in shown and "\u240dX" in shown
    assert shown.endswith("\ttab\nnext\nline")


def test_json_output_escapes_del_and_c1_and_decodes_to_the_same_data():
    value = {"text": ATTACK + "\x7f"}
    for ensure_ascii in (True, False):
        text = json_dumps(value, ensure_ascii=ensure_ascii)
        assert control_bytes(text) == 0
        assert json.loads(text) == value


@pytest.fixture
def hostile_team(cli, fakes):
    with fakes(SPECS):
        assert cli("consortium", "save", "team", *MEMBERS, "--arbiter", "judge", "--max-iterations", "1").exit_code == 0
        yield


def test_failure_lines_and_run_info_show_no_control_characters(cli, hostile_team):
    result = cli("-m", "team", "What is 6 x 7?")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "42"
    assert "member broken[0] failed: HTTP 500 \u241b]52;c;" in result.stderr
    assert control_bytes(result.stderr) == 0

    info = cli("consortium", "run-info")
    assert info.exit_code == 0
    assert "\u241b]0;PWNED" in info.stdout  # the member's text, visibly
    assert control_bytes(info.stdout) == 0

    for args in (("consortium", "runs"), ("consortium", "run-info", "--json"), ("consortium", "runs", "--json"),
                 ("consortium", "leaderboard"), ("consortium", "export-training", "-")):
        output = cli(*args)
        assert output.exit_code == 0, args
        assert control_bytes(output.stdout) == 0, args
    # What is stored is what the member wrote: only the display is changed.
    stored = json.loads(cli("consortium", "run-info", "--json").stdout)
    hostile = next(row for row in stored["members"] if row["model"] == "hostile")
    assert ATTACK in hostile["response"]


def test_prompt_and_config_from_the_store_are_shown_safely(cli, fakes):
    with fakes(SPECS):
        assert cli("consortium", "save", "odd", "-m", "honest-a", "--arbiter", "judge",
                   "--system", f"be brief{ATTACK}").exit_code == 0
        assert cli("-m", "odd", f"prompt{ATTACK}").exit_code == 0
        for args in (("consortium", "list"), ("consortium", "info", "odd"), ("consortium", "runs"),
                     ("consortium", "run-info")):
            output = cli(*args)
            assert output.exit_code == 0, args
            assert control_bytes(output.stdout) == 0, args


def test_a_failed_run_error_message_has_no_control_characters(cli, fakes):
    with fakes({"honest-a": {"answer": "42"}, "bad-judge": {"fail": f"denied{ATTACK}"}}):
        assert cli("consortium", "save", "t", "-m", "honest-a", "--arbiter", "bad-judge", "--retries", "0").exit_code == 0
        with pytest.raises(llm.ModelError) as raised:  # in tests llm re-raises instead of printing
            cli("-m", "t", "q")
        one_off = cli("consortium", "run", "q", "-m", "honest-a", "--arbiter", "bad-judge", "--retries", "0")
    assert "Arbiter bad-judge failed: denied\u241b]52" in str(raised.value)
    assert control_bytes(str(raised.value)) == 0
    assert one_off.exit_code == 1 and "denied\u241b]52" in one_off.stderr
    assert control_bytes(one_off.stderr) == 0


def test_on_a_real_terminal_zero_bytes_of_control_sequences_arrive(user_dir):
    """The figure: with stderr and stdout on a pseudo-terminal (progress
    off, so that our own drawing does not count), no control byte at all."""
    write_fake_spec(user_dir, SPECS)
    env = environment(LLM_CONSORTIUM_QUIET="1")
    code, _, saved = run_on_terminal(
        ["consortium", "save", "team", *MEMBERS, "--arbiter", "judge", "--max-iterations", "1"], env, stdout_too=True
    )
    assert code == 0, saved
    code, _, answered = run_on_terminal(["-m", "team", "What is 6 x 7?"], env, stdout_too=True)
    assert code == 0 and answered.rstrip().endswith("42")
    assert "failed: HTTP 500" in answered
    code, _, info = run_on_terminal(["consortium", "run-info"], env, stdout_too=True)
    assert code == 0 and "PWNED" in info
    assert control_bytes(answered) + control_bytes(info) == 0
