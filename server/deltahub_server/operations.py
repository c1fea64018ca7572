"""Operations service: follow, list and cancel long-running work."""

from __future__ import annotations

from deltahub.auth import Scope
from deltahub.errors import CLASS_FOR_CODE, DeltahubError
from deltahub.operations import OperationManager
from deltahub.v1 import operations_pb2 as opb
from deltahub.v1 import operations_pb2_grpc as ogrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.runtime import Blocking, StreamBudget, watch, write_within


def _error_of(op) -> DeltahubError:
    return CLASS_FOR_CODE.get(op.error_code, DeltahubError)(op.error_message)


class OperationsServicer(ogrpc.OperationsServicer):
    def __init__(self, operations: OperationManager, blocking: Blocking, streams: StreamBudget) -> None:
        self.operations = operations
        self.blocking = blocking
        self.streams = streams

    @rpc_method
    def GetOperation(self, request, context):
        return convert.operation_to_pb(self.operations.get(request.id))

    @rpc_method
    async def WatchOperation(self, request, context):
        op = None
        async for op in watch(self.streams, self.blocking, context, "operation",
                              lambda: self.operations.get(request.id)):
            await write_within(context, convert.operation_to_pb(op), self.streams.limits.stream_idle_s,
                               f"watch of operation {request.id}")
        # the final message says how it ended; a failure also ends the call with its status
        if op is not None and op.state in ("FAILED", "CANCELLED"):
            raise _error_of(op)

    @rpc_method
    def CancelOperation(self, request, context):
        return convert.operation_to_pb(self.operations.cancel(request.id))

    @rpc_method
    def ListOperations(self, request, context):
        principal = current_principal()
        ops = [o for o in self.operations.list(request.namespace or None) if principal.allows(o.namespace, Scope.READ)]
        return opb.ListOperationsResponse(operations=[convert.operation_to_pb(o) for o in ops])
