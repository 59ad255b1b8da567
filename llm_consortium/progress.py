"""What a run tells the person at the terminal, on stderr only.

* Member failures are always reported, one line each.
* Live progress — iteration k of max, members finished / total and failures,
  the arbiter at work, the confidence reached — is drawn with ``rich`` only
  when stderr is a terminal (not ``TERM=dumb``) and ``LLM_CONSORTIUM_QUIET``
  is not set. It is transient: it disappears before the answer is written.
* ``NO_COLOR`` means no colour, not no output: progress is still shown, in
  plain text (``rich`` honours the variable).
* Without ``rich`` installed there is no live display; failures are still
  reported.

stdout is never touched: the answer is the caller's business
(``answer_pieces`` hands it over). ``rich`` is imported only once a live
display is really started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

import click

if TYPE_CHECKING:
    from .orchestrator import Run

from .events import (
    ArbiterIgnoredFormat,
    ArbiterStarted,
    Event,
    IterationFinished,
    IterationStarted,
    MemberFinished,
    RunFinished,
    RunStarted,
    SynthesisDelta,
)
from .terminal import printable

QUIET_ENV = "LLM_CONSORTIUM_QUIET"
# Members failing with the same error in one iteration: this many get a line
# each as they fail, the others one line for all of them once the members are done.
SAME_ERROR_LINES = 3
_OFF_VALUES = ("", "0", "false", "no")


def quiet_requested() -> bool:
    """``LLM_CONSORTIUM_QUIET`` set to anything but ``0``/``false``/``no``."""
    return os.environ.get(QUIET_ENV, "").strip().lower() not in _OFF_VALUES


def progress_wanted(stream: TextIO) -> bool:
    """Live progress only on a real terminal, and only when not asked to be quiet."""
    if quiet_requested() or os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Reporter:
    """Turns a run's events into stderr output. Call it with every event and
    ``clear()`` it when the run ends (also on errors)."""

    # One live display per process: a nested consortium (a member that is
    # itself a consortium) runs inside its parent's display and draws nothing.
    _active: ClassVar[Reporter | None] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = progress_wanted(self.stream) if live is None else live
        self.label = "consortium"
        self.iteration = 0
        self.max_iterations = 0
        self._failures = 0
        self._by_error: dict[str, int] = {}  # this iteration's failures, per error
        self._console: Any = None
        self._display: Any = None
        self._finished = False

    # -- output -------------------------------------------------------------
    def _claim_display(self) -> bool:
        with Reporter._active_lock:
            if Reporter._active is None:
                Reporter._active = self
            return Reporter._active is self

    def _start(self) -> bool:
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:  # rich missing: no live display, failures still reported
            return False
        self._console = Console(file=self.stream, highlight=False, soft_wrap=False)
        self._display = Live(
            self._render(""),
            console=self._console,
            transient=True,
            refresh_per_second=8,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._display.start()
        return True

    def _render(self, text: str) -> Any:
        from rich.spinner import Spinner
        from rich.text import Text

        return Spinner("dots", text=Text(text, no_wrap=True, overflow="ellipsis"), style="cyan")

    def _status(self, text: str) -> None:
        if not self.live or self._finished:
            return
        text = printable(text)
        if self._display is None:
            if not (self._claim_display() and self._start()):
                self.live = False
                self._release_display()
                return
        self._display.update(self._render(text), refresh=True)

    def _line(self, text: str, style: str | None = None) -> None:
        """A line that stays: above the live display when there is one."""
        text = printable(text)
        if self._display is not None:
            from rich.text import Text

            self._console.print(Text(text, style=style or ""))
        else:
            click.echo(text, file=self.stream)

    def _release_display(self) -> None:
        with Reporter._active_lock:
            if Reporter._active is self:
                Reporter._active = None

    def clear(self) -> None:
        """Remove the live display (idempotent)."""
        display, self._display = self._display, None
        if display is not None:
            display.stop()
            self._release_display()

    def _finish(self) -> None:
        self._finished = True
        self.clear()

    # -- events -------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.label} · iteration {self.iteration}/{self.max_iterations}"

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.label = event.config_name or "consortium"
            self.max_iterations = event.max_iterations
        elif isinstance(event, IterationStarted):
            self.iteration = event.iteration
            self.max_iterations = event.max_iterations
            self._failures = 0
            self._by_error = {}
            self._status(f"{self._where()} · 0/{len(event.members)} members finished")
        elif isinstance(event, MemberFinished):
            self._member_finished(event)
        elif isinstance(event, ArbiterStarted):
            self._more_failures()
            self._status(f"{self._where()} · arbiter {event.model} is judging")
        elif isinstance(event, ArbiterIgnoredFormat):
            self._line(format_warning(event), style="yellow")
        elif isinstance(event, IterationFinished):
            self._iteration_finished(event)
        elif isinstance(event, (SynthesisDelta, RunFinished)):
            # The answer is about to be written: the display must be gone.
            self._finish()

    def _member_finished(self, event: MemberFinished) -> None:
        result = event.result
        if not result.ok:
            self._failures += 1
            seen = self._by_error[result.error or ""] = self._by_error.get(result.error or "", 0) + 1
            if seen <= SAME_ERROR_LINES:
                self._line(
                    f"llm-consortium: member {result.member.label} failed: {result.error}",
                    style="yellow",
                )
        failed = f" · {self._failures} failed" if self._failures else ""
        self._status(f"{self._where()} · {event.done}/{event.total} members finished{failed}")

    def _more_failures(self) -> None:
        """Once an iteration's members are done: one line for the members
        whose failure was not shown, per error."""
        for error, count in self._by_error.items():
            if count > SAME_ERROR_LINES:
                more = count - SAME_ERROR_LINES
                self._line(
                    f"llm-consortium: {more} more member{'s' if more > 1 else ''} failed: {error}",
                    style="yellow",
                )
        self._by_error = {}

    def _iteration_finished(self, event: IterationFinished) -> None:
        confidence = f"confidence {event.decision.confidence:.2f}"
        if event.final:
            self._status(f"{self._where()} · {confidence} · done")
            return
        reason = f"iterating again ({event.reason})" if event.reason else "iterating again"
        if self.live and not self._finished:
            self._line(f"{self._where()}: {confidence}, {reason}", style="cyan")
        self._status(f"{self._where()} · {confidence} · {reason}")


def format_warning(event: ArbiterIgnoredFormat) -> str:
    """One line: the arbiter ignored the reply format, and what was done."""
    from .arbiter import format_outcome

    return (
        f"llm-consortium: arbiter {event.model} in iteration {event.iteration} "
        + format_outcome(event.problem, event.fallback)
    )


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (and SIGHUP: the terminal went away) like Ctrl-C while a
    run is going, so it is recorded as interrupted (only possible from the
    main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signals = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {
        signum: signal.signal(signum, handler)
        for signum in signals
        if signal.getsignal(signum) is not signal.SIG_IGN  # e.g. under nohup
    }
    try:
        yield
    finally:
        for signum, old_handler in previous.items():
            signal.signal(signum, old_handler)


def answer_pieces(run: Run, report: Reporter) -> Iterator[str]:
    """Drive a run for a terminal user (``llm -m`` and ``llm consortium
    run`` alike): events go to ``report`` on stderr, SIGTERM/SIGHUP count as
    Ctrl-C, and the final answer is yielded piece by piece. On an interrupt
    it says how the run was recorded, then re-raises."""
    answered = False
    try:
        with sigterm_as_interrupt():
            for event in run:
                report(event)
                if isinstance(event, SynthesisDelta):
                    answered = True
                    yield event.text
    except KeyboardInterrupt:
        report.clear()
        click.echo(
            ("\n" if answered else "") + f"Interrupted; run {run.run_id} recorded as {run.status}.",
            err=True,
        )
        raise
    finally:
        report.clear()


@contextmanager
def display_reserved() -> Iterator[None]:
    """Hold the process's one live display for a caller that draws its own
    (``batch``, ``eval``): the consortium runs inside draw nothing; their
    member failure lines are still written."""
    holder = Reporter(live=False)
    claimed = holder._claim_display()
    try:
        yield
    finally:
        if claimed:
            holder._release_display()
