"""The run ledger: every plan/apply/check per host, recorded on the controller in SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.controller_process import ControllerProcess
from provisioner.errors import ProvisionError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    started REAL NOT NULL,
    seconds REAL NOT NULL,
    command TEXT NOT NULL,
    manifest TEXT NOT NULL,
    host TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    changed INTEGER NOT NULL DEFAULT 0,
    generation INTEGER,
    summary TEXT NOT NULL DEFAULT '{}',
    controller TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    pid_start INTEGER
);
CREATE INDEX IF NOT EXISTS runs_host ON runs (host, started);
CREATE INDEX IF NOT EXISTS runs_run ON runs (run_id);
"""
#: Added after the first release (a ledger written before lacks them): the controller process of a run,
#: to tell an interrupted `running` row.
LATER_COLUMNS = {"controller": "TEXT NOT NULL DEFAULT ''", "pid": "INTEGER", "pid_start": "INTEGER"}
RUNNING, INTERRUPTED = "running", "interrupted"


def default_ledger_path() -> Path:
    """$PROVISION_LEDGER, else the XDG state directory."""
    if os.environ.get("PROVISION_LEDGER"):
        return ledger_path_from_url(os.environ["PROVISION_LEDGER"])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "provision" / "ledger.sqlite"


def ledger_path_from_url(url: str) -> Path:
    """`sqlite:///abs/path`, `sqlite:relative` or a plain path."""
    if url.startswith("sqlite:///"):
        return Path("/" + url[len("sqlite:///"):])
    if url.startswith("sqlite:"):
        return Path(url[len("sqlite:"):])
    if "://" in url:
        raise ProvisionError(f"ledger URL {url!r}: only sqlite:///PATH (or a file path) is supported")
    return Path(url)


@dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    started: float
    seconds: float
    command: str
    manifest: str
    host: str
    status: str
    exit_code: int
    changed: int = 0
    generation: int | None = None
    summary: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "summary": self.summary or {}}


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)
                present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                for column, declaration in LATER_COLUMNS.items():
                    if column not in present:
                        _add_column(db, column, declaration)
        except (OSError, sqlite3.Error) as exc:
            raise ProvisionError(f"cannot open the ledger {path}: {exc}; set --ledger or PROVISION_LEDGER") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A busy timeout lets parallel fleet workers append without "database is locked".
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def record(self, entry: LedgerEntry) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (run_id, started, seconds, command, manifest, host, status, exit_code, changed,"
                " generation, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.run_id, entry.started, entry.seconds, entry.command, entry.manifest, entry.host,
                 entry.status, entry.exit_code, entry.changed, entry.generation,
                 json.dumps(entry.summary or {}, sort_keys=True)),
            )

    def start(self, entry: LedgerEntry, process: ControllerProcess) -> int:
        """Record a run as `running` before it touches anything; returns the row to `finish` later."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO runs (run_id, started, seconds, command, manifest, host, status, exit_code, changed,"
                " generation, summary, controller, pid, pid_start) VALUES (?, ?, 0, ?, ?, ?, ?, -1, 0, NULL, '{}',"
                " ?, ?, ?)",
                (entry.run_id, entry.started, entry.command, entry.manifest, entry.host, RUNNING, process.host,
                 process.pid, process.start_ticks),
            )
            return int(cursor.lastrowid or 0)

    def finish(self, row: int, entry: LedgerEntry) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET seconds = ?, manifest = ?, host = ?, status = ?, exit_code = ?, changed = ?,"
                " generation = ?, summary = ? WHERE id = ?",
                (entry.seconds, entry.manifest, entry.host, entry.status, entry.exit_code, entry.changed,
                 entry.generation, json.dumps(entry.summary or {}, sort_keys=True), row),
            )

    def history(self, host: str | None = None, limit: int = 50) -> list[LedgerEntry]:
        query = "SELECT run_id, started, seconds, command, manifest, host, status, exit_code, changed, generation," \
                " summary, controller, pid, pid_start FROM runs"
        params: tuple[Any, ...] = ()
        if host:
            query += " WHERE host = ?"
            params = (host,)
        query += " ORDER BY started DESC, id DESC LIMIT ?"
        with self._connect() as db:
            rows = db.execute(query, (*params, limit)).fetchall()
        return [
            LedgerEntry(run_id=row[0], started=row[1], seconds=row[2], command=row[3], manifest=row[4], host=row[5],
                        status=_shown_status(row[6], row[11], row[12], row[13]), exit_code=row[7],
                        changed=row[8], generation=row[9],
                        summary=json.loads(row[10]))
            for row in rows
        ]


def _add_column(db: sqlite3.Connection, column: str, declaration: str) -> None:
    try:
        db.execute(f"ALTER TABLE runs ADD COLUMN {column} {declaration}")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):  # another run upgraded the ledger at the same moment
            raise


def _shown_status(status: str, controller: str, pid: int | None, pid_start: int | None) -> str:
    """A `running` row whose controller process is gone was interrupted before it could say how it ended."""
    if status == RUNNING and pid is not None and ControllerProcess(controller, pid, pid_start).is_gone():
        return INTERRUPTED
    return status


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
