"""The job queue interface, and the in-process queue ``deltahub serve`` uses by default.

Both queues keep the same promises: a job is held by at most one worker at a
time under a lease the worker renews; a lease that lapses makes the job
claimable again (another worker resumes it from its checkpoint); attempts
are counted and capped; duplicate submissions with one idempotency key are
one job; cancelling a running job is a flag its worker sees on its next
report.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Callable

from deltahub.errors import NotFoundError
from deltahub.jobs import model as m
from deltahub.jobs.model import Job, JobSpec

DEFAULT_LEASE_S = 30.0


class JobQueue(ABC):
    lease_s: float = DEFAULT_LEASE_S

    # -- clients ---------------------------------------------------------------
    @abstractmethod
    def submit(self, spec: JobSpec, *, max_attempts: int = m.DEFAULT_MAX_ATTEMPTS) -> tuple[Job, bool]:
        """(the job, whether it is new); an idempotency key already used returns that key's job."""

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def list(self, namespace: str | None = None, limit: int = 100) -> list[Job]: ...

    @abstractmethod
    def cancel(self, job_id: str) -> Job: ...

    # -- workers ---------------------------------------------------------------
    @abstractmethod
    def claim(self, worker: str, device: str, *, timeout_s: float = 1.0) -> Job | None: ...

    @abstractmethod
    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Applies one transition atomically; the transition may raise (e.g. LeaseLostError)."""

    def heartbeat(self, job_id: str, worker: str) -> Job:
        return self.update(job_id, lambda j: m.renew(j, worker, self.lease_s, time.time()))

    def progress(self, job_id: str, worker: str, step: int, total: int, metrics: dict) -> Job:
        return self.update(job_id, lambda j: m.progress(j, worker, step, total, metrics, self.lease_s, time.time()))

    def checkpoint(self, job_id: str, worker: str, checkpoint: dict) -> Job:
        return self.update(job_id, lambda j: m.checkpointed(j, worker, checkpoint, self.lease_s, time.time()))

    def succeed(self, job_id: str, worker: str, result: dict) -> Job:
        return self.update(job_id, lambda j: m.succeed(j, worker, result, time.time()))

    def fail(self, job_id: str, worker: str, code: str, message: str, *, retry: bool) -> Job:
        return self.update(job_id, lambda j: m.fail(j, worker, code, message, retry=retry, now=time.time()))

    def cancelled(self, job_id: str, worker: str) -> Job:
        return self.update(job_id, lambda j: m.cancelled(j, worker, time.time()))

    def close(self) -> None:
        return None


class MemoryQueue(JobQueue):
    """Jobs in this process's memory, for the in-process worker; a restart forgets them."""

    def __init__(self, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.lease_s = lease_s
        self._jobs: dict[str, Job] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._cond = threading.Condition()

    def submit(self, spec: JobSpec, *, max_attempts: int = m.DEFAULT_MAX_ATTEMPTS) -> tuple[Job, bool]:
        with self._cond:
            key = (spec.namespace, spec.idempotency_key)
            if spec.idempotency_key and key in self._keys:
                return self._jobs[self._keys[key]], False
            job = m.new_job(spec, max_attempts=max_attempts)
            self._jobs[job.id] = job
            if spec.idempotency_key:
                self._keys[key] = job.id
            self._cond.notify_all()
            return job, True

    def get(self, job_id: str) -> Job:
        with self._cond:
            if job_id not in self._jobs:
                raise NotFoundError(f"job {job_id!r} does not exist")
            return self._jobs[job_id]

    def list(self, namespace: str | None = None, limit: int = 100) -> list[Job]:
        with self._cond:
            jobs = [j for j in self._jobs.values() if namespace is None or j.namespace == namespace]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:limit]

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        with self._cond:
            job = change(self.get(job_id))
            self._jobs[job_id] = job
            self._cond.notify_all()
            return job

    def cancel(self, job_id: str) -> Job:
        return self.update(job_id, lambda j: m.request_cancel(j, time.time()))

    def claim(self, worker: str, device: str, *, timeout_s: float = 1.0) -> Job | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                now = time.time()
                ready = sorted((j for j in self._jobs.values() if m.claimable(j, now)), key=lambda j: j.created_at)
                for job in ready:
                    taken = m.claim(job, worker, device, self.lease_s, now)
                    self._jobs[job.id] = taken
                    self._cond.notify_all()
                    if taken.state == m.RUNNING:
                        return taken
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(timeout=min(left, 1.0))
