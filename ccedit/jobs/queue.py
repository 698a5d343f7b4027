"""The job queue of a work folder: `WORK/jobs.sqlite` (SQLite from the standard library).

Every change of state is one transaction. Claiming takes the database's write lock first (`BEGIN IMMEDIATE`), so
of two processes claiming at once one waits, and each job goes to one of them. A running job whose owner is gone
(`owner.owner_is_gone`) goes back to queued when anyone claims; a finished or failed job is only queued again on
request (`requeue`). Updates by an owner name the owner, so a process that lost its job (its lease ran out and
another took the job) cannot mark it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from .owner import LEASE_SECONDS, Owner, owner_is_gone
from .spec import Job, JobSpec

DATABASE = "jobs.sqlite"
STATES = ("queued", "running", "done", "failed")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    spec TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    model_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    error TEXT,
    owner TEXT,
    lease_until REAL,
    outputs TEXT NOT NULL DEFAULT '{}',
    runs INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    submitted REAL NOT NULL,
    finished REAL
)
"""


class JobQueue:
    """The queue in `work`; the folder is made when the queue is opened."""

    def __init__(self, work: str | Path):
        self.work = Path(work)
        self._lock = threading.RLock()  # one connection, shared by the threads of a process (the studio's)
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.work / DATABASE, timeout=60, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise UserError(f"cannot open the job queue in {self.work}: {error}; choose another --work-dir") from None

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock first: no two claims read the same free job
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, query: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def submit(self, job_id: str, spec: JobSpec, input_hash: str, model_key: str) -> bool:
        """Add a job; False when a job with this id (the same spec and inputs) is already there."""
        with self._transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            added = db.execute(
                "INSERT OR IGNORE INTO jobs (id, seq, spec, input_hash, model_key, state, submitted) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                (job_id, seq, json.dumps(spec.to_dict(), sort_keys=True), input_hash, model_key, time.time()))
            return added.rowcount == 1

    def get(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, state: str | None = None) -> list[Job]:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        return [_job(r) for r in self._read(f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY seq", args)]

    def release_dead_owners(self) -> list[str]:
        """Put back to queued every running job whose owner is gone; returns their ids."""
        with self._transaction() as db:
            return self._release_dead(db)

    def _release_dead(self, db: sqlite3.Connection) -> list[str]:
        released = []
        running = db.execute("SELECT id, owner, lease_until FROM jobs WHERE state = 'running'").fetchall()
        for job_id, owner, lease_until in running:
            if owner is None or owner_is_gone(Owner(**json.loads(owner)), lease_until):
                released.append(job_id)
        for job_id in released:
            db.execute("UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL WHERE id = ?", (job_id,))
        return released

    def claim(self, owner: Owner, prefer_model: str | None = None, only: set[str] | None = None) -> Job | None:
        """Take the next queued job for `owner` (jobs needing `prefer_model`, the model it has loaded, first;
        only the ids in `only` when given); None when no job is queued."""
        with self._transaction() as db:
            self._release_dead(db)
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY model_key = ? DESC, seq",
                              (prefer_model or "",)).fetchall()
            rows = [r for r in rows if only is None or r[0] in only]
            if not rows:
                return None
            job = _job(rows[0])
            db.execute("UPDATE jobs SET state = 'running', owner = ?, lease_until = ?, runs = runs + 1, error = NULL "
                       "WHERE id = ?", (json.dumps(owner.to_dict()), time.time() + LEASE_SECONDS, job.id))
        return self.get(job.id)

    def renew(self, job_id: str, owner: Owner) -> bool:
        """Extend the owner's lease on a running job; False when the job is no longer its own."""
        with self._transaction() as db:
            done = db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND state = 'running' AND owner = ?",
                              (time.time() + LEASE_SECONDS, job_id, json.dumps(owner.to_dict())))
            return done.rowcount == 1

    def finish(self, job_id: str, owner: Owner | None, outputs: dict) -> None:
        """Mark a job done with its published outputs (`owner` None: found finished, by whoever holds it)."""
        self._end(job_id, owner, "done", None, outputs)

    def fail(self, job_id: str, owner: Owner, error: str) -> None:
        self._end(job_id, owner, "failed", error, {})

    def _end(self, job_id: str, owner: Owner | None, state: str, error: str | None, outputs: dict) -> None:
        mine = "" if owner is None else " AND owner = ?"
        args = () if owner is None else (json.dumps(owner.to_dict()),)
        with self._transaction() as db:
            db.execute(f"UPDATE jobs SET state = ?, error = ?, outputs = ?, lease_until = NULL, finished = ? "
                       f"WHERE id = ?{mine}", (state, error, json.dumps(outputs), time.time(), job_id, *args))

    def release(self, job_id: str, owner: Owner) -> None:
        """Give a running job back to the queue (its owner is stopping, not failing)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                       (job_id, json.dumps(owner.to_dict())))

    def requeue(self, job_ids: list[str]) -> None:
        """Queue finished or failed jobs again (a rerun after a failure, or `--overwrite`)."""
        with self._transaction() as db:
            for job_id in job_ids:
                db.execute("UPDATE jobs SET state = 'queued', error = NULL, cancel = 0, owner = NULL, "
                           "lease_until = NULL WHERE id = ? AND state IN ('done', 'failed')", (job_id,))

    def request_cancel(self, job_id: str) -> None:
        """Ask the job's owner to stop it (checked at every denoising step); a queued job fails at once."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET cancel = 1 WHERE id = ? AND state = 'running'", (job_id,))
            db.execute("UPDATE jobs SET state = 'failed', error = 'cancelled', finished = ? "
                       "WHERE id = ? AND state = 'queued'", (time.time(), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._read("SELECT cancel FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0][0])


_COLUMNS = "id, spec, input_hash, model_key, state, error, owner, outputs, runs, cancel"


def _job(row: tuple) -> Job:
    job_id, spec, inputs, model, state, error, owner, outputs, runs, cancel = row
    return Job(job_id, JobSpec.from_dict(json.loads(spec)), inputs, model, state, error,
               json.loads(owner) if owner else None, json.loads(outputs), runs, bool(cancel))
