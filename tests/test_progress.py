"""Live progress on stderr when it is a terminal; silence when piped or asked."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

import pytest

from conftest import LLM_BIN, invoke, registered_fakes, write_fake_spec

from llm_consortium.events import ArbiterStarted, IterationFinished, IterationStarted, MemberFinished, RunStarted
from llm_consortium.progress import Reporter
from llm_consortium.results import Decision, Member, MemberResult

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
FAILURE_LINE = "llm-consortium: member beta[0] failed: boom"

SPECS = {
    "alpha": {"answer": "Paris", "latency": 0.2},
    "beta": {"fail": "boom"},
    "judge": {"arbiter": True, "needs_iteration": [True, False], "chunk_delay": 0.01},
}


def environment(**changes):
    env = dict(os.environ)
    env.pop("LLM_LOAD_PLUGINS", None)
    env.pop("LLM_CONSORTIUM_QUIET", None)
    env.pop("NO_COLOR", None)
    # pytest-xdist workers export COLUMNS=80 and LINES=24, which rich prefers to
    # the size of the terminal it draws on: let the pseudo-terminal's size rule.
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    env["TERM"] = "xterm-256color"
    env.update(changes)
    return env


def run_on_terminal(args, env, timeout=90, stdout_too=False):
    """``llm`` with stderr on a pseudo-terminal (120 columns) and stdout on a
    pipe (or on the terminal too, ``stdout_too``: stdout is then "")."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [LLM_BIN, *args], stdin=subprocess.DEVNULL, stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave, env=env,
    )
    os.close(slave)
    received: list[bytes] = []

    def read_terminal():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not data:
                return
            received.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    os.close(master)
    return proc.returncode, (stdout or b"").decode(), b"".join(received).decode("utf-8", "replace")


def save_team(user_dir):
    """Saved in-process; the `llm` processes find the models in fake_models.json."""
    write_fake_spec(user_dir, SPECS)
    with registered_fakes(SPECS):
        result = invoke("consortium", "save", "team", "-m", "alpha", "-m", "beta", "--arbiter", "judge")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_progress_is_drawn_on_a_terminal_and_stdout_gets_only_the_answer(user_dir):
    save_team(user_dir)
    code, stdout, terminal = run_on_terminal(["-m", "team", "Capital of France?"], environment())
    assert code == 0, terminal
    assert stdout == "Paris\n"
    text = ESCAPES.sub("", terminal)
    for expected in (
        "team · iteration 1/3 · 0/2 members finished",
        "iteration 1/3 · 2/2 members finished · 1 failed",
        "iteration 1/3 · arbiter judge is judging",
        "iteration 1/3: confidence 1.00, iterating again (the arbiter asked for another iteration)",
        "team · iteration 2/3 · 0/2 members finished",
        "iteration 2/3 · arbiter judge is judging",
    ):
        if expected not in text:
            pytest.fail(f"{expected!r} is not in what the terminal showed:\n{text}")
    assert text.count(FAILURE_LINE) == 2  # one line per failure, kept on screen
    assert COLOUR.search(terminal)  # a terminal gets colour
    # The cursor rich hides while drawing is shown again at the end.
    assert terminal.rindex("\x1b[?25h") > terminal.rindex("\x1b[?25l")


def test_no_progress_when_stderr_is_piped_only_failure_lines(user_dir, fakes, monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET")
    monkeypatch.setenv("TERM", "xterm-256color")
    save_team(user_dir)
    with fakes(SPECS):
        result = invoke("-m", "team", "Capital of France?")  # click's stderr is not a terminal
    assert result.exit_code == 0, result.output
    assert result.stdout == "Paris\n"
    assert result.stderr.splitlines() == [FAILURE_LINE, FAILURE_LINE]


def a_run_with_a_failure(reporter):
    member = started(reporter)
    reporter(MemberFinished(MemberResult(member=member, iteration=1, response_id="r", error="boom"), 1, 1))
    reporter(ArbiterStarted(1, "judge"))
    reporter.clear()
    return reporter.stream.getvalue()


def test_no_color_keeps_progress_but_drops_colour(monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = a_run_with_a_failure(Reporter(FakeTerminal()))
    monkeypatch.setenv("NO_COLOR", "1")
    plain = a_run_with_a_failure(Reporter(FakeTerminal()))
    assert COLOUR.search(coloured)
    assert not COLOUR.search(plain)
    assert "outer · iteration 1/3 · arbiter judge is judging" in ESCAPES.sub("", plain)
    assert "llm-consortium: member alpha[0] failed: boom" in plain


def test_quiet_environment_variable_hides_progress_but_not_failures(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("LLM_CONSORTIUM_QUIET", "1")
    assert a_run_with_a_failure(Reporter(FakeTerminal())) == "llm-consortium: member alpha[0] failed: boom\n"


@pytest.mark.slow
def test_consortium_run_quiet_flag_hides_progress_on_a_terminal(user_dir):
    write_fake_spec(user_dir, SPECS)
    args = ["consortium", "run", "Capital of France?", "-m", "alpha", "-m", "beta", "--arbiter", "judge"]
    code, stdout, terminal = run_on_terminal([*args, "-q"], environment())
    assert code == 0, terminal
    assert stdout == "Paris\n"
    assert terminal.replace("\r\n", "\n").splitlines() == [FAILURE_LINE, FAILURE_LINE]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def started(reporter):
    member = Member(id="1", model="alpha", instance=0, index=0)
    reporter(RunStarted("run", "outer", 3, 1))
    reporter(IterationStarted(1, 3, [member]))
    return member


def test_a_nested_consortium_draws_no_second_live_display(monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    outer, inner = Reporter(FakeTerminal()), Reporter(FakeTerminal())
    try:
        member = started(outer)
        started(inner)
        failed = MemberResult(member=member, iteration=1, response_id="r", error="boom")
        inner(MemberFinished(failed, 1, 1))
    finally:
        inner.clear()
        outer.clear()
    assert "0/1 members finished" in outer.stream.getvalue()
    assert inner.stream.getvalue() == "llm-consortium: member alpha[0] failed: boom\n"


def test_progress_is_off_for_streams_that_are_not_terminals(monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET", raising=False)
    assert Reporter(io.StringIO()).live is False
    assert Reporter(FakeTerminal()).live is True
    monkeypatch.setenv("LLM_CONSORTIUM_QUIET", "0")
    assert Reporter(FakeTerminal()).live is True
    monkeypatch.setenv("TERM", "dumb")
    assert Reporter(FakeTerminal()).live is False


def test_without_rich_there_is_no_live_display_but_failures_are_reported(monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    reporter = Reporter(FakeTerminal())
    try:
        member = started(reporter)
        failed = MemberResult(member=member, iteration=1, response_id="r", error="boom")
        reporter(MemberFinished(failed, 1, 1))
    finally:
        reporter.clear()
    assert reporter.stream.getvalue() == "llm-consortium: member alpha[0] failed: boom\n"
    assert Reporter._active is None


def test_progress_counts_finished_members_when_the_only_one_done_failed(monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    members = [Member(id=str(n), model="alpha", instance=n - 1, index=n - 1) for n in (1, 2, 3)]
    reporter = Reporter(FakeTerminal())
    try:
        reporter(RunStarted("run", "team", 3, 3))
        reporter(IterationStarted(1, 3, members))
        failed = MemberResult(member=members[0], iteration=1, response_id="r", error="boom")
        reporter(MemberFinished(failed, 1, 3))
        reporter(ArbiterStarted(1, "judge"))
        decision = Decision(synthesis="Paris", confidence=0.62)
        reporter(IterationFinished(1, decision, False, "confidence below the threshold 0.8"))
    finally:
        reporter.clear()
    text = " ".join(ESCAPES.sub("", reporter.stream.getvalue()).split())  # unwrapped
    assert "team · iteration 1/3 · 1/3 members finished · 1 failed" in text
    assert "answered" not in text
    assert "iteration 1/3: confidence 0.62, iterating again (confidence below the threshold 0.8)" in text


def test_members_failing_alike_get_three_lines_then_one_for_the_rest(monkeypatch):
    monkeypatch.delenv("LLM_CONSORTIUM_QUIET", raising=False)
    members = [Member(id=str(n), model="down", instance=n - 1, index=n - 1) for n in range(1, 8)]
    members.append(Member(id="8", model="quota", instance=0, index=7))
    reporter = Reporter(io.StringIO())
    reporter(RunStarted("run", "team", 1, len(members)))
    reporter(IterationStarted(1, 1, members))
    for done, member in enumerate(members, start=1):
        error = "quota exceeded" if member.model == "quota" else "HTTP 503: unavailable"
        reporter(MemberFinished(MemberResult(member=member, iteration=1, response_id="r", error=error), done, 8))
    reporter(ArbiterStarted(1, "judge"))
    assert reporter.stream.getvalue().splitlines() == [
        "llm-consortium: member down[0] failed: HTTP 503: unavailable",
        "llm-consortium: member down[1] failed: HTTP 503: unavailable",
        "llm-consortium: member down[2] failed: HTTP 503: unavailable",
        "llm-consortium: member quota[0] failed: quota exceeded",
        "llm-consortium: 4 more members failed: HTTP 503: unavailable",
    ]
