"""The job queue on Redis: deliveries through a stream with a consumer group, jobs as JSON documents.

* ``deltahub:jobs:queue`` (stream, consumer group ``workers``): one entry per
  delivery. ``XREADGROUP`` hands new entries to one worker each; an entry
  stays pending until acknowledged. The worker holding a job renews its
  lease by re-claiming its entry (``XCLAIM ... JUSTID`` resets the idle time),
  so an entry idle for longer than the lease belongs to a dead worker and
  ``XAUTOCLAIM`` gives it to the next worker that asks: that worker resumes
  the job from its checkpoint. No polling of lists.
* ``deltahub:job:<id>`` (string): the job document, changed only inside
  ``WATCH``/``MULTI`` transactions that apply one transition of
  :mod:`deltahub.jobs.model`; the document, not the stream, says who holds a
  job (a worker whose lease lapsed finds out on its next report).
* ``deltahub:jobs:index[:<namespace>]`` (sorted sets): listing, newest first;
  ``deltahub:jobs:finished`` (sorted set by finish time): retention.
* ``deltahub:jobkey:<namespace>:<key>``: idempotency keys (``SET NX``).
* ``deltahub:flight:<key>``: the job holding a flight (changed under ``WATCH``).

Lease times are wall-clock seconds; workers and the server should keep
their clocks in sync (NTP), as with any lease.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import redis

from deltahub.errors import NotFoundError, UnavailableError
from deltahub.jobs import model as m
from deltahub.jobs.model import Job
from deltahub.jobs.queue import DEFAULT_LEASE_S, JobQueue

PREFIX = "deltahub:"
STREAM = PREFIX + "jobs:queue"
GROUP = "workers"


class RedisQueue(JobQueue):
    def __init__(self, url: str, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        self.url = url
        self.lease_s = lease_s
        self._r = redis.Redis.from_url(url)
        try:
            self._r.ping()
            self._r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        except redis.ConnectionError as err:
            raise UnavailableError(f"cannot reach Redis at {url}: {err}") from None

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    def close(self) -> None:
        self._r.close()

    # -- clients ---------------------------------------------------------------
    def submit(self, kind: str, namespace: str, spec: dict[str, Any], *, key: str = "", created_by: str = "",
               max_attempts: int = m.DEFAULT_MAX_ATTEMPTS, result: dict | None = None) -> tuple[Job, bool]:
        job = m.new_job(kind, namespace, spec, key=key, created_by=created_by, max_attempts=max_attempts)
        if result is not None:
            job = m.answered(job, result)
        if key:
            where = f"{PREFIX}jobkey:{namespace}:{key}"
            if not self._r.set(where, job.id, nx=True):
                return m.check_key(self.get(self._r.get(where).decode()), kind, spec), False
        pipe = self._r.pipeline()
        pipe.set(self._key(job.id), job.to_json())
        pipe.zadd(PREFIX + "jobs:index", {job.id: job.created_at})
        pipe.zadd(f"{PREFIX}jobs:index:{namespace}", {job.id: job.created_at})
        if job.finished:
            pipe.zadd(PREFIX + "jobs:finished", {job.id: job.finished_at})
        else:
            pipe.xadd(STREAM, {"job": job.id})
        pipe.execute()
        return job, True

    def get(self, job_id: str) -> Job:
        raw = self._r.get(self._key(job_id))
        if raw is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        return Job.from_json(raw)

    def list(self, namespace: str | None = None, *, kind: str | None = None, state: str | None = None,
             limit: int = 100) -> list[Job]:
        index = f"{PREFIX}jobs:index:{namespace}" if namespace else PREFIX + "jobs:index"
        out: list[Job] = []
        start, page = 0, max(limit, 100)
        while len(out) < limit:  # kind and state filter the newest pages until enough match
            ids = [i.decode() for i in self._r.zrevrange(index, start, start + page - 1)]
            if not ids:
                break
            for doc in self._r.mget([self._key(i) for i in ids]):
                if doc is not None:
                    job = Job.from_json(doc)
                    if (not kind or job.kind == kind) and (not state or job.state == state):
                        out.append(job)
            start += page
        return out[:limit]

    def trim(self, keep: int, max_age_s: float) -> int:
        finished = PREFIX + "jobs:finished"
        old = {i.decode() for i in self._r.zrangebyscore(finished, "-inf", time.time() - max_age_s)}
        old |= {i.decode() for i in self._r.zrange(finished, 0, -(keep + 1))} if keep >= 0 else set()
        for job_id in old:
            raw = self._r.get(self._key(job_id))
            pipe = self._r.pipeline()
            if raw is not None:
                job = Job.from_json(raw)
                if job.key:
                    pipe.delete(f"{PREFIX}jobkey:{job.namespace}:{job.key}")
                pipe.zrem(f"{PREFIX}jobs:index:{job.namespace}", job_id)
            pipe.delete(self._key(job_id))
            pipe.zrem(PREFIX + "jobs:index", job_id)
            pipe.zrem(finished, job_id)
            pipe.execute()
        return len(old)

    def _swap_flight(self, key: str, holder: str | None, new: str | None) -> str | None:
        where = f"{PREFIX}flight:{key}"
        out: list[str | None] = []

        def tx(pipe) -> None:
            out.clear()
            raw = pipe.get(where)
            current = raw.decode() if raw is not None else None
            if current != holder:
                out.append(current)
                return
            pipe.multi()
            if new is None:
                pipe.delete(where)
            else:
                pipe.set(where, new)
            out.append(new)

        self._r.transaction(tx, where)
        return out[0]

    def update(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        key = self._key(job_id)
        out: list[Job] = []

        def tx(pipe) -> None:
            out.clear()
            raw = pipe.get(key)
            if raw is None:
                raise NotFoundError(f"job {job_id!r} does not exist")
            job = change(Job.from_json(raw))
            pipe.multi()
            pipe.set(key, job.to_json())
            out.append(job)

        self._r.transaction(tx, key)
        job = out[0]
        if job.finished:
            self._r.zadd(PREFIX + "jobs:finished", {job.id: job.finished_at})
            if job.delivery:
                self._r.xack(STREAM, GROUP, job.delivery)
        return job

    # -- workers ---------------------------------------------------------------
    def claim(self, worker: str, device: str, *, timeout_s: float = 1.0) -> Job | None:
        deadline = time.monotonic() + timeout_s
        while True:
            # first, deliveries whose holder stopped renewing: their worker died
            _, entries, _ = self._r.xautoclaim(STREAM, GROUP, worker, min_idle_time=int(self.lease_s * 1000),
                                               start_id="0-0", count=10)
            if not entries:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                got = self._r.xreadgroup(GROUP, worker, {STREAM: ">"}, count=1, block=max(1, int(left * 1000)))
                entries = got[0][1] if got else []
            for entry_id, fields in entries:
                job = self._take(entry_id.decode(), fields[b"job"].decode(), worker, device)
                if job is not None:
                    return job
            if time.monotonic() >= deadline:
                return None

    def _take(self, entry: str, job_id: str, worker: str, device: str) -> Job | None:
        now = time.time()

        def take(j: Job) -> Job:
            if not m.claimable(j, now):
                return j
            return replace(m.claim(j, worker, device, self.lease_s, now), delivery=entry)

        try:
            job = self.update(job_id, take)
        except NotFoundError:
            self._r.xack(STREAM, GROUP, entry)
            return None
        if job.state == m.RUNNING and job.worker == worker and job.delivery == entry:
            return job
        if job.finished:
            self._r.xack(STREAM, GROUP, entry)
        # else: held by a live worker under another entry, or a live lease: leave it
        return None

    def _keep_delivery(self, job: Job) -> Job:
        """Resets the idle time of the holder's stream entry: XAUTOCLAIM leaves live jobs alone."""
        if job.delivery:
            self._r.xclaim(STREAM, GROUP, job.worker, 0, [job.delivery], justid=True)
        return job

    def heartbeat(self, job_id: str, worker: str) -> Job:
        return self._keep_delivery(super().heartbeat(job_id, worker))

    def progress(self, job_id: str, worker: str, stage: str, done: int, total: int, metrics: dict) -> Job:
        return self._keep_delivery(super().progress(job_id, worker, stage, done, total, metrics))

    def fail(self, job_id: str, worker: str, record: dict, *, retry: bool) -> Job:
        job = super().fail(job_id, worker, record, retry=retry)
        if job.state == m.QUEUED:  # another attempt: a fresh delivery (job.delivery still names the old one)
            self._r.xack(STREAM, GROUP, job.delivery)
            self._r.xadd(STREAM, {"job": job.id})
        return job
