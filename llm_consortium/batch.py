"""The batch engine: any ``llm`` model over a dataset, streaming and resumable.

* ``read_rows`` streams the input (JSONL, CSV with a ``prompt`` column, or
  one prompt per line; ``-`` is stdin) as ``Row`` objects; ``check_rows``
  validates a file in one streaming pass before anything is paid for.
* ``answer_row`` sends one row to one model and returns an ``Answer`` (its
  failure is recorded in the answer, never raised — except a missing key,
  which would fail every row and so stops the batch).
* ``run_ordered`` runs tasks on ``concurrency`` worker threads and hands
  results back in input order; only a bounded window of tasks is ever held,
  so memory stays flat in the number of rows. On Ctrl-C it hands back what
  is already done and re-raises; the workers are daemon threads, so calls
  still in flight are abandoned, not waited for.
* ``OutputFile`` is the JSONL output: on a rerun it is read first, rows
  already answered are skipped, and earlier failed rows are dropped from the
  file so that they are retried.
* ``run_batch`` puts these together for ``llm consortium batch``.

``llm consortium batch`` and ``llm consortium eval`` are both built on this.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import pathlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar

from .errors import ConfigError, ConsortiumError, first_invalid

DEFAULT_CONCURRENCY = 4
T = TypeVar("T")
R = TypeVar("R")


class InputError(ConfigError):
    """The input file cannot be read as rows (a usage error)."""


class OutputClosed(ConsortiumError):
    """The reader of stdout went away (``… | head``): the batch stops quietly."""


class BatchStopped(ConsortiumError):
    """A problem every row would hit (a missing API key): the batch stops."""


# -- input -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    number: int  # 1-based position among the input's rows
    id: Any  # the row's own id, else its number
    prompt: str
    system: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # every other input field

    @property
    def key(self) -> str:
        """The id as text: what resume and duplicate checks compare."""
        return str(self.id)


def detect_format(source: str, first_line: str | None) -> str:
    suffix = pathlib.Path(source).suffix.lower() if source != "-" else ""
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv",):
        return "csv"
    return "jsonl" if (first_line or "").lstrip().startswith("{") else "text"


def _open(source: str) -> IO[str]:
    if source == "-":
        return sys.stdin
    try:
        return open(source, encoding="utf-8-sig", newline="")  # a byte-order mark is skipped
    except OSError as ex:
        raise InputError(f"Cannot read {source}: {ex.strerror or ex}") from None


def read_rows(
    source: str,
    fmt: str | None = None,
    *,
    prompt_field: str = "prompt",
    id_field: str = "id",
    system_field: str = "system",
) -> Iterator[Row]:
    """Stream the rows of ``source`` (a path or ``-``). Raises ``InputError``
    naming the line of the first row it cannot read."""
    stream = _open(source)
    name = "stdin" if source == "-" else source
    try:
        lines: Iterator[str] = iter(stream)
        first = next(lines, None)
        if first is None:
            return
        lines = itertools.chain([first], lines)
        fmt = fmt or detect_format(source, first)
        if fmt == "jsonl":
            records = _jsonl_records(lines, name)
        elif fmt == "csv":
            records = _csv_records(lines, name, prompt_field)
        else:
            records = ((number, {prompt_field: line.rstrip("\r\n")}) for number, line in
                       enumerate(lines, start=1) if line.strip())
        for number, (where, record) in enumerate(records, start=1):
            yield _row(number, where, record, name, prompt_field, id_field, system_field)
    except UnicodeDecodeError as ex:
        raise InputError(f"{name} is not UTF-8 text: {ex.reason}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def _jsonl_records(lines: Iterable[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as ex:
            raise InputError(f"{name} line {number}: not valid JSON ({ex.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{name} line {number}: expected a JSON object")
        yield number, record


def _csv_records(
    lines: Iterable[str], name: str, prompt_field: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or prompt_field not in reader.fieldnames:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise InputError(f"{name}: no '{prompt_field}' column (columns: {found})")
    for record in reader:
        yield reader.line_num, {key: value for key, value in record.items() if key is not None}


def _row(
    number: int,
    where: int,
    record: dict[str, Any],
    name: str,
    prompt_field: str,
    id_field: str,
    system_field: str,
) -> Row:
    prompt = record.get(prompt_field)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{name} line {where}: no '{prompt_field}' text")
    row_id = record.get(id_field)
    if row_id is None or row_id == "":
        row_id = number
    elif not isinstance(row_id, (str, int, float)) or isinstance(row_id, bool):
        raise InputError(f"{name} line {where}: '{id_field}' must be a string or a number")
    system = record.get(system_field)
    if system is not None and not isinstance(system, str):
        raise InputError(f"{name} line {where}: '{system_field}' must be a string")
    fields = {
        key: value
        for key, value in record.items()
        if key not in (prompt_field, id_field, system_field)
    }
    return Row(number, row_id, prompt, system or None, fields)


def check_rows(rows: Iterable[Row], skip: set[str] | frozenset[str] = frozenset()) -> int:
    """Read every row once (so a bad line or a repeated id is reported
    before anything is sent); returns how many are not in ``skip``."""
    seen: set[str] = set()
    count = 0
    for row in rows:
        if row.key in seen:
            raise InputError(f"row {row.number}: the id '{row.key}' is used by an earlier row")
        seen.add(row.key)
        count += row.key not in skip
    return count


# -- one call ------------------------------------------------------------------


@dataclass
class Answer:
    """One row sent to one model: the answer, or the error."""

    row: Row
    model: str
    answer: str | None = None
    confidence: float | None = None
    run_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The output line: the result keys, then the input's other fields
        (an input field named like a result key is kept as ``input_NAME``)."""
        data: dict[str, Any] = {
            "id": self.row.id,
            "prompt": self.row.prompt,
            "answer": self.answer,
            "model": self.model,
            "confidence": self.confidence,
            "run_id": self.run_id,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "duration_s": self.duration_s,
            "error": self.error,
        }
        if self.row.system is not None:
            data["system"] = self.row.system
        for key, value in self.row.fields.items():
            data[f"input_{key}" if key in data else key] = value
        return data


def error_text(ex: BaseException) -> str:
    text = str(ex).strip()
    return text if text else type(ex).__name__


def check_options(model: Any, options: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``--option KEY VALUE`` pairs as a dict, checked against the model's
    options before any row is sent; a bad one is a usage error."""
    import llm
    import pydantic

    given = dict(options)
    try:
        model.Options(**given)
    except llm.ModelError as ex:  # a consortium's own check: names the valid options
        raise ConfigError(f"--option: {ex}") from None
    except pydantic.ValidationError as ex:
        where, message, _ = first_invalid(ex, "options")
        valid = ", ".join(model.Options.model_fields) or "none"
        raise ConfigError(f"--option {where}: {message} (options of {model.model_id}: {valid})") from None
    return given


def answer_row(model: Any, row: Row, options: dict[str, str] | None = None) -> Answer:
    """Send ``row`` to ``model`` (an ``llm.Model``) with ``options``. A
    failure is recorded in the answer; a missing key raises ``BatchStopped``
    (every row would fail)."""
    import llm

    from .model import ConsortiumModel

    result = Answer(row=row, model=model.model_id)
    response = None
    started = time.monotonic()
    try:
        response = model.prompt(row.prompt, system=row.system, stream=False, **(options or {}))
        result.answer = response.text()
    except llm.NeedsKeyException as ex:
        raise BatchStopped(f"{model.model_id}: {error_text(ex)}") from None
    except Exception as ex:  # noqa: BLE001 - a failing row is recorded, not raised
        result.error = error_text(ex)
    result.duration_s = round(time.monotonic() - started, 6)
    if response is not None:
        # Attributes, not response.usage(): that would run a failed prompt again.
        result.input_tokens = response.input_tokens
        result.output_tokens = response.output_tokens
        details = response.response_json
        if isinstance(model, ConsortiumModel) and isinstance(details, dict):
            result.confidence = details.get("confidence")
            result.run_id = details.get("run_id")
    return result


def resolve_model(name: str) -> Any:
    """``llm.get_model(name)``; an unknown name is a usage error."""
    import llm

    try:
        return llm.get_model(name)
    except llm.UnknownModelError:
        raise ConfigError(f"Unknown model: {name} (see 'llm models')") from None


# -- the engine ----------------------------------------------------------------

_CANCELLED = object()
_STOP = object()


@dataclass
class _Crash:
    error: BaseException


class _Workers(Generic[T]):
    """``size`` daemon threads calling ``work`` on tasks. Daemon threads, so
    that an interrupted batch exits without waiting for calls in flight."""

    def __init__(self, work: Callable[[T], Any], size: int) -> None:
        self.work = work
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, name=f"batch-worker-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            item = self.inbox.get()
            if item is _STOP:
                return
            seq, task = item
            if self.cancelled.is_set():
                self.outbox.put((seq, _CANCELLED))
                continue
            try:
                result = self.work(task)
            except BaseException as ex:  # noqa: BLE001 - handed to the main thread
                result = _Crash(ex)
            self.outbox.put((seq, result))

    def submit(self, seq: int, task: T) -> None:
        self.inbox.put((seq, task))

    def close(self) -> None:
        for _ in self.threads:
            self.inbox.put(_STOP)


def run_ordered(
    tasks: Iterable[T],
    work: Callable[[T], R],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_result: Callable[[R], None],
    on_done: Callable[[R], None] | None = None,
    stop_after: Callable[[R], bool] | None = None,
) -> bool:
    """Call ``work`` on every task, ``concurrency`` at a time, and hand each
    result to ``on_result`` in task order (``on_done`` sees them as they
    finish). Returns False when ``stop_after(result)`` stopped it early: no
    new tasks are started, those in flight are finished and handed over.

    On Ctrl-C, or an exception raised by ``work``, every result already
    finished is handed over (in order, skipping gaps) before it propagates.
    """
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    window = max(concurrency * 4, 16)  # results held back to keep the input order
    workers: _Workers[T] = _Workers(work, concurrency)
    source = iter(tasks)
    buffer: dict[int, Any] = {}
    submitted = received = written = 0
    exhausted = stopped = False

    def flush(everything: bool = False) -> None:
        nonlocal written
        while written < submitted:
            if written not in buffer:
                if not everything:
                    return
                written += 1
                continue
            result = buffer.pop(written)
            written += 1
            if result is not _CANCELLED and not isinstance(result, _Crash):
                on_result(result)

    try:
        while True:
            while (
                not exhausted
                and not stopped
                and submitted - received < concurrency  # only as many as can start now
                and submitted - written < window
            ):
                task = next(source, _STOP)
                if task is _STOP:
                    exhausted = True
                    break
                workers.submit(submitted, task)  # type: ignore[arg-type]
                submitted += 1
            if written == submitted and (exhausted or stopped):
                return not stopped
            seq, result = workers.outbox.get()
            received += 1
            if isinstance(result, _Crash):
                workers.cancelled.set()
                raise result.error
            buffer[seq] = result
            if result is not _CANCELLED:
                if on_done is not None:
                    on_done(result)
                if stop_after is not None and not stopped and stop_after(result):
                    stopped = True
                    workers.cancelled.set()
            flush()
    except BaseException:
        workers.cancelled.set()
        while True:  # whatever finished meanwhile is kept too
            try:
                seq, result = workers.outbox.get_nowait()
            except queue.Empty:
                break
            buffer[seq] = result
        flush(everything=True)
        raise
    finally:
        workers.close()


# -- output ------------------------------------------------------------------


class OutputFile:
    """The JSONL output of ``batch``. ``open_for_resume`` reads what an
    earlier run wrote: rows with an answer are kept and not sent again;
    failed rows and a line cut off by a crash are dropped (the file is
    rewritten without them) so that those rows are sent again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stream: IO[str] | None = None
        self.done: set[str] = set()
        self.dropped_failures = 0

    def open_for_resume(self, model_id: str) -> None:
        """Read what an earlier run of ``model_id`` wrote; a file written by
        another model is refused (its answers are not this model's)."""
        target = pathlib.Path(self.path)
        if target.exists():
            self._compact(target, model_id)
        try:
            self.stream = open(target, "a", encoding="utf-8")
        except OSError as ex:
            raise ConfigError(f"Cannot write {self.path}: {ex.strerror or ex}") from None

    def _compact(self, target: pathlib.Path, model_id: str) -> None:
        temporary = target.with_name(target.name + ".resume-tmp")
        dropped = 0
        try:
            with open(target, encoding="utf-8") as old, open(temporary, "w", encoding="utf-8") as new:
                for line in old:
                    record = self._parse(line)
                    if record is None or "id" not in record:
                        continue
                    if record.get("model") not in (None, model_id):
                        raise ConfigError(
                            f"{self.path} holds answers from the model '{record['model']}', not "
                            f"'{model_id}'; write to another file (-o) to run '{model_id}'"
                        )
                    if record.get("error") is not None:
                        dropped += 1
                        continue
                    if str(record["id"]) not in self.done:
                        self.done.add(str(record["id"]))
                        new.write(line if line.endswith("\n") else line + "\n")
            os.replace(temporary, target)
        except OSError as ex:
            raise ConfigError(f"Cannot resume from {self.path}: {ex.strerror or ex}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"Cannot resume from {self.path}: it is not UTF-8 text") from None
        finally:
            temporary.unlink(missing_ok=True)
        self.dropped_failures = dropped

    @staticmethod
    def _parse(line: str) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return None  # cut off by a crash: that row is sent again
        return record if isinstance(record, dict) else None

    def write(self, answer: Answer) -> None:
        assert self.stream is not None
        self.stream.write(json.dumps(answer.to_json(), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout:
            self.stream.close()
        self.stream = None


class StdoutOutput(OutputFile):
    """Output lines on stdout (nothing to resume from)."""

    closed_by_reader = False

    def __init__(self, stream: IO[str]) -> None:
        super().__init__("-")
        self.stream = stream

    def open_for_resume(self, model_id: str) -> None:
        return None

    def write(self, answer: Answer) -> None:
        if self.closed_by_reader:
            return
        try:
            super().write(answer)
        except BrokenPipeError:  # `… | head`: the reader has all it wants
            self.closed_by_reader = True
            self._silence()
            raise OutputClosed("stdout was closed") from None

    def _silence(self) -> None:
        """Point stdout at /dev/null, so that the interpreter's last flush
        does not complain about the closed pipe."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())  # type: ignore[union-attr]
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a real file descriptor (a test's stream): nothing to flush later

    def close(self) -> None:
        if not self.closed_by_reader and self.stream is not None:
            self.stream.flush()


# -- a whole batch ---------------------------------------------------------------


@dataclass
class BatchSummary:
    written: int = 0
    failed: int = 0
    skipped: int = 0  # answered by an earlier run
    stopped_at: Answer | None = None  # the failure --fail-fast stopped at


def run_batch(
    model: Any,
    rows: Iterable[Row],
    out: OutputFile,
    summary: BatchSummary,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    fail_fast: bool = False,
    options: dict[str, str] | None = None,
    on_done: Callable[[Answer], None] | None = None,
) -> BatchSummary:
    """Send every row not in ``out.done`` to ``model`` and write the answers
    to ``out``. ``summary`` is filled in as it goes (it also holds the counts
    when Ctrl-C propagates)."""

    def todo() -> Iterator[Row]:
        for row in rows:
            if row.key in out.done:
                summary.skipped += 1
            else:
                yield row

    def write(answer: Answer) -> None:
        out.write(answer)
        summary.written += 1
        summary.failed += 0 if answer.ok else 1

    def stop_after(answer: Answer) -> bool:
        if fail_fast and not answer.ok and summary.stopped_at is None:
            summary.stopped_at = answer
        return summary.stopped_at is not None

    run_ordered(
        todo(),
        lambda row: answer_row(model, row, options),
        concurrency=concurrency,
        on_result=write,
        on_done=on_done,
        stop_after=stop_after,
    )
    return summary
