"""Databases written by earlier code upgrade in place, every row kept, and
read with the original plugin's column meanings.

Each test writes the old schema and rows with raw SQL, as the old code did:
the previous release of this package (hand-written migrations m001-m003,
recorded in ``_consortium_migrations``) and the original plugin 0.8.0
(its ``db.py`` tables, plus llm's ``responses`` table that its
``log_response`` wrote into the same file).
"""

import json
import sqlite3

import sqlite_utils

from conftest import db_rows as rows
from llm_consortium import DatabaseConnection
from llm_consortium.db import (
    MIGRATION_NAMES,
    get_embeddings_for_run,
    logs_db_path,
    save_cluster_metadata,
    save_response_embedding,
    user_dir as consortium_user_dir,
)

# -- the previous release's schema (its migrations.py, m001-m003) --------------------

PREVIOUS_SCHEMA = """
CREATE TABLE _consortium_migrations (name TEXT PRIMARY KEY, applied_at TEXT);
CREATE TABLE consortium_configs (name TEXT PRIMARY KEY, config TEXT NOT NULL, created_at TEXT);
CREATE TABLE consortium_runs (
    id TEXT PRIMARY KEY, created_at TEXT, config_name TEXT, strategy TEXT, judging_method TEXT,
    confidence_threshold REAL, max_iterations INTEGER, iteration_count INTEGER,
    final_confidence REAL, user_prompt TEXT, category TEXT, expected_agreement REAL, status TEXT,
    finished_at TEXT, system_prompt TEXT, config_json TEXT, final_synthesis TEXT, error TEXT,
    input_tokens INTEGER, output_tokens INTEGER, duration_ms INTEGER, arbiter TEXT,
    member_models TEXT, conversation_json TEXT, pid INTEGER);
CREATE TABLE consortium_members (
    run_id TEXT, response_id TEXT, role TEXT, iteration INTEGER, member_index INTEGER,
    member_id TEXT, model TEXT, instance INTEGER, prompt TEXT, system TEXT, response TEXT,
    answer TEXT, error TEXT, confidence REAL, input_tokens INTEGER, output_tokens INTEGER,
    duration_ms INTEGER, attempts INTEGER, status TEXT, selected INTEGER, extra_json TEXT,
    created_at TEXT, PRIMARY KEY (run_id, response_id));
CREATE TABLE arbiter_decisions (
    run_id TEXT, iteration INTEGER, response_id TEXT, chosen_response_id TEXT, confidence REAL,
    synthesis TEXT, decision_json TEXT, ranking_json TEXT, refinement_areas TEXT,
    geometric_confidence REAL, centroid_vector TEXT, model TEXT, prompt TEXT, raw_response TEXT,
    analysis TEXT, dissent TEXT, needs_iteration INTEGER, outliers_json TEXT, error TEXT,
    input_tokens INTEGER, output_tokens INTEGER, duration_ms INTEGER, attempts INTEGER,
    created_at TEXT, PRIMARY KEY (run_id, iteration));
CREATE TABLE response_embeddings (
    response_id TEXT PRIMARY KEY, run_id TEXT, model TEXT, embedding_json TEXT,
    embedding_model TEXT, created_at TEXT, iteration INTEGER, member_id TEXT, backend TEXT,
    dimensions INTEGER);
CREATE TABLE consensus_clusters (
    run_id TEXT, iteration INTEGER, cluster_id INTEGER, centroid_json TEXT, radius REAL,
    density REAL, algorithm TEXT, member_ids_json TEXT, size INTEGER, is_consensus INTEGER,
    all_noise INTEGER, created_at TEXT);
CREATE INDEX idx_consortium_runs_created ON consortium_runs(created_at);
CREATE INDEX idx_consortium_members_run ON consortium_members(run_id, iteration);
CREATE INDEX idx_consortium_runs_status ON consortium_runs(status);
INSERT INTO _consortium_migrations VALUES
    ('m001_original_tables', '2026-01-01T00:00:00+00:00'),
    ('m002_full_transcripts', '2026-01-01T00:00:00+00:00'),
    ('m003_run_status_index', '2026-01-01T00:00:00+00:00');
"""


def insert(conn, table, **row):
    marks = ", ".join("?" for _ in row)
    conn.execute(f"insert into {table} ({', '.join(row)}) values ({marks})", list(row.values()))


def previous_member(conn, run_id, iteration, member_id, model, instance, index, **fields):
    insert(
        conn, "consortium_members", run_id=run_id, response_id=f"{run_id}:{iteration}:{member_id}",
        role=fields.pop("role", "member"), iteration=iteration, member_index=index,
        member_id=member_id, model=model, instance=instance, response=f"<answer>{model} says</answer>",
        answer=f"{model} says", status="ok", selected=1, input_tokens=10, output_tokens=2,
        duration_ms=100, attempts=1, created_at="2026-03-01T10:00:01.000000+00:00", **fields,
    )


def previous_decision(conn, run_id, iteration, ranking, chosen, **fields):
    insert(
        conn, "arbiter_decisions", run_id=run_id, iteration=iteration, response_id=f"arb-{run_id}-{iteration}",
        chosen_response_id=f"{run_id}:{iteration}:{chosen}", confidence=0.9, synthesis=f"answer {iteration}",
        decision_json="{}", ranking_json=json.dumps(ranking), refinement_areas="[]", model="judge",
        raw_response="<synthesis>s</synthesis>", needs_iteration=0, outliers_json="[]",
        input_tokens=50, output_tokens=5, duration_ms=200, attempts=1,
        created_at="2026-03-01T10:00:02.000000+00:00", **fields,
    )


def write_previous_release_db(path):
    conn = sqlite3.connect(path)
    conn.executescript(PREVIOUS_SCHEMA)
    config = {"models": {"alpha": 2, "beta": 1}, "arbiter": "judge", "strategy": "role"}
    insert(conn, "consortium_configs", name="team", config=json.dumps(config), created_at="2026-02-01T00:00:00+00:00")
    # A role run: role labels in `role`, member_index = position in config order.
    insert(
        conn, "consortium_runs", id="run-role", created_at="2026-03-01T10:00:00.000000+00:00",
        config_name="team", strategy="role", judging_method="default", max_iterations=1,
        iteration_count=1, final_confidence=0.9, user_prompt="Role question?", status="success",
        final_synthesis="answer 1", config_json=json.dumps(config), arbiter="judge",
        member_models=json.dumps(config["models"]), input_tokens=80, output_tokens=11,
    )
    previous_member(conn, "run-role", 1, "1", "alpha", 0, 0, role="generator")
    previous_member(conn, "run-role", 1, "2", "alpha", 1, 1, role="devil's advocate")
    previous_member(conn, "run-role", 1, "3", "beta", 0, 2, role="fact checker")
    previous_decision(conn, "run-role", 1, ["3", "1", "2"], "3")
    # An elimination run: member 3 dropped after iteration 1 (recorded only by
    # its absence from iteration 2), member 2 marked in extra_json.
    insert(
        conn, "consortium_runs", id="run-elim", created_at="2026-03-02T10:00:00.000000+00:00",
        config_name=None, strategy="elimination", judging_method="rank", max_iterations=3,
        iteration_count=3, final_confidence=0.9, user_prompt="Elimination question?", status="success",
        final_synthesis="answer 3", arbiter="judge", member_models=json.dumps({"alpha": 2, "beta": 1}),
    )
    for member_id, model, instance in (("1", "alpha", 0), ("2", "alpha", 1), ("3", "beta", 0)):
        previous_member(conn, "run-elim", 1, member_id, model, instance, int(member_id) - 1)
    previous_member(conn, "run-elim", 2, "1", "alpha", 0, 0)
    previous_member(conn, "run-elim", 2, "2", "alpha", 1, 1, extra_json=json.dumps({"eliminated": True, "eliminated_rank": 2}))
    previous_member(conn, "run-elim", 3, "1", "alpha", 0, 0)
    for iteration, ranking in ((1, ["1", "2", "3"]), (2, ["1", "2"]), (3, ["1"])):
        previous_decision(conn, "run-elim", iteration, ranking, "1")
    # A semantic run with embeddings and a cluster whose density was size / radius.
    insert(
        conn, "consortium_runs", id="run-sem", created_at="2026-03-03T10:00:00.000000+00:00",
        strategy="semantic", judging_method="default", max_iterations=1, iteration_count=1,
        user_prompt="Semantic question?", status="success", final_synthesis="answer 1",
        arbiter="judge", member_models=json.dumps({"alpha": 2}),
    )
    previous_member(conn, "run-sem", 1, "1", "alpha", 0, 0)
    previous_member(conn, "run-sem", 1, "2", "alpha", 1, 1)
    previous_decision(conn, "run-sem", 1, [], "1")
    for member_id, vector in (("1", [1.0, 0.0]), ("2", [0.0, 1.0])):
        insert(
            conn, "response_embeddings", response_id=f"run-sem:1:{member_id}", run_id="run-sem",
            model="alpha", embedding_json=json.dumps(vector), iteration=1, member_id=member_id,
            backend="llm", dimensions=2,
        )
    insert(
        conn, "consensus_clusters", run_id="run-sem", iteration=1, cluster_id=0,
        centroid_json=json.dumps([0.5, 0.5]), radius=0.15, density=2 / 0.15,
        member_ids_json=json.dumps(["1", "2"]), size=2, is_consensus=1, all_noise=0,
    )
    # A run without an arbiter (no arbiter row is added for it).
    insert(
        conn, "consortium_runs", id="run-solo", created_at="2026-03-04T10:00:00.000000+00:00",
        strategy="default", judging_method="default", max_iterations=1, iteration_count=1,
        user_prompt="Solo question?", status="success", final_synthesis="alpha says",
        member_models=json.dumps({"alpha": 1}),
    )
    previous_member(conn, "run-solo", 1, "1", "alpha", 0, 0)
    insert(conn, "arbiter_decisions", run_id="run-solo", iteration=1, confidence=1.0, synthesis="alpha says",
           created_at="2026-03-04T10:00:01.000000+00:00")
    conn.commit()
    conn.close()


def counts(path):
    conn = sqlite3.connect(path)
    tables = ("consortium_configs", "consortium_runs", "consortium_members", "arbiter_decisions",
              "response_embeddings", "consensus_clusters")
    found = {table: conn.execute(f"select count(*) from {table}").fetchone()[0] for table in tables}
    conn.close()
    return found


def test_a_previous_release_database_upgrades_with_every_row_and_original_meanings(cli, user_dir):
    path = user_dir / "consortium_logs.db"
    write_previous_release_db(path)
    before = counts(path)

    assert cli("consortium", "list").exit_code == 0

    after = counts(path)
    decisions_with_arbiter = 5  # run-role 1, run-elim 3, run-sem 1
    assert after == {**before, "consortium_members": before["consortium_members"] + decisions_with_arbiter}
    names = rows(user_dir, "select name from _sqlite_migrations where migration_set = 'llm-consortium' order by id")
    assert [row["name"] for row in names] == MIGRATION_NAMES
    assert not rows(user_dir, "select name from sqlite_master where name = '_consortium_migrations'")
    members = rows(user_dir, "select * from consortium_members where run_id = 'run-role' order by role, member_index")
    assert [(m["role"], m["member_index"], m["member_role"], m["position"]) for m in members] == [
        ("alpha", 0, "generator", 0),
        ("alpha", 1, "devil's advocate", 1),
        ("arbiter", 0, None, None),
        ("beta", 0, "fact checker", 2),
    ]
    assert members[2]["response_id"] == "arb-run-role-1"
    eliminated = rows(user_dir, "select iteration, member_id from consortium_members where eliminated = 1 order by iteration")
    assert [(row["iteration"], row["member_id"]) for row in eliminated] == [(1, "3"), (2, "2")]
    [cluster] = rows(user_dir, "select density from consensus_clusters")
    # Both unit vectors are (1 - cos 45deg) / 2 from the centroid.
    assert cluster["density"] == 1 - (1 - 2**-0.5) / 2

    board = {row["model"]: row for row in json.loads(cli("consortium", "leaderboard", "--json").stdout)}
    assert {model: row["eliminated"] for model, row in board.items()} == {"alpha": 1, "beta": 1}
    assert {model: row["responses"] for model, row in board.items()} == {"alpha": 10, "beta": 2}
    assert board["beta"]["ranked_first"] == 1 and board["alpha"]["chosen"] == 4

    info = cli("consortium", "run-info", "run-role").stdout
    assert "Member #2 alpha[1] role=devil's advocate: confidence" in info
    assert "Ranking: #3 beta[0] > #1 alpha[0] > #2 alpha[1]" in info
    details = json.loads(cli("consortium", "run-info", "run-role", "--json").stdout)
    assert [m["member_id"] for m in details["members"]] == ["1", "2", "3"]  # no arbiter row
    elim = cli("consortium", "run-info", "run-elim").stdout
    assert "Eliminated: #3 beta[0]" in elim and "Eliminated: #2 alpha[1]" in elim

    listed = json.loads(cli("consortium", "runs", "--json").stdout)
    assert [run["id"] for run in listed] == ["run-solo", "run-sem", "run-elim", "run-role"]
    exported = cli("consortium", "export-training", "-").stdout.splitlines()
    assert len(exported) == 4


# -- the original plugin 0.8.0 ---------------------------------------------------------

# Its db.py creates these four tables on every connection; sqlite-utils creates
# response_embeddings and consensus_clusters on first insert, and llm's
# Response.log_to_db() creates conversations and responses in the same file.
ORIGINAL_SCHEMA = """
CREATE TABLE consortium_runs (
    id TEXT PRIMARY KEY, created_at TEXT, config_name TEXT, strategy TEXT, judging_method TEXT,
    confidence_threshold REAL, max_iterations INTEGER, iteration_count INTEGER,
    final_confidence REAL, user_prompt TEXT, category TEXT, expected_agreement REAL, status TEXT,
    FOREIGN KEY (config_name) REFERENCES consortium_configs(name));
CREATE TABLE consortium_members (
    run_id TEXT, response_id TEXT, role TEXT, iteration INTEGER, member_index INTEGER,
    PRIMARY KEY (run_id, response_id),
    FOREIGN KEY (run_id) REFERENCES consortium_runs(id),
    FOREIGN KEY (response_id) REFERENCES responses(id));
CREATE TABLE arbiter_decisions (
    run_id TEXT, iteration INTEGER, response_id TEXT, chosen_response_id TEXT, confidence REAL,
    synthesis TEXT, decision_json TEXT, ranking_json TEXT, refinement_areas TEXT,
    geometric_confidence REAL, centroid_vector TEXT, PRIMARY KEY (run_id, iteration),
    FOREIGN KEY (run_id) REFERENCES consortium_runs(id),
    FOREIGN KEY (response_id) REFERENCES responses(id),
    FOREIGN KEY (chosen_response_id) REFERENCES responses(id));
CREATE TABLE consortium_configs (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, created_at TEXT DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE [response_embeddings] (
   [response_id] TEXT PRIMARY KEY, [run_id] TEXT, [model] TEXT, [embedding_json] TEXT,
   [embedding_model] TEXT, [created_at] TEXT);
CREATE TABLE [consensus_clusters] (
   [run_id] TEXT, [iteration] INTEGER, [cluster_id] INTEGER, [centroid_json] TEXT,
   [radius] FLOAT, [density] FLOAT);
CREATE TABLE [conversations] ([id] TEXT PRIMARY KEY, [name] TEXT, [model] TEXT);
CREATE TABLE [responses] (
   [id] TEXT PRIMARY KEY, [model] TEXT, [prompt] TEXT, [system] TEXT, [prompt_json] TEXT,
   [options_json] TEXT, [response] TEXT, [response_json] TEXT, [conversation_id] TEXT,
   [duration_ms] INTEGER, [datetime_utc] TEXT, [input_tokens] INTEGER, [output_tokens] INTEGER,
   [token_details] TEXT);
"""


def original_config(models, arbiter, strategy="default", **fields):
    """A config as the original's ConsortiumConfig.model_dump() saved it."""
    return {
        "models": models, "system_prompt": None, "confidence_threshold": 0.8, "max_iterations": 3,
        "minimum_iterations": 1, "arbiter": arbiter, "judging_method": "default", "strategy": strategy,
        "strategy_params": None, "embedding_backend": None, "embedding_model": None,
        "embedding_cache_enabled": True, "manual_context": False, "category": None,
        "expected_agreement": None, "status": "success", **fields,
    }


def original_response(conn, response_id, model, prompt, text, tokens=(12, 3)):
    insert(
        conn, "responses", id=response_id, model=model, prompt=prompt, system=None,
        response=text, conversation_id=f"c-{response_id}", duration_ms=150,
        datetime_utc="2025-06-01T09:00:00", input_tokens=tokens[0], output_tokens=tokens[1],
    )


def original_run(conn, run_id, config_name, created_at, prompt, members, synthesis, strategy="default"):
    """One iteration: ``members`` is ``[(response id, model, instance, text)]``;
    the original logs each response, a member row (role = model id,
    member_index = instance), the arbiter's response, an arbiter row and
    the decision."""
    insert(
        conn, "consortium_runs", id=run_id, created_at=created_at, config_name=config_name,
        strategy=strategy, judging_method="default", confidence_threshold=0.8, max_iterations=3,
        iteration_count=1, final_confidence=0.9, user_prompt=prompt, status="success",
    )
    for response_id, model, instance, text in members:
        original_response(conn, response_id, model, prompt, text)
        insert(conn, "consortium_members", run_id=run_id, response_id=response_id, role=model,
               iteration=1, member_index=instance)
    arbiter_id = f"{run_id}-arbiter"
    original_response(conn, arbiter_id, "judge", "arbiter prompt", f"<synthesis>{synthesis}</synthesis>", (90, 9))
    insert(conn, "consortium_members", run_id=run_id, response_id=arbiter_id, role="arbiter",
           iteration=1, member_index=0)
    parsed = {"synthesis": synthesis, "confidence": 0.9, "analysis": "They agree.", "dissent": "",
              "needs_iteration": False, "refinement_areas": [], "chosen_response_id": members[0][0]}
    insert(conn, "arbiter_decisions", run_id=run_id, iteration=1, response_id=arbiter_id,
           chosen_response_id=members[0][0], confidence=0.9, synthesis=synthesis,
           decision_json=json.dumps(parsed), refinement_areas="[]")


def write_original_080_db(path):
    conn = sqlite3.connect(path)
    conn.executescript(ORIGINAL_SCHEMA)
    for name, config, created in (
        ("duo", original_config({"fake-a": 2}, "fake-arb"), "2025-05-01T08:00:00.000001"),
        ("trio", original_config({"fake-a": 1, "fake-b": 1}, "fake-arb", system_prompt="Be brief."), "2025-05-02T08:00:00.000001"),
        ("knockout", original_config({"fake-a": 1, "fake-b": 2}, "fake-arb", "elimination", judging_method="rank"), "2025-05-03T08:00:00.000001"),
    ):
        insert(conn, "consortium_configs", name=name, config=json.dumps(config), created_at=created)
    original_run(
        conn, "orig-run-1", "duo", "2025-06-01T09:00:00.123456", "What is 6 x 7?",
        [("resp-1", "fake-a", 0, "<answer>42</answer><confidence>0.9</confidence>"),
         ("resp-2", "fake-a", 1, "<answer>forty-two</answer>")],
        "42",
    )
    original_run(
        conn, "orig-run-2", "trio", "2025-06-02T09:00:00.123456", "Capital of France?",
        [("resp-3", "fake-a", 0, "<answer>Paris</answer>"), ("resp-4", "fake-b", 0, "<answer>Paris.</answer>")],
        "Paris", strategy="semantic",
    )
    for response_id, vector in (("resp-3", [1.0, 0.0]), ("resp-4", [0.8, 0.6])):
        insert(conn, "response_embeddings", response_id=response_id, run_id="orig-run-2", model="fake-a",
               embedding_json=json.dumps(vector), embedding_model="emb", created_at="2025-06-02T09:00:01")
    insert(conn, "consensus_clusters", run_id="orig-run-2", iteration=1, cluster_id=0,
           centroid_json=json.dumps([0.9, 0.3]), radius=0.2, density=2.0)
    conn.commit()
    conn.close()


def test_an_original_080_database_upgrades_in_place_and_lists_its_consortia_and_runs(cli, user_dir):
    path = user_dir / "consortium_logs.db"
    write_original_080_db(path)
    before = counts(path)

    listed = cli("consortium", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [item["name"] for item in json.loads(listed.stdout)] == ["knockout", "trio", "duo"]
    assert counts(path) == before  # no row lost, none added (its arbiter rows are already there)

    runs = json.loads(cli("consortium", "runs", "--json").stdout)
    assert [(run["id"], run["config_name"], run["status"]) for run in runs] == [
        ("orig-run-2", "trio", "success"), ("orig-run-1", "duo", "success"),
    ]
    assert runs[1]["user_prompt"] == "What is 6 x 7?"
    assert runs[1]["created_at"] == "2025-06-01T09:00:00.123456+00:00"  # the original wrote UTC
    assert runs[1]["member_models"] == {"fake-a": 2}

    # Column meanings are unchanged: role = model id or 'arbiter', member_index = instance.
    original = rows(user_dir, "select role, member_index from consortium_members where run_id = 'orig-run-1' order by rowid")
    assert [(row["role"], row["member_index"]) for row in original] == [("fake-a", 0), ("fake-a", 1), ("arbiter", 0)]

    info = cli("consortium", "run-info", "orig-run-1")
    assert info.exit_code == 0, info.output
    text = info.stdout
    assert "Prompt: What is 6 x 7?" in text
    assert "Member #1 fake-a[0]: confidence" in text and "<answer>42</answer>" in text
    assert "Member #2 fake-a[1]:" in text and "<answer>forty-two</answer>" in text
    assert "by judge, 90 in / 9 out" in text
    assert "Analysis: They agree." in text
    assert "Chosen: #1 fake-a[0]" in text
    details = json.loads(cli("consortium", "run-info", "orig-run-2", "--json").stdout)
    assert [(m["model"], m["member_id"]) for m in details["members"]] == [("fake-a", "1"), ("fake-b", "2")]
    assert [(e["response_id"], e["iteration"], e["member_id"]) for e in details["embeddings"]] == [
        ("resp-3", 1, "1"), ("resp-4", 1, "2"),
    ]
    assert details["clusters"][0]["density"] == 2.0  # the original's own value, kept

    exported = [json.loads(line) for line in cli("consortium", "export-training", "-").stdout.splitlines()]
    assert [record["messages"][-1]["content"] for record in exported] == ["42", "Paris"]
    board = {row["model"]: row for row in json.loads(cli("consortium", "leaderboard", "--json").stdout)}
    assert (board["fake-a"]["responses"], board["fake-a"]["chosen"]) == (3, 2)


def test_database_connection_is_the_originals_entry_point(user_dir):
    db = DatabaseConnection.get_connection()
    assert isinstance(db, sqlite_utils.Database)
    assert consortium_user_dir() == user_dir
    assert logs_db_path() == user_dir / "consortium_logs.db"
    assert {"consortium_runs", "consortium_members", "arbiter_decisions", "consortium_configs"} <= set(db.table_names())

    save_response_embedding("r-1", "run-x", [1.0, 2.0], "fake-a", embedding_model="emb")
    save_response_embedding("r-2", "run-x", [3.0, 4.0], "fake-b")
    assert [vector.tolist() for vector in get_embeddings_for_run("run-x")] == [[1.0, 2.0], [3.0, 4.0]]
    save_cluster_metadata("run-x", 1, [{"cluster_id": 0, "centroid": [2.0, 3.0], "radius": 0.1, "density": 0.95}])
    [cluster] = db.query("select cluster_id, centroid_json, radius, density from consensus_clusters")
    assert cluster == {"cluster_id": 0, "centroid_json": "[2.0, 3.0]", "radius": 0.1, "density": 0.95}
