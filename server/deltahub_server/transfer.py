"""Transfer service: blobs in and out, in chunks of at most 1 MiB."""

from __future__ import annotations

from deltahub.artifacts import check_sha256
import grpc

from deltahub.errors import CancelledError, InvalidInputError
from deltahub.store import HubStore
from deltahub.v1 import transfer_pb2 as tpb
from deltahub.v1 import transfer_pb2_grpc as tgrpc
from deltahub_server import convert
from deltahub_server.errors import rpc_method

CHUNK_SIZE = 1 << 20


class TransferServicer(tgrpc.TransferServicer):
    def __init__(self, store: HubStore) -> None:
        self.store = store

    @rpc_method
    def PlanPush(self, request, context):
        missing = self.store.plan_push(
            request.artifact, convert.kind_from_pb(request.kind), convert.files_from_pb(request.files), request.base
        )
        return tpb.PlanPushResponse(
            missing=[tpb.UploadStatus(sha256=s, size=n, offset=o, complete=False) for s, n, o in missing],
            bytes_to_send=sum(n - o for _, n, o in missing),
        )

    @rpc_method
    def UploadBlob(self, request_iterator, context):
        first = _next_chunk(request_iterator, None)
        if first is None:
            raise InvalidInputError("upload stream carried no chunk")
        writer = self.store.open_upload(first.sha256, first.size, first.offset)
        try:
            chunk = first
            while chunk is not None:
                if len(chunk.data) > CHUNK_SIZE:
                    raise InvalidInputError(f"chunk of {len(chunk.data)} bytes exceeds {CHUNK_SIZE}")
                writer.write(chunk.data)
                chunk = _next_chunk(request_iterator, writer)
            writer.finish()
            return tpb.UploadBlobResponse(
                status=tpb.UploadStatus(
                    sha256=writer.sha256, size=writer.size, offset=writer.offset, complete=writer.complete
                )
            )
        finally:
            writer.close()

    @rpc_method
    def GetUploadStatus(self, request, context):
        check_sha256(request.sha256)
        offset, complete = self.store.upload_status(request.sha256)
        return tpb.UploadStatus(sha256=request.sha256, offset=offset, complete=complete, size=offset if complete else 0)

    @rpc_method
    def DownloadBlob(self, request, context):
        check_sha256(request.sha256)
        for data in self.store.blobs.read_chunks(request.sha256, offset=request.offset, chunk_size=CHUNK_SIZE):
            yield tpb.BlobChunk(data=data)


def _next_chunk(request_iterator, writer):
    """The next chunk, or None at the end; a client that went away is CANCELLED,
    and what arrived before is kept for it to resume."""
    try:
        return next(request_iterator, None)
    except grpc.RpcError:
        offset = 0
        if writer is not None:
            writer.finish()
            offset = writer.offset
        raise CancelledError(f"upload interrupted by the client at offset {offset}; resume from there") from None
