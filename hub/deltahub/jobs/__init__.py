"""Training jobs: the model (pure transitions) and the queues that carry them."""

from deltahub.jobs.model import (
    CANCELLED, FAILED, FINAL, QUEUED, RUNNING, SUCCEEDED, Job, JobSpec, LeaseLostError,
)
from deltahub.jobs.queue import DEFAULT_LEASE_S, JobQueue, MemoryQueue


def open_queue(redis_url: str | None, *, lease_s: float = DEFAULT_LEASE_S) -> JobQueue:
    """Redis when a URL is given, else the in-process queue."""
    if redis_url:
        from deltahub.jobs.redis_queue import RedisQueue

        return RedisQueue(redis_url, lease_s=lease_s)
    return MemoryQueue(lease_s=lease_s)


__all__ = [
    "CANCELLED", "FAILED", "FINAL", "QUEUED", "RUNNING", "SUCCEEDED", "DEFAULT_LEASE_S", "Job", "JobQueue",
    "JobSpec", "LeaseLostError", "MemoryQueue", "open_queue",
]
