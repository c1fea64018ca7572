"""The blob store: atomic installs, resumable uploads, checksum verification."""

import hashlib
import threading

import pytest

from deltahub.errors import ChecksumMismatchError, ConflictError, InvalidInputError, LimitExceededError
from deltahub.storage import LocalBlobStore as BlobStore


def test_upload_in_two_streams_resumes_and_verifies(tmp_path):
    store = BlobStore(tmp_path)
    data = bytes(range(256)) * 100
    sha = hashlib.sha256(data).hexdigest()
    w = store.open_upload(sha, len(data), 0)
    w.write(data[:1000])
    w.finish()  # incomplete: kept, not installed
    w.close()
    assert store.upload_offset(sha) == 1000 and not store.has(sha)
    with pytest.raises(InvalidInputError, match="resume at offset 1000 .*or before, not 1500"):
        store.open_upload(sha, len(data), 1500)
    assert store.upload_offset(sha) == 1000
    # a stream that starts before what the hub holds has the overlap dropped
    w = store.open_upload(sha, len(data), 400)
    w.write(data[400:2000])
    w.write(data[2000:])
    w.finish()
    assert store.has(sha) and store.path(sha).read_bytes() == data
    assert store.upload_offset(sha) == 0  # the part file moved into place


def test_large_resumed_upload_hashes_prefix_and_stream_across_flushes(tmp_path):
    # 40 MiB crosses the hasher's 32 MiB flush; the resume point falls inside the first flush window
    store = BlobStore(tmp_path)
    data = hashlib.sha256(b"seed").digest() * (40 << 15)
    sha = hashlib.sha256(data).hexdigest()
    w = store.open_upload(sha, len(data), 0)
    w.write(data[: 3 << 20])
    w.finish()
    w.close()
    w = store.open_upload(sha, len(data), 3 << 20)
    for start in range(3 << 20, len(data), 1 << 20):
        w.write(data[start : start + (1 << 20)])
    w.finish()
    assert store.path(sha).read_bytes() == data


def test_corrupt_upload_is_discarded(tmp_path):
    store = BlobStore(tmp_path)
    data = b"hello world"
    w = store.open_upload("0" * 64, len(data), 0)
    w.write(data)
    with pytest.raises(ChecksumMismatchError, match="hashes to"):
        w.finish()
    assert not store.has("0" * 64) and store.upload_offset("0" * 64) == 0


def test_two_streams_for_one_blob_conflict(tmp_path):
    store = BlobStore(tmp_path)
    data = b"x" * 10
    sha = hashlib.sha256(data).hexdigest()
    first = store.open_upload(sha, 10, 0)
    with pytest.raises(ConflictError):
        store.open_upload(sha, 10, 0)
    first.close()


def test_size_limit_and_overlong_streams(tmp_path):
    store = BlobStore(tmp_path, max_blob_bytes=100)
    with pytest.raises(LimitExceededError, match="limit of 100"):
        store.open_upload("1" * 64, 101, 0)
    w = store.open_upload("1" * 64, 10, 0)
    with pytest.raises(InvalidInputError, match="more than its declared"):
        w.write(b"y" * 11)
    w.close()


def test_writer_installs_atomically_and_dedups(tmp_path):
    store = BlobStore(tmp_path)
    sha, size = store.put_bytes(b"abc")
    assert sha == hashlib.sha256(b"abc").hexdigest() and size == 3
    assert store.put_bytes(b"abc")[0] == sha
    assert list(store._tmp.iterdir()) == []
    # a failed write leaves nothing
    with pytest.raises(RuntimeError):
        with store.writer() as w:
            w.write(b"partial")
            raise RuntimeError("boom")
    assert list(store._tmp.iterdir()) == []
    assert [s for s, _, _ in store.iter_blobs()] == [sha]


def test_concurrent_writers_of_the_same_content(tmp_path):
    store = BlobStore(tmp_path)
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.put_bytes(b"same" * 1000))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r[0] for r in results}) == 1
    assert store.path(results[0][0]).read_bytes() == b"same" * 1000


def test_opening_a_shared_folder_leaves_other_writers_temp_files_alone(tmp_path):
    import os
    import time

    store = BlobStore(tmp_path)
    with store.writer() as w:
        w.write(b"being written by this process")
        BlobStore(tmp_path)  # another process opens the folder meanwhile
    assert store.has(w.sha256)
    dead = store._tmp / "w-left-by-a-dead-writer"
    dead.write_bytes(b"x")
    os.utime(dead, (time.time() - 7200,) * 2)
    BlobStore(tmp_path)
    assert not dead.exists()
