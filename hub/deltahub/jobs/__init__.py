"""Long-running work: the job model (pure transitions) and the queues that carry jobs to workers."""

from deltahub.jobs.model import (
    ASSEMBLE, CANCELLED, EVALUATE, FAILED, FINAL, KINDS, MERGE, QUEUED, RUNNING, STATES, SUCCEEDED, TASK_VECTOR,
    TRAIN, Job, LeaseLostError,
)
from deltahub.jobs.specs import EvaluateSpec, MergeSpec, TaskVectorSpec, TrainSpec
from deltahub.jobs.queue import DEFAULT_LEASE_S, JobQueue


def open_queue(redis_url: str | None, *, catalog=None, lease_s: float = DEFAULT_LEASE_S) -> JobQueue:
    """Redis when a URL is given, else the catalog's own tables (the embedded default)."""
    if redis_url:
        from deltahub.jobs.redis_queue import RedisQueue

        return RedisQueue(redis_url, lease_s=lease_s)
    if catalog is None:
        raise ValueError("without Redis, jobs are kept in the catalog: give the hub's catalog")
    from deltahub.jobs.catalog_queue import CatalogQueue

    return CatalogQueue(catalog, lease_s=lease_s)


__all__ = [
    "ASSEMBLE", "CANCELLED", "EVALUATE", "FAILED", "FINAL", "KINDS", "MERGE", "QUEUED", "RUNNING", "STATES",
    "SUCCEEDED", "TASK_VECTOR", "TRAIN", "DEFAULT_LEASE_S", "Job", "JobQueue", "LeaseLostError", "TrainSpec", "MergeSpec", "EvaluateSpec", "TaskVectorSpec",
    "open_queue",
]
