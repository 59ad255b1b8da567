"""Versioned schema migrations for ``consortium_logs.db``.

Each migration runs once, inside the same ``BEGIN IMMEDIATE`` transaction as
the row that records it in ``_consortium_migrations``, so concurrent processes
never apply one twice. The original plugin's tables keep their names and key
columns; later migrations only add.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info([{table}])")}


def _add_columns(conn: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    existing = _columns(conn, table)
    for name, kind in columns.items():
        if name not in existing:
            conn.execute(f"ALTER TABLE [{table}] ADD COLUMN [{name}] {kind}")


@migration
def m001_original_tables(conn: sqlite3.Connection) -> None:
    """The original plugin's tables (created only where they do not exist yet)."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consortium_configs (
            name TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            created_at TEXT
        )"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consortium_runs (
            id TEXT PRIMARY KEY,
            created_at TEXT,
            config_name TEXT,
            strategy TEXT,
            judging_method TEXT,
            confidence_threshold REAL,
            max_iterations INTEGER,
            iteration_count INTEGER,
            final_confidence REAL,
            user_prompt TEXT
        )"""
    )
    _add_columns(
        conn,
        "consortium_runs",
        {"category": "TEXT", "expected_agreement": "REAL", "status": "TEXT"},
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consortium_members (
            run_id TEXT,
            response_id TEXT,
            role TEXT,
            iteration INTEGER,
            member_index INTEGER,
            PRIMARY KEY (run_id, response_id)
        )"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS arbiter_decisions (
            run_id TEXT,
            iteration INTEGER,
            response_id TEXT,
            chosen_response_id TEXT,
            confidence REAL,
            synthesis TEXT,
            decision_json TEXT,
            ranking_json TEXT,
            refinement_areas TEXT,
            PRIMARY KEY (run_id, iteration)
        )"""
    )
    _add_columns(
        conn,
        "arbiter_decisions",
        {"geometric_confidence": "REAL", "centroid_vector": "TEXT"},
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS response_embeddings (
            response_id TEXT PRIMARY KEY,
            run_id TEXT,
            model TEXT,
            embedding_json TEXT,
            embedding_model TEXT,
            created_at TEXT
        )"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consensus_clusters (
            run_id TEXT,
            iteration INTEGER,
            cluster_id INTEGER,
            centroid_json TEXT,
            radius REAL,
            density REAL
        )"""
    )


@migration
def m002_full_transcripts(conn: sqlite3.Connection) -> None:
    """Everything the original lost: texts, errors, tokens, durations, outcomes."""
    _add_columns(
        conn,
        "consortium_runs",
        {
            "finished_at": "TEXT",
            "system_prompt": "TEXT",
            "config_json": "TEXT",
            "final_synthesis": "TEXT",
            "error": "TEXT",
            "input_tokens": "INTEGER",
            "output_tokens": "INTEGER",
            "duration_ms": "INTEGER",
            "arbiter": "TEXT",
            "member_models": "TEXT",
            "conversation_json": "TEXT",
            "pid": "INTEGER",
        },
    )
    _add_columns(
        conn,
        "consortium_members",
        {
            "member_id": "TEXT",
            "model": "TEXT",
            "instance": "INTEGER",
            "prompt": "TEXT",
            "system": "TEXT",
            "response": "TEXT",
            "answer": "TEXT",
            "error": "TEXT",
            "confidence": "REAL",
            "input_tokens": "INTEGER",
            "output_tokens": "INTEGER",
            "duration_ms": "INTEGER",
            "attempts": "INTEGER",
            "status": "TEXT",
            "selected": "INTEGER",
            "extra_json": "TEXT",
            "created_at": "TEXT",
        },
    )
    _add_columns(
        conn,
        "arbiter_decisions",
        {
            "model": "TEXT",
            "prompt": "TEXT",
            "raw_response": "TEXT",
            "analysis": "TEXT",
            "dissent": "TEXT",
            "needs_iteration": "INTEGER",
            "outliers_json": "TEXT",
            "error": "TEXT",
            "input_tokens": "INTEGER",
            "output_tokens": "INTEGER",
            "duration_ms": "INTEGER",
            "attempts": "INTEGER",
            "created_at": "TEXT",
        },
    )
    _add_columns(
        conn,
        "response_embeddings",
        {"iteration": "INTEGER", "member_id": "TEXT", "backend": "TEXT", "dimensions": "INTEGER"},
    )
    _add_columns(
        conn,
        "consensus_clusters",
        {
            "algorithm": "TEXT",
            "member_ids_json": "TEXT",
            "size": "INTEGER",
            "is_consensus": "INTEGER",
            "all_noise": "INTEGER",
            "created_at": "TEXT",
        },
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_consortium_runs_created ON consortium_runs(created_at)"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_consortium_members_run ON consortium_members(run_id, iteration)"
    )


@migration
def m003_run_status_index(conn: sqlite3.Connection) -> None:
    """Finding runs still marked ``running`` (to reap those of dead processes)."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_consortium_runs_status ON consortium_runs(status)"
    )


# ---- evaluations (llm consortium eval) -------------------------------------
@migration
def m004_evaluations(conn: sqlite3.Connection) -> None:
    """``llm consortium eval``: one row per evaluation, one per (system, row)."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consortium_evals (
            id TEXT PRIMARY KEY,
            created_at TEXT,
            finished_at TEXT,
            status TEXT,
            eval_key TEXT,
            dataset TEXT,
            dataset_sha256 TEXT,
            row_count INTEGER,
            scorer TEXT,
            prompt_field TEXT,
            expected_field TEXT,
            id_field TEXT,
            systems_json TEXT,
            pid INTEGER
        )"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS consortium_eval_results (
            eval_id TEXT,
            system TEXT,
            row_key TEXT,
            row_number INTEGER,
            kind TEXT,
            prompt TEXT,
            expected TEXT,
            answer TEXT,
            error TEXT,
            correct INTEGER,
            score_detail TEXT,
            judge_model TEXT,
            judge_prompt TEXT,
            judge_verdict TEXT,
            judge_error TEXT,
            confidence REAL,
            run_id TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            duration_s REAL,
            created_at TEXT,
            PRIMARY KEY (eval_id, system, row_key)
        )"""
    )
    conn.execute("CREATE INDEX IF NOT EXISTS idx_consortium_evals_key ON consortium_evals(eval_key)")
# ---- end of evaluations ----------------------------------------------------
