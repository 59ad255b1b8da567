"""``llm consortium eval``: consortia, their members and baselines on one dataset.

Every (system, row) pair is one task of the batch engine (``batch.run_ordered``),
so the dataset is read once, in a stream, and all systems advance together.
Each answer and its score is stored (``Store.record_eval_results``) as it
arrives. An evaluation is identified by its settings (the dataset's content,
the systems with their configurations, the scorer and the field names).
It ends ``finished`` when every row is answered and scored, else
``incomplete`` (or ``interrupted``). Running the same command again
continues the latest evaluation with those settings that is not finished:
answered rows are never sent again, failed rows are retried, and rows whose
judge failed are only judged again. Once finished, the same command measures
afresh (the models behind the names may have changed); ``eval-report``
re-prints a stored report, and ``--new`` always starts a new evaluation. The report (table, ``--json``, ``--html``) is computed from the
stored rows, so ``eval-report`` re-prints it at any time.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .batch import (Answer, InputError, Row, answer_row, check_rows, read_rows, resolve_model,
                    run_ordered)
from .errors import ConfigError
from .scoring import Score, Scorer, judge, percentile, score_text, wilson_interval
from .db import Store

# Results are stored in groups: of this many, or whatever arrived in this time.
STORE_EVERY = 50
STORE_EVERY_S = 1.0


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "consortium" or "model"
    model: Any


def _kind(model: Any) -> str:
    from .model import ConsortiumModel

    return "consortium" if isinstance(model, ConsortiumModel) else "model"


def _config_of(model: Any) -> dict[str, Any] | None:
    config = getattr(model, "config", None) if _kind(model) == "consortium" else None
    if config is None:
        return None
    data = config.to_dict()
    data.pop("created_at", None)
    return data


def resolve_systems(
    consortia: tuple[str, ...], members: bool, baselines: tuple[str, ...]
) -> list[System]:
    """The systems in order: consortia, their members (each once, one
    instance), then baselines; a system named twice is run once."""
    if not consortia and not baselines:
        raise ConfigError("Give at least one --consortium or --baseline to evaluate.")
    if members and not consortia:
        raise ConfigError("--members needs at least one --consortium.")
    systems: dict[str, System] = {}

    def add(model: Any) -> None:
        systems.setdefault(model.model_id, System(model.model_id, _kind(model), model))

    consortium_models = []
    for name in consortia:
        model = resolve_model(name)
        if _kind(model) != "consortium":
            raise ConfigError(f"'{name}' is not a saved consortium (see 'llm consortium list')")
        consortium_models.append(model)
        add(model)
    if members:
        for consortium in consortium_models:
            for member in consortium.config.models:
                try:
                    add(resolve_model(member))
                except ConfigError:
                    raise ConfigError(
                        f"Member model '{member}' of consortium '{consortium.model_id}' "
                        "is not installed (see 'llm models')"
                    ) from None
    for name in baselines:
        add(resolve_model(name))
    return list(systems.values())


# -- one evaluation ------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    dataset: str
    scorer: Scorer
    prompt_field: str = "prompt"
    expected_field: str = "expected"
    id_field: str = "id"

    def rows(self) -> Iterator[Row]:
        return read_rows(
            self.dataset, "jsonl", prompt_field=self.prompt_field, id_field=self.id_field
        )


def dataset_digest(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as ex:
        raise InputError(f"Cannot read {path}: {ex.strerror or ex}") from None
    return digest.hexdigest()


def check_dataset(settings: Settings) -> int:
    """Read the dataset once: every row needs a prompt, an expected value
    and a distinct id. Returns the number of rows."""

    def validated() -> Iterator[Row]:
        for row in settings.rows():
            if settings.expected_field not in row.fields:
                raise InputError(
                    f"{settings.dataset}: row {row.number} has no '{settings.expected_field}' field"
                )
            yield row

    count = check_rows(validated())
    if not count:
        raise InputError(f"{settings.dataset} has no rows")
    return count


def graded_text(answer: str) -> str:
    """What is scored: an answer in the consortium member format
    (``<thinking>``, ``<answer>``, ``<confidence>`` — a model tuned or
    prompted to answer so) is scored on its last ``<answer>``; any other
    answer as it is."""
    from .arbiter import member_answer

    inner = member_answer(answer)
    return inner.strip() if inner is not None else answer


@dataclass
class Task:
    system: System
    row: Row
    rescore_only: bool = False  # answered before; only the judge failed


class Evaluation:
    """One evaluation: the latest unfinished one with the same settings,
    continued, or a new one (always, when ``resume`` is False)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        systems: list[System],
        judge_model: Any = None,
        resume: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.systems = systems
        self.judge_model = judge_model
        self.row_count = check_dataset(settings)
        digest = dataset_digest(settings.dataset)
        key_source = {
            "dataset_sha256": digest,
            "systems": [[system.name, system.kind] for system in systems],
            # A consortium saved again with other settings is another system.
            "configs": [_config_of(system.model) for system in systems],
            "scorer": str(settings.scorer),
            "fields": [settings.prompt_field, settings.expected_field, settings.id_field],
        }
        eval_key = hashlib.sha256(json.dumps(key_source, sort_keys=True, default=str).encode()).hexdigest()
        previous = store.unfinished_eval(eval_key) if resume else None
        self.resumed = previous is not None
        if previous is not None:
            self.id = previous["id"]
            store.update_eval(self.id, status="running", finished_at=None)
            self.states = store.eval_states(self.id)
        else:
            self.id = str(uuid.uuid4())
            store.start_eval(
                {
                    "id": self.id,
                    "eval_key": eval_key,
                    "dataset": settings.dataset,
                    "dataset_sha256": digest,
                    "row_count": self.row_count,
                    "scorer": str(settings.scorer),
                    "prompt_field": settings.prompt_field,
                    "expected_field": settings.expected_field,
                    "id_field": settings.id_field,
                    "systems_json": key_source["systems"],
                }
            )
            self.states = {}

    @property
    def stored_answers(self) -> int:
        return sum(1 for answered, scored in self.states.values() if answered and scored)

    def tasks(self) -> Iterator[Task]:
        for row in self.settings.rows():
            for system in self.systems:
                answered, scored = self.states.get((system.name, row.key), (False, False))
                if not (answered and scored):
                    yield Task(system, row, rescore_only=answered)

    @property
    def todo(self) -> int:
        return self.row_count * len(self.systems) - self.stored_answers

    def work(self, task: Task) -> dict[str, Any]:
        """Answer (unless already answered) and score one row for one system."""
        expected = task.row.fields[self.settings.expected_field]
        if task.rescore_only:
            stored = self.store.eval_result(self.id, task.system.name, task.row.key)
            answer = Answer(
                row=task.row,
                model=task.system.name,
                **{key: stored[key] for key in (
                    "answer", "confidence", "run_id", "input_tokens", "output_tokens", "duration_s"
                )},
            )
        else:
            answer = answer_row(task.system.model, task.row)
        score = self.score(answer, expected)
        return {
            "eval_id": self.id,
            "system": task.system.name,
            "row_key": task.row.key,
            "row_number": task.row.number,
            "kind": task.system.kind,
            "prompt": task.row.prompt,
            "expected": json.dumps(expected),
            "answer": answer.answer,
            "error": answer.error,
            "correct": None if score.correct is None else int(score.correct),
            "score_detail": score.detail,
            "judge_model": self.judge_model.model_id if self.judge_model is not None else None,
            "judge_prompt": score.judge_prompt,
            "judge_verdict": score.judge_verdict,
            "judge_error": score.judge_error,
            "confidence": answer.confidence,
            "run_id": answer.run_id,
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "duration_s": answer.duration_s,
        }

    def score(self, answer: Answer, expected: Any) -> Score:
        if not answer.ok:
            return Score(None, "the system failed")
        text = graded_text(answer.answer or "")
        if self.settings.scorer.kind == "judge":
            return judge(self.judge_model, answer.row.prompt, text, expected)
        return score_text(self.settings.scorer, text, expected)

    def run(self, concurrency: int, on_done: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Answer and score every row not stored yet. Ctrl-C stores what is
        done, marks the evaluation ``interrupted`` and re-raises."""
        pending: list[dict[str, Any]] = []
        stored_at = time.monotonic()

        def store(result: dict[str, Any]) -> None:
            nonlocal stored_at
            pending.append(result)
            if len(pending) >= STORE_EVERY or time.monotonic() - stored_at >= STORE_EVERY_S:
                self.store.record_eval_results(pending)
                pending.clear()
                stored_at = time.monotonic()

        try:
            run_ordered(self.tasks(), self.work, concurrency=concurrency, on_result=store, on_done=on_done)
        except BaseException:
            self.store.record_eval_results(pending)
            self.store.update_eval(self.id, status="interrupted")
            raise
        self.store.record_eval_results(pending)
        self.states = self.store.eval_states(self.id)
        self.store.update_eval(self.id, status="incomplete" if self.todo else "finished")


# -- the report ----------------------------------------------------------------


def report(store: Store, eval_id: str) -> dict[str, Any]:
    """``{"dataset", "systems": [...]}`` (plus the id, scorer, status and
    row count) computed from the stored rows."""
    row = store.eval_row(eval_id)
    systems = json.loads(row["systems_json"])
    measures: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in systems}
    for result in store.eval_measures(eval_id):
        measures.setdefault(result["system"], []).append(result)
    return {
        "eval_id": eval_id,
        "dataset": row["dataset"],
        "scorer": row["scorer"],
        "status": row["status"],
        "rows": row["row_count"],
        "systems": [system_stats(name, kind, measures[name]) for name, kind in systems],
    }


def _total(values: list[Any]) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def system_stats(name: str, kind: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy = correct / n, where n counts every row answered or failed
    (a failure is not correct); latency is over the rows answered."""
    n = len(results)
    correct = sum(1 for result in results if result["correct"] == 1)
    failures = sum(1 for result in results if result["error"] is not None)
    ci_low, ci_high = wilson_interval(correct, n)
    latencies = [
        result["duration_s"]
        for result in results
        if result["error"] is None and result["duration_s"] is not None
    ]
    p95 = percentile(latencies, 0.95)
    return {
        "name": name,
        "kind": kind,
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "input_tokens": _total([result["input_tokens"] for result in results]),
        "output_tokens": _total([result["output_tokens"] for result in results]),
        "mean_latency_s": round(sum(latencies) / len(latencies), 6) if latencies else None,
        "p95_latency_s": round(p95, 6) if p95 is not None else None,
        "failures": failures,
        "unscored": sum(
            1 for result in results if result["error"] is None and result["correct"] is None
        ),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_table(data: dict[str, Any]) -> str:
    headers = ["System", "Kind", "n", "Correct", "Accuracy", "95% CI", "In tokens",
               "Out tokens", "Mean s", "p95 s", "Failures"]
    unscored = any(system["unscored"] for system in data["systems"])  # the judge failed
    lines = [
        [
            system["name"], system["kind"], str(system["n"]), str(system["correct"]),
            _percent(system["accuracy"]),
            "n/a" if system["ci_low"] is None
            else f"{system['ci_low']:.1%}–{system['ci_high']:.1%}",
            _count(system["input_tokens"]), _count(system["output_tokens"]),
            _secs(system["mean_latency_s"]), _secs(system["p95_latency_s"]),
            str(system["failures"]),
            *([str(system["unscored"])] if unscored else []),
        ]
        for system in data["systems"]
    ]
    headers += ["Unscored"] if unscored else []
    widths = [max(len(cells[i]) for cells in [headers, *lines]) for i in range(len(headers))]

    def render(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    title = f"Eval {data['eval_id'][:8]} · {data['dataset']} · {data['rows']} rows · scorer {data['scorer']}"
    if data["status"] != "finished":
        title += f" · {data['status']}"
    return "\n".join([title, "", render(headers), *map(render, lines)])


def build_figure(data: dict[str, Any]) -> Any:
    """Accuracy (with its 95% interval) against tokens spent, one marker per system."""
    import html

    from .visualize import require_plotly

    go = require_plotly()
    figure = go.Figure()
    for kind, symbol in (("consortium", "star"), ("model", "circle")):
        systems = [system for system in data["systems"] if system["kind"] == kind]
        if not systems:
            continue
        tokens = [(system["input_tokens"] or 0) + (system["output_tokens"] or 0) for system in systems]
        accuracy = [system["accuracy"] for system in systems]
        figure.add_trace(
            go.Scatter(
                x=tokens,
                y=accuracy,
                mode="markers+text",
                name="Consortium" if kind == "consortium" else "Single model",
                text=[html.escape(system["name"]) for system in systems],
                textposition="top center",
                marker={"symbol": symbol, "size": 16 if kind == "consortium" else 12},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [
                        (system["ci_high"] or 0) - (system["accuracy"] or 0) for system in systems
                    ],
                    "arrayminus": [
                        (system["accuracy"] or 0) - (system["ci_low"] or 0) for system in systems
                    ],
                },
                customdata=[
                    [system["n"], system["correct"], system["mean_latency_s"], system["failures"]]
                    for system in systems
                ],
                hovertemplate=(
                    "<b>%{text}</b><br>accuracy %{y:.1%} (%{customdata[1]} of %{customdata[0]})"
                    "<br>%{x:,} tokens<br>mean latency %{customdata[2]:.2f} s"
                    "<br>%{customdata[3]} failures<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        title={
            "text": (
                f"Eval {html.escape(data['eval_id'][:8])} — {html.escape(str(data['dataset']))}"
                f"<br><sup>{data['rows']} rows · scorer {html.escape(str(data['scorer']))}"
                " · bars: 95% Wilson interval</sup>"
            )
        },
        xaxis_title="Tokens (input + output, whole dataset)",
        yaxis_title="Accuracy",
        yaxis={"range": [0, 1.05], "tickformat": ".0%"},
        template="plotly_white",
        height=560,
    )
    return figure


def write_report_page(data: dict[str, Any], output: str | pathlib.Path, cdn: bool = False) -> pathlib.Path:
    from .visualize import write_figure_page

    return write_figure_page(build_figure(data), pathlib.Path(output), cdn=cdn)
