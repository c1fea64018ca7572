"""The job queue interface: one set of promises, whatever keeps the jobs.

A job is held by at most one worker at a time under a lease the worker
renews; a lease that lapses makes the job claimable again (another worker
resumes it from its checkpoint, or builds it again); attempts are counted
and capped; one idempotency key is one job, and the key given again with
another request is refused; cancelling a running job is a flag its worker
sees on its next report. Flights make work that two jobs would both do
(one merge recipe asked twice) run once: a flight is held by a job, for as
long as that job is running under a live lease.

Implementations: :class:`deltahub.jobs.catalog_queue.CatalogQueue` (the
embedded default: jobs in the catalog, they survive restarts) and
:class:`deltahub.jobs.redis_queue.RedisQueue` (``--redis``: shared by
``deltahub worker`` processes).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Callable

from deltahub.jobs import model as m
from deltahub.jobs.model import Job

DEFAULT_LEASE_S = 30.0


class JobQueue(ABC):
    lease_s: float = DEFAULT_LEASE_S

    # -- clients ---------------------------------------------------------------
    @abstractmethod
    def submit(self, kind: str, namespace: str, spec: dict[str, Any], *, key: str = "", created_by: str = "",
               max_attempts: int = m.DEFAULT_MAX_ATTEMPTS, result: dict | None = None) -> tuple[Job, bool]:
        """(the job, whether it is new). A key used before returns that key's job when the request is the
        same, and is refused (PreconditionError) when it is not. With ``result``, the job is answered
        already (SUCCEEDED) and no worker sees it."""

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def list(self, namespace: str | None = None, *, kind: str | None = None, state: str | None = None,
             limit: int = 100) -> list[Job]:
        """Newest first."""

    def cancel(self, job_id: str) -> Job:
        return self.update(job_id, lambda j: m.request_cancel(j, time.time()))

    @abstractmethod
    def trim(self, keep: int, max_age_s: float) -> int:
        """Forgets finished jobs beyond the newest ``keep`` or older than ``max_age_s``; how many went."""

    # -- workers ---------------------------------------------------------------
    @abstractmethod
    def claim(self, worker: str, device: str, *, timeout_s: float = 1.0) -> Job | None: ...

    @abstractmethod
    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Applies one transition atomically; the transition may raise (e.g. LeaseLostError)."""

    def heartbeat(self, job_id: str, worker: str) -> Job:
        return self.update(job_id, lambda j: m.renew(j, worker, self.lease_s, time.time()))

    def progress(self, job_id: str, worker: str, stage: str, done: int, total: int, metrics: dict) -> Job:
        return self.update(job_id, lambda j: m.progress(j, worker, stage, done, total, metrics, self.lease_s,
                                                        time.time()))

    def checkpoint(self, job_id: str, worker: str, checkpoint: dict) -> Job:
        return self.update(job_id, lambda j: m.checkpointed(j, worker, checkpoint, self.lease_s, time.time()))

    def succeed(self, job_id: str, worker: str, result: dict) -> Job:
        return self.update(job_id, lambda j: m.succeed(j, worker, result, time.time()))

    def fail(self, job_id: str, worker: str, record: dict, *, retry: bool) -> Job:
        return self.update(job_id, lambda j: m.fail(j, worker, record, retry=retry, now=time.time()))

    def cancelled(self, job_id: str, worker: str) -> Job:
        return self.update(job_id, lambda j: m.cancelled(j, worker, time.time()))

    # -- flights ---------------------------------------------------------------
    @abstractmethod
    def _swap_flight(self, key: str, holder: str | None, new: str | None) -> str | None:
        """Atomically: if the flight ``key`` is held by ``holder`` (None: by no one), make ``new`` hold it
        (None: release it). Returns the holder after the call."""

    def acquire_flight(self, key: str, job_id: str) -> str:
        """The id of the job holding flight ``key`` after trying to take it for ``job_id``: ``job_id`` when
        it was free, held by it already, or held by a job that is no longer running under a live lease."""
        for _ in range(8):  # a lost race is retried with the holder just seen
            holder = self._swap_flight(key, None, job_id)
            if holder in (job_id, None):
                return job_id
            try:
                live = m.live(self.get(holder), time.time())
            except LookupError:
                live = False
            if live:
                return holder
            if self._swap_flight(key, holder, job_id) == job_id:
                return job_id
        return holder

    def release_flight(self, key: str, job_id: str) -> None:
        self._swap_flight(key, job_id, None)

    def close(self) -> None:
        return None
