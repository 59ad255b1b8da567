"""The progress bar of ``batch`` and ``eval``: done / failed / ETA on stderr.

Drawn with ``rich`` (imported only when a bar is really shown) and only when
stderr is a terminal and ``LLM_CONSORTIUM_QUIET`` is not set — the same rule
as a single run's progress. stdout is never touched.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from types import TracebackType
from typing import Any, TextIO

from .progress import display_reserved, progress_wanted


class BatchProgress:
    """``with BatchProgress(total, "label") as bar: bar.advance(ok)``."""

    def __init__(
        self, total: int | None, label: str, stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.live = progress_wanted(self.stream) if live is None else live
        self.done = 0
        self.failed = 0
        self._stack = ExitStack()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> BatchProgress:
        # Consortium runs inside the batch must not draw their own display.
        self._stack.enter_context(display_reserved())
        if self.live:
            self._start()
        return self

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("· {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,  # member failure lines print above the bar
        )
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=self.total, failed=0)
        self._stack.callback(self._bar.stop)

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=self.failed)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stack.close()
