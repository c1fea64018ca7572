"""Train service: submit, follow and cancel training jobs; pin workers' checkpoints."""

from __future__ import annotations

import json

from deltahub.auth import Scope
from deltahub.errors import InvalidInputError
from deltahub.jobs import JobQueue, model as jobs_model
from deltahub.limits import TrainingLimits
from deltahub.store import HubStore
from deltahub.v1 import train_pb2 as trpb
from deltahub.v1 import train_pb2_grpc as trgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.runtime import Blocking, StreamBudget, watch, write_within
from deltahub_trainers import TRAINERS
from deltahub_trainers.submit import build_spec

MAX_ATTEMPTS_LIMIT = 20


class TrainServicer(trgrpc.TrainServicer):
    def __init__(self, store: HubStore, queue: JobQueue, blocking: Blocking, streams: StreamBudget,
                 limits: TrainingLimits | None = None) -> None:
        self.store = store
        self.limits = limits or TrainingLimits()
        self.queue = queue
        self.blocking = blocking
        self.streams = streams

    @rpc_method(heavy=True)
    def SubmitJob(self, request, context):
        if not 0 <= request.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise InvalidInputError(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT} (0: the default)")
        spec = build_spec(
            self.store, trainer=request.trainer, base=request.base, datasets=list(request.datasets),
            out=request.out, config=convert.params_from_json(request.config_json, "config_json"), replay=list(request.replay),
            resume_from=request.resume_from, card=convert.card_from_pb(request.card), labels=dict(request.labels),
            idempotency_key=request.idempotency_key, limits=self.limits,
        )
        job, created = self.queue.submit(spec, max_attempts=request.max_attempts or jobs_model.DEFAULT_MAX_ATTEMPTS)
        return trpb.SubmitJobResponse(job=convert.job_to_pb(job), created=created)

    @rpc_method
    def GetJob(self, request, context):
        return convert.job_to_pb(self.queue.get(request.id))

    @rpc_method
    def ListJobs(self, request, context):
        if request.limit < 0:
            raise InvalidInputError("limit must be >= 0")
        principal = current_principal()
        jobs = [j for j in self.queue.list(request.namespace or None, limit=request.limit or 100)
                if principal.allows(j.namespace, Scope.READ)]
        return trpb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in jobs])

    @rpc_method
    async def WatchJob(self, request, context):
        async for job in watch(self.streams, self.blocking, context, "job", lambda: self.queue.get(request.id)):
            await write_within(context, convert.job_to_pb(job), self.streams.limits.stream_idle_s,
                               f"watch of job {request.id}")

    @rpc_method
    def CancelJob(self, request, context):
        return convert.job_to_pb(self.queue.cancel(request.id))

    @rpc_method
    def ListTrainers(self, request, context):
        out = []
        for name in TRAINERS:
            cls = TRAINERS.get(name)
            defaults = cls.config_cls().to_dict()
            out.append(trpb.TrainerInfo(name=name, title=cls.title, paper=cls.paper, rank_adaptive=cls.rank_adaptive,
                                        defaults_json=json.dumps(defaults, sort_keys=True),
                                        help_json=json.dumps(cls.config_cls.help(), sort_keys=True)))
        return trpb.ListTrainersResponse(trainers=out)

    @rpc_method
    def PinCheckpoint(self, request, context):
        job = self.queue.get(request.job_id)
        jobs_model.held_by(job, request.worker)  # only the lease holder writes the checkpoint
        self.store.pin(request.job_id, convert.files_from_pb(request.files))
        return trpb.PinCheckpointResponse()

    @rpc_method
    def ReleaseCheckpoint(self, request, context):
        job = self.queue.get(request.job_id)
        if not job.finished:
            if not request.worker:
                raise jobs_model.LeaseLostError(f"job {job.id} is {job.state.lower()}; its checkpoint is still needed")
            jobs_model.held_by(job, request.worker)
        self.store.unpin(request.job_id)
        return trpb.ReleaseCheckpointResponse()
