"""Jobs service: follow, list and cancel long-running work of every kind; what workers report back.

``submit`` and ``finished`` are what the other servicers use: the first
queues a job (or answers it at once), the second waits for one without
holding a thread, for the calls that answer when their job ends (Evaluate,
CreateTaskVector, Assemble). A client that goes away cancels the job its
call was waiting for.
"""

from __future__ import annotations

import asyncio

from deltahub.auth import Scope, acting_as_hub
from deltahub.errors import InvalidInputError, PreconditionError
from deltahub.jobs import (
    ASSEMBLE, MERGE, SUCCEEDED, TASK_VECTOR, TRAIN, Job, JobQueue, model as jobs_model,
)
from deltahub.jobs.specs import MergeSpec, TaskVectorSpec
from deltahub.limits import JobLimits
from deltahub.merge_engine import MergeEngine
from deltahub.store import HubStore
from deltahub.v1 import jobs_pb2_grpc as jgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.runtime import Blocking, StreamBudget, watch, write_within

WAIT_POLL_S = 0.2


class JobBoard:
    """The queue as the servicers use it: submit with the caller's name and limits, wait for the end."""

    def __init__(self, queue: JobQueue, blocking: Blocking, limits: JobLimits | None = None) -> None:
        self.queue, self.blocking = queue, blocking
        self.limits = limits or JobLimits()

    def submit(self, kind: str, namespace: str, spec: dict, *, key: str = "", max_attempts: int = 0,
               result: dict | None = None) -> tuple[Job, bool]:
        if not 0 <= max_attempts <= self.limits.max_attempts:
            raise InvalidInputError(f"max_attempts must be between 1 and {self.limits.max_attempts} "
                                    "(--max-job-attempts; 0: the default)")
        if len(key) > 256:
            raise InvalidInputError("an idempotency key has at most 256 characters")
        return self.queue.submit(kind, namespace, spec, key=key, created_by=current_principal().name,
                                 max_attempts=max_attempts or jobs_model.DEFAULT_MAX_ATTEMPTS, result=result)

    async def finished(self, job_id: str) -> Job:
        """The job once it ends; raises its error (the direct call's) unless it succeeded."""
        try:
            while True:
                job = await self.blocking.run(self.queue.get, job_id)
                if job.finished:
                    break
                await asyncio.sleep(WAIT_POLL_S)
        except asyncio.CancelledError:  # the client went away: nobody waits for this job any more
            await asyncio.shield(self.blocking.run(self.queue.cancel, job_id))
            raise
        if job.state != SUCCEEDED:
            raise job.error()
        return job


class JobsServicer(jgrpc.JobsServicer):
    def __init__(self, store: HubStore, engine: MergeEngine, board: JobBoard, blocking: Blocking,
                 streams: StreamBudget) -> None:
        self.store, self.engine = store, engine
        self.queue = board.queue
        self.blocking = blocking
        self.streams = streams

    @rpc_method
    def GetJob(self, request, context):
        return convert.job_to_pb(self.queue.get(request.id))

    @rpc_method
    def ListJobs(self, request, context):
        namespace, kind, state, limit = convert.job_filter_from_pb(request)
        principal = current_principal()
        jobs = [j for j in self.queue.list(namespace, kind=kind, state=state, limit=limit)
                if principal.allows(j.namespace, Scope.READ)]
        return convert.jobs_to_pb(jobs)

    @rpc_method
    async def WatchJob(self, request, context):
        job = None
        async for job in watch(self.streams, self.blocking, context, "job", lambda: self.queue.get(request.id)):
            await write_within(context, convert.job_to_pb(job), self.streams.limits.stream_idle_s,
                               f"watch of job {request.id}")
        # the last message says how it ended; a failure also ends the call with the direct call's status
        if job is not None and job.finished and job.state != SUCCEEDED:
            raise job.error()

    @rpc_method
    def CancelJob(self, request, context):
        return convert.job_to_pb(self.queue.cancel(request.id))

    # -- for workers -----------------------------------------------------------------
    @rpc_method
    def PinCheckpoint(self, request, context):
        job = self.queue.get(request.job_id)
        jobs_model.held_by(job, request.worker)  # only the lease holder writes the checkpoint
        self.store.pin(request.job_id, convert.files_from_pb(request.files))
        return convert.checkpoint_pinned_to_pb()

    @rpc_method
    def ReleaseCheckpoint(self, request, context):
        job = self.queue.get(request.job_id)
        if not job.finished:
            if not request.worker:
                raise jobs_model.LeaseLostError(f"job {job.id} is {job.state.lower()}; its checkpoint is still needed")
            jobs_model.held_by(job, request.worker)
        self.store.unpin(request.job_id)
        return convert.checkpoint_released_to_pb()

    @rpc_method(heavy=True)
    def CommitJobResult(self, request, context):
        job = jobs_model.held_by(self.queue.get(request.job_id), request.worker)
        files = convert.files_from_pb(request.files)
        metrics = convert.params_from_json(request.metrics_json, "metrics_json")
        # what is committed comes from the job (authorised when it was asked), not from the worker
        with acting_as_hub():
            if job.kind in (MERGE, ASSEMBLE):
                spec = MergeSpec.from_dict(job.spec)
                if not files:
                    found = self.engine.cached(spec)
                    return convert.job_result_to_pb(found is not None, found.to_dict() if found else {})
                result = self.engine.commit(spec, files, metrics).to_dict()
            elif job.kind == TASK_VECTOR:
                if not files:
                    raise InvalidInputError("a task_vector result needs its file")
                rev, created = self.store.commit_task_vector(TaskVectorSpec.from_dict(job.spec), files, metrics)
                result = {"artifact": rev.artifact, "digest": rev.digest, "created": created,
                          "relative_error": metrics.get("relative_error", 0.0)}
            else:
                raise PreconditionError(f"{job.kind} jobs commit nothing through CommitJobResult"
                                        + (" (training pushes its adapter)" if job.kind == TRAIN else ""))
        return convert.job_result_to_pb(True, result)
