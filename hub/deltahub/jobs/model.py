"""Long-running work as jobs: one record for every kind (training, merges, evaluation, ...).

A :class:`Job` says what was asked (``kind`` and ``spec``, the request with
every name resolved to a digest) and where it stands (state, attempts,
worker, progress, result or error). Every change of state is one of the
pure functions below (job in, job out), so the catalog queue and the Redis
queue apply exactly the same rules and differ only in where a job is kept
and how it reaches a worker.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from deltahub.errors import ConflictError, PreconditionError, from_record

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL = (SUCCEEDED, FAILED, CANCELLED)
DEFAULT_MAX_ATTEMPTS = 3

# the kinds of long-running work, and the unit each one's progress counts in
TRAIN, MERGE, EVALUATE, ASSEMBLE, TASK_VECTOR = "train", "merge", "evaluate", "assemble", "task_vector"
KINDS = (TRAIN, MERGE, EVALUATE, ASSEMBLE, TASK_VECTOR)
UNITS = {TRAIN: "step", MERGE: "tensor", ASSEMBLE: "tensor", TASK_VECTOR: "tensor", EVALUATE: "row"}


class LeaseLostError(ConflictError):
    """The worker no longer holds the job (its lease lapsed and another worker took it, or it ended)."""


@dataclass(frozen=True)
class Job:
    id: str                          # "namespace/hex": the namespace the work writes to (or reads, for evaluate)
    kind: str
    spec: dict[str, Any]
    state: str = QUEUED
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    worker: str = ""
    device: str = ""
    lease_until: float = 0.0
    delivery: str = ""               # the queue's handle of the current delivery (a Redis stream entry id)
    stage: str = "queued"            # what the worker is doing: downloading, training, merging, committing ...
    done: int = 0                    # progress, in ``unit``s
    total: int = 0
    unit: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)      # the last progress event (loss, bytes, ...)
    checkpoint: dict[str, Any] = field(default_factory=dict)   # {"step", "files": [[path, sha256, size]]}
    error_code: str = ""             # the status name, class and message a direct call would have raised
    error_class: str = ""
    error_message: str = ""
    result: dict[str, Any] = field(default_factory=dict)       # {"artifact", "digest", ...} by kind
    cancel_requested: bool = False
    key: str = ""                    # the idempotency key it was submitted with
    request: str = ""                # sha256 of (kind, spec): one key, one request
    created_by: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    @property
    def out(self) -> str:
        return self.spec.get("out", "")

    def error(self):
        """The exception this job failed with, as the direct call would have raised it (None unless it failed)."""
        if self.state not in (FAILED, CANCELLED):
            return None
        return from_record(self.error_code or ("CANCELLED" if self.state == CANCELLED else "INTERNAL"),
                           self.error_class, self.error_message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Job":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> "Job":
        return cls.from_dict(json.loads(text))


def request_hash(kind: str, spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, spec], sort_keys=True, default=str).encode()).hexdigest()


def check_key(existing: Job, kind: str, spec: dict[str, Any]) -> Job:
    """The job an idempotency key names, when the request is the same; another request is refused."""
    if existing.request != request_hash(kind, spec):
        raise PreconditionError(
            f"idempotency key {existing.key!r} was used for another request (job {existing.id}, {existing.kind}); "
            "give a new key for a different request")
    return existing


# -- transitions (pure) ---------------------------------------------------------
def new_job(kind: str, namespace: str, spec: dict[str, Any], *, key: str = "", created_by: str = "",
            max_attempts: int = DEFAULT_MAX_ATTEMPTS, now: float | None = None) -> Job:
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    now = now or time.time()
    return Job(id=f"{namespace}/{uuid.uuid4().hex}", kind=kind, spec=dict(spec), max_attempts=max_attempts,
               unit=UNITS[kind], key=key, request=request_hash(kind, spec), created_by=created_by,
               created_at=now, updated_at=now, version=1)


def answered(job: Job, result: dict, now: float | None = None) -> Job:
    """A job the hub answered when it was asked (a recipe built before): SUCCEEDED, no worker involved."""
    now = now or time.time()
    return _bump(job, now, state=SUCCEEDED, result=dict(result), finished_at=now, started_at=now, stage="done")


def _bump(job: Job, now: float | None = None, **changes) -> Job:
    return replace(job, version=job.version + 1, updated_at=now or time.time(), **changes)


def live(job: Job, now: float) -> bool:
    """Running under a lease its worker still renews."""
    return job.state == RUNNING and job.lease_until >= now


def claimable(job: Job, now: float) -> bool:
    """Queued, or running under a lease that lapsed (its worker died)."""
    return job.state == QUEUED or (job.state == RUNNING and job.lease_until < now)


def claim(job: Job, worker: str, device: str, lease_s: float, now: float) -> Job:
    """The job as ``worker`` takes it; attempts spent end it FAILED instead."""
    if job.cancel_requested:
        return _bump(job, now, state=CANCELLED, finished_at=now, worker="", lease_until=0.0, stage="done",
                     error_code="CANCELLED", error_class="CancelledError", error_message=f"job {job.id} was cancelled")
    if job.attempts >= job.max_attempts:
        if job.error_code:  # the last attempt's own error, as it was
            return _bump(job, now, state=FAILED, finished_at=now, lease_until=0.0, stage="done")
        return _bump(job, now, state=FAILED, finished_at=now, lease_until=0.0, stage="done", error_code="ABORTED",
                     error_class="ConflictError",
                     error_message=f"gave up after {job.attempts} attempt(s): its worker stopped renewing the lease "
                                   "each time; see the workers' logs, then submit it again")
    return _bump(job, now, state=RUNNING, worker=worker, device=device, attempts=job.attempts + 1,
                 lease_until=now + lease_s, started_at=job.started_at or now, stage="starting")


def held_by(job: Job, worker: str) -> Job:
    if job.state != RUNNING or job.worker != worker:
        raise LeaseLostError(f"job {job.id} is {job.state.lower()} and held by {job.worker or 'nobody'}, not {worker}")
    return job


def renew(job: Job, worker: str, lease_s: float, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, now, lease_until=now + lease_s)


def progress(job: Job, worker: str, stage: str, done: int, total: int, metrics: dict, lease_s: float,
             now: float) -> Job:
    held_by(job, worker)
    return _bump(job, now, stage=stage, done=done, total=total, metrics=dict(metrics), lease_until=now + lease_s)


def checkpointed(job: Job, worker: str, checkpoint: dict, lease_s: float, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, now, checkpoint=dict(checkpoint), lease_until=now + lease_s)


def succeed(job: Job, worker: str, result: dict, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, now, state=SUCCEEDED, result=dict(result), finished_at=now, lease_until=0.0, stage="done",
                 error_code="", error_class="", error_message="")


def fail(job: Job, worker: str, record: dict, *, retry: bool, now: float) -> Job:
    """A failed attempt (``record`` from :func:`deltahub.errors.error_record`): back to the queue while
    attempts remain and ``retry`` is set, else FAILED with the error as the direct call would raise it."""
    held_by(job, worker)
    error = dict(error_code=record["code"], error_class=record.get("class", ""), error_message=record["message"])
    if retry and job.attempts < job.max_attempts:
        return _bump(job, now, state=QUEUED, worker="", lease_until=0.0, stage="queued", **error)
    return _bump(job, now, state=FAILED, finished_at=now, lease_until=0.0, stage="done", **error)


def cancelled(job: Job, worker: str, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, now, state=CANCELLED, finished_at=now, lease_until=0.0, stage="done", error_code="CANCELLED",
                 error_class="CancelledError", error_message=f"job {job.id} was cancelled")


def request_cancel(job: Job, now: float) -> Job:
    """A queued job ends at once; a running one is flagged and its worker stops at the next step."""
    if job.finished:
        return job
    if job.state == QUEUED:
        return _bump(job, now, state=CANCELLED, cancel_requested=True, finished_at=now, stage="done",
                     error_code="CANCELLED", error_class="CancelledError", error_message=f"job {job.id} was cancelled")
    return _bump(job, now, cancel_requested=True)


def orphaned(job: Job, now: float) -> Job:
    """A running job whose worker died with the process that ran it: claimable again at once."""
    return _bump(job, now, lease_until=0.0, stage="queued") if job.state == RUNNING else job
