"""Merge service: merges and evaluations, queued as jobs that workers run; the methods the hub knows."""

from __future__ import annotations

from deltahub.jobs import EVALUATE, MERGE
from deltahub.merge_engine import MergeEngine
from deltahub.merging import MERGE_METHODS
from deltahub.v1 import merge_pb2_grpc as mgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.jobs import JobBoard
from deltahub_server.runtime import Blocking


class MergeServicer(mgrpc.MergeServicer):
    def __init__(self, engine: MergeEngine, board: JobBoard, blocking: Blocking) -> None:
        self.blocking = blocking
        self.engine = engine
        self.board = board

    @rpc_method(heavy=True)
    def StartMerge(self, request, context):
        req = convert.merge_request_from_pb(request, current_principal().name)
        # Everything checkable is checked here, so bad input fails this call
        # with its status instead of surfacing later in a watched job.
        spec = self.engine.spec(req, self.engine.resolve(req))
        cached = self.engine.cached(spec)  # a commit at most, no tensor: answered here, with no worker
        job, created = self.board.submit(MERGE, req.out.split("/", 1)[0], spec.to_dict(),
                                         key=request.idempotency_key,
                                         result=cached.to_dict() if cached is not None else None)
        return convert.merge_started_to_pb(job, created)

    @rpc_method
    def ListMethods(self, request, context):
        return convert.methods_to_pb(MERGE_METHODS.get(n).spec for n in MERGE_METHODS)

    @rpc_method
    async def Evaluate(self, request, context):
        target, data, device = convert.evaluation_request_from_pb(request)
        spec = await self.blocking.run(lambda: self.engine.evaluation_spec(target, data, device=device), heavy=True)
        job, _ = await self.blocking.run(self.board.submit, EVALUATE, spec.target.split("/", 1)[0], spec.to_dict())
        done = await self.board.finished(job.id)
        return convert.evaluation_to_pb(done.result, done.id)
