"""Several hub servers over one PostgreSQL catalog and one S3 store behave as one hub."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import boto3
import grpc
import pytest

from deltahub.errors import StaleRefError
from deltahub.storage.s3 import DEFAULT_PART_BYTES
from deltahub.v1 import common_pb2, transfer_pb2, transfer_pb2_grpc
from tests.helpers import ServeProcess, local_hub, make_adapter, make_dataset, make_tiny_llama

pytestmark = pytest.mark.slow


@pytest.fixture()
def replicas(tmp_path, pg_url, s3_url):
    """Two servers in this process, each with its own folder, sharing the catalog and the store."""
    with local_hub(tmp_path / "a", catalog=pg_url, blob_store=s3_url) as a, \
            local_hub(tmp_path / "b", catalog=pg_url, blob_store=s3_url) as b:
        yield a, b


def _keys(s3_url: str, under: str) -> list[str]:
    bucket, prefix = s3_url[5:].split("/", 1)
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{under}")
    return [o["Key"] for o in listing.get("Contents", [])]


def _uploads(s3_url: str) -> list[str]:
    bucket, prefix = s3_url[5:].split("/", 1)
    found = boto3.client("s3").list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/uploads/")
    return [u["Key"] for u in found.get("Uploads", [])]


def test_a_push_through_one_replica_is_pulled_through_another(replicas, tmp_path, tiny_base, s3_url):
    (hub_a, store_a, _), (hub_b, store_b, _) = replicas
    pushed = hub_a.push(tiny_base, "base/tiny", kind="model").revision
    # B holds no local copy: it reads the catalog A wrote and streams the bytes from S3
    assert not list(store_b.blobs.inner.cache.iter_blobs())
    assert hub_b.show("base/tiny").digest == pushed.digest
    dest = hub_b.pull("base/tiny", tmp_path / "pulled")
    for f in pushed.files:
        assert (dest / f.path).read_bytes() == (tiny_base / f.path).read_bytes()
    assert len(_keys(s3_url, "blobs/")) == len({f.sha256 for f in pushed.files})
    assert not _keys(s3_url, "uploads/") and not _uploads(s3_url)  # staged uploads were named and cleared
    # pushed again through B: nothing to send
    assert hub_b.push(tiny_base, "base/tiny", kind="model").bytes_sent == 0


def test_ref_compare_and_swap_has_one_winner_across_replicas(replicas, tmp_path):
    (hub_a, _, _), (hub_b, _, _) = replicas
    digests = []
    for i in range(9):
        (tmp_path / f"d{i}").mkdir()
        folder = make_dataset(tmp_path / f"d{i}", [f"text {i}"])
        digests.append(hub_a.push(folder, "d/x", kind="dataset", ref=f"r{i}").revision.digest)
    hub_a.tag("d/x", "main", digests[0])
    outcomes: list = [None] * 8
    go = threading.Barrier(8)

    def swing(i):
        hub = hub_a if i % 2 else hub_b
        go.wait()
        try:
            hub.tag("d/x", "main", digests[i + 1], expected_revision=digests[0])
            outcomes[i] = "won"
        except StaleRefError:
            outcomes[i] = "stale"

    threads = [threading.Thread(target=swing, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1 and outcomes.count("stale") == 7
    winner = outcomes.index("won")
    assert hub_a.show("d/x@main").digest == hub_b.show("d/x@main").digest == digests[winner + 1]


def test_one_recipe_is_built_once_across_replicas(replicas, tmp_path):
    (hub_a, _, _), (hub_b, _, _) = replicas
    base = make_tiny_llama(tmp_path / "base")
    hub_a.push(base, "base/tiny", kind="model")
    for i, seed in enumerate((1, 2)):
        hub_b.push(make_tiny_llama(tmp_path / f"ft{i}", perturb=0.01, perturb_seed=seed), f"ft/ft{i}", kind="model")
    results = []

    def go(hub):
        results.append(hub.merge("ties", ["ft/ft0", "ft/ft1"], base="base/tiny", out="m/ties",
                                 params={"density": 0.5}))

    threads = [threading.Thread(target=go, args=(hub,)) for hub in (hub_a, hub_b, hub_a, hub_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.cached for r in results) == [False, True, True, True]
    assert len({r.revision.digest for r in results}) == 1


def test_the_router_of_one_replica_follows_pushes_through_another(replicas, tmp_path, tiny_base):
    (hub_a, _, _), (hub_b, _, _) = replicas
    hub_a.push(tiny_base, "base/tiny-llama", kind="model")
    adapter = make_adapter(tiny_base, tmp_path / "ad", r=4, seed=3)
    hub_b.route("warm up the index", k=1)
    hub_a.push(adapter, "fin/lora", kind="adapter", base="base/tiny-llama",
               card={"description": "finance: bonds, equities, interest rates and central banks",
                     "samples": ["the bond market rallied as rates fell"]})
    deadline = time.time() + 30
    while True:
        answer = hub_b.route("bond yields and interest rates", k=1, min_score=0.0)
        if answer.candidates == 1 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert answer.candidates == 1 and answer.routes[0].adapters[0].artifact == "fin/lora"


def _raw_upload(address: str, data: bytes, sha: str, *, offset: int = 0, stop_after: int | None = None,
                session: str = "", silent_s: float = 0.5):
    """An UploadBlob stream from ``offset``; ``stop_after`` bytes, ``silent_s`` of silence, then the client
    goes away."""
    channel = grpc.insecure_channel(address)
    stub = transfer_pb2_grpc.TransferStub(channel)
    end = len(data) if stop_after is None else offset + stop_after
    step = 1 << 20

    def chunks():
        for at in range(offset, end, step):
            if at == offset:
                yield transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=offset,
                                               data=data[at:min(at + step, end)], session=session)
            else:
                yield transfer_pb2.UploadChunk(data=data[at:min(at + step, end)])
        if stop_after is not None:
            time.sleep(silent_s)  # what was sent arrives before the client goes away
            raise ConnectionError("client went away")

    try:
        return stub.UploadBlob(chunks()).status
    except (grpc.RpcError, ConnectionError) as err:
        if stop_after is None:
            raise
        return err
    finally:
        channel.close()


def _status(address: str, sha: str):
    with grpc.insecure_channel(address) as channel:
        return transfer_pb2_grpc.TransferStub(channel).GetUploadStatus(transfer_pb2.GetUploadStatusRequest(sha256=sha))


def test_an_upload_broken_on_one_replica_resumes_on_another(replicas, s3_url):
    (hub_a, store_a, addr_a), (hub_b, store_b, addr_b) = replicas
    data = os.urandom(2 * DEFAULT_PART_BYTES + (3 << 20))
    sha = hashlib.sha256(data).hexdigest()
    _raw_upload(addr_a, data, sha, stop_after=DEFAULT_PART_BYTES + (4 << 20))
    status = _status(addr_b, sha)
    # S3 holds whole parts: the resume starts after the last one, on any replica
    assert status.offset == DEFAULT_PART_BYTES and not status.complete
    assert not store_b.blobs.has(sha) and not _keys(s3_url, "blobs/")
    done = _raw_upload(addr_b, data, sha, offset=status.offset)
    assert done.complete and done.offset == len(data)
    assert b"".join(store_a.blobs.read_chunks(sha)) == data
    assert not _uploads(s3_url) and not _keys(s3_url, "uploads/")

    # a resume with other bytes than the sha256 names: refused, and nothing is named by it
    bad = os.urandom(DEFAULT_PART_BYTES + (2 << 20))
    bad_sha = hashlib.sha256(bad).hexdigest()
    _raw_upload(addr_a, bad, bad_sha, stop_after=DEFAULT_PART_BYTES + (1 << 20))
    forged = bad[:DEFAULT_PART_BYTES] + os.urandom(len(bad) - DEFAULT_PART_BYTES)
    with pytest.raises(grpc.RpcError) as err:
        _raw_upload(addr_b, forged, bad_sha, offset=DEFAULT_PART_BYTES)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hashes to" in err.value.details()
    assert not store_a.blobs.has(bad_sha) and not _uploads(s3_url) and not _keys(s3_url, "uploads/")


def test_gc_on_one_replica_keeps_what_another_is_pushing(replicas, tmp_path, s3_url):
    (hub_a, store_a, addr_a), (hub_b, store_b, _) = replicas
    (tmp_path / "ds").mkdir()
    folder = make_dataset(tmp_path / "ds", ["in flight"])
    data = (folder / "train.jsonl").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with grpc.insecure_channel(addr_a) as channel:
        plan = transfer_pb2_grpc.TransferStub(channel).PlanPush(transfer_pb2.PlanPushRequest(
            artifact="d/flight", kind=4, files=[common_pb2.FileEntry(path="train.jsonl", sha256=sha, size=len(data))]))
    assert _raw_upload(addr_a, data, sha, session=plan.session).complete
    store_b.config.gc_grace_s = 0  # no grace: only the push session's lease keeps the blob
    store_b.collect_garbage()
    assert store_a.blobs.has(sha)
    pushed = hub_a.push(folder, "d/flight", kind="dataset")
    assert pushed.bytes_sent == 0 and hub_b.show("d/flight").files[0].sha256 == sha
    # an orphan (uploaded, never committed, its lease expired) goes; the committed blob stays
    orphan = os.urandom(1000)
    orphan_sha = hashlib.sha256(orphan).hexdigest()
    assert _raw_upload(addr_a, orphan, orphan_sha).complete
    store_b.expire_uploads(0)
    removed, _, _ = store_b.collect_garbage()
    assert removed == 1 and not store_a.blobs.has(orphan_sha) and store_a.blobs.has(sha)


def test_kill_9_of_a_replica_mid_push_leaves_nothing_a_gc_misses(tmp_path, pg_url, s3_url):
    shared = ("--catalog", pg_url, "--blob-store", s3_url)
    doomed = ServeProcess(tmp_path / "a", *shared)
    survivor = ServeProcess(tmp_path / "b", *shared)
    try:
        from deltahub_client import Hub

        data = os.urandom(3 * DEFAULT_PART_BYTES)
        sha = hashlib.sha256(data).hexdigest()
        hold = threading.Event()

        def two_parts_then_wait():  # a push stalled mid-blob, two parts in S3, when its replica dies
            for at in range(0, 2 * DEFAULT_PART_BYTES + (1 << 20), 1 << 20):
                first = {"sha256": sha, "size": len(data), "offset": 0} if at == 0 else {}
                yield transfer_pb2.UploadChunk(data=data[at:at + (1 << 20)], **first)
            hold.wait(60)

        channel = grpc.insecure_channel(doomed.address)
        pushing = threading.Thread(target=lambda: _quietly(
            lambda: transfer_pb2_grpc.TransferStub(channel).UploadBlob(two_parts_then_wait())))
        pushing.start()
        deadline = time.time() + 60
        while _status(survivor.address, sha).offset < 2 * DEFAULT_PART_BYTES:
            assert time.time() < deadline, "".join(doomed.log)
            time.sleep(0.1)
        doomed.kill()
        hold.set()
        pushing.join(30)
        channel.close()
        with Hub(survivor.address, progress=False) as other:
            assert other.list_artifacts() == []  # no partial revision
            # the survivor resumes it where S3 holds it, or the next sweep aborts it
            assert _status(survivor.address, sha).offset == 2 * DEFAULT_PART_BYTES
            time.sleep(1.1)
            report = other.collect_garbage(partial_upload_max_age_s=1)
        assert report["partial_uploads_removed"] >= 1
        assert not _uploads(s3_url) and not _keys(s3_url, "uploads/") and not _keys(s3_url, "blobs/")
        assert _status(survivor.address, sha).offset == 0
    finally:
        for proc in (doomed, survivor):
            if proc.proc.poll() is None:
                proc.stop()


def _quietly(call):
    try:
        call()
    except Exception:  # noqa: BLE001 - the server it talks to is killed under it
        pass


def test_kill_9_at_any_point_of_a_push_storm_leaves_whole_revisions_and_collectable_orphans(tmp_path, pg_url, s3_url):
    from deltahub.store import HubStore, StoreConfig

    doomed = ServeProcess(tmp_path / "a", "--catalog", pg_url, "--blob-store", s3_url)
    try:
        from deltahub_client import Hub

        hub = Hub(doomed.address, progress=False)
        pushed = []

        def storm():
            for i in range(1000):
                folder = tmp_path / f"d{i}"
                folder.mkdir()
                (folder / "train.jsonl").write_bytes(b'{"text": "%d"}\n' % i * (1 + (i % 3) * 300_000))
                hub.push(folder, f"d/k{i}", kind="dataset")
                pushed.append(i)

        pushing = threading.Thread(target=lambda: _quietly(storm))
        pushing.start()
        time.sleep(4.0)  # commits, uploads and multipart parts in every phase by now
        doomed.kill()
        pushing.join(30)
        hub.close()
    finally:
        if doomed.proc.poll() is None:
            doomed.stop()
    assert pushed, "".join(doomed.log)
    store = HubStore(StoreConfig(tmp_path / "check", catalog=pg_url, blob_store=s3_url, gc_grace_s=0))
    try:
        revisions = [r for a in store.list_artifacts() for r in store.catalog.list_revisions(a.name)]
        assert len(revisions) >= len(pushed)  # every acknowledged push is there (one more may have committed)
        for rev in revisions:  # whole: every file's blob is in the store, at its size
            assert all(store.blobs.size(f.sha256) == f.size for f in rev.files)
        store.expire_uploads(0)
        store.collect_garbage(partial_upload_max_age_s=0)
        used = {f.sha256 for rev in revisions for f in rev.files}
        assert {sha for sha, _, _ in store.blobs.iter_blobs()} == used  # no orphan survives a gc
        assert not _uploads(s3_url) and not _keys(s3_url, "uploads/")
    finally:
        store.close()


def test_a_stalled_upload_on_one_replica_holds_its_blob_only_until_the_idle_timeout(tmp_path, pg_url, s3_url):
    from deltahub.limits import StreamLimits

    shared = {"catalog": pg_url, "blob_store": s3_url, "streams": StreamLimits(stream_idle_s=1.0)}
    with local_hub(tmp_path / "a", **shared) as (_, store_a, addr_a), \
            local_hub(tmp_path / "b", **shared) as (_, _, addr_b):
        data = os.urandom(DEFAULT_PART_BYTES + (2 << 20))
        sha = hashlib.sha256(data).hexdigest()
        started = time.time()  # silent for 4 s: the hub ends it after its 1 s idle timeout
        stalled = _raw_upload(addr_a, data, sha, stop_after=DEFAULT_PART_BYTES + (1 << 20), silent_s=4.0)
        assert stalled.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.time() - started < 10
        assert isinstance(stalled, (grpc.RpcError, ConnectionError))
        # the other replica can take the blob over once the stalled stream ended: not held hostage
        deadline = time.time() + 20
        while True:
            offset = _status(addr_b, sha).offset
            try:
                done = _raw_upload(addr_b, data, sha, offset=offset)
                break
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT), err.details()
                assert time.time() < deadline, err.details()
                time.sleep(0.5)
        assert done.complete and b"".join(store_a.blobs.read_chunks(sha)) == data
