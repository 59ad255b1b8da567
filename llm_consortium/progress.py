"""What a run tells the person at the terminal, on stderr only.

Member failures are always reported, one line each. Live progress
(iteration, members answered, arbiter, confidence) is shown only when stderr
is a terminal, and never with ``NO_COLOR``-style quiet requests
(``LLM_CONSORTIUM_QUIET=1``).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

import click

from .events import (
    ArbiterStarted,
    Event,
    IterationFinished,
    IterationStarted,
    MemberFinished,
    RunFinished,
    SynthesisDelta,
)


class Reporter:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if live is None:
            live = self.stream.isatty() and not os.environ.get("LLM_CONSORTIUM_QUIET")
        self.live = live
        self._status_shown = False
        self._failures = 0

    def _status(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._status_shown = True

    def clear(self) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._status_shown = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, IterationStarted):
            self._failures = 0
            self._status(
                f"consortium: iteration {event.iteration}/{event.max_iterations} · "
                f"0/{len(event.members)} members answered"
            )
        elif isinstance(event, MemberFinished):
            if not event.result.ok:
                self._failures += 1
                self.clear()
                click.echo(
                    f"llm-consortium: member {event.result.member.label} failed: {event.result.error}",
                    err=True,
                    file=self.stream,
                )
            failed = f" ({self._failures} failed)" if self._failures else ""
            self._status(
                f"consortium: iteration {event.result.iteration} · "
                f"{event.done}/{event.total} members answered{failed}"
            )
        elif isinstance(event, ArbiterStarted):
            self._status(f"consortium: iteration {event.iteration} · arbiter {event.model} is judging")
        elif isinstance(event, IterationFinished):
            self._status(
                f"consortium: iteration {event.iteration} · confidence {event.decision.confidence:.2f}"
                + (" · done" if event.final else " · iterating")
            )
        elif isinstance(event, (SynthesisDelta, RunFinished)):
            self.clear()
