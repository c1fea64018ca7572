"""Transfer service: blobs in and out, in chunks of at most 1 MiB.

Streams run on the event loop and wait on their client without a thread;
disk work goes to the bounded pool one chunk at a time. Each stream counts
against its principal's budget and ends when idle (and, uploading, when
slower than the floor), keeping what arrived for a resume.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import aclosing

from deltahub.artifacts import check_sha256
from deltahub.errors import ConflictError, InvalidInputError
from deltahub.store import HubStore
from deltahub.v1 import transfer_pb2_grpc as tgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.runtime import Blocking, RateFloor, RequestStream, StreamBudget, write_within

CHUNK_SIZE = 1 << 20
LOCK_POLL_S = 0.05


class TransferServicer(tgrpc.TransferServicer):
    def __init__(self, store: HubStore, blocking: Blocking, streams: StreamBudget) -> None:
        self.store = store
        self.blocking = blocking
        self.streams = streams

    @rpc_method
    def PlanPush(self, request, context):
        files = convert.files_from_pb(request.files)
        missing = self.store.plan_push(request.artifact, convert.kind_from_pb(request.kind), files, request.base,
                                       allow_code=request.allow_code)
        held = self.store.check_held(convert.held_from_pb(request))  # a bad list is refused even when nothing is missing
        bases = self.store.delta_bases(sorted(held)) if missing else []
        return convert.plan_push_to_pb(missing, self.store.open_session(current_principal().name, files), bases)

    @rpc_method
    def PlanPull(self, request, context):
        return convert.pull_plan_to_pb(self.store.pull_plan(request.revision, convert.held_from_pb(request)))

    @rpc_method
    async def UploadBlob(self, request_iterator, context):
        limits = self.streams.limits
        principal = current_principal().name
        async with self.streams.hold(principal, "upload"):
            stream = RequestStream(request_iterator, context, limits.stream_idle_s)
            first = await stream.next("upload")
            if first is None:
                raise InvalidInputError("upload stream carried no chunk")
            check_sha256(first.sha256)
            writer = await self._open(first, principal)
            if writer is None:  # another stream of the same content finished it meanwhile
                return convert.uploaded_to_pb(first.sha256, first.size, first.size, True)
            what = f"upload of blob {first.sha256}"
            floor = RateFloor(limits.min_upload_bytes_per_s, limits.upload_grace_s)
            try:
                chunk = first
                while chunk is not None:
                    if len(chunk.data) > CHUNK_SIZE:
                        raise InvalidInputError(f"chunk of {len(chunk.data)} bytes exceeds {CHUNK_SIZE}")
                    await self.blocking.settled(writer.write, chunk.data)
                    floor.add(len(chunk.data), what)
                    chunk = await stream.next(what)
                await self.blocking.run(writer.finish)
                return convert.uploaded_to_pb(writer.sha256, writer.size, writer.offset, writer.complete)
            except BaseException:
                # The client went away, stalled or crawled: keep what arrived for its resume.
                if writer.is_open and writer.offset < writer.size:
                    writer.finish()
                raise
            finally:
                writer.close()

    async def _open(self, first, principal: str):
        """The writer for this stream, waiting (bounded) while another stream uploads the same blob."""
        wait_s = self.streams.limits.stream_idle_s
        deadline = time.monotonic() + wait_s
        while True:
            if self.store.blobs.has(first.sha256):
                return None
            try:
                return await self.blocking.settled(functools.partial(
                    self.store.open_upload, first.sha256, first.size, first.offset, principal=principal,
                    session=first.session), orphan=lambda writer: writer.close())
            except ConflictError:
                if time.monotonic() > deadline:
                    offset = self.store.blobs.upload_offset(first.sha256)
                    raise ConflictError(
                        f"blob {first.sha256} is being uploaded by another stream (at byte {offset} of "
                        f"{first.size}) and did not finish within {wait_s:g} s; ask GetUploadStatus and retry"
                    ) from None
                await asyncio.sleep(LOCK_POLL_S)

    @rpc_method
    def GetUploadStatus(self, request, context):
        check_sha256(request.sha256)
        offset, complete = self.store.upload_status(request.sha256)
        return convert.upload_status_to_pb(request.sha256, offset if complete else 0, offset, complete)

    @rpc_method
    async def DownloadBlob(self, request, context):
        check_sha256(request.sha256)
        offset, length = convert.blob_range_from_pb(request)
        async with self.streams.hold(current_principal().name, "download"):
            # opened on the pool: a blob stored as a delta is rebuilt there, off the event loop
            chunks = await self.blocking.run(functools.partial(
                self.store.blobs.read_chunks, request.sha256, offset=offset, length=length,
                chunk_size=CHUNK_SIZE))
            async with aclosing(self.blocking.drain(chunks)) as stream:
                async for data in stream:
                    await write_within(context, convert.blob_chunk_to_pb(data), self.streams.limits.stream_idle_s,
                                       f"download of blob {request.sha256}")

