"""Interrupted uploads resume from the offset the hub committed."""

import hashlib
import os

import grpc

from deltahub.v1 import common_pb2, transfer_pb2, transfer_pb2_grpc
from deltahub_client.hub import CHUNK_SIZE


def test_interrupted_upload_resumes_from_committed_offset(server, tmp_path):
    hub, store, address = server
    data = os.urandom(3 * CHUNK_SIZE + 123)
    sha = hashlib.sha256(data).hexdigest()
    channel = grpc.insecure_channel(address)
    transfer = transfer_pb2_grpc.TransferStub(channel)

    def first_two_chunks_then_die():
        yield transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=0, data=data[:CHUNK_SIZE])
        yield transfer_pb2.UploadChunk(data=data[CHUNK_SIZE : 2 * CHUNK_SIZE])
        raise ConnectionError("client went away")

    try:
        transfer.UploadBlob(first_two_chunks_then_die())
    except (grpc.RpcError, ConnectionError):
        pass
    status = transfer.GetUploadStatus(transfer_pb2.GetUploadStatusRequest(sha256=sha))
    # the cancel may overtake chunks in flight: the hub holds what it durably wrote
    held = status.offset
    assert held in (0, CHUNK_SIZE, 2 * CHUNK_SIZE) and not status.complete

    # the SDK asks the hub where to resume: only the rest is sent
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "blob.jsonl").write_bytes(data)
    from deltahub_client.files import hash_files, list_folder

    files = list_folder(folder)
    entries = hash_files(files, progress=False)
    plan = transfer.PlanPush(transfer_pb2.PlanPushRequest(
        artifact="d/x", kind=4, files=[common_pb2.FileEntry(path=e.path, sha256=e.sha256, size=e.size)
                                       for e in entries]))
    assert [(m.sha256, m.offset) for m in plan.missing] == [(sha, held)]
    assert plan.bytes_to_send == len(data) - held
    sent = hub._upload_all([(sha, len(data), plan.missing[0].offset, files["blob.jsonl"])], plan.bytes_to_send)
    assert sent == len(data) - held
    assert store.blobs.inner.path(sha).read_bytes() == data
    channel.close()


def test_download_is_verified_and_skips_good_files(server, pushed_base, tmp_path):
    import pytest

    from deltahub.errors import AlreadyExistsError

    hub, store, _ = server
    dest = hub.pull("base/tiny-llama", tmp_path / "p")
    cfg = dest / "config.json"
    mtime = cfg.stat().st_mtime_ns
    hub.pull("base/tiny-llama", dest)
    assert cfg.stat().st_mtime_ns == mtime  # already right: not fetched again
    cfg.write_text("{}")
    with pytest.raises(AlreadyExistsError):  # other bytes there: not replaced silently
        hub.pull("base/tiny-llama", dest)
    assert cfg.read_text() == "{}"
    hub.pull("base/tiny-llama", dest, overwrite=True)
    assert cfg.read_text() != "{}"  # replaced when asked


def test_corrupt_blob_on_the_server_is_detected_by_the_client(server, pushed_base, tmp_path):
    import pytest

    from deltahub.errors import IntegrityError

    hub, store, _ = server
    entry = pushed_base.file("config.json")
    path = store.blobs.inner.path(entry.sha256)
    os.chmod(path, 0o644)
    path.write_text('{"tampered": true}')
    with pytest.raises(IntegrityError, match="expected"):
        hub.pull("base/tiny-llama", tmp_path / "x")
    assert not (tmp_path / "x" / "config.json").exists()
