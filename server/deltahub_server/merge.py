"""Merge service: start merges as operations, list methods, evaluate."""

from __future__ import annotations

from deltahub.merge_engine import MergeEngine
from deltahub.merging import MERGE_METHODS
from deltahub.operations import OperationManager
from deltahub.v1 import merge_pb2 as mpb
from deltahub.v1 import merge_pb2_grpc as mgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.runtime import Blocking


def merge_result(result) -> dict:
    return {"artifact": result.revision.artifact, "digest": result.revision.digest, "cached": result.cached,
            "recipe_hash": result.recipe_hash, "metrics": result.metrics}


class MergeServicer(mgrpc.MergeServicer):
    def __init__(self, engine: MergeEngine, operations: OperationManager, blocking: Blocking) -> None:
        self.blocking = blocking
        self.engine = engine
        self.operations = operations

    @rpc_method(heavy=True)
    def StartMerge(self, request, context):
        req = convert.merge_request_from_pb(request, current_principal().name)
        # Everything checkable is checked here, so bad input fails this call
        # with its status instead of surfacing later in a watched operation.
        resolved = self.engine.resolve(req)
        namespace = req.out.split("/", 1)[0]

        def work(report, cancelled):
            return merge_result(self.engine.run(req, resolved, progress=report, cancelled=cancelled))

        return convert.operation_to_pb(self.operations.start("merge", namespace, work))

    @rpc_method
    def ListMethods(self, request, context):
        return mpb.ListMethodsResponse(methods=[convert.method_to_pb(MERGE_METHODS.get(n).spec) for n in MERGE_METHODS])

    @rpc_method(heavy=True)
    def Evaluate(self, request, context):
        target, data, result = self.engine.evaluate(request.target, request.data, device=request.device or "auto")
        return mpb.EvaluateResponse(
            target=target.spec, data=data.spec, metric=result.metric, score=result.score, samples=result.samples,
            loss=result.loss or 0.0, perplexity=result.perplexity or 0.0, accuracy=result.accuracy or 0.0,
        )
