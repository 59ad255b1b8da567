"""Commands that read past runs: ``runs``, ``run-info``, ``export-training``,
``leaderboard`` and ``visualize``.

``llm`` imports this module on every start-up, so it imports only click and
the standard library; the export, leaderboard and visualize modules (and
plotly) are imported inside their commands.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from .cli import friendly_errors
from .db import json_column
from .stopping import judge_iteration

SINCE_HELP = "Only runs since this date (YYYY-MM-DD or ISO timestamp, UTC)"


def parse_since(value: str | None) -> str | None:
    """``--since`` as a UTC timestamp in the store's format (for comparison
    with ``created_at``). A date means midnight UTC; a naive time is UTC."""
    if value is None:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"'{value}' is not a date or ISO timestamp (e.g. 2026-01-31 or 2026-01-31T09:30)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def _since_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return parse_since(value)
    except ValueError as ex:
        raise click.BadParameter(str(ex)) from None


def since_option(fn: Any) -> Any:
    return click.option("--since", callback=_since_callback, help=SINCE_HELP)(fn)


# -- formatting helpers ----------------------------------------------------


def _tokens(row: dict[str, Any]) -> str:
    if row.get("input_tokens") is None and row.get("output_tokens") is None:
        return "n/a"
    return f"{row.get('input_tokens') or 0} in / {row.get('output_tokens') or 0} out"


def _seconds(ms: Any) -> str:
    return "n/a" if ms is None else f"{ms / 1000:.1f}s"


def _short(text: Any, width: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _timestamp(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _sum(values: list[Any]) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def iteration_summaries(details: dict[str, Any]) -> list[dict[str, Any]]:
    """Per iteration: member counts, summed tokens (members + arbiter) and
    wall time (from the previous iteration's end, or the run's start, to
    this iteration's arbiter decision being stored)."""
    decisions = {row["iteration"]: row for row in details["decisions"]}
    numbers = sorted({row["iteration"] for row in details["members"]} | set(decisions))
    boundary = _timestamp(details["run"].get("created_at"))
    summaries = []
    for number in numbers:
        members = [row for row in details["members"] if row["iteration"] == number]
        decision = decisions.get(number)
        calls = members + ([decision] if decision else [])
        stamps = [_timestamp(row.get("created_at")) for row in calls]
        end = _timestamp(decision.get("created_at")) if decision else None
        if end is None:
            end = max((stamp for stamp in stamps if stamp is not None), default=None)
        duration_ms = (
            int((end - boundary).total_seconds() * 1000) if end and boundary and end >= boundary else None
        )
        summaries.append(
            {
                "iteration": number,
                "members": len(members),
                "succeeded": sum(1 for row in members if not row.get("error")),
                "failed": sum(1 for row in members if row.get("error")),
                "passed_to_arbiter": sum(1 for row in members if row.get("selected")),
                "input_tokens": _sum([row.get("input_tokens") for row in calls]),
                "output_tokens": _sum([row.get("output_tokens") for row in calls]),
                "member_time_ms": _sum([row.get("duration_ms") for row in members]),
                "arbiter_time_ms": decision.get("duration_ms") if decision else None,
                "duration_ms": duration_ms,
                "confidence": decision.get("confidence") if decision else None,
                "geometric_confidence": decision.get("geometric_confidence") if decision else None,
            }
        )
        boundary = end or boundary
    return summaries


def _eliminated_ids(members: list[dict[str, Any]]) -> set[str]:
    """Member ids a strategy dropped after this iteration."""
    return {str(row.get("member_id")) for row in members if row.get("eliminated")}


def print_run_details(details: dict[str, Any]) -> None:
    """The whole transcript of a run, readable on a terminal."""
    echo = click.echo
    run = details["run"]
    echo("=== Consortium Run Info ===")
    echo(f"ID: {run['id']}")
    echo(f"Consortium: {run.get('config_name') or '(one-off)'} | Status: {run.get('status')}")
    echo(f"Created: {run['created_at']} | Wall time: {_seconds(run.get('duration_ms'))}")
    echo(f"Details: {run.get('strategy')} strategy, {run.get('judging_method')} judging")
    members_config = run.get("member_models") or {}
    if members_config:
        listed = ", ".join(f"{model} x{count}" for model, count in members_config.items())
        echo(f"Members: {listed} | Arbiter: {run.get('arbiter') or '(none)'}")
    echo(
        f"Iterations: {run.get('iteration_count')}/{run.get('max_iterations')} | "
        f"Final Confidence: {_number(run.get('final_confidence'))} "
        f"(threshold {_number(run.get('confidence_threshold'))}) | Tokens: {_tokens(run)}"
    )
    if run.get("error"):
        echo(f"Error: {run['error']}")
    if run.get("system_prompt"):
        echo(f"System: {run['system_prompt']}")
    for role, text in run.get("conversation_json") or []:
        echo(f"Earlier {role}: {_short(text, 100)}")
    echo(f"Prompt: {run.get('user_prompt')}")
    decisions = {row["iteration"]: row for row in details["decisions"]}
    labels = {
        (row["iteration"], str(row.get("member_id"))):
            f"#{row.get('member_id')} {row['model']}[{row['instance']}]"
        for row in details["members"]
    }
    for summary in iteration_summaries(details):
        number = summary["iteration"]
        decision = decisions.get(number)
        members = [row for row in details["members"] if row["iteration"] == number]
        echo(f"\n--- Iteration {number} ---")
        echo(
            f"  {summary['succeeded']}/{summary['members']} members answered"
            + (f", {summary['passed_to_arbiter']} passed to the arbiter" if decision else "")
            + f" | Tokens: {_tokens(summary)} | Time: {_seconds(summary['duration_ms'])}"
        )
        outliers = {str(item) for item in json_column(decision.get("outliers_json"), [])} if decision else set()
        for member in members:
            _print_member(member, decision is not None, outliers)
        if decision is not None:
            _print_decision(decision, number, labels, _eliminated_ids(members), details)
    if run.get("final_synthesis") is not None and run.get("status") == "success":
        echo("\n=== Final Synthesis ===")
        echo(run["final_synthesis"])


def _print_member(member: dict[str, Any], judged: bool, outliers: set[str]) -> None:
    echo = click.echo
    label = f"{member['model']}[{member['instance']}]"
    role = f" role={member['member_role']}" if member.get("member_role") else ""
    head = f"  Member #{member['member_id']} {label}{role}"
    attempts = member.get("attempts") or 0
    retried = f", {attempts} attempts" if attempts > 1 else ""
    if member.get("error"):
        if "attempts)" in member["error"]:
            retried = ""  # the error already says how many attempts it took
        echo(f"{head}: FAILED after {_seconds(member.get('duration_ms'))}{retried}: {member['error']}")
        return
    notes = []
    if judged and not member.get("selected"):
        notes.append("not passed to arbiter")
    if str(member.get("member_id")) in outliers:
        notes.append("outlier")
    echo(
        f"{head}: confidence {_number(member.get('confidence'))}, {_tokens(member)}, "
        f"{_seconds(member.get('duration_ms'))}{retried}" + (f" ({'; '.join(notes)})" if notes else "")
    )
    for line in (member.get("response") or "").splitlines():
        echo(f"    {line}")


def _print_decision(
    decision: dict[str, Any],
    number: int,
    labels: dict[tuple[int, str], str],
    eliminated: set[str],
    details: dict[str, Any],
) -> None:
    echo = click.echo

    def label(member_id: Any) -> str:
        return labels.get((number, str(member_id)), f"#{member_id}")

    geometric = decision.get("geometric_confidence")
    echo(
        f"\n  Arbiter Decision (Confidence: {_number(decision.get('confidence'))}"
        + (f", Geometric: {geometric:.3f}" if geometric is not None else "")
        + f") by {decision.get('model') or '(no arbiter)'}, {_tokens(decision)}, "
        f"{_seconds(decision.get('duration_ms'))}"
    )
    if decision.get("error"):
        echo(f"    FAILED: {decision['error']}")
        return
    for title, key in (("Analysis", "analysis"), ("Dissent", "dissent")):
        if decision.get(key):
            echo(f"    {title}: {decision[key]}")
    ranking = json_column(decision.get("ranking_json"), [])
    if ranking:
        echo(f"    Ranking: {' > '.join(label(item) for item in ranking)}")
    chosen = [
        row for row in details["members"]
        if row["iteration"] == number and row.get("response_id") == decision.get("chosen_response_id")
    ]
    if chosen:
        echo(f"    Chosen: {label(chosen[0].get('member_id'))}")
    outliers = json_column(decision.get("outliers_json"), [])
    if outliers:
        echo(f"    Outliers: {', '.join(label(item) for item in outliers)}")
    clusters = [row for row in details["clusters"] if row.get("iteration") == number]
    if clusters:
        echo(f"    Clusters: {'; '.join(_cluster_text(row) for row in clusters)}")
    if eliminated:
        echo(f"    Eliminated: {', '.join(label(item) for item in sorted(eliminated, key=str))}")
    areas = json_column(decision.get("refinement_areas"), [])
    if areas:
        echo("    Refinement areas:")
        for area in areas:
            echo(f"      - {area}")
    echo(f"    Needs iteration: {bool(decision.get('needs_iteration'))}")
    why = _why_the_run_went_on_or_stopped(decision, number, details)
    if why:
        echo(f"    {why}")
    echo("    Synthesis:")
    for line in (decision.get("synthesis") or "").splitlines():
        echo(f"      {line}")


def _why_the_run_went_on_or_stopped(
    decision: dict[str, Any], number: int, details: dict[str, Any]
) -> str | None:
    """"Another iteration: <why>" or "Stopped: <why>" for a judged iteration,
    by the same rule the run followed (``stopping.judge_iteration``)."""
    run = details["run"]
    later = any(row["iteration"] > number for row in details["decisions"])
    if not later and run.get("status") != "success":
        return None  # the run ended for another reason (failed, interrupted)
    config = run.get("config_json") or {}  # decoded by db.py
    threshold, max_iterations = run.get("confidence_threshold"), run.get("max_iterations")
    if threshold is None or max_iterations is None:
        return None  # a row from before these were recorded
    verdict = judge_iteration(
        number,
        decision.get("confidence"),
        bool(decision.get("needs_iteration")),
        threshold=float(threshold),
        min_iterations=int(config.get("minimum_iterations") or 1),
        max_iterations=int(max_iterations),
    )
    if later and not verdict.final:
        return f"Another iteration: {verdict.reason}"
    if not later and verdict.final:
        return f"Stopped: {verdict.reason}"
    if not later:
        return "Stopped: the synthesis was already streamed"
    return None


def _cluster_text(row: dict[str, Any]) -> str:
    ids = json_column(row.get("member_ids_json"), [])
    text = f"{row.get('cluster_id')}: " + (", ".join(f"#{item}" for item in ids) or f"size {row.get('size')}")
    if row.get("is_consensus"):
        text += " (consensus)"
    return text


# -- commands ----------------------------------------------------------------


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush after a closed
    pipe does not print a second error."""
    import os
    import sys

    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def register(consortium: click.Group) -> None:
    @consortium.command(name="runs")
    @click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="Maximum number of runs to show")
    @since_option
    @click.option("--json", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def runs_command(limit, since, json_output):
        """List recent consortium executions, newest first.

        \b
        Example usage:
            llm consortium runs
            llm consortium runs --limit 50 --since 2026-01-01 --json
        """
        from .db import shared_store

        rows = shared_store().runs(limit=limit, since=since)
        if json_output:
            click.echo(json.dumps(rows, indent=2))
            return
        if not rows:
            click.echo("No recent consortium executions found.")
            return
        click.echo(f"Recent Consortium Runs (up to {limit}):\n")
        for row in rows:
            click.echo(f"ID: {row['id']}")
            click.echo(f"  Created: {row['created_at']}")
            click.echo(f"  Consortium: {row.get('config_name') or '(one-off)'} | Status: {row.get('status')}")
            click.echo(f"  Strategy: {row.get('strategy')} | Judging Method: {row.get('judging_method')}")
            click.echo(
                f"  Iterations: {row.get('iteration_count')}/{row.get('max_iterations')} | "
                f"Final Confidence: {row.get('final_confidence')}"
            )
            click.echo(f"  Tokens: {_tokens(row)} | Wall time: {_seconds(row.get('duration_ms'))}")
            click.echo(f"  Prompt: {_short(row.get('user_prompt'), 80)}")
            click.echo()

    @consortium.command(name="run-info")
    @click.argument("run_id", required=False)
    @click.option("--json", "--json-output", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def run_info_command(run_id, json_output):
        """Show the whole transcript of a consortium run: every member's answer,
        errors, tokens and timings, and each arbiter decision.

        RUN_ID may be a unique prefix; without it, the latest run is shown.
        The JSON holds the stored rows ("run", "members", "decisions",
        "embeddings", "clusters"; JSON columns such as ranking_json stay
        JSON text) plus per-iteration totals ("iterations").

        \b
        Example usage:
            llm consortium run-info
            llm consortium run-info 3f2a9c
            llm consortium run-info 3f2a9c --json | jq '.members[].model'
        """
        from .db import shared_store

        details = shared_store().run_details(run_id)
        if json_output:
            summaries = iteration_summaries(details)
            details["iterations"] = summaries
            click.echo(json.dumps(details, indent=2))
        else:
            print_run_details(details)

    @consortium.command(name="export-training")
    @click.argument("output", type=click.Path(dir_okay=False, allow_dash=True))
    @since_option
    @click.option(
        "--model", "model_filter", help="Filter by specific model (runs that included this member model)"
    )
    @click.option(
        "--min-confidence",
        type=click.FloatRange(0, 100),
        help="Only runs whose final confidence is at least this (0-1, or a percentage)",
    )
    @friendly_errors
    def export_training_command(output, since, model_filter, min_confidence):
        """Export evaluations as training data (JSONL format).

        One line per successful run, in the chat "messages" shape that
        fine-tuning tools accept (system prompt if any, earlier conversation
        turns, the user prompt, the final synthesis as the assistant turn),
        plus "metadata" (run id, consortium, confidence, iterations, member
        models, arbiter, strategy, tokens, created_at). OUTPUT "-" writes to
        stdout. Oldest run first.

        \b
        Example usage:
            llm consortium export-training runs.jsonl
            llm consortium export-training - --since 2026-01-01 --min-confidence 0.9
            llm consortium export-training gpt.jsonl --model gpt-4o-mini
        """
        from .export import export_training
        from .db import shared_store

        if min_confidence is not None and min_confidence > 1:
            min_confidence /= 100
        store = shared_store()
        try:
            # atomic: a file is replaced only once every record is written
            with click.open_file(output, "w", encoding="utf-8", atomic=output != "-") as stream:
                count = export_training(
                    store, stream, since=since, model=model_filter, min_confidence=min_confidence
                )
        except BrokenPipeError:
            if output != "-":
                raise click.ClickException(f"Cannot write {output}: broken pipe") from None
            _silence_stdout()  # the reader (`head`) stopped early: not an error
            return
        except OSError as ex:
            raise click.ClickException(f"Cannot write {output}: {ex.strerror or ex}") from None
        where = "stdout" if output == "-" else output
        click.echo(f"Exported {count} record{'s' if count != 1 else ''} to {where}", err=True)

    @consortium.command(name="leaderboard")
    @since_option
    @click.option("--consortium", "consortium_name", help="Only runs of this saved consortium")
    @click.option("--json", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def leaderboard_command(since, consortium_name, json_output):
        """Which member models win: per model across runs, how often it
        answered, failed, was ranked first or chosen by the arbiter, its mean
        rank and self-reported confidence, how often it was eliminated, its
        tokens and mean latency.

        \b
        Example usage:
            llm consortium leaderboard
            llm consortium leaderboard --since 2026-01-01 --consortium my-team
            llm consortium leaderboard --json | jq '.[0].model'
        """
        from .leaderboard import format_table, leaderboard
        from .db import shared_store

        store = shared_store()
        rows = leaderboard(store, since=since, consortium=consortium_name)
        if consortium_name and not rows:
            store.config_row(consortium_name)  # NotFoundError: neither saved nor in any run
        if json_output:
            click.echo(json.dumps(rows, indent=2))
        elif not rows:
            click.echo("No member responses found.")
        else:
            click.echo(format_table(rows))

    @consortium.command(name="visualize")
    @click.argument("run_id", required=False)
    @click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        help="HTML file to write (default: consortium-run-<id>.html)",
    )
    @click.option(
        "--cdn", is_flag=True, help="Load plotly.js from the web (small file) instead of embedding it"
    )
    @click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser")
    @friendly_errors
    def visualize_command(run_id, output, cdn, open_browser):
        """Write an interactive HTML page of a run: the response embeddings
        projected to 2-D (colour = iteration, marker = model, hover = answer)
        and the arbiter's and geometric confidence per iteration.

        RUN_ID may be a unique prefix; without it, the latest run is shown.
        The page works offline (plotly.js is embedded) unless --cdn is
        given. Needs the visualize extra.

        \b
        Example usage:
            llm consortium visualize 3f2a9c
            llm consortium visualize 3f2a9c -o run.html --cdn --open
        """
        from .db import shared_store
        from .visualize import CDN_NOTE, write_run_page

        path = write_run_page(shared_store(), run_id, output, cdn=cdn)
        click.echo(str(path))
        if cdn:
            click.echo(CDN_NOTE, err=True)
        if open_browser:
            import webbrowser

            if not webbrowser.open(path.resolve().as_uri()):
                raise click.ClickException(
                    f"No web browser found to open {path}; the page is written, open it yourself"
                )
