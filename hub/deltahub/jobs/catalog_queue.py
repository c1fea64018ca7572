"""The job queue without Redis: jobs kept in the catalog's database (SQLite or PostgreSQL).

Its tables are the catalog schema's (migration 3). Each transition is one catalog transaction, so a process killed
at any moment leaves every job as its last transition left it: after a
restart, the jobs submitted before are listed again and the running ones
(their workers died with the process) are claimable at once
(:meth:`CatalogQueue.recover`). The in-process workers wait on a condition
this process signals, and look again every half second.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from deltahub.errors import NotFoundError
from deltahub.jobs import model as m
from deltahub.jobs.model import Job
from deltahub.jobs.queue import DEFAULT_LEASE_S, JobQueue
from deltahub.storage.catalog import Catalog

POLL_S = 0.5


class CatalogQueue(JobQueue):
    def __init__(self, catalog: Catalog, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.catalog = catalog
        self.lease_s = lease_s
        self._changed = threading.Condition()

    @staticmethod
    def _row(job: Job) -> tuple:
        return (job.id, job.namespace, job.kind, job.state, job.lease_until, job.created_at, job.finished_at,
                job.key, job.to_json())

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- clients ---------------------------------------------------------------
    def submit(self, kind: str, namespace: str, spec: dict[str, Any], *, key: str = "", created_by: str = "",
               max_attempts: int = m.DEFAULT_MAX_ATTEMPTS, result: dict | None = None) -> tuple[Job, bool]:
        job = m.new_job(kind, namespace, spec, key=key, created_by=created_by, max_attempts=max_attempts)
        if result is not None:
            job = m.answered(job, result)
        with self.catalog.transaction() as db:
            if key:
                row = db.execute("SELECT doc FROM jobs WHERE namespace=? AND key=?", (namespace, key)).fetchone()
                if row is not None:
                    return m.check_key(Job.from_json(row["doc"]), kind, spec), False
            db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?)", self._row(job))
        self._notify()
        return job, True

    def get(self, job_id: str) -> Job:
        rows = self.catalog.query("SELECT doc FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise NotFoundError(f"job {job_id!r} does not exist (finished jobs are kept for a while: --keep-jobs)")
        return Job.from_json(rows[0]["doc"])

    def list(self, namespace: str | None = None, *, kind: str | None = None, state: str | None = None,
             limit: int = 100) -> list[Job]:
        where, args = "", []
        for column, value in (("namespace", namespace), ("kind", kind), ("state", state)):
            if value:
                where += f" AND {column}=?"
                args.append(value)
        rows = self.catalog.query(f"SELECT doc FROM jobs WHERE 1=1{where} ORDER BY created_at DESC LIMIT ?",
                                  (*args, limit))
        return [Job.from_json(r["doc"]) for r in rows]

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        with self.catalog.transaction() as db:
            row = db.execute("SELECT doc FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"job {job_id!r} does not exist")
            job = change(Job.from_json(row["doc"]))
            db.execute("UPDATE jobs SET state=?, lease_until=?, finished_at=?, doc=? WHERE id=?",
                       (job.state, job.lease_until, job.finished_at, job.to_json(), job_id))
        self._notify()
        return job

    def trim(self, keep: int, max_age_s: float) -> int:
        cutoff = time.time() - max_age_s
        final = tuple(m.FINAL)
        with self.catalog.transaction() as db:
            marks = ",".join("?" * len(final))
            old = db.execute(
                f"SELECT id FROM jobs WHERE state IN ({marks}) AND (finished_at < ? OR id NOT IN ("
                f"SELECT id FROM jobs WHERE state IN ({marks}) ORDER BY finished_at DESC LIMIT ?))",
                (*final, cutoff, *final, keep)).fetchall()
            db.executemany("DELETE FROM jobs WHERE id=?", [(r["id"],) for r in old])
        return len(old)

    def recover(self, worker_prefix: str = "") -> int:
        """Jobs left running by this process's workers when it died (their names start with
        ``worker_prefix``): claimable now rather than when their leases lapse. Call before the workers start.
        Jobs of other replicas sharing the catalog are theirs, left to their leases."""
        with self.catalog.transaction() as db:
            rows = db.execute("SELECT doc FROM jobs WHERE state=?", (m.RUNNING,)).fetchall()
            now, recovered = time.time(), 0
            for row in rows:
                job = Job.from_json(row["doc"])
                if not job.worker.startswith(worker_prefix):
                    continue
                job = m.orphaned(job, now)
                db.execute("UPDATE jobs SET lease_until=?, doc=? WHERE id=?", (job.lease_until, job.to_json(), job.id))
                recovered += 1
        return recovered

    # -- workers ---------------------------------------------------------------
    def claim(self, worker: str, device: str, *, timeout_s: float = 1.0) -> Job | None:
        deadline = time.monotonic() + timeout_s
        while True:
            taken = self._claim_once(worker, device)
            if taken is not None:
                return taken
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._changed:
                self._changed.wait(timeout=min(left, POLL_S))

    def _claim_once(self, worker: str, device: str) -> Job | None:
        now = time.time()
        # idle workers look with a read (no writer lock); the claim itself is a transaction
        if not self.catalog.query("SELECT 1 FROM jobs WHERE state=? OR (state=? AND lease_until<?) LIMIT 1",
                                  (m.QUEUED, m.RUNNING, now)):
            return None
        with self.catalog.transaction() as db:
            rows = db.execute("SELECT doc FROM jobs WHERE state=? OR (state=? AND lease_until<?) "
                              "ORDER BY created_at LIMIT 16", (m.QUEUED, m.RUNNING, now)).fetchall()
            for row in rows:
                job = m.claim(Job.from_json(row["doc"]), worker, device, self.lease_s, now)
                db.execute("UPDATE jobs SET state=?, lease_until=?, finished_at=?, doc=? WHERE id=?",
                           (job.state, job.lease_until, job.finished_at, job.to_json(), job.id))
                if job.state == m.RUNNING:
                    return job
        return None

    def _swap_flight(self, key: str, holder: str | None, new: str | None) -> str | None:
        with self.catalog.transaction() as db:
            row = db.execute("SELECT job FROM job_flights WHERE key=?", (key,)).fetchone()
            current = row["job"] if row else None
            if current != holder:
                return current
            if new is None:
                db.execute("DELETE FROM job_flights WHERE key=?", (key,))
            else:
                db.execute("INSERT INTO job_flights VALUES (?,?) ON CONFLICT (key) DO UPDATE SET job=excluded.job", (key, new))
            return new
