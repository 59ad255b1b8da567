"""``consortium_logs.db``: the one module that knows the tables.

Every table and column name, every migration and every query lives here;
the rest of the plugin hands this module domain objects (a
``ConsortiumConfig``, ``MemberResult``, ``Decision``, embeddings and clusters)
and reads back plain dicts. See ``docs/storage.md`` for the schema.

Concurrency: one ``Store`` per database file and process keeps one
connection, wrapped in a ``sqlite_utils.Database`` and guarded by a lock, so
threads of a process never write at once. Across processes the database runs
in WAL mode, every write is a short ``BEGIN IMMEDIATE`` transaction, and a
busy database is waited for and retried instead of reaching the user as
``database is locked``. Runs left ``running`` by a process that no longer
exists are marked ``interrupted`` (reaped) before new runs start.

The original plugin's module of the same name offered ``DatabaseConnection``
and a few helpers; they are here with the same names and signatures, on top
of the same store.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import pathlib
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

from . import shared_prompt, stored_values
from .errors import NotFoundError, StoreError
from .liveness import owner_gone, owner_json
from .terminal import valid_unicode

if TYPE_CHECKING:
    from .calls import CallOutcome
    from .config import ConsortiumConfig
    from .results import ClusterSummary, Decision, MemberResult, ResponseEmbedding

DB_FILENAME = "consortium_logs.db"
BUSY_TIMEOUT_MS = 30_000
LOCKED_RETRY_SECONDS = 120.0
MIGRATION_SET = "llm-consortium"
#: Before sqlite-utils migrations, applied migrations were listed here.
LEGACY_MIGRATIONS_TABLE = "_consortium_migrations"
#: ``consortium_members.role`` of the row recorded for each arbiter decision
#: (the original's value; member rows hold the model id).
ARBITER_ROLE = "arbiter"
T = TypeVar("T")

CONFIGS, RUNS, MEMBERS = "consortium_configs", "consortium_runs", "consortium_members"
DECISIONS, EMBEDDINGS, CLUSTERS = "arbiter_decisions", "response_embeddings", "consensus_clusters"
EVALS, EVAL_RESULTS = "consortium_evals", "consortium_eval_results"  # llm consortium eval


# -- location ------------------------------------------------------------------


def user_dir() -> pathlib.Path:
    """``llm``'s user directory (honours ``LLM_USER_PATH``)."""
    import llm

    try:
        return llm.user_dir()
    except OSError as ex:
        raise StoreError(f"Cannot use the llm user directory: {ex}") from None


def logs_db_path() -> pathlib.Path:
    """The consortium database: ``consortium_logs.db`` in ``user_dir()``."""
    return user_dir() / DB_FILENAME


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def json_column(text: Any, default: Any) -> Any:
    """A JSON text column decoded, or ``default`` when it is missing,
    unreadable or (for a list/dict ``default``) of another type."""
    if not isinstance(text, str) or not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    if default is not None and not isinstance(value, type(default)):
        return default
    return value


#: JSON columns of a run row, decoded when runs are read.
RUN_JSON_COLUMNS = {"config_json": {}, "member_models": {}, "conversation_json": []}


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: json_column(value, RUN_JSON_COLUMNS[key]) if key in RUN_JSON_COLUMNS and value is not None else value
        for key, value in row.items()
    }


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _is_locked(ex: sqlite3.OperationalError) -> bool:
    message = str(ex).lower()
    return "locked" in message or "busy" in message


def _is_read_only(ex: sqlite3.Error) -> bool:
    message = str(ex).lower()
    return "readonly" in message or "read-only" in message


def _readable(conn: sqlite3.Connection) -> bool:
    """Whether the database can be read through ``conn``; False only when
    what stands in the way is a read-only file or directory."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as ex:
        if _is_read_only(ex) or "unable to open" in str(ex).lower():
            return False
        raise
    return True


def _storable(value: Any) -> Any:
    """Text that UTF-8 can encode (and JSON for a list, tuple or dict):
    every value written passes here."""
    if value is None or type(value) in (int, float):
        return value
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, (dict, list, tuple)):
        return valid_unicode(_dumps(value))
    return value


#: What each column read back should hold (``stored_values.checked``): a
#: hand-edit or another tool may have left anything in it.
COLUMN_KINDS = {
    **dict.fromkeys(
        (
            "confidence_threshold", "max_iterations", "iteration_count", "final_confidence",
            "input_tokens", "output_tokens", "duration_ms", "pid", "iteration", "member_index",
            "position", "instance", "confidence", "attempts", "selected", "eliminated",
            "geometric_confidence", "needs_iteration", "dimensions", "size", "is_consensus",
            "all_noise", "radius", "density", "cluster_id",
        ),
        stored_values.NUMBER,
    ),
    **dict.fromkeys(
        (
            "user_prompt", "system_prompt", "final_synthesis", "error", "prompt", "system",
            "response", "answer", "synthesis", "analysis", "dissent", "raw_response", "model",
            "config_name", "strategy", "judging_method", "status", "created_at", "finished_at",
            "role", "member_role", "member_id", "arbiter", "response_id", "chosen_response_id",
        ),
        stored_values.TEXT,
    ),
}


# -- migrations ------------------------------------------------------------------

MIGRATIONS = Migrations(MIGRATION_SET)
#: Every migration's name, in order (a database listing another one was
#: written by a newer llm-consortium).
MIGRATION_NAMES: list[str] = []


def migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    MIGRATION_NAMES.append(fn.__name__)
    return MIGRATIONS()(fn)


def _add_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    existing = set(db[table].columns_dict)
    for name, kind in columns.items():
        if name not in existing:
            db[table].add_column(name, kind)


@migration
def m001_original_tables(db: sqlite_utils.Database) -> None:
    """The original plugin's tables (created only where they do not exist yet)."""
    db[CONFIGS].create({"name": str, "config": str, "created_at": str}, pk="name",
                       not_null={"config"}, if_not_exists=True)
    db[RUNS].create(
        {
            "id": str, "created_at": str, "config_name": str, "strategy": str,
            "judging_method": str, "confidence_threshold": float, "max_iterations": int,
            "iteration_count": int, "final_confidence": float, "user_prompt": str,
        },
        pk="id",
        if_not_exists=True,
    )
    _add_columns(db, RUNS, {"category": str, "expected_agreement": float, "status": str})
    db[MEMBERS].create(
        {"run_id": str, "response_id": str, "role": str, "iteration": int, "member_index": int},
        pk=("run_id", "response_id"),
        if_not_exists=True,
    )
    db[DECISIONS].create(
        {
            "run_id": str, "iteration": int, "response_id": str, "chosen_response_id": str,
            "confidence": float, "synthesis": str, "decision_json": str, "ranking_json": str,
            "refinement_areas": str,
        },
        pk=("run_id", "iteration"),
        if_not_exists=True,
    )
    _add_columns(db, DECISIONS, {"geometric_confidence": float, "centroid_vector": str})
    db[EMBEDDINGS].create(
        {"response_id": str, "run_id": str, "model": str, "embedding_json": str,
         "embedding_model": str, "created_at": str},
        pk="response_id",
        if_not_exists=True,
    )
    db[CLUSTERS].create(
        {"run_id": str, "iteration": int, "cluster_id": int, "centroid_json": str,
         "radius": float, "density": float},
        if_not_exists=True,
    )


@migration
def m002_full_transcripts(db: sqlite_utils.Database) -> None:
    """Everything the original lost: texts, errors, tokens, durations, outcomes."""
    _add_columns(db, RUNS, {
        "finished_at": str, "system_prompt": str, "config_json": str, "final_synthesis": str,
        "error": str, "input_tokens": int, "output_tokens": int, "duration_ms": int,
        "arbiter": str, "member_models": str, "conversation_json": str, "pid": int,
    })
    _add_columns(db, MEMBERS, {
        "member_id": str, "model": str, "instance": int, "prompt": str, "system": str,
        "response": str, "answer": str, "error": str, "confidence": float,
        "input_tokens": int, "output_tokens": int, "duration_ms": int, "attempts": int,
        "status": str, "selected": int, "extra_json": str, "created_at": str,
    })
    _add_columns(db, DECISIONS, {
        "model": str, "prompt": str, "raw_response": str, "analysis": str, "dissent": str,
        "needs_iteration": int, "outliers_json": str, "error": str, "input_tokens": int,
        "output_tokens": int, "duration_ms": int, "attempts": int, "created_at": str,
    })
    _add_columns(db, EMBEDDINGS, {"iteration": int, "member_id": str, "backend": str, "dimensions": int})
    _add_columns(db, CLUSTERS, {
        "algorithm": str, "member_ids_json": str, "size": int, "is_consensus": int,
        "all_noise": int, "created_at": str,
    })
    db[RUNS].create_index(["created_at"], index_name="idx_consortium_runs_created", if_not_exists=True)
    db[MEMBERS].create_index(["run_id", "iteration"], index_name="idx_consortium_members_run", if_not_exists=True)


@migration
def m003_run_status_index(db: sqlite_utils.Database) -> None:
    """Finding runs still marked ``running`` (to reap those of dead processes)."""
    db[RUNS].create_index(["status"], index_name="idx_consortium_runs_status", if_not_exists=True)


@migration
def m004_original_column_meanings(db: sqlite_utils.Database) -> None:
    """Columns mean what they mean in the original plugin, for old rows too.

    ``consortium_members``: ``role`` is the model id (``arbiter`` on the one
    row per arbiter decision), ``member_index`` the instance within the model.
    Our meanings move to new columns: ``member_role`` (a strategy's role
    label), ``position`` (0-based place in config order) and ``eliminated``
    (the one record of an elimination). Rows the original wrote get our
    columns filled from what it kept (its ``responses`` table, its decision
    JSON), so ``runs``, ``run-info``, ``leaderboard`` and ``export-training``
    read them like ours. Cluster ``density`` becomes 1 - mean distance.
    """
    _add_columns(db, MEMBERS, {"member_role": str, "position": int, "eliminated": int})
    _ours_to_original_meanings(db)
    _fill_from_original(db)
    _recompute_densities(db)
    db.execute(
        f"UPDATE {RUNS} SET created_at = created_at || '+00:00' "
        "WHERE created_at IS NOT NULL AND created_at NOT LIKE '%+%' AND created_at NOT LIKE '%Z'"
    )


def _ours_to_original_meanings(db: sqlite_utils.Database) -> None:
    """Rows written by llm-consortium before m004 (they have a ``model``)."""
    db.execute(
        f"UPDATE {MEMBERS} SET member_role = CASE WHEN role = 'member' THEN NULL ELSE role END, "
        "position = member_index, role = model, member_index = instance "
        "WHERE model IS NOT NULL AND position IS NULL"
    )
    # Eliminations were recorded in extra_json, in a decision's JSON, or only
    # implied by a member missing from the next iteration: now one flag.
    for row in list(db.query(f"SELECT rowid, extra_json FROM {MEMBERS} WHERE extra_json LIKE '%eliminated%'")):
        if json_column(row["extra_json"], {}).get("eliminated"):
            db.execute(f"UPDATE {MEMBERS} SET eliminated = 1 WHERE rowid = ?", [row["rowid"]])
    for row in list(db.query(f"SELECT run_id, iteration, decision_json FROM {DECISIONS} WHERE decision_json LIKE '%eliminated%'")):
        listed = json_column(row["decision_json"], {}).get("eliminated") or []
        for member_id in (item for item in listed if not isinstance(item, bool)):
            db.execute(
                f"UPDATE {MEMBERS} SET eliminated = 1 WHERE run_id = ? AND iteration = ? AND member_id = ?",
                [row["run_id"], row["iteration"], str(member_id)],
            )
    db.execute(
        f"UPDATE {MEMBERS} SET eliminated = 1 WHERE member_id IS NOT NULL AND run_id IN "
        f"(SELECT id FROM {RUNS} WHERE strategy = 'elimination') "
        f"AND iteration < (SELECT max(iteration) FROM {MEMBERS} later WHERE later.run_id = {MEMBERS}.run_id) "
        f"AND NOT EXISTS (SELECT 1 FROM {MEMBERS} nxt WHERE nxt.run_id = {MEMBERS}.run_id "
        f"AND nxt.iteration = {MEMBERS}.iteration + 1 AND nxt.member_id = {MEMBERS}.member_id)"
    )
    # One arbiter row per decision, as the original records it.
    db.execute(
        f"INSERT OR IGNORE INTO {MEMBERS} (run_id, response_id, role, iteration, member_index, created_at) "
        f"SELECT run_id, coalesce(response_id, run_id || ':' || iteration || ':arbiter'), "
        f"'{ARBITER_ROLE}', iteration, 0, created_at FROM {DECISIONS} WHERE model IS NOT NULL"
    )


def _fill_from_original(db: sqlite_utils.Database) -> None:
    """Rows the original plugin wrote: no ``model`` column filled yet. Its
    texts and usage are in the ``responses`` table it kept in this file."""
    have_responses = "responses" in db.table_names()
    columns = set(db["responses"].columns_dict) if have_responses else set()
    wanted = ("model", "prompt", "system", "response", "input_tokens", "output_tokens", "duration_ms")

    def logged(response_id: str | None) -> dict[str, Any]:
        """The original's ``responses`` row of a call (missing columns: None)."""
        found = []
        if have_responses and response_id:
            picked = ", ".join(f"{name if name in columns else 'NULL'} AS {name}" for name in wanted)
            found = list(db.query(f"SELECT {picked} FROM responses WHERE id = ?", [response_id]))
        return found[0] if found else dict.fromkeys(wanted)

    runs = [row["run_id"] for row in db.query(
        f"SELECT DISTINCT run_id FROM {MEMBERS} WHERE model IS NULL AND role != '{ARBITER_ROLE}'"
    )]
    for run_id in runs:
        rows = list(db.query(
            f"SELECT rowid, response_id, role, iteration, member_index FROM {MEMBERS} "
            f"WHERE run_id = ? AND role != '{ARBITER_ROLE}' ORDER BY rowid",
            [run_id],
        ))
        numbers: dict[tuple[str, int], int] = {}
        for row in sorted(rows, key=lambda r: (r["iteration"] or 0, r["rowid"])):
            numbers.setdefault((row["role"], row["member_index"] or 0), len(numbers))
        counts: dict[str, int] = {}
        for model, instance in numbers:
            counts[model] = max(counts.get(model, 0), instance + 1)
        for row in rows:
            text = logged(row["response_id"])
            position = numbers[(row["role"], row["member_index"] or 0)]
            db.execute(
                f"UPDATE {MEMBERS} SET model = role, instance = member_index, member_id = ?, "
                "position = ?, status = 'ok', selected = 1, response = ?, answer = ?, prompt = ?, "
                "system = ?, input_tokens = ?, output_tokens = ?, duration_ms = ? WHERE rowid = ?",
                [str(position + 1), position, text["response"], text["response"], text["prompt"],
                 text["system"], text["input_tokens"], text["output_tokens"], text["duration_ms"],
                 row["rowid"]],
            )
        db.execute(
            f"UPDATE {RUNS} SET member_models = ? WHERE id = ? AND member_models IS NULL",
            [json.dumps(counts), run_id],
        )
    # Its decisions: the parsed result is in decision_json, the text in responses.
    for row in list(db.query(f"SELECT rowid, * FROM {DECISIONS} WHERE model IS NULL AND created_at IS NULL")):
        parsed = json_column(row.get("decision_json"), {})
        call = logged(row.get("response_id"))
        ranking = json_column(row.get("ranking_json"), None)
        db.execute(
            f"UPDATE {DECISIONS} SET model = ?, prompt = ?, raw_response = ?, input_tokens = ?, "
            "output_tokens = ?, duration_ms = ?, analysis = ?, dissent = ?, needs_iteration = ?, "
            "ranking_json = ? WHERE rowid = ?",
            [call.get("model"), call.get("prompt"), call.get("response"), call.get("input_tokens"),
             call.get("output_tokens"), call.get("duration_ms"), parsed.get("analysis"),
             parsed.get("dissent"), int(bool(parsed.get("needs_iteration"))),
             _dumps(ranking if ranking is not None else parsed.get("ranking") or []), row["rowid"]],
        )
    db.execute(
        f"UPDATE {RUNS} SET "
        f"final_synthesis = (SELECT synthesis FROM {DECISIONS} d WHERE d.run_id = {RUNS}.id ORDER BY d.iteration DESC LIMIT 1), "
        f"arbiter = (SELECT model FROM {DECISIONS} d WHERE d.run_id = {RUNS}.id AND d.model IS NOT NULL LIMIT 1) "
        f"WHERE config_json IS NULL AND final_synthesis IS NULL"
    )
    db.execute(
        f"UPDATE {EMBEDDINGS} SET "
        f"iteration = (SELECT iteration FROM {MEMBERS} m WHERE m.run_id = {EMBEDDINGS}.run_id AND m.response_id = {EMBEDDINGS}.response_id), "
        f"member_id = (SELECT member_id FROM {MEMBERS} m WHERE m.run_id = {EMBEDDINGS}.run_id AND m.response_id = {EMBEDDINGS}.response_id) "
        "WHERE member_id IS NULL"
    )


def _recompute_densities(db: sqlite_utils.Database) -> None:
    """Our clusters stored ``size / radius``; the original's meaning is
    ``1 - mean distance`` to the centroid, distance ``(1 - cos) / 2``."""
    from .geometry import cosine_distance

    for row in list(db.query(
        f"SELECT rowid, run_id, iteration, centroid_json, member_ids_json FROM {CLUSTERS} "
        "WHERE member_ids_json IS NOT NULL"
    )):
        centroid = json_column(row["centroid_json"], [])
        ids = [str(item) for item in json_column(row["member_ids_json"], [])]
        vectors = [
            json_column(found["embedding_json"], [])
            for found in db.query(
                f"SELECT member_id, embedding_json FROM {EMBEDDINGS} WHERE run_id = ? AND iteration = ?",
                [row["run_id"], row["iteration"]],
            )
            if str(found["member_id"]) in ids
        ]
        vectors = [vector for vector in vectors if vector and len(vector) == len(centroid)]
        density = None
        if centroid and vectors:
            density = 1.0 - sum(cosine_distance(vector, centroid) for vector in vectors) / len(vectors)
        db.execute(f"UPDATE {CLUSTERS} SET density = ? WHERE rowid = ?", [density, row["rowid"]])


# ---- evaluations (llm consortium eval) ------------------------------------------
@migration
def m005_evaluations(db: sqlite_utils.Database) -> None:
    """``llm consortium eval``: one row per evaluation, one per (system, dataset row)."""
    db[EVALS].create(
        {
            "id": str, "created_at": str, "finished_at": str, "status": str, "eval_key": str,
            "dataset": str, "dataset_sha256": str, "row_count": int, "scorer": str,
            "prompt_field": str, "expected_field": str, "id_field": str, "systems_json": str,
            "pid": int,
        },
        pk="id",
        if_not_exists=True,
    )
    db[EVALS].create_index(["eval_key"], index_name="idx_consortium_evals_key", if_not_exists=True)
    db[EVAL_RESULTS].create(
        {
            "eval_id": str, "system": str, "row_key": str, "row_number": int, "kind": str,
            "prompt": str, "expected": str, "answer": str, "error": str, "correct": int,
            "score_detail": str, "judge_model": str, "judge_prompt": str, "judge_verdict": str,
            "judge_error": str, "confidence": float, "run_id": str, "input_tokens": int,
            "output_tokens": int, "duration_s": float, "created_at": str,
        },
        pk=("eval_id", "system", "row_key"),
        if_not_exists=True,
    )
# ---- end of evaluations -----------------------------------------------------------


@migration
def m006_run_owner(db: sqlite_utils.Database) -> None:
    """Who runs a run (JSON: host, boot id, pid namespace, pid, process start
    time), so that only runs of processes certainly gone are reaped."""
    _add_columns(db, RUNS, {"owner": str})


# -- filters ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilter:
    """Which runs a report reads: created since a UTC timestamp, of a saved
    consortium, with one of ``models`` as a member, with at least a final
    confidence, with a status."""

    since: str | None = None
    consortium: str | None = None
    models: Sequence[str] = ()
    min_confidence: float | None = None
    status: str | None = None

    def where(self, alias: str = RUNS) -> tuple[str, list[Any]]:
        """The one WHERE-clause builder of the reports (``1 = 1`` when empty)."""
        clauses, params = ["1 = 1"], []
        if self.since:
            clauses.append(f"{alias}.created_at >= ?")
            params.append(self.since)
        if self.consortium:
            clauses.append(f"{alias}.config_name = ?")
            params.append(self.consortium)
        if self.min_confidence is not None:
            # A confidence stored as text (a hand-edit) is no confidence.
            clauses.append(
                f"typeof({alias}.final_confidence) IN ('integer', 'real') AND {alias}.final_confidence >= ?"
            )
            params.append(self.min_confidence)
        if self.status:
            clauses.append(f"{alias}.status = ?")
            params.append(self.status)
        if self.models:
            marks = ", ".join("?" for _ in self.models)
            clauses.append(
                f"EXISTS (SELECT 1 FROM {MEMBERS} fm WHERE fm.run_id = {alias}.id "
                f"AND fm.model IN ({marks}))"
            )
            params.extend(self.models)
        return " AND ".join(clauses), params


# -- the store -------------------------------------------------------------------


class Store:
    """Access to one consortium database file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = pathlib.Path(path) if path is not None else logs_db_path()
        self._lock = threading.RLock()
        self._db: sqlite_utils.Database | None = None
        self._migrated = False
        self._active_runs: set[str] = set()
        #: opened read-only: the user cannot write the file or its directory
        self.read_only = False
        #: the prompts of the runs this store is recording (``shared_prompt``)
        self._run_prompts: dict[str, str] = {}

    # -- connection -----------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        """The connection, as a ``sqlite_utils.Database`` (schema not ensured)."""
        with self._lock:
            if self._db is None:
                try:
                    conn = self._open()
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                    self._db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
                except sqlite3.OperationalError as ex:
                    raise StoreError(f"Cannot open {self.path}: {ex}") from None
                except sqlite3.DatabaseError as ex:
                    raise StoreError(f"{self.path} is not a usable database: {ex}") from None
                except (sqlite3.Error, OSError) as ex:
                    raise StoreError(f"Cannot open {self.path}: {ex}") from None
            return self._db

    def _open(self) -> sqlite3.Connection:
        """A connection that can at least read. A WAL database needs its
        ``-shm`` file even to be read; in a directory the user cannot write,
        that file cannot be created, so the database is opened read-only
        (``mode=ro``), and failing that as immutable: every command that only
        reads works, and writes fail with a clear error."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            if not self.path.parent.is_dir():
                raise
        options: dict[str, Any] = {
            "timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None, "check_same_thread": False,
        }
        conn = sqlite3.connect(str(self.path), **options)
        if _readable(conn):
            return conn
        conn.close()
        uri = self.path.absolute().as_uri()  # percent-encoded: '?', '#', '%' are safe
        for query in ("mode=ro", "immutable=1"):
            conn = sqlite3.connect(f"{uri}?{query}", uri=True, **options)
            if _readable(conn):
                self.read_only = True
                return conn
            conn.close()
        raise StoreError(f"Cannot read {self.path}: it cannot be opened, not even read-only")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._migrated = False

    def _retrying(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + LOCKED_RETRY_SECONDS
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as ex:
                if _is_read_only(ex):
                    raise StoreError(f"{self.path} is read-only for you ({ex})") from None
                if not _is_locked(ex) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: {ex}") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as ex:
                raise StoreError(f"{self.path} is not a usable database: {ex}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One short write transaction, retried while another process writes.
        sqlite-utils' own transactions nest inside it as savepoints."""
        with self._lock:
            self._ensure_schema()
            db = self.db
            conn = db.conn
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # left open by an interrupt before the try below
            self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield db
            except sqlite3.Error as ex:
                self._rollback(conn)
                if _is_read_only(ex):
                    raise StoreError(f"{self.path} is read-only for you ({ex})") from None
                raise StoreError(f"Cannot write to {self.path}: {ex}") from None
            except BaseException:
                self._rollback(conn)
                raise
            self._retrying(lambda: conn.execute("COMMIT"))

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # SQLite has already rolled back after some errors
            conn.execute("ROLLBACK")

    # Every value written reaches the database through _insert or _update:
    # the places to clean text on its way in.
    def _insert(self, db: sqlite_utils.Database, table: str, rows: list[dict[str, Any]], replace: bool = False) -> None:
        """Insert ``rows`` (into a table the schema made) with one statement,
        executemany: a column a row lacks is NULL, as with sqlite-utils'
        ``insert_all``, which costs several times more per value (200 member
        rows: 7–14 ms against 3.3–3.7 ms here, docs/performance.md)."""
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            names = ", ".join(f"[{column}]" for column in columns)
            marks = ", ".join("?" * len(columns))
            db.conn.executemany(
                f"INSERT{' OR REPLACE' if replace else ''} INTO [{table}] ({names}) VALUES ({marks})",
                [self._written(row, columns) for row in rows],
            )

    def _written(self, row: dict[str, Any], columns: list[str]) -> list[Any]:
        """A row's values as written, in ``columns`` order: encodable text,
        JSON for a list or dict, and a member's or the arbiter's prompt
        without the run's long prompt in it (``shared_prompt``)."""
        values = [_storable(row.get(column)) for column in columns]
        prompt = self._run_prompts.get(row.get("run_id")) if "prompt" in row else None
        if prompt:
            at = columns.index("prompt")
            values[at] = _storable(shared_prompt.compact(row["prompt"], prompt))
        return values

    def _update(self, db: sqlite_utils.Database, table: str, keys: Sequence[str], rows: list[dict[str, Any]]) -> None:
        """Update rows found by their ``keys`` columns to the other values
        given; the rows share their columns (one statement, executemany)."""
        if rows:
            columns = [column for column in rows[0] if column not in keys]
            sets = ", ".join(f"[{column}] = ?" for column in columns)
            where = " AND ".join(f"[{key}] = ?" for key in keys)
            db.conn.executemany(
                f"UPDATE [{table}] SET {sets} WHERE {where}",
                [[_storable(row[column]) for column in columns] + [row[key] for key in keys] for row in rows],
            )

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Every row read from the database comes through here."""
        with self._lock:
            self._ensure_schema()
            db = self.db
            rows = self._retrying(lambda: list(db.query(sql, list(params))))
            return stored_values.checked(rows, COLUMN_KINDS)

    # -- schema ---------------------------------------------------------------
    def _schema_state(self) -> tuple[set[str], set[str]]:
        """(applied names, legacy names) — read only."""
        db = self.db
        tables = set(db.table_names())
        applied: set[str] = set()
        if Migrations.migrations_table in tables:
            applied = {m.name for m in MIGRATIONS.applied(db)}
        legacy: set[str] = set()
        if LEGACY_MIGRATIONS_TABLE in tables:
            legacy = {row["name"] for row in db.query(f"SELECT name FROM {LEGACY_MIGRATIONS_TABLE}")}
        return applied, legacy

    def _check_not_newer(self, names: set[str]) -> None:
        newer = sorted(names - set(MIGRATION_NAMES))
        if newer:
            raise StoreError(
                f"{self.path} was written by a newer llm-consortium "
                f"(schema {newer[-1]}); upgrade llm-consortium to use it"
            )

    def _migrate(self) -> None:
        db = self.db
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            applied, legacy = self._schema_state()
            self._check_not_newer(applied | legacy)
            if legacy:
                # Carry the records of the hand-written migrations over.
                MIGRATIONS.ensure_migrations_table(db)
                db[Migrations.migrations_table].insert_all(
                    [{"migration_set": MIGRATION_SET, "name": name, "applied_at": utcnow()}
                     for name in sorted(legacy - applied)]
                )
                db[LEGACY_MIGRATIONS_TABLE].drop()
            MIGRATIONS.apply(db)
        except BaseException:
            self._rollback(db.conn)
            raise
        db.conn.execute("COMMIT")

    def _ensure_schema(self) -> None:
        if self._migrated:
            return
        with self._lock:
            db = self.db
            conn = db.conn
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._retrying(lambda: conn.execute("PRAGMA journal_mode=WAL"))
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError as ex:
                if "readonly" not in str(ex).lower() and "read-only" not in str(ex).lower():
                    raise StoreError(f"{self.path}: {ex}") from None
            except sqlite3.DatabaseError as ex:
                raise StoreError(f"{self.path} is not a usable database: {ex}") from None
            # Read first: an up-to-date database needs no write lock, so it
            # can be read even when it is read-only.
            applied, legacy = self._retrying(self._schema_state)
            self._check_not_newer(applied | legacy)
            if legacy or set(MIGRATION_NAMES) - applied:
                self._retrying(self._migrate)
            self._migrated = True

    # -- configurations -------------------------------------------------------
    def save_config(self, name: str, config: dict[str, Any]) -> None:
        with self._write() as db:
            self._insert(db, CONFIGS, [{"name": name, "config": json.dumps(config), "created_at": utcnow()}], replace=True)

    def config_rows(self) -> list[dict[str, Any]]:
        """Every saved configuration row, newest first (config left as JSON text)."""
        return self._query(f"SELECT name, config, created_at FROM {CONFIGS} ORDER BY created_at DESC, name DESC")

    def config_row(self, name: str) -> dict[str, Any]:
        rows = self._query(f"SELECT name, config, created_at FROM {CONFIGS} WHERE name = ?", [name])
        if not rows:
            raise NotFoundError(f"Consortium '{name}' not found.")
        return rows[0]

    def remove_config(self, name: str) -> None:
        with self._write() as db:
            deleted = db.execute(f"DELETE FROM {CONFIGS} WHERE name = ?", [name]).rowcount
        if not deleted:
            raise NotFoundError(f"Consortium with name '{name}' not found.")

    # -- runs: writing ----------------------------------------------------------
    def reap_orphaned_runs(self) -> None:
        """Mark ``interrupted`` the runs left ``running`` by processes that
        certainly no longer exist (killed with SIGKILL, or a machine that went
        down): they could not record it themselves. A run of another host,
        container or boot is left alone (``liveness.owner_gone``)."""
        rows = self._query(f"SELECT id, owner, created_at FROM {RUNS} WHERE status = 'running'")
        gone = [row["id"] for row in rows if owner_gone(row["owner"], row["created_at"])]
        if gone:
            with self._write() as db:
                for run_id in gone:
                    db.execute(
                        f"UPDATE {RUNS} SET status = 'interrupted', finished_at = ?, "
                        "error = coalesce(error, 'the process running it ended without finishing it') "
                        "WHERE id = ? AND status = 'running'",
                        [utcnow(), run_id],
                    )

    def start_run(
        self,
        run_id: str,
        prompt: str,
        config: ConsortiumConfig,
        *,
        config_name: str | None = None,
        history: Sequence[tuple[str, str]] = (),
        created_at: str | None = None,
    ) -> None:
        """The run row, status ``running``, written before any member is called."""
        self.reap_orphaned_runs()
        row = {
            "id": run_id,
            "created_at": created_at or utcnow(),
            "status": "running",
            "pid": os.getpid(),
            "owner": owner_json(),
            "config_name": config_name,
            "strategy": config.strategy,
            "judging_method": config.judging_method,
            "confidence_threshold": config.confidence_threshold,
            "max_iterations": config.max_iterations,
            "iteration_count": 0,
            "user_prompt": prompt,
            "category": config.category,
            "expected_agreement": config.expected_agreement,
            "system_prompt": config.system_prompt,
            "config_json": _dumps(config.to_dict()),
            "arbiter": config.arbiter,
            "member_models": _dumps(config.models),
            "conversation_json": _dumps([list(turn) for turn in history]) if history else None,
        }
        with self._write() as db:
            self._insert(db, RUNS, [row])
        with self._lock:
            self._active_runs.add(run_id)
            self._run_prompts[run_id] = valid_unicode(prompt)
        _stores_with_runs.add(self)

    def _update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        with self._write() as db:
            self._update(db, RUNS, ["id"], [{"id": run_id, **fields}])

    def record_progress(
        self,
        run_id: str,
        iteration: int,
        confidence: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """After each judged iteration: how far the run got and what it cost."""
        self._update_run(run_id, {
            "iteration_count": iteration, "final_confidence": confidence,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
        })

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        final_synthesis: str | None = None,
        iteration_count: int | None = None,
        final_confidence: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        duration_ms: int | None = None,
    ) -> None:
        """Final status, totals and ``finished_at`` of a run."""
        fields = {
            "status": status, "error": error, "final_synthesis": final_synthesis,
            "iteration_count": iteration_count, "final_confidence": final_confidence,
            "input_tokens": input_tokens, "output_tokens": output_tokens, "duration_ms": duration_ms,
        }
        fields = {key: value for key, value in fields.items() if value is not None or key == "error"}
        self._update_run(run_id, {**fields, "finished_at": utcnow()})
        with self._lock:
            self._active_runs.discard(run_id)
            self._run_prompts.pop(run_id, None)

    def interrupt_active_runs(self, reason: str = "the process exited during the run") -> None:
        """Mark runs this process started and never finished as interrupted
        (called at interpreter exit: a run is never left ``running``)."""
        with self._lock:
            active = sorted(self._active_runs)
        for run_id in active:
            with self._write() as db:
                db.execute(
                    f"UPDATE {RUNS} SET status = 'interrupted', error = COALESCE(error, ?), "
                    "finished_at = COALESCE(finished_at, ?) WHERE id = ? AND status = 'running'",
                    [reason, utcnow(), run_id],
                )
            with self._lock:
                self._active_runs.discard(run_id)

    @staticmethod
    def _member_row(run_id: str, result: MemberResult) -> dict[str, Any]:
        member = result.member
        return {
            "run_id": run_id,
            "response_id": result.response_id,
            "role": member.model,
            "iteration": result.iteration,
            "member_index": member.instance,
            "member_id": member.id,
            "position": member.index,
            "member_role": result.role,
            "model": member.model,
            "instance": member.instance,
            "prompt": result.prompt,
            "system": result.system,
            "response": result.text,
            "answer": result.answer,
            "error": result.error,
            "confidence": result.confidence,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "duration_ms": result.duration_ms,
            "attempts": result.attempts,
            "status": "ok" if result.ok else "failed",
            "selected": 0,
            "eliminated": int(result.eliminated),
            "extra_json": _dumps(result.extra) if result.extra else None,
            "created_at": utcnow(),
        }

    def record_members(self, run_id: str, results: Sequence[MemberResult]) -> None:
        """Members' answers or failures, as they arrive (one transaction)."""
        if results:
            with self._write() as db:
                self._insert(db, MEMBERS, [self._member_row(run_id, result) for result in results])

    def record_member(self, run_id: str, result: MemberResult) -> None:
        self.record_members(run_id, [result])

    def record_judged(
        self, run_id: str, results: Sequence[MemberResult], selected: Sequence[MemberResult]
    ) -> None:
        """After the strategy processed an iteration: which answers go to the
        arbiter (``selected``), and what the strategy noted on each."""
        chosen = {result.response_id for result in selected}
        with self._write() as db:
            self._update(db, MEMBERS, ["run_id", "response_id"], [
                {"run_id": run_id, "response_id": result.response_id,
                 "selected": int(result.response_id in chosen),
                 "extra_json": _dumps(result.extra) if result.extra else None}
                for result in results
            ])

    def record_eliminated(self, run_id: str, results: Sequence[MemberResult]) -> None:
        """Members a strategy eliminated after their iteration."""
        dropped = [result for result in results if result.eliminated]
        if dropped:
            with self._write() as db:
                self._update(db, MEMBERS, ["run_id", "response_id"], [
                    {"run_id": run_id, "response_id": result.response_id, "eliminated": 1,
                     "extra_json": _dumps(result.extra) if result.extra else None}
                    for result in dropped
                ])

    def record_decision(
        self,
        run_id: str,
        iteration: int,
        decision: Decision | None,
        *,
        arbiter: str | None = None,
        prompt: str | None = None,
        call: CallOutcome | None = None,
        embeddings: Sequence[ResponseEmbedding] = (),
        clusters: Sequence[ClusterSummary] = (),
    ) -> None:
        """One iteration's arbiter decision (``None`` when the arbiter failed:
        its call and error are kept), with the arbiter's row in
        ``consortium_members`` and the semantic strategy's embeddings and
        clusters, in one transaction."""
        now = utcnow()
        data: dict[str, Any] = {}
        if decision is not None:
            data = decision.to_dict()
            data.pop("raw_arbiter_response", None)
        row = {
            "run_id": run_id,
            "iteration": iteration,
            "response_id": call.response_id if call else None,
            "chosen_response_id": decision.chosen_response_id if decision else None,
            "confidence": decision.confidence if decision else None,
            "synthesis": decision.synthesis if decision else None,
            "decision_json": _dumps(data) if decision else None,
            "ranking_json": _dumps(decision.ranking) if decision else None,
            "refinement_areas": _dumps(decision.refinement_areas) if decision else None,
            "geometric_confidence": decision.geometric_confidence if decision else None,
            "centroid_vector": _dumps(decision.centroid_vector) if decision else None,
            "model": arbiter,
            "prompt": prompt,
            "raw_response": call.text if call else None,
            "analysis": decision.analysis if decision else None,
            "dissent": decision.dissent if decision else None,
            "needs_iteration": int(decision.needs_iteration) if decision else None,
            "outliers_json": _dumps(decision.outliers) if decision else None,
            "error": call.error if call else None,
            "input_tokens": call.input_tokens if call else None,
            "output_tokens": call.output_tokens if call else None,
            "duration_ms": call.duration_ms if call else None,
            "attempts": call.attempts if call else None,
            "created_at": now,
        }
        with self._write() as db:
            self._insert(db, EMBEDDINGS, [
                {
                    "response_id": item.result.response_id, "run_id": run_id, "iteration": iteration,
                    "member_id": item.result.member.id, "model": item.result.member.model,
                    "embedding_json": _dumps(list(item.vector)), "embedding_model": item.embedding_model,
                    "backend": item.backend, "dimensions": len(item.vector), "created_at": now,
                }
                for item in embeddings
            ], replace=True)
            self._insert(db, CLUSTERS, [
                {
                    "run_id": run_id, "iteration": iteration, "cluster_id": item.label,
                    "centroid_json": _dumps(list(item.centroid)), "radius": item.radius,
                    "density": item.density, "member_ids_json": _dumps(list(item.member_ids)),
                    "size": len(item.member_ids), "is_consensus": int(item.is_consensus),
                    "all_noise": int(item.all_noise), "algorithm": item.algorithm, "created_at": now,
                }
                for item in clusters
            ])
            if arbiter is not None:
                self._insert(db, MEMBERS, [{
                    "run_id": run_id,
                    "response_id": row["response_id"] or f"{run_id}:{iteration}:{ARBITER_ROLE}",
                    "role": ARBITER_ROLE, "iteration": iteration, "member_index": 0, "created_at": now,
                }], replace=True)
            self._insert(db, DECISIONS, [row], replace=True)

    def save_response_embedding(
        self, response_id: str, run_id: str, vector: Sequence[float], model: str,
        embedding_model: str | None = None,
    ) -> None:
        with self._write() as db:
            self._insert(db, EMBEDDINGS, [{
                "response_id": response_id, "run_id": run_id, "model": model,
                "embedding_json": _dumps([float(x) for x in vector]), "embedding_model": embedding_model,
                "dimensions": len(vector), "created_at": utcnow(),
            }], replace=True)

    def save_cluster_metadata(self, run_id: str, iteration: int, clusters: Sequence[dict[str, Any]]) -> None:
        with self._write() as db:
            self._insert(db, CLUSTERS, [{
                "run_id": run_id, "iteration": iteration, "cluster_id": item.get("cluster_id", -1),
                "centroid_json": _dumps([float(x) for x in item.get("centroid", [])]),
                "radius": item.get("radius", 0.0), "density": item.get("density", 0.0),
                "created_at": utcnow(),
            } for item in clusters])

    # -- runs: reading ------------------------------------------------------------
    def runs(
        self, limit: int | None = 10, since: str | None = None, config_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs, newest first."""
        try:
            self.reap_orphaned_runs()
        except StoreError:
            pass  # a read-only database can still be listed; reaping waits for a writer
        where, params = RunFilter(since=since, consortium=config_name).where()
        sql = f"SELECT * FROM {RUNS} WHERE {where} ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_decode_run(row) for row in self._query(sql, params)]

    def _resolve_id(self, table: str, given: str | None, what: str, short: str, none_found: str) -> str:
        """A full id of ``table`` from a unique prefix, or the latest for
        ``None``; ``what`` / ``short`` name a row in the errors."""
        if given is None:
            rows = self._query(f"SELECT id FROM {table} ORDER BY created_at DESC, rowid DESC LIMIT 1")
            if not rows:
                raise NotFoundError(none_found)
            return rows[0]["id"]
        escaped = given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(
            f"SELECT id FROM {table} WHERE id = ? OR id LIKE ? ESCAPE '\\' LIMIT 3", [given, escaped + "%"]
        )
        if any(row["id"] == given for row in rows):
            return given
        if not rows:
            raise NotFoundError(f"{what} '{given}' not found.")
        if len(rows) > 1:
            raise NotFoundError(f"{short} id prefix '{given}' is ambiguous; give more characters.")
        return rows[0]["id"]

    def resolve_run_id(self, run_id: str | None) -> str:
        """A full run id from a unique prefix, or the latest run for ``None``."""
        return self._resolve_id(RUNS, run_id, "Consortium run", "Run", "No consortium runs found.")

    def run_details(self, run_id: str | None) -> dict[str, Any]:
        """``{"run", "members", "decisions", "embeddings", "clusters"}`` for one
        run; ``members`` are the member rows (not the arbiter's)."""
        full_id = self.resolve_run_id(run_id)
        run = _decode_run(self._query(f"SELECT * FROM {RUNS} WHERE id = ?", [full_id])[0])
        members = self._query(
            f"SELECT * FROM {MEMBERS} WHERE run_id = ? AND role IS NOT '{ARBITER_ROLE}' "
            "ORDER BY iteration, position, rowid",
            [full_id],
        )
        decisions = self._query(f"SELECT * FROM {DECISIONS} WHERE run_id = ? ORDER BY iteration", [full_id])
        for row in [*members, *decisions]:
            row["prompt"] = shared_prompt.expand(row.get("prompt"), run.get("user_prompt"))
        return {
            "run": run,
            "members": members,
            "decisions": decisions,
            "embeddings": self._query(
                f"SELECT * FROM {EMBEDDINGS} WHERE run_id = ? ORDER BY iteration, member_id", [full_id]
            ),
            "clusters": self._query(
                f"SELECT * FROM {CLUSTERS} WHERE run_id = ? ORDER BY iteration, cluster_id", [full_id]
            ),
        }

    def training_runs(self, where: RunFilter) -> list[dict[str, Any]]:
        """Finished runs with a final synthesis, oldest first."""
        clause, params = where.where()
        rows = self._query(
            f"SELECT * FROM {RUNS} WHERE {clause} AND status = 'success' "
            "AND final_synthesis IS NOT NULL ORDER BY created_at, rowid",
            params,
        )
        return [_decode_run(row) for row in rows]

    def leaderboard_rows(self, where: RunFilter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(member rows, decision rows) of the matching runs."""
        clause, params = where.where("r")
        members = self._query(
            f"SELECT m.* FROM {MEMBERS} m JOIN {RUNS} r ON r.id = m.run_id "
            f"WHERE {clause} AND m.role IS NOT '{ARBITER_ROLE}' ORDER BY m.run_id, m.iteration, m.position",
            params,
        )
        decisions = self._query(
            f"SELECT d.run_id, d.iteration, d.ranking_json, d.chosen_response_id FROM {DECISIONS} d "
            f"JOIN {RUNS} r ON r.id = d.run_id WHERE {clause}",
            params,
        )
        return members, decisions

    def runs_answering(self, config_name: str | None, turns: Sequence[tuple[str, str]]) -> list[str]:
        """The runs that produced an earlier conversation: for each ``(user
        prompt, answer)`` pair, the latest successful run of this consortium
        with that prompt and final synthesis (pairs no run answered are
        skipped). This is how ``llm -c`` / ``--cid`` history, which ``llm``
        passes as plain messages, leads back to the runs."""
        found: list[str] = []
        for prompt, answer in turns:
            rows = self._query(
                f"SELECT id FROM {RUNS} WHERE config_name IS ? AND user_prompt = ? "
                "AND status = 'success' AND (final_synthesis = ? OR final_synthesis = ?) "
                "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                [config_name, prompt, answer, answer.strip()],
            )
            if rows and rows[0]["id"] not in found:
                found.append(rows[0]["id"])
        return found

    def conversation_threads(
        self, run_ids: Sequence[str]
    ) -> tuple[dict[tuple[str, int], list[tuple[str, str]]], list[tuple[str, str]]]:
        """Each member instance's own ``(prompt, answer)`` turns, and the
        arbiter's, over ``run_ids`` in that order: what each of them has
        already seen."""
        order = {run_id: position for position, run_id in enumerate(run_ids)}
        if not order:
            return {}, []
        marks = ", ".join("?" * len(order))
        members: dict[tuple[str, int], list[tuple[str, str]]] = {}
        for row in sorted(
            self._query(
                f"SELECT run_id, model, instance, iteration, prompt, response FROM {MEMBERS} "
                f"WHERE run_id IN ({marks}) AND role != ? AND error IS NULL AND response IS NOT NULL "
                "ORDER BY iteration, rowid",
                [*order, ARBITER_ROLE],
            ),
            key=lambda row: (order[row["run_id"]], row["iteration"]),
        ):
            members.setdefault((row["model"], row["instance"]), []).append(
                (row["prompt"] or "", row["response"] or "")
            )
        arbiter = [
            (row["prompt"] or "", row["raw_response"] or "")
            for row in sorted(
                self._query(
                    f"SELECT run_id, iteration, prompt, raw_response FROM {DECISIONS} "
                    f"WHERE run_id IN ({marks}) AND error IS NULL AND raw_response IS NOT NULL "
                    "AND prompt IS NOT NULL",
                    list(order),
                ),
                key=lambda row: (order[row["run_id"]], row["iteration"]),
            )
        ]
        return members, arbiter

    def embeddings_for_run(self, run_id: str) -> list[list[float]]:
        rows = self._query(
            f"SELECT embedding_json FROM {EMBEDDINGS} WHERE run_id = ? ORDER BY created_at, response_id", [run_id]
        )
        return [json_column(row["embedding_json"], []) for row in rows]

    # ---- evaluations (llm consortium eval) ----------------------------------------
    def start_eval(self, row: dict[str, Any]) -> None:
        with self._write() as db:
            self._insert(db, EVALS, [{"created_at": utcnow(), "status": "running", "pid": os.getpid(), **row}])

    def update_eval(self, eval_id: str, **fields: Any) -> None:
        if fields.get("status") in ("finished", "incomplete", "interrupted"):
            fields.setdefault("finished_at", utcnow())
        with self._write() as db:
            self._update(db, EVALS, ["id"], [{"id": eval_id, **fields}])

    def unfinished_eval(self, eval_key: str) -> dict[str, Any] | None:
        """The latest evaluation with these settings that is not finished."""
        rows = self._query(
            f"SELECT * FROM {EVALS} WHERE eval_key = ? AND status != 'finished' "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            [eval_key],
        )
        return rows[0] if rows else None

    def resolve_eval_id(self, eval_id: str | None) -> str:
        """A full evaluation id from a unique prefix, or the latest for ``None``."""
        return self._resolve_id(EVALS, eval_id, "Evaluation", "Evaluation", "No evaluations found.")

    def eval_row(self, eval_id: str) -> dict[str, Any]:
        return self._query(f"SELECT * FROM {EVALS} WHERE id = ?", [eval_id])[0]

    def record_eval_results(self, rows: list[dict[str, Any]]) -> None:
        """Store (or replace, when a row is retried) answers and their scores."""
        if rows:
            with self._write() as db:
                self._insert(db, EVAL_RESULTS, [{"created_at": utcnow(), **row} for row in rows], replace=True)

    def eval_states(self, eval_id: str) -> dict[tuple[str, str], tuple[bool, bool]]:
        """``(system, row_key) -> (answered, scored)`` for the rows stored so far."""
        rows = self._query(
            "SELECT system, row_key, error IS NULL AS answered, correct IS NOT NULL AS scored "
            f"FROM {EVAL_RESULTS} WHERE eval_id = ?",
            [eval_id],
        )
        return {(row["system"], row["row_key"]): (bool(row["answered"]), bool(row["scored"])) for row in rows}

    def eval_result(self, eval_id: str, system: str, row_key: str) -> dict[str, Any]:
        return self._query(
            f"SELECT * FROM {EVAL_RESULTS} WHERE eval_id = ? AND system = ? AND row_key = ?",
            [eval_id, system, row_key],
        )[0]

    def eval_measures(self, eval_id: str) -> list[dict[str, Any]]:
        """The columns the report is computed from, one row per (system, dataset row)."""
        return self._query(
            "SELECT system, kind, correct, error, input_tokens, output_tokens, duration_s "
            f"FROM {EVAL_RESULTS} WHERE eval_id = ? ORDER BY system, row_number",
            [eval_id],
        )
    # ---- end of evaluations -------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL of your own against the database."""
        return self._query(sql, params)


_shared: dict[pathlib.Path, Store] = {}
_shared_lock = threading.Lock()
_stores_with_runs: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _interrupt_unfinished_runs() -> None:
    """Last resort for a run whose generator was never closed (for example an
    interrupt that landed outside the run loop): record it as interrupted."""
    for store in list(_stores_with_runs):
        try:
            store.interrupt_active_runs()
        except (StoreError, sqlite3.Error):
            continue  # nothing more can be done at exit; the row stays as it was


def shared_store(path: str | os.PathLike[str] | None = None) -> Store:
    """One ``Store`` per database file per process, shared by every run (and
    nested consortia) so that a process holds a single connection."""
    resolved = pathlib.Path(path) if path is not None else logs_db_path()
    with _shared_lock:
        if resolved not in _shared:
            _shared[resolved] = Store(resolved)
        return _shared[resolved]


def read_config_rows_for_startup() -> list[dict[str, Any]]:
    """Config rows for ``register_models``: read-only, creates nothing.

    Start-up must never write or fail: a missing file means no consortia, and
    any other problem is raised as ``StoreError`` for the caller to warn about.
    """
    path = logs_db_path()
    try:
        if not path.exists():
            return []
        # as_uri() percent-encodes, so '?', '#' or '%' in the path are safe.
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5)
        if not _readable(conn):
            # A WAL database in a directory the user cannot write: its -shm
            # file cannot be created, so read it as immutable.
            conn.close()
            conn = sqlite3.connect(path.absolute().as_uri() + "?immutable=1", uri=True, timeout=5)
    except OSError as ex:
        raise StoreError(f"Cannot read {path}: {ex}") from None
    except sqlite3.OperationalError as ex:
        raise StoreError(f"Cannot open {path}: {ex}") from None
    except sqlite3.DatabaseError as ex:
        raise StoreError(f"{path} is not a usable database: {ex}") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if CONFIGS not in tables:
            return []
        return [
            dict(row)
            for row in conn.execute(
                f"SELECT name, config, created_at FROM {CONFIGS} ORDER BY created_at DESC, name DESC"
            )
        ]
    except sqlite3.DatabaseError as ex:
        raise StoreError(f"{path} is not a usable database: {ex}") from None
    finally:
        conn.close()


# -- the original plugin's names ------------------------------------------------------


class DatabaseConnection:
    """The original's access point: ``DatabaseConnection.get_connection()``
    returns a ``sqlite_utils.Database`` on ``consortium_logs.db`` in llm's
    user directory, with the schema ensured. It is this process's shared
    connection (safe across threads: writes go through ``Store``)."""

    #: Per thread, the connection handed out and the file it is on (as the
    #: original, whose tests clear ``_thread_local.db`` between tests).
    _thread_local = threading.local()

    @classmethod
    def get_connection(cls) -> sqlite_utils.Database:
        path = logs_db_path()
        cached = getattr(cls._thread_local, "db", None)
        if cached is not None and getattr(cls._thread_local, "path", None) == path:
            return cached
        store = shared_store(path)
        with store._lock:
            store._ensure_schema()
            cls._thread_local.db, cls._thread_local.path = store.db, path
            return store.db


def save_response_embedding(
    response_id: str,
    run_id: str,
    vector: Sequence[float],
    model: str,
    embedding_model: str | None = None,
) -> None:
    """Store (or replace) the embedding of one response."""
    shared_store().save_response_embedding(response_id, run_id, vector, model, embedding_model)


def get_embeddings_for_run(run_id: str) -> list[Any]:
    """The run's stored embeddings as numpy arrays (as the original returns them)."""
    from .embeddings import import_optional

    np = import_optional("numpy")

    return [np.array(vector, dtype=float) for vector in shared_store().embeddings_for_run(run_id)]


def save_cluster_metadata(run_id: str, iteration: int, clusters: list[dict[str, Any]]) -> None:
    """Store clusters given as dicts with ``cluster_id``, ``centroid``,
    ``radius`` and ``density`` (1 - mean distance to the centroid)."""
    shared_store().save_cluster_metadata(run_id, iteration, clusters)
