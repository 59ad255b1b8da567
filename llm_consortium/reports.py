"""Commands that read past runs: ``runs`` and ``run-info``."""

from __future__ import annotations

import json
from typing import Any

import click

from .cli import friendly_errors


def _tokens(row: dict[str, Any]) -> str:
    if row.get("input_tokens") is None and row.get("output_tokens") is None:
        return "n/a"
    return f"{row.get('input_tokens') or 0} in / {row.get('output_tokens') or 0} out"


def _seconds(ms: Any) -> str:
    return "n/a" if ms is None else f"{ms / 1000:.1f}s"


def _short(text: Any, width: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _run_json(row: dict[str, Any]) -> dict[str, Any]:
    data = dict(row)
    for key in ("config_json", "member_models", "conversation_json"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return data


def print_run_details(details: dict[str, Any]) -> None:
    """The whole transcript of a run, readable on a terminal."""
    echo = click.echo
    run = details["run"]
    echo("=== Consortium Run Info ===")
    echo(f"ID: {run['id']}")
    echo(f"Consortium: {run.get('config_name') or '(one-off)'} | Status: {run.get('status')}")
    echo(f"Created: {run['created_at']} | Wall time: {_seconds(run.get('duration_ms'))}")
    echo(f"Details: {run.get('strategy')} strategy, {run.get('judging_method')} judging")
    echo(
        f"Iterations: {run.get('iteration_count')}/{run.get('max_iterations')} | "
        f"Final Confidence: {run.get('final_confidence')} | Tokens: {_tokens(run)}"
    )
    if run.get("error"):
        echo(f"Error: {run['error']}")
    echo(f"Prompt: {run.get('user_prompt')}")
    decisions = {row["iteration"]: row for row in details["decisions"]}
    iterations = sorted({row["iteration"] for row in details["members"]} | set(decisions))
    for iteration in iterations:
        echo(f"\n--- Iteration {iteration} ---")
        for member in (m for m in details["members"] if m["iteration"] == iteration):
            label = f"{member['model']}[{member['instance']}]"
            role = f" role={member['role']}" if member.get("role") not in (None, "member") else ""
            selected = "" if member.get("selected") else " (not passed to arbiter)"
            if member.get("error"):
                echo(f"  Member #{member['member_id']} {label}{role}: FAILED after {_seconds(member.get('duration_ms'))}: {member['error']}")
                continue
            echo(
                f"  Member #{member['member_id']} {label}{role}: confidence {member.get('confidence')}, "
                f"{_tokens(member)}, {_seconds(member.get('duration_ms'))}{selected}"
            )
            for line in (member.get("response") or "").splitlines():
                echo(f"    {line}")
        decision = decisions.get(iteration)
        if decision is None:
            continue
        echo(
            f"\n  Arbiter Decision (Confidence: {decision.get('confidence')}, "
            f"Geometric: {decision.get('geometric_confidence')}) "
            f"by {decision.get('model')}, {_tokens(decision)}, {_seconds(decision.get('duration_ms'))}"
        )
        if decision.get("error"):
            echo(f"    FAILED: {decision['error']}")
            continue
        for label, key in (("Analysis", "analysis"), ("Dissent", "dissent")):
            if decision.get(key):
                echo(f"    {label}: {decision[key]}")
        ranking = json.loads(decision.get("ranking_json") or "[]")
        if ranking:
            echo(f"    Ranking: {', '.join('#' + str(item) for item in ranking)}")
        areas = json.loads(decision.get("refinement_areas") or "[]")
        if areas:
            echo("    Refinement areas:")
            for area in areas:
                echo(f"      - {area}")
        echo(f"    Needs iteration: {bool(decision.get('needs_iteration'))}")
        echo("    Synthesis:")
        for line in (decision.get("synthesis") or "").splitlines():
            echo(f"      {line}")


def register(consortium: click.Group) -> None:
    @consortium.command(name="runs")
    @click.option("--limit", type=int, default=10, show_default=True, help="Maximum number of runs to show")
    @click.option("--since", help="Show runs since date (YYYY-MM-DD or ISO timestamp, UTC)")
    @click.option("--json", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def runs_command(limit, since, json_output):
        """List recent consortium executions, newest first.

        \b
        Example usage:
            llm consortium runs
            llm consortium runs --limit 50 --since 2026-01-01 --json
        """
        from .store import shared_store

        rows = shared_store().runs(limit=limit, since=since)
        if json_output:
            click.echo(json.dumps([_run_json(row) for row in rows], indent=2))
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

        \b
        Example usage:
            llm consortium run-info
            llm consortium run-info 3f2a9c
            llm consortium run-info 3f2a9c --json | jq '.members[].model'
        """
        from .store import shared_store

        details = shared_store().run_details(run_id)
        if json_output:
            details["run"] = _run_json(details["run"])
            click.echo(json.dumps(details, indent=2))
        else:
            print_run_details(details)
