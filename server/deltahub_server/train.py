"""Train service: submit training jobs (followed through the Jobs service); list trainers."""

from __future__ import annotations

from deltahub.jobs import TRAIN
from deltahub.limits import TrainingLimits
from deltahub.store import HubStore
from deltahub.v1 import train_pb2_grpc as trgrpc
from deltahub_server import convert
from deltahub_server.errors import rpc_method
from deltahub_server.jobs import JobBoard
from deltahub_server.runtime import Blocking
from deltahub_trainers import TRAINERS
from deltahub_trainers.submit import build_spec

class TrainServicer(trgrpc.TrainServicer):
    def __init__(self, store: HubStore, board: JobBoard, blocking: Blocking,
                 limits: TrainingLimits | None = None) -> None:
        self.store = store
        self.limits = limits or TrainingLimits()
        self.board = board
        self.blocking = blocking

    @rpc_method(heavy=True)
    def SubmitJob(self, request, context):
        spec = build_spec(self.store, convert.training_request_from_pb(request), self.limits)
        job, created = self.board.submit(TRAIN, spec.out.split("/", 1)[0], spec.to_dict(),
                                         key=request.idempotency_key, max_attempts=request.max_attempts)
        return convert.training_submitted_to_pb(job, created)

    @rpc_method
    def ListTrainers(self, request, context):
        return convert.trainers_to_pb((name, TRAINERS.get(name)) for name in TRAINERS)
