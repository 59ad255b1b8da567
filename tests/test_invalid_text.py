"""Text that cannot be encoded does not kill a run.

A lone surrogate in a member's reply (real providers' JSON can carry
``"\\ud800"``) or in the prompt (undecodable bytes piped to ``llm``, read with
``surrogateescape``) is replaced by U+FFFD where it enters the run, so it can
be sent, stored and printed: every member's answer is kept, the run succeeds,
no traceback.
"""

from __future__ import annotations

import json
import subprocess

from conftest import LLM_BIN, db_rows, write_fake_spec
from llm_consortium import create_consortium
from llm_consortium.db import Store

SPECS = {
    "clean": {"answer": "42"},
    "surrogate": {"reply": "<answer>4\ud8002</answer><confidence>0.7</confidence>"},
    "judge": {"arbiter": True},
}


def test_a_lone_surrogate_in_a_reply_or_the_prompt_is_stored_as_a_replacement_character(fakes, tmp_path):
    store = Store(tmp_path / "c.db")
    with fakes(SPECS):
        result = create_consortium(["clean", "surrogate"], arbiter="judge", max_iterations=1, store=store).orchestrate(
            "What is 6 x 7? \udcff"
        )
    assert result["metadata"]["status"] == "success"
    responses = {row["model"]: row["response"] for row in result["iterations"][0]["model_responses"]}
    assert responses["surrogate"] == "<answer>4\ufffd2</answer><confidence>0.7</confidence>"
    assert responses["clean"].count("<answer>42</answer>") == 1
    (run,) = store.query("select status, user_prompt from consortium_runs")
    assert run == {"status": "success", "user_prompt": "What is 6 x 7? \ufffd"}
    stored = {row["model"]: row["response"] for row in store.query("select model, response from consortium_members where role != 'arbiter'")}
    assert stored == responses


def test_invalid_utf8_on_stdin_of_consortium_run_is_read_as_replacement_characters(cli, fakes, user_dir):
    with fakes(SPECS):
        result = cli("consortium", "run", "-m", "clean", "--arbiter", "judge", input=b"abc\xff\xfe def")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "42"
    (run,) = db_rows(user_dir, "select user_prompt from consortium_runs")
    assert run["user_prompt"] == "abc\ufffd\ufffd def"


def test_end_to_end_invalid_utf8_prompt_and_surrogate_reply_through_llm_m(user_dir):
    """The figure: real ``llm`` processes, bytes that are not UTF-8 on stdin
    (C locale: Python reads them with surrogateescape) and a member whose
    reply carries a lone surrogate. ``-n``: ``llm`` itself cannot log such a
    prompt to its own logs.db (with any model, ``llm -m echo`` too)."""
    write_fake_spec(user_dir, SPECS)
    env = {"LC_ALL": "C", "LANG": "C", "LLM_CONSORTIUM_QUIET": "1"}

    def llm_cli(*args, stdin=b""):
        import os

        return subprocess.run([LLM_BIN, *args], input=stdin, capture_output=True, timeout=60,
                              env={**os.environ, **env})

    assert llm_cli("consortium", "save", "team", "-m", "clean", "-m", "surrogate", "--arbiter", "judge").returncode == 0
    answered = llm_cli("-m", "team", "-n", stdin=b"What is 6 x 7?\xff\n")
    one_off = llm_cli("consortium", "run", "-m", "surrogate", stdin=b"Say 4\xfe2")
    assert (answered.returncode, answered.stdout.strip(), answered.stderr) == (0, b"42", b"")
    assert one_off.returncode == 0 and one_off.stdout.strip().decode() == "4\ufffd2"  # its <answer>
    assert b"Traceback" not in answered.stderr + one_off.stderr
    runs = db_rows(user_dir, "select status, user_prompt from consortium_runs order by created_at")
    assert runs == [
        {"status": "success", "user_prompt": "What is 6 x 7?\ufffd\n"},
        {"status": "success", "user_prompt": "Say 4\ufffd2"},
    ]
    info = json.loads(llm_cli("consortium", "run-info", "--json").stdout)
    assert info["members"][0]["response"] == "<answer>4\ufffd2</answer><confidence>0.7</confidence>"
