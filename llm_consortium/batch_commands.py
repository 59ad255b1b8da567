"""``llm consortium batch``, ``eval`` and ``eval-report``.

Registered when the ``consortium`` group builds its commands; this module
imports only click, and the engine is imported inside the commands.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .cli import friendly_errors
from .output import safe_echo
from .terminal import json_dumps

FORMATS = ("jsonl", "csv", "text")
INTERRUPTED_EXIT = 130


def _interrupted(message: str) -> None:
    safe_echo(message, err=True)
    raise click.exceptions.Exit(INTERRUPTED_EXIT)


def _say(message: str) -> None:
    from .progress import quiet_requested

    if not quiet_requested():
        safe_echo(message, err=True)


def _print_report(data: dict[str, Any], json_output: bool, html: str | None, cdn: bool) -> None:
    from .evaluate import format_table, write_report_page

    if json_output:
        safe_echo(json_dumps(data, indent=2))
    else:
        safe_echo(format_table(data))
    if html:
        path = write_report_page(data, html, cdn=cdn)
        if not json_output:  # with --json, stdout and stderr hold nothing but the JSON
            _say(f"Wrote {path}")


def html_options(fn: Any) -> Any:
    fn = click.option(
        "--cdn", is_flag=True, help="With --html: load plotly.js from the web instead of embedding it"
    )(fn)
    return click.option(
        "--html",
        type=click.Path(dir_okay=False),
        help="Also write a plotly page of accuracy against tokens (needs the visualize extra)",
    )(fn)


def register(consortium: click.Group) -> None:
    @consortium.command(name="batch")
    @click.argument("input_path", metavar="INPUT")
    @click.option("-m", "--model", "model_name", required=True,
                  help="Model to run: a saved consortium or any llm model")
    @click.option("-o", "--output", type=click.Path(dir_okay=False),
                  help="JSONL file to write (default: stdout). Rerun with the same file to resume.")
    @click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                  help="Prompts in flight at once")
    @click.option("--format", "fmt", type=click.Choice(FORMATS),
                  help="Input format (default: from the file name, else sniffed)")
    @click.option("--system", help="System prompt for rows without a 'system' field")
    @click.option("--option", "options", type=(str, str), multiple=True, metavar="KEY VALUE",
                  help="An option for the model, as llm -o takes it (-o is the output here): "
                  "--option temperature 0")
    @click.option("--prompt-field", default="prompt", show_default=True,
                  help="Field (or CSV column) holding the prompt")
    @click.option("--id-field", default="id", show_default=True, help="Field holding the row id")
    @click.option("--fail-fast", is_flag=True, help="Stop at the first failing row")
    @friendly_errors
    def batch_command(input_path, model_name, output, concurrency, fmt, system, options, prompt_field,
                      id_field, fail_fast):
        """Run a model over every prompt of INPUT, writing one JSON line per row.

        INPUT is JSONL (objects with "prompt", optional "id" and "system";
        other fields are copied to the output), CSV with a "prompt" column,
        or plain text with one prompt per line; "-" reads stdin. Each output
        line has id, prompt, answer, model, confidence, run_id,
        input_tokens, output_tokens, duration_s and error (confidence and
        run_id are set for consortia only).

        Rerunning with the same -o file resumes: rows already answered are
        not sent again; rows that failed are retried. A failing row is
        recorded with its error and the batch goes on (--fail-fast stops).
        --option KEY VALUE passes an option to every call (a consortium
        takes its own: --option max_iterations 1).

        \b
        Example usage:
            llm consortium batch questions.jsonl -m my-team -o answers.jsonl
            llm consortium batch questions.jsonl -m gpt-4o-mini -o baseline.jsonl --option temperature 0
            cat prompts.txt | llm consortium batch - -m my-team --concurrency 8
        """
        from dataclasses import replace

        from .batch import (BatchSummary, OutputClosed, OutputFile, StdoutOutput, check_options,
                            check_rows, read_rows, resolve_model, run_batch)
        from .batch_progress import BatchProgress
        from .progress import sigterm_as_interrupt

        model = resolve_model(model_name)
        model_options = check_options(model, options)

        def rows():
            for row in read_rows(input_path, fmt, prompt_field=prompt_field, id_field=id_field):
                yield replace(row, system=row.system or system)

        out = OutputFile(output) if output else StdoutOutput(sys.stdout)
        out.open_for_resume(model.model_id)
        remaining = check_rows(rows(), skip=out.done) if input_path != "-" else None
        summary = BatchSummary()
        where = output or "stdout"
        try:
            with sigterm_as_interrupt(), BatchProgress(remaining, f"batch · {model.model_id}") as bar:
                run_batch(model, rows(), out, summary, concurrency=concurrency, fail_fast=fail_fast,
                          options=model_options, on_done=lambda answer: bar.advance(answer.ok))
        except OutputClosed:
            return  # like any filter whose reader stopped reading
        except KeyboardInterrupt:
            hint = " Run the same command to resume." if output else ""
            _interrupted(f"Interrupted: {summary.written} rows written to {where}.{hint}")
        finally:
            out.close()
        if summary.stopped_at is not None:
            failed = summary.stopped_at
            raise click.ClickException(
                f"Row {failed.row.key} failed: {failed.error} (stopped by --fail-fast; "
                f"{summary.written} rows written to {where})"
            )
        skipped = f", {summary.skipped} already answered" if summary.skipped else ""
        retry = " (rerun the same command to retry them)" if summary.failed and output else ""
        _say(
            f"Done: {summary.written - summary.failed} answered, {summary.failed} failed"
            f"{skipped}; written to {where}{retry}."
        )

    @consortium.command(name="eval")
    @click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
    @click.option("--consortium", "consortia", multiple=True,
                  help="Saved consortium to evaluate (repeatable)")
    @click.option("--members", is_flag=True,
                  help="Also evaluate each member model of those consortia alone (one instance)")
    @click.option("--baseline", "baselines", multiple=True,
                  help="Any llm model to evaluate alone (repeatable)")
    @click.option("--scorer", "scorer_text", default="exact", show_default=True,
                  help="exact | contains | number | regex:PATTERN | judge:MODEL")
    @click.option("--prompt-field", default="prompt", show_default=True)
    @click.option("--expected-field", default="expected", show_default=True)
    @click.option("--id-field", default="id", show_default=True)
    @click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                  help="Prompts in flight at once (over all systems)")
    @click.option("--new", "new", is_flag=True,
                  help="Start a new evaluation even if one with these settings is unfinished")
    @click.option("--json", "json_output", is_flag=True, help="Print the report as JSON")
    @html_options
    @friendly_errors
    def eval_command(dataset, consortia, members, baselines, scorer_text, prompt_field,
                     expected_field, id_field, concurrency, new, json_output, html, cdn):
        """Compare consortia, their members and baseline models on a dataset.

        DATASET is JSONL with "prompt" and "expected" (an expected value may
        be a list of acceptable answers). Prints, per system: n, correct,
        accuracy with a 95% confidence interval (Wilson), input/output
        tokens, mean and p95 latency and failures. Every answer and score is
        stored: after a crash, Ctrl-C or failed rows, running the same
        command again continues that evaluation without sending answered
        rows again (failed rows are retried). Once every row is answered,
        the same command measures afresh; 'llm consortium eval-report'
        re-prints a stored report without calling any model.

        \b
        Scorers: exact (stripped, case-sensitive), contains, number (the
        last number in the answer), regex:PATTERN (re.search; {expected}
        in the pattern stands for the expected text), judge:MODEL (MODEL
        says yes or no; its verdicts are stored).

        \b
        Example usage:
            llm consortium eval qa.jsonl --consortium my-team --members
            llm consortium eval qa.jsonl --consortium my-team --baseline gpt-4o \\
                --scorer judge:gpt-4o-mini --json
            llm consortium eval math.jsonl --consortium my-team --scorer number --html eval.html
        """
        from .batch import resolve_model
        from .batch_progress import BatchProgress
        from .progress import sigterm_as_interrupt
        from .evaluate import Evaluation, Settings, report, resolve_systems
        from .scoring import parse_scorer
        from .db import shared_store

        if html:
            from .visualize import require_plotly

            require_plotly()  # before anything is paid for
        scorer = parse_scorer(scorer_text)
        judge_model = resolve_model(scorer.argument) if scorer.kind == "judge" else None
        systems = resolve_systems(consortia, members, baselines)
        settings = Settings(dataset, scorer, prompt_field, expected_field, id_field)
        store = shared_store()
        evaluation = Evaluation(store, settings, systems, judge_model, resume=not new)
        if evaluation.resumed and not json_output:
            _say(
                f"Continuing eval {evaluation.id[:8]}: {evaluation.stored_answers} answers already "
                f"stored, {evaluation.todo} to go (--new starts a separate evaluation)."
            )
        try:
            with sigterm_as_interrupt(), BatchProgress(evaluation.todo, f"eval {evaluation.id[:8]}") as bar:
                evaluation.run(concurrency, on_done=lambda result: bar.advance(result["error"] is None))
        except KeyboardInterrupt:
            _interrupted(
                f"Interrupted; eval {evaluation.id[:8]} saved what was done. "
                "Run the same command to resume."
            )
        _print_report(report(store, evaluation.id), json_output, html, cdn)
        if not json_output:
            _say(f"Re-print with: llm consortium eval-report {evaluation.id[:8]}")

    @consortium.command(name="eval-report")
    @click.argument("eval_id", required=False)
    @click.option("--json", "json_output", is_flag=True, help="Print the report as JSON")
    @html_options
    @friendly_errors
    def eval_report_command(eval_id, json_output, html, cdn):
        """Print the report of a stored evaluation (the latest by default).

        EVAL_ID may be a unique prefix. An unfinished evaluation is reported
        as far as it went.

        \b
        Example usage:
            llm consortium eval-report 3f2a9c1e
            llm consortium eval-report --json
            llm consortium eval-report 3f2a9c1e --html eval.html
        """
        from .evaluate import report
        from .db import shared_store

        store = shared_store()
        _print_report(report(store, store.resolve_eval_id(eval_id)), json_output, html, cdn)
