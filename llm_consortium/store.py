"""``consortium_logs.db``: saved configurations and complete run transcripts.

One ``Store`` per database file and process. It keeps one connection, guarded
by a lock, so threads in a process never write at once; across processes the
database runs in WAL mode, every write is a short ``BEGIN IMMEDIATE``
transaction, and a busy database is waited for (``busy_timeout``) and retried
instead of reaching the user as ``database is locked``.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .errors import NotFoundError, StoreError
from .migrations import MIGRATIONS

DB_FILENAME = "consortium_logs.db"
BUSY_TIMEOUT_MS = 30_000
LOCKED_RETRY_SECONDS = 120.0
T = TypeVar("T")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True  # cannot tell: leave the run alone
    return True


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def default_db_path() -> pathlib.Path:
    import llm

    try:
        return llm.user_dir() / DB_FILENAME
    except OSError as ex:
        raise StoreError(f"Cannot use the llm user directory: {ex}") from None


def _is_locked(ex: sqlite3.OperationalError) -> bool:
    message = str(ex).lower()
    return "locked" in message or "busy" in message


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


class Store:
    """Access to one consortium database file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = pathlib.Path(path) if path is not None else default_db_path()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._migrated = False
        self._active_runs: set[str] = set()

    # -- connection -------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    str(self.path),
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            except (sqlite3.Error, OSError) as ex:
                raise StoreError(f"Cannot open {self.path}: {ex}") from None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _retrying(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + LOCKED_RETRY_SECONDS
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as ex:
                if not _is_locked(ex) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: {ex}") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as ex:
                raise StoreError(f"{self.path} is not a usable database: {ex}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, retried while another process writes."""
        with self._lock:
            self._ensure_schema()
            conn = self._connect()
            if conn.in_transaction:
                # Left open by an interrupt between BEGIN and the try below.
                conn.execute("ROLLBACK")
            self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield conn
            except sqlite3.Error as ex:
                self._rollback(conn)
                raise StoreError(f"Cannot write to {self.path}: {ex}") from None
            except BaseException:
                self._rollback(conn)
                raise
            self._retrying(lambda: conn.execute("COMMIT"))

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # SQLite has already rolled back after some errors (full disk, I/O).
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _check_not_newer(self, applied: set[str]) -> None:
        newer = sorted(applied - {name for name, _ in MIGRATIONS})
        if newer:
            raise StoreError(
                f"{self.path} was written by a newer llm-consortium "
                f"(schema {newer[-1]}); upgrade llm-consortium to use it"
            )

    @staticmethod
    def _applied(conn: sqlite3.Connection) -> set[str] | None:
        """Names of the applied migrations; None before the first one."""
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "_consortium_migrations" not in tables:
            return None
        return {row[0] for row in conn.execute("SELECT name FROM _consortium_migrations")}

    def _ensure_schema(self) -> None:
        if self._migrated:
            return
        conn = self._connect()

        def migrate() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS _consortium_migrations "
                    "(name TEXT PRIMARY KEY, applied_at TEXT)"
                )
                applied = {
                    row[0] for row in conn.execute("SELECT name FROM _consortium_migrations")
                }
                self._check_not_newer(applied)
                for name, fn in MIGRATIONS:
                    if name not in applied:
                        fn(conn)
                        conn.execute(
                            "INSERT INTO _consortium_migrations (name, applied_at) VALUES (?, ?)",
                            (name, utcnow()),
                        )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        with self._lock:
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
            applied = self._retrying(lambda: self._applied(conn))
            if applied is not None:
                self._check_not_newer(applied)
            if applied is None or {name for name, _ in MIGRATIONS} - applied:
                self._retrying(migrate)
            self._migrated = True

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            self._ensure_schema()
            conn = self._connect()
            rows = self._retrying(lambda: conn.execute(sql, tuple(params)).fetchall())
            return [dict(row) for row in rows]

    # -- configurations ---------------------------------------------------
    def save_config(self, name: str, config: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO consortium_configs (name, config, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(config), utcnow()),
            )

    def config_rows(self) -> list[dict[str, Any]]:
        """Every saved configuration row, newest first (config left as JSON text)."""
        return self._read(
            "SELECT name, config, created_at FROM consortium_configs "
            "ORDER BY created_at DESC, name DESC"
        )

    def config_row(self, name: str) -> dict[str, Any]:
        rows = self._read(
            "SELECT name, config, created_at FROM consortium_configs WHERE name = ?", (name,)
        )
        if not rows:
            raise NotFoundError(f"Consortium '{name}' not found.")
        return rows[0]

    def remove_config(self, name: str) -> None:
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM consortium_configs WHERE name = ?", (name,)).rowcount
        if not deleted:
            raise NotFoundError(f"Consortium with name '{name}' not found.")

    # -- runs -------------------------------------------------------------
    def reap_orphaned_runs(self) -> None:
        """Mark ``interrupted`` the runs left ``running`` by processes that no
        longer exist (killed with SIGKILL, or a machine that went down): they
        could not record it themselves."""
        rows = self._read("SELECT id, pid FROM consortium_runs WHERE status = 'running'")
        gone = [row["id"] for row in rows if row["pid"] is not None and not _process_alive(row["pid"])]
        if gone:
            with self._write() as conn:
                conn.executemany(
                    "UPDATE consortium_runs SET status = 'interrupted', finished_at = ?, "
                    "error = coalesce(error, 'the process running it ended without finishing it') "
                    "WHERE id = ? AND status = 'running'",
                    [(utcnow(), run_id) for run_id in gone],
                )

    def start_run(self, row: dict[str, Any]) -> None:
        self.reap_orphaned_runs()
        row = {"created_at": utcnow(), "status": "running", "pid": os.getpid(), **row}
        self._insert("consortium_runs", row)
        with self._lock:
            self._active_runs.add(row["id"])
        _stores_with_runs.add(self)

    def finish_run(self, run_id: str, **fields: Any) -> None:
        """Final status, totals and ``finished_at`` of a run."""
        self.update_run(run_id, finished_at=utcnow(), **fields)
        with self._lock:
            self._active_runs.discard(run_id)

    def interrupt_active_runs(self, reason: str = "the process exited during the run") -> None:
        """Mark runs this process started and never finished as interrupted
        (called at interpreter exit: a run is never left ``running``)."""
        with self._lock:
            active = sorted(self._active_runs)
        for run_id in active:
            with self._write() as conn:
                conn.execute(
                    "UPDATE consortium_runs SET status = 'interrupted', "
                    "error = COALESCE(error, ?), finished_at = COALESCE(finished_at, ?) "
                    "WHERE id = ? AND status = 'running'",
                    (reason, utcnow(), run_id),
                )
            with self._lock:
                self._active_runs.discard(run_id)

    def update_run(self, run_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"[{key}] = ?" for key in fields)
        with self._write() as conn:
            conn.execute(
                f"UPDATE consortium_runs SET {assignments} WHERE id = ?",
                (*fields.values(), run_id),
            )

    def record_members(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert("consortium_members", *rows)

    def mark_selected(self, run_id: str, iteration: int, response_ids: list[str]) -> None:
        """Flag the member responses the strategy passed to the arbiter."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE consortium_members SET selected = 1 "
                "WHERE run_id = ? AND iteration = ? AND response_id = ?",
                [(run_id, iteration, response_id) for response_id in response_ids],
            )

    def update_member_extras(self, run_id: str, extras: dict[str, dict[str, Any]]) -> None:
        """Replace ``extra_json`` of member responses (by response id)."""
        if not extras:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE consortium_members SET extra_json = ? WHERE run_id = ? AND response_id = ?",
                [(_dumps(extra), run_id, response_id) for response_id, extra in extras.items()],
            )

    def record_decision(self, row: dict[str, Any]) -> None:
        self._insert("arbiter_decisions", row, replace=True)

    def record_embeddings(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert("response_embeddings", *rows, replace=True)

    def record_clusters(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert("consensus_clusters", *rows)

    def _insert(self, table: str, *rows: dict[str, Any], replace: bool = False) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        # Rows with the same columns share one statement (executemany).
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(
                tuple(
                    _dumps(value) if isinstance(value, (dict, list, tuple)) else value
                    for value in row.values()
                )
            )
        with self._write() as conn:
            for columns, values in groups.items():
                names = ", ".join(f"[{key}]" for key in columns)
                marks = ", ".join("?" for _ in columns)
                conn.executemany(f"{verb} INTO [{table}] ({names}) VALUES ({marks})", values)

    def runs(
        self, limit: int | None = 10, since: str | None = None, config_name: str | None = None
    ) -> list[dict[str, Any]]:
        try:
            self.reap_orphaned_runs()
        except StoreError:
            pass  # a read-only database can still be listed; reaping waits for a writer
        where, params = [], []
        if since:
            where.append("created_at >= ?")
            params.append(since)
        if config_name:
            where.append("config_name = ?")
            params.append(config_name)
        sql = "SELECT * FROM consortium_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._read(sql, params)

    def resolve_run_id(self, run_id: str | None) -> str:
        """A full run id from a unique prefix, or the latest run for ``None``."""
        if run_id is None:
            rows = self._read(
                "SELECT id FROM consortium_runs ORDER BY created_at DESC, rowid DESC LIMIT 1"
            )
            if not rows:
                raise NotFoundError("No consortium runs found.")
            return rows[0]["id"]
        escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read(
            "SELECT id FROM consortium_runs WHERE id = ? OR id LIKE ? ESCAPE '\\' LIMIT 3",
            (run_id, escaped + "%"),
        )
        exact = [row for row in rows if row["id"] == run_id]
        if exact:
            return run_id
        if not rows:
            raise NotFoundError(f"Consortium run '{run_id}' not found.")
        if len(rows) > 1:
            raise NotFoundError(f"Run id prefix '{run_id}' is ambiguous; give more characters.")
        return rows[0]["id"]

    def run_details(self, run_id: str | None) -> dict[str, Any]:
        """``{"run", "members", "decisions", "embeddings", "clusters"}`` for one run."""
        full_id = self.resolve_run_id(run_id)
        run = self._read("SELECT * FROM consortium_runs WHERE id = ?", (full_id,))[0]
        members = self._read(
            "SELECT * FROM consortium_members WHERE run_id = ? ORDER BY iteration, member_index",
            (full_id,),
        )
        decisions = self._read(
            "SELECT * FROM arbiter_decisions WHERE run_id = ? ORDER BY iteration", (full_id,)
        )
        embeddings = self._read(
            "SELECT * FROM response_embeddings WHERE run_id = ? ORDER BY iteration, member_id",
            (full_id,),
        )
        clusters = self._read(
            "SELECT * FROM consensus_clusters WHERE run_id = ? ORDER BY iteration, cluster_id",
            (full_id,),
        )
        return {
            "run": run,
            "members": members,
            "decisions": decisions,
            "embeddings": embeddings,
            "clusters": clusters,
        }

    # ---- evaluations (llm consortium eval) ----------------------------------
    def start_eval(self, row: dict[str, Any]) -> None:
        self._insert(
            "consortium_evals", {"created_at": utcnow(), "status": "running", "pid": os.getpid(), **row}
        )

    def update_eval(self, eval_id: str, **fields: Any) -> None:
        if fields.get("status") in ("finished", "incomplete", "interrupted"):
            fields.setdefault("finished_at", utcnow())
        assignments = ", ".join(f"[{key}] = ?" for key in fields)
        with self._write() as conn:
            conn.execute(
                f"UPDATE consortium_evals SET {assignments} WHERE id = ?", (*fields.values(), eval_id)
            )

    def unfinished_eval(self, eval_key: str) -> dict[str, Any] | None:
        """The latest evaluation with these settings that is not finished."""
        rows = self._read(
            "SELECT * FROM consortium_evals WHERE eval_key = ? AND status != 'finished' "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (eval_key,),
        )
        return rows[0] if rows else None

    def resolve_eval_id(self, eval_id: str | None) -> str:
        """A full evaluation id from a unique prefix, or the latest for ``None``."""
        if eval_id is None:
            rows = self._read("SELECT id FROM consortium_evals ORDER BY created_at DESC, rowid DESC LIMIT 1")
            if not rows:
                raise NotFoundError("No evaluations found.")
            return rows[0]["id"]
        rows = self._read(
            "SELECT id FROM consortium_evals WHERE substr(id, 1, ?) = ? LIMIT 2", (len(eval_id), eval_id)
        )
        if not rows:
            raise NotFoundError(f"Evaluation '{eval_id}' not found.")
        if len(rows) > 1:
            raise NotFoundError(f"Evaluation id prefix '{eval_id}' is ambiguous; give more characters.")
        return rows[0]["id"]

    def eval_row(self, eval_id: str) -> dict[str, Any]:
        return self._read("SELECT * FROM consortium_evals WHERE id = ?", (eval_id,))[0]

    def record_eval_results(self, rows: list[dict[str, Any]]) -> None:
        """Store (or replace, when a row is retried) answers and their scores."""
        if rows:
            self._insert(
                "consortium_eval_results", *({"created_at": utcnow(), **row} for row in rows), replace=True
            )

    def eval_states(self, eval_id: str) -> dict[tuple[str, str], tuple[bool, bool]]:
        """``(system, row_key) -> (answered, scored)`` for the rows stored so far."""
        rows = self._read(
            "SELECT system, row_key, error IS NULL AS answered, correct IS NOT NULL AS scored "
            "FROM consortium_eval_results WHERE eval_id = ?",
            (eval_id,),
        )
        return {(row["system"], row["row_key"]): (bool(row["answered"]), bool(row["scored"])) for row in rows}

    def eval_result(self, eval_id: str, system: str, row_key: str) -> dict[str, Any]:
        return self._read(
            "SELECT * FROM consortium_eval_results WHERE eval_id = ? AND system = ? AND row_key = ?",
            (eval_id, system, row_key),
        )[0]

    def eval_measures(self, eval_id: str) -> list[dict[str, Any]]:
        """The columns the report is computed from, one row per (system, row)."""
        return self._read(
            "SELECT system, kind, correct, error, input_tokens, output_tokens, duration_s "
            "FROM consortium_eval_results WHERE eval_id = ? ORDER BY system, row_number",
            (eval_id,),
        )
    # ---- end of evaluations ------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Read-only SQL for reports (leaderboard, export)."""
        return self._read(sql, params)


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
    resolved = pathlib.Path(path) if path is not None else default_db_path()
    with _shared_lock:
        if resolved not in _shared:
            _shared[resolved] = Store(resolved)
        return _shared[resolved]


def read_config_rows_for_startup() -> list[dict[str, Any]]:
    """Config rows for ``register_models``: read-only, creates nothing.

    Start-up must never write or fail: a missing file means no consortia, and
    any other problem is raised as ``StoreError`` for the caller to warn about.
    """
    path = default_db_path()
    try:
        if not path.exists():
            return []
        # as_uri() percent-encodes, so '?', '#' or '%' in the path are safe.
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5)
    except OSError as ex:
        raise StoreError(f"Cannot read {path}: {ex}") from None
    except sqlite3.Error as ex:
        raise StoreError(f"Cannot open {path}: {ex}") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "consortium_configs" not in tables:
            return []
        return [
            dict(row)
            for row in conn.execute(
                "SELECT name, config, created_at FROM consortium_configs "
                "ORDER BY created_at DESC, name DESC"
            )
        ]
    except sqlite3.DatabaseError as ex:
        raise StoreError(f"{path} is not a usable database: {ex}") from None
    finally:
        conn.close()
