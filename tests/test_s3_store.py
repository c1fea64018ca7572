"""The S3 blob store on moto's server: keys, ranges, server-made blobs, refusals."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import pytest

from deltahub.errors import InvalidInputError, NotFoundError, PreconditionError
from deltahub.storage.s3 import MIN_PART, S3BlobStore, parse_s3_url, part_size_for


@contextmanager
def _no_lock(key, wait=True):
    yield


@pytest.fixture()
def s3_store(s3_url, tmp_path):
    return S3BlobStore(s3_url, tmp_path / "scratch", locks=_no_lock)


def test_urls_and_part_sizes_by_hand():
    assert parse_s3_url("s3://b") == ("b", "")
    assert parse_s3_url("s3://b/a/c/") == ("b", "a/c/")
    with pytest.raises(InvalidInputError, match="s3://bucket"):
        parse_s3_url("s3:///x")
    assert part_size_for(1) == 8 << 20                   # the configured size
    assert part_size_for(10_000 * (8 << 20)) == 8 << 20  # 10000 parts of 8 MiB fit
    assert part_size_for(10_000 * (8 << 20) + 1) == 9 << 20
    assert part_size_for(1, 1 << 20) == MIN_PART         # never under S3's minimum


def test_server_made_blobs_reach_their_key_and_read_back_by_range(s3_store, tmp_path):
    data = os.urandom(3 << 20)
    sha, size = s3_store.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest() and size == len(data)
    assert s3_store.has(sha) and s3_store.size(sha) == len(data)
    assert [s for s, _, _ in s3_store.iter_blobs()] == [sha]
    # a fresh store (another replica) has no cached copy: ranges come from S3
    other = S3BlobStore(s3_store.url, tmp_path / "other", locks=_no_lock)
    assert b"".join(other.read_chunks(sha, offset=100, length=1000)) == data[100:1100]
    assert b"".join(other.read_chunks(sha, offset=len(data) - 5)) == data[-5:]
    assert other.require(sha).read_bytes() == data  # a local file, verified, for readers that need one
    assert other.delete(sha) == len(data) and not other.has(sha) and other.delete(sha) is None
    with pytest.raises(NotFoundError):
        b"".join(other.read_chunks(sha))


def test_a_tampered_object_is_refused_when_read_into_a_file(s3_store, tmp_path):
    sha, _ = s3_store.put_bytes(b"honest bytes")
    s3_store.s3.put_object(Bucket=s3_store.bucket, Key=s3_store.key(sha), Body=b"altered bytes")
    other = S3BlobStore(s3_store.url, tmp_path / "other", locks=_no_lock)
    with pytest.raises(PreconditionError, match="altered"):
        other.require(sha)


def test_a_missing_bucket_says_what_to_do(s3_endpoint, tmp_path):
    with pytest.raises(PreconditionError, match="create it, or check AWS_ENDPOINT_URL"):
        S3BlobStore("s3://no-such-bucket-here/x", tmp_path, locks=_no_lock)


def test_a_cache_past_its_size_drops_the_least_recently_used(s3_url, tmp_path):
    store = S3BlobStore(s3_url, tmp_path / "s", locks=_no_lock, cache_bytes=2500)
    shas = [store.put_bytes(os.urandom(1000))[0] for _ in range(4)]
    cached = {s for s, _, _ in store.cache.iter_blobs()}
    assert len(cached) == 2 and all(store.has(s) for s in shas)  # every blob stays in S3


def test_an_object_store_that_stops_answering_is_unavailable_not_internal(s3_store):
    import boto3
    from botocore.config import Config

    from deltahub.errors import UnavailableError

    sha, _ = s3_store.put_bytes(b"x")
    s3_store.s3._client = boto3.client("s3", endpoint_url="http://127.0.0.1:1",
                                       config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(UnavailableError, match="did not answer"):
        s3_store.has(sha)
    with pytest.raises(UnavailableError):
        list(s3_store.iter_blobs())


@pytest.mark.parametrize("size", [1000, (8 << 20) + 5])
def test_an_upload_whose_bytes_are_not_its_sha256_names_nothing(s3_store, size):
    from deltahub.errors import ChecksumMismatchError

    claimed = hashlib.sha256(b"what the client said").hexdigest()
    writer = s3_store.open_upload(claimed, size, 0)
    data = os.urandom(size)
    for at in range(0, size, 1 << 20):
        writer.write(data[at:at + (1 << 20)])
    with pytest.raises(ChecksumMismatchError, match="hashes to"):
        writer.finish()
    assert not s3_store.has(claimed) and s3_store.upload_offset(claimed) == 0
    listing = s3_store.s3.list_objects_v2(Bucket=s3_store.bucket).get("Contents", [])
    assert listing == [] and not s3_store.s3.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads")


def test_a_blob_of_one_part_is_one_put_and_a_larger_one_is_multipart(s3_store):
    for size in (8 << 20, (8 << 20) + 1):
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        writer = s3_store.open_upload(sha, size, 0)
        for at in range(0, size, 1 << 20):
            writer.write(data[at:at + (1 << 20)])
        writer.finish()
        assert writer.complete and s3_store.size(sha) == size
        assert b"".join(s3_store.read_chunks(sha, offset=size - 3)) == data[-3:]


def test_a_staged_upload_its_process_died_before_naming_is_swept_unless_its_upload_lives(s3_url, tmp_path):
    from deltahub.errors import ConflictError

    live: set[str] = set()

    @contextmanager
    def locks(name, wait=True):
        if name in live:
            raise ConflictError(f"{name} is held")
        yield

    store = S3BlobStore(s3_url, tmp_path / "s", locks=locks)
    orphan, streaming = "a" * 64, "b" * 64
    for sha in (orphan, streaming):  # completed multipart objects, as a kill -9 before the copy leaves them
        store.s3.put_object(Bucket=store.bucket, Key=store.staging_key(sha), Body=b"assembled")
    live.add(f"upload:{streaming}")
    assert store.expire_uploads(0) == 1
    keys = {o["Key"] for o in store.s3.list_objects_v2(Bucket=store.bucket, Prefix=store.staging_key("")).get(
        "Contents", [])}
    assert keys == {store.staging_key(streaming)}
