"""No client can stall others: stalled and slow streams, per-principal stream budgets, concurrent pushes.

Every test talks to a real server on 127.0.0.1:0 through raw stubs (no SDK
politeness), with bounded counts and timeouts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deltahub.auth import TokenTable
from deltahub.limits import StreamLimits
from deltahub.v1 import registry_pb2, registry_pb2_grpc, jobs_pb2, jobs_pb2_grpc, transfer_pb2, transfer_pb2_grpc
from tests.helpers import local_hub


async def _stalling(sha: str, size: int, data: bytes, release: asyncio.Event):
    """An upload's chunks: the first one, then silence until ``release``."""
    yield transfer_pb2.UploadChunk(sha256=sha, size=size, offset=0, data=data)
    await release.wait()


async def _stalled_upload(channel, sha: str, size: int, release: asyncio.Event, metadata=()):
    """Sends one chunk, then nothing until ``release``; returns the status code it ended with."""
    stub = transfer_pb2_grpc.TransferStub(channel)
    try:
        await stub.UploadBlob(_stalling(sha, size, b"x", release), metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()


async def _latencies(channel, n: int) -> tuple[list[float], list[float]]:
    health = health_pb2_grpc.HealthStub(channel)
    registry = registry_pb2_grpc.RegistryStub(channel)
    checks, reads = [], []
    for _ in range(n):
        t = time.perf_counter()
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        checks.append(time.perf_counter() - t)
        t = time.perf_counter()
        await registry.ListArtifacts(registry_pb2.ListArtifactsRequest(), timeout=5)
        reads.append(time.perf_counter() - t)
    return checks, reads


def test_hundreds_of_stalled_streams_leave_health_and_reads_answering(tmp_path):
    limits = StreamLimits(max_streams_per_principal=1000, stream_idle_s=60)
    with local_hub(tmp_path / "d", streams=limits) as (_, _, address):

        async def scenario():
            release = asyncio.Event()
            async with grpc.aio.insecure_channel(address) as ch:
                uploads = [asyncio.create_task(_stalled_upload(ch, hashlib.sha256(str(i).encode()).hexdigest(),
                                                               1 << 20, release)) for i in range(200)]
                train = jobs_pb2_grpc.JobsStub(ch)
                watches = [train.WatchJob(jobs_pb2.WatchJobRequest(id=f"ns/job-{i}")) for i in range(50)]
                await asyncio.sleep(2.0)  # every stream open and parked
                checks, reads = await _latencies(ch, 20)
                release.set()
                for w in watches:
                    w.cancel()
                await asyncio.gather(*uploads)
                return checks, reads

        checks, reads = asyncio.run(scenario())
    assert max(checks) < 1.0 and max(reads) < 1.0, (checks, reads)
    assert statistics.median(checks) < 0.2


def test_stream_budget_per_principal_names_the_limit(tmp_path):
    table = TokenTable.parse("tokens: [{token: a, scopes: {'*': write}}, {token: b, scopes: {'*': write}}]")
    limits = StreamLimits(max_streams_per_principal=4, stream_idle_s=30)
    with local_hub(tmp_path / "d", tokens=table, streams=limits) as (_, _, address):

        async def scenario():
            release = asyncio.Event()
            async with grpc.aio.insecure_channel(address) as ch:
                a = (("authorization", "Bearer a"),)
                held = [asyncio.create_task(_stalled_upload(ch, f"{i:064x}", 10, release, a)) for i in range(4)]
                await asyncio.sleep(1.0)
                over = await _stalled_upload(ch, f"{99:064x}", 10, release, a)
                # another token is not held hostage by a's streams
                other = asyncio.create_task(_stalled_upload(ch, f"{98:064x}", 10, release, (("authorization", "Bearer b"),)))
                await asyncio.sleep(1.0)
                assert not other.done()
                release.set()
                await asyncio.gather(*held, other)
                return over

        assert asyncio.run(scenario()) == grpc.StatusCode.RESOURCE_EXHAUSTED

        with grpc.insecure_channel(address) as ch:
            stub = jobs_pb2_grpc.JobsStub(ch)
            codes = []
            for i in range(5):  # one after another, more than the budget of 4 in all
                call = stub.WatchJob(jobs_pb2.WatchJobRequest(id=f"ns/j{i}"), metadata=(("authorization", "Bearer a"),))
                try:
                    next(call)
                except grpc.RpcError as err:
                    codes.append((err.code(), err.details()))
                call.cancel()
        # the unknown jobs answer NOT_FOUND, each releasing its slot: the budget only counts streams open at once
        assert len(codes) == 5 and all(code == grpc.StatusCode.NOT_FOUND for code, _ in codes)


def test_budget_refusal_message(tmp_path):
    limits = StreamLimits(max_streams_per_principal=1, stream_idle_s=30)
    with local_hub(tmp_path / "d", streams=limits) as (_, _, address):

        async def scenario():
            release = asyncio.Event()
            async with grpc.aio.insecure_channel(address) as ch:
                first = asyncio.create_task(_stalled_upload(ch, f"{1:064x}", 10, release))
                await asyncio.sleep(0.5)
                stub = transfer_pb2_grpc.TransferStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=f"{2:064x}", size=1, data=b"y")]))
                release.set()
                await first
                return info.value

        err = asyncio.run(scenario())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-streams-per-principal" in err.details() and "limit is 1" in err.details()


def test_idle_upload_is_ended_and_keeps_what_arrived(tmp_path):
    limits = StreamLimits(stream_idle_s=1.0)
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    with local_hub(tmp_path / "d", streams=limits) as (hub, store, address):

        async def scenario():
            release = asyncio.Event()
            async with grpc.aio.insecure_channel(address) as ch:
                stub = transfer_pb2_grpc.TransferStub(ch)
                t = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.UploadBlob(_stalling(sha, len(data), data[:1000], release))
                release.set()
                return info.value, time.monotonic() - t

        err, took = asyncio.run(scenario())
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "--stream-idle-timeout" in err.details()
        assert took < 5
        assert store.upload_status(sha) == (1000, False)  # resumable from where it stopped


def test_slow_uploader_is_ended_and_cannot_hold_the_blob(tmp_path):
    limits = StreamLimits(stream_idle_s=3.0, min_upload_bytes_per_s=100_000, upload_grace_s=0.5)
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    with local_hub(tmp_path / "d", streams=limits) as (hub, store, address):

        def trickle():
            yield transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=0, data=data[:1])
            for i in range(1, 100):
                time.sleep(0.1)
                yield transfer_pb2.UploadChunk(data=data[i:i + 1])

        with grpc.insecure_channel(address) as ch:
            stub = transfer_pb2_grpc.TransferStub(ch)
            t = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.UploadBlob(trickle(), timeout=30)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "--min-upload-rate" in info.value.details()
            assert time.monotonic() - t < 5
            # the next uploader resumes from what the slow one left and completes
            offset = store.upload_status(sha)[0]
            resp = stub.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=offset,
                                                                  data=data[offset:])]), timeout=30)
            assert resp.status.complete


def test_a_stalled_uploader_holds_another_of_the_same_blob_for_a_bounded_time(tmp_path):
    limits = StreamLimits(stream_idle_s=1.5)
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    with local_hub(tmp_path / "d", streams=limits) as (_, store, address):

        async def scenario():
            release = asyncio.Event()
            async with grpc.aio.insecure_channel(address) as ch:
                stub = transfer_pb2_grpc.TransferStub(ch)
                first = asyncio.ensure_future(stub.UploadBlob(_stalling(sha, len(data), data[:10], release)))
                await asyncio.sleep(0.3)
                t = time.monotonic()
                # starts at 0 though the hub holds 10 bytes by then: the overlap is dropped
                resp = await stub.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=0,
                                                                            data=data)]), timeout=20)
                took = time.monotonic() - t
                release.set()
                with pytest.raises(grpc.aio.AioRpcError):
                    await first
                return resp, took

        resp, took = asyncio.run(scenario())
        assert resp.status.complete and store.blobs.has(sha)
        assert took < 5


def test_concurrent_identical_pushes_all_succeed(server, tiny_adapter, pushed_base):
    _, _, address = server
    from deltahub_client import Hub

    def push(i):
        with Hub(address, progress=False) as hub:
            return hub.push(tiny_adapter, "fin/same", kind="adapter", base="base/tiny-llama")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(push, range(8)))
    assert len({r.revision.digest for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_concurrent_identical_raw_uploads_all_succeed(tmp_path):
    data = os.urandom(3 << 20)
    sha = hashlib.sha256(data).hexdigest()
    with local_hub(tmp_path / "d") as (_, store, address):

        def upload(_):
            with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 4 << 20)]) as ch:
                stub = transfer_pb2_grpc.TransferStub(ch)
                chunks = [transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=0, data=data[:1 << 20])]
                chunks += [transfer_pb2.UploadChunk(data=data[i:i + (1 << 20)]) for i in range(1 << 20, len(data), 1 << 20)]
                return stub.UploadBlob(iter(chunks), timeout=60).status.complete

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(upload, range(8)))
        assert store.blobs.has(sha)
        assert list((tmp_path / "d" / "uploads").glob("*.part")) == []
