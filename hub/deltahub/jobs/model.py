"""Training jobs: what was asked (:class:`JobSpec`) and where it stands (:class:`Job`).

Every change of state is one of the pure functions below (job in, job out),
so the in-process queue and the Redis queue apply exactly the same rules and
differ only in where the job is kept and how it reaches a worker.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from deltahub.errors import ConflictError

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
FINAL = (SUCCEEDED, FAILED, CANCELLED)
DEFAULT_MAX_ATTEMPTS = 3


class LeaseLostError(ConflictError):
    """The worker no longer holds the job (its lease lapsed and another worker took it, or it ended)."""


@dataclass(frozen=True)
class JobSpec:
    trainer: str
    base: str                       # resolved: namespace/name@digest
    datasets: tuple[str, ...]       # resolved revision specs
    out: str                        # namespace/name of the adapter to commit
    config: dict[str, Any] = field(default_factory=dict)
    replay: tuple[str, ...] = ()    # resolved dataset specs mixed in at config.replay_fraction
    resume_from: str = ""           # resolved adapter spec to continue, or ""
    card: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""

    @property
    def namespace(self) -> str:
        return self.out.split("/", 1)[0]


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    state: str = QUEUED
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    worker: str = ""
    device: str = ""
    lease_until: float = 0.0
    delivery: str = ""   # the queue's handle of the current delivery (a Redis stream entry id)
    step: int = 0
    total: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)      # the last progress event
    checkpoint: dict[str, Any] = field(default_factory=dict)   # {"step", "files": [[path, sha256, size]]}
    error_code: str = ""
    error_message: str = ""
    result: dict[str, Any] = field(default_factory=dict)       # {"artifact", "digest"}
    cancel_requested: bool = False
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    version: int = 0

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["spec"]["datasets"] = list(self.spec.datasets)
        doc["spec"]["replay"] = list(self.spec.replay)
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Job":
        doc = dict(doc)
        spec = dict(doc.pop("spec"))
        spec["datasets"] = tuple(spec.get("datasets", ()))
        spec["replay"] = tuple(spec.get("replay", ()))
        return cls(spec=JobSpec(**spec), **doc)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Job":
        return cls.from_dict(json.loads(text))


# -- transitions (pure) ---------------------------------------------------------
def new_job(spec: JobSpec, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS, now: float | None = None) -> Job:
    return Job(id=f"{spec.namespace}/{uuid.uuid4().hex}", spec=spec, max_attempts=max_attempts,
               created_at=now or time.time(), version=1)


def _bump(job: Job, **changes) -> Job:
    return replace(job, version=job.version + 1, **changes)


def claimable(job: Job, now: float) -> bool:
    """Queued, or running under a lease that lapsed (its worker died)."""
    return job.state == QUEUED or (job.state == RUNNING and job.lease_until < now)


def claim(job: Job, worker: str, device: str, lease_s: float, now: float) -> Job:
    """The job as ``worker`` takes it; attempts spent end it FAILED instead."""
    if job.cancel_requested:
        return _bump(job, state=CANCELLED, finished_at=now, worker="", lease_until=0.0)
    if job.attempts >= job.max_attempts:
        reason = job.error_message or "its worker stopped renewing the lease"
        return _bump(job, state=FAILED, finished_at=now, error_code=job.error_code or "ABORTED",
                     error_message=f"gave up after {job.attempts} attempt(s); last error: {reason}",
                     lease_until=0.0)
    return _bump(job, state=RUNNING, worker=worker, device=device, attempts=job.attempts + 1,
                 lease_until=now + lease_s, started_at=job.started_at or now)


def held_by(job: Job, worker: str) -> Job:
    if job.state != RUNNING or job.worker != worker:
        raise LeaseLostError(f"job {job.id} is {job.state.lower()} and held by {job.worker or 'nobody'}, not {worker}")
    return job


def renew(job: Job, worker: str, lease_s: float, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, lease_until=now + lease_s)


def progress(job: Job, worker: str, step: int, total: int, metrics: dict, lease_s: float, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, step=step, total=total, metrics=dict(metrics), lease_until=now + lease_s)


def checkpointed(job: Job, worker: str, checkpoint: dict, lease_s: float, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, checkpoint=dict(checkpoint), lease_until=now + lease_s)


def succeed(job: Job, worker: str, result: dict, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, state=SUCCEEDED, result=dict(result), finished_at=now, lease_until=0.0,
                 error_code="", error_message="")


def fail(job: Job, worker: str, code: str, message: str, *, retry: bool, now: float) -> Job:
    """A failed attempt: back to the queue while attempts remain and ``retry`` is set, else FAILED."""
    held_by(job, worker)
    if retry and job.attempts < job.max_attempts:
        return _bump(job, state=QUEUED, worker="", lease_until=0.0, error_code=code, error_message=message)
    return _bump(job, state=FAILED, finished_at=now, lease_until=0.0, error_code=code,
                 error_message=message if job.attempts <= 1 else f"failed after {job.attempts} attempts: {message}")


def cancelled(job: Job, worker: str, now: float) -> Job:
    held_by(job, worker)
    return _bump(job, state=CANCELLED, finished_at=now, lease_until=0.0)


def request_cancel(job: Job, now: float) -> Job:
    """A queued job ends at once; a running one is flagged and its worker stops at the next step."""
    if job.finished:
        return job
    if job.state == QUEUED:
        return _bump(job, state=CANCELLED, cancel_requested=True, finished_at=now)
    return _bump(job, cancel_requested=True)
