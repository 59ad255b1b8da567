"""consortium_logs.db: location, schema, migrations and tolerant start-up."""

import json
import sqlite3

import pytest

from conftest import run_llm, write_fake_spec
from llm_consortium.errors import StoreError
from llm_consortium.config import ConsortiumConfig
from llm_consortium.db import MIGRATION_NAMES, Store


def columns(conn, table):
    return {row[1] for row in conn.execute(f"pragma table_info({table})")}


def test_database_lives_in_llm_user_path_and_is_created_on_first_need(user_dir, cli):
    assert not (user_dir / "consortium_logs.db").exists()
    cli("consortium", "list")
    assert (user_dir / "consortium_logs.db").exists()


def test_the_originals_tables_and_key_columns_exist(tmp_path):
    store = Store(tmp_path / "c.db")
    store.runs()
    conn = sqlite3.connect(tmp_path / "c.db")
    assert {"name", "config", "created_at"} <= columns(conn, "consortium_configs")
    assert {
        "id", "created_at", "config_name", "strategy", "judging_method", "confidence_threshold",
        "max_iterations", "iteration_count", "final_confidence", "user_prompt", "category",
        "expected_agreement", "status",
    } <= columns(conn, "consortium_runs")
    assert {"run_id", "response_id", "role", "iteration", "member_index"} <= columns(conn, "consortium_members")
    assert {
        "run_id", "iteration", "response_id", "chosen_response_id", "confidence", "synthesis",
        "decision_json", "ranking_json", "refinement_areas", "geometric_confidence", "centroid_vector",
    } <= columns(conn, "arbiter_decisions")
    assert {"response_id", "run_id", "embedding_json"} <= columns(conn, "response_embeddings")
    assert {"run_id", "iteration", "cluster_id", "centroid_json", "radius", "density"} <= columns(conn, "consensus_clusters")


def test_migrations_are_recorded_once(tmp_path):
    Store(tmp_path / "c.db").runs()
    Store(tmp_path / "c.db").runs()
    conn = sqlite3.connect(tmp_path / "c.db")
    names = [row[0] for row in conn.execute("select name from _sqlite_migrations where migration_set = 'llm-consortium'")]
    assert names == MIGRATION_NAMES


def test_an_original_plugin_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("create table consortium_configs (name text primary key, config text not null, created_at text)")
    conn.execute(
        "insert into consortium_configs values (?, ?, ?)",
        ("old", json.dumps({"models": {"gpt-4": 2}, "arbiter": "gpt-4", "strategy": None}), "2025-01-01T00:00:00"),
    )
    conn.commit()
    conn.close()
    store = Store(path)
    assert [row["name"] for row in store.config_rows()] == ["old"]
    assert "member_id" in columns(sqlite3.connect(path), "consortium_members")


def test_a_newer_schema_is_refused_with_one_line(tmp_path):
    store = Store(tmp_path / "c.db")
    store.runs()
    conn = sqlite3.connect(tmp_path / "c.db")
    conn.execute(
        "insert into _sqlite_migrations (migration_set, name, applied_at) "
        "values ('llm-consortium', 'm999_from_the_future', 'x')"
    )
    conn.commit()
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "c.db").runs()
    assert "written by a newer llm-consortium" in str(info.value)


def test_run_id_prefixes(tmp_path):
    store = Store(tmp_path / "c.db")
    for run_id in ("abc123", "abd456"):
        store.start_run(run_id, "q", ConsortiumConfig(models=["m"]))
    assert store.resolve_run_id("abc") == "abc123"
    with pytest.raises(KeyError, match="ambiguous"):
        store.resolve_run_id("ab")
    with pytest.raises(KeyError, match="not found"):
        store.resolve_run_id("zzz")


@pytest.mark.slow
def test_startup_skips_a_corrupt_row_with_a_warning_and_loads_the_rest(user_dir):
    write_fake_spec(user_dir, {"alpha": {"answer": "A"}, "judge": {"arbiter": True}})
    assert run_llm("consortium", "save", "good", "-m", "alpha", "--arbiter", "judge").returncode == 0
    conn = sqlite3.connect(user_dir / "consortium_logs.db")
    conn.execute("insert into consortium_configs values ('broken', '{not json', '2026-01-01')")
    conn.execute("insert into consortium_configs values ('invalid', ?, '2026-01-01')", [json.dumps({"models": {"a": 0}})])
    conn.commit()
    result = run_llm("models")
    assert result.returncode == 0
    assert "Consortium: good" in result.stdout
    assert "skipping saved consortium 'broken': stored configuration is not valid JSON" in result.stderr
    assert "skipping saved consortium 'invalid': Invalid count in 'a:0'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_plugin_loads_without_a_user_dir(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    result = run_llm("models", env={"LLM_USER_PATH": str(missing)})
    assert result.returncode == 0, result.stderr
    assert not (missing / "consortium_logs.db").exists()
    help_result = run_llm("consortium", "--help", env={"LLM_USER_PATH": str(missing)})
    assert help_result.returncode == 0
    assert "save" in help_result.stdout


@pytest.mark.slow
def test_startup_with_a_garbage_database_still_lists_models(user_dir):
    (user_dir / "consortium_logs.db").write_bytes(b"this is not sqlite" * 100)
    result = run_llm("models")
    assert result.returncode == 0
    assert "saved consortia not loaded" in result.stderr
    listing = run_llm("consortium", "list")
    assert listing.returncode == 1
    assert listing.stderr.count("\n") <= 2 and "not a usable database" in listing.stderr


@pytest.mark.slow
def test_a_run_left_running_by_a_killed_process_is_marked_interrupted(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = Store(tmp_path / "c.db")
    store.start_run("orphan", "q", ConsortiumConfig(models=["m"]))
    store.query("select 1")  # the schema exists; the run's process is then gone
    conn = sqlite3.connect(tmp_path / "c.db")
    conn.execute("update consortium_runs set pid = ? where id = 'orphan'", [dead.pid])
    conn.commit()
    conn.close()
    store.start_run("mine", "q", ConsortiumConfig(models=["m"]))
    statuses = {row["id"]: (row["status"], row["error"]) for row in store.runs()}
    assert statuses["orphan"] == ("interrupted", "the process running it ended without finishing it")
    assert statuses["mine"] == ("running", None)


def test_a_member_row_holds_the_originals_meanings_and_ours_beside_them(tmp_path):
    from llm_consortium.calls import CallOutcome
    from llm_consortium.results import Decision, Member, MemberResult

    store = Store(tmp_path / "c.db")
    store.start_run("r", "q", ConsortiumConfig(models={"a": 1, "b": 2}, arbiter="judge"))
    result = MemberResult(
        member=Member("3", "b", 1, 2), iteration=1, response_id="resp-b1", text="<answer>x</answer>",
        answer="x", confidence=0.7, role="fact checker",
    )
    store.record_member("r", result)
    call = CallOutcome("<synthesis>x</synthesis>", None, "resp-arb", 5, 6, 7, 1)
    store.record_decision("r", 1, Decision(synthesis="x", confidence=0.9), arbiter="judge", call=call)
    rows = store.query("select * from consortium_members order by rowid")
    assert [(r["role"], r["member_index"], r["member_id"], r["position"], r["member_role"]) for r in rows] == [
        ("b", 1, "3", 2, "fact checker"),
        ("arbiter", 0, None, None, None),
    ]
    assert rows[1]["response_id"] == "resp-arb"
    assert [m["response_id"] for m in store.run_details("r")["members"]] == ["resp-b1"]
