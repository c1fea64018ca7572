"""Operations service: follow, list and cancel long-running work."""

from __future__ import annotations

from deltahub.errors import CLASS_FOR_CODE, DeltahubError
from deltahub.operations import OperationManager
from deltahub.v1 import operations_pb2 as opb
from deltahub.v1 import operations_pb2_grpc as ogrpc
from deltahub_server import convert
from deltahub_server.errors import rpc_method


def _error_of(op) -> DeltahubError:
    return CLASS_FOR_CODE.get(op.error_code, DeltahubError)(op.error_message)


class OperationsServicer(ogrpc.OperationsServicer):
    def __init__(self, operations: OperationManager) -> None:
        self.operations = operations

    @rpc_method
    def GetOperation(self, request, context):
        return convert.operation_to_pb(self.operations.get(request.id))

    @rpc_method
    def WatchOperation(self, request, context):
        op = None
        for op in self.operations.watch(request.id, alive=context.is_active):
            yield convert.operation_to_pb(op)
        # the final message says how it ended; a failure also ends the call with its status
        if op is not None and op.state in ("FAILED", "CANCELLED"):
            raise _error_of(op)

    @rpc_method
    def CancelOperation(self, request, context):
        return convert.operation_to_pb(self.operations.cancel(request.id))

    @rpc_method
    def ListOperations(self, request, context):
        ops = self.operations.list(request.namespace or None)
        return opb.ListOperationsResponse(operations=[convert.operation_to_pb(o) for o in ops])
