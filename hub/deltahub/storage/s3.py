"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2), through boto3.

``s3://bucket/prefix`` keeps verified blobs at ``<prefix>blobs/ab/<sha256>``. Endpoint and
credentials come the standard way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, an instance role), so any boto3 set-up works unchanged.

A client's upload is an S3 multipart upload at ``<prefix>uploads/<sha256>``: each full part goes up
as it arrives, so any replica can tell where a broken upload resumes (the parts S3 holds) and take
it over. Only when every byte is there and its sha256 checked does the blob reach its own key, by a
server-side copy: no reader ever sees unverified bytes under a blob's name. The replica that receives
an upload also keeps it in its local cache as it streams (hashing it there, as the local store does),
so the commit that validates it next reads it from disk; a resume on another replica, which holds no
such prefix, checks the sha256 by reading the assembled object back before the copy.

Readers that need a file (validation, merges, checkouts) get one from the local cache, filled on first
use and trimmed to ``cache_bytes``, least recently used first; byte streams (pulls, the HTTP endpoint's
Range requests) come straight from S3 when the blob is not cached.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable, Iterator

from deltahub.artifacts import check_sha256
from deltahub.errors import (
    ChecksumMismatchError, ConflictError, InvalidInputError, NotFoundError, PreconditionError, UnavailableError,
)
from deltahub.storage.blobs import BlobStore, LocalBlobStore, ResumableUpload, trim_lru

MIN_PART = 5 << 20            # S3's smallest part but the last
DEFAULT_PART_BYTES = 8 << 20  # part size of uploads; a resume loses at most what followed the last part
MAX_PARTS = 10_000
DEFAULT_CACHE_BYTES = 20 << 30
PARTS_IN_FLIGHT = 4           # parts of one upload sent at once
SINGLE_COPY_BYTES = 1 << 30   # staged uploads up to this size are named by one CopyObject

Locks = Callable[..., AbstractContextManager]  # (key, wait=...) -> a lock across replicas (Catalog.lock)


class _Answering:
    """The boto3 client, with an object store that does not answer (connection refused or dropped, a
    timeout, 5xx, throttling past boto3's own retries) raised as UnavailableError: retry, not a bug."""

    def __init__(self, client, url: str) -> None:
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

        self._client, self._url = client, url
        self._down = (BotoConnectionError, HTTPClientError)
        self._client_error = ClientError

    def _convert(self, err: Exception) -> Exception:
        if isinstance(err, self._down) or (isinstance(err, self._client_error) and (
                err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
                or err.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout", "Throttling"))):
            return UnavailableError(f"the blob store {self._url} did not answer ({err}); retry shortly")
        return err

    def guard(self, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - converted or re-raised as is
            converted = self._convert(err)
            if converted is err:
                raise
            raise converted from err

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if name == "get_paginator":
            return lambda op: _Pages(self, method(op))
        return lambda *args, **kwargs: self.guard(method, *args, **kwargs)


class _Pages:
    def __init__(self, guard: _Answering, paginator) -> None:
        self._guard, self._paginator = guard, paginator

    def paginate(self, **kwargs):
        pages = iter(self._paginator.paginate(**kwargs))
        while True:
            try:
                page = self._guard.guard(next, pages)
            except StopIteration:
                return
            yield page


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in "/" or empty) of ``s3://bucket[/prefix]``."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise InvalidInputError(f"blob store {url!r} is not s3://bucket[/prefix]")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def part_size_for(size: int, configured: int = DEFAULT_PART_BYTES) -> int:
    """The part size of a blob's upload: from its size alone, so every replica resuming it agrees."""
    return max(configured, MIN_PART, math.ceil(size / MAX_PARTS / (1 << 20)) << 20)


class S3BlobStore(BlobStore):
    def __init__(self, url: str, scratch: str | os.PathLike, *, locks: Locks, max_blob_bytes: int | None = None,
                 part_bytes: int = DEFAULT_PART_BYTES, cache_bytes: int = DEFAULT_CACHE_BYTES, client=None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self._client_error = ClientError
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.max_blob_bytes = max_blob_bytes
        self.part_bytes = part_bytes
        self.cache_bytes = cache_bytes
        self.locks = locks
        self.cache = LocalBlobStore(Path(scratch) / "s3-cache", max_blob_bytes=max_blob_bytes)
        self._cache_lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        self.s3 = _Answering(client or boto3.client("s3", config=Config(
            retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32, connect_timeout=10,
            read_timeout=60)), url)
        self.part_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-parts")
        self.transfer = TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes,
                                       max_concurrency=8)
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (*self._errors, UnavailableError) as err:
            raise PreconditionError(f"cannot use bucket {self.bucket!r} of blob store {url}: {err}; create it, or "
                                    "check AWS_ENDPOINT_URL and the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE)")

    # -- keys --------------------------------------------------------------------------------------------
    def key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}"

    def staging_key(self, sha256: str) -> str:
        return f"{self.prefix}uploads/{sha256}"

    def _missing(self, err) -> bool:
        return isinstance(err, self._client_error) and err.response.get("Error", {}).get("Code") in (
            "404", "NoSuchKey", "NotFound", "NoSuchUpload")

    # -- reading -----------------------------------------------------------------------------------------
    def _head(self, sha256: str) -> dict | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=self.key(check_sha256(sha256)))
        except self._client_error as err:
            if self._missing(err):
                return None
            raise

    def has(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int:
        head = self._head(sha256)
        if head is None:
            raise NotFoundError(f"blob {sha256} is not in the store")
        return head["ContentLength"]

    def require(self, sha256: str) -> Path:
        check_sha256(sha256)
        with self._cache_lock:  # one download per blob however many ask for it at once
            fetching = self._fetching.setdefault(sha256, threading.Lock())
        try:
            with fetching:
                return self._require(sha256)
        finally:
            with self._cache_lock:
                self._fetching.pop(sha256, None)

    def _require(self, sha256: str) -> Path:
        if self.cache.has(sha256):
            path = self.cache.path(sha256)
            os.utime(path)  # recently used: trimmed last
            return path
        with self.cache.writer() as w:
            for chunk in self._get(sha256):
                w.write(chunk)
        if w.sha256 != sha256:  # the object store returned other bytes than were verified on the way in
            self.cache.delete(w.sha256)
            raise PreconditionError(f"blob {sha256} in {self.url} reads back as sha256 {w.sha256}: the object "
                                    "store altered it; restore it from a backup or push it again")
        self._trim_cache()
        return self.cache.path(sha256)

    def _get(self, sha256: str, offset: int = 0, length: int | None = None,
             chunk_size: int = 1 << 20) -> Iterator[bytes]:
        rng = f"bytes={offset}-" + (str(offset + length - 1) if length is not None else "")
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key(sha256), Range=rng)["Body"]
        except self._client_error as err:
            if self._missing(err):
                raise NotFoundError(f"blob {sha256} is not in the store") from None
            if err.response.get("Error", {}).get("Code") == "InvalidRange":
                return
            raise
        chunks = body.iter_chunks(chunk_size)
        try:
            while chunk := self.s3.guard(next, chunks, b""):
                yield chunk
        finally:
            body.close()

    def read_chunks(self, sha256: str, *, offset: int = 0, length: int | None = None,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        check_sha256(sha256)
        if length == 0:
            return iter(())
        if self.cache.has(sha256):
            return self.cache.read_chunks(sha256, offset=offset, length=length, chunk_size=chunk_size)
        return self._get(sha256, offset, length, chunk_size)

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/")
        for page in pages:
            for obj in page.get("Contents", ()):
                yield obj["Key"].rsplit("/", 1)[-1], obj["Size"], obj["LastModified"].timestamp()

    def delete(self, sha256: str) -> int | None:
        head = self._head(sha256)
        self.cache.delete(sha256)
        if head is None:
            return None
        self.s3.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        return head["ContentLength"]

    def _trim_cache(self) -> None:
        with self._cache_lock:
            trim_lru(self.cache, self.cache_bytes)

    # -- writing server-made content ---------------------------------------------------------------------
    def writer(self) -> "S3BlobWriter":
        return S3BlobWriter(self)

    def _publish(self, sha256: str) -> None:
        """A cached, verified blob uploaded to its key (unless there already)."""
        if not self.has(sha256):
            self.s3.upload_file(str(self.cache.path(sha256)), self.bucket, self.key(sha256), Config=self.transfer)
        self._trim_cache()

    # -- client uploads ----------------------------------------------------------------------------------
    def multipart(self, sha256: str) -> tuple[str | None, list[dict]]:
        """The multipart upload holding ``sha256``'s unfinished bytes: (upload id or None, its parts in order)."""
        key = self.staging_key(sha256)
        found = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key).get("Uploads", [])
        found = sorted((u for u in found if u["Key"] == key), key=lambda u: u["Initiated"])
        if not found:
            return None, []
        upload_id = found[-1]["UploadId"]
        parts: list[dict] = []
        pages = self.s3.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key, UploadId=upload_id)
        try:
            for page in pages:
                parts += page.get("Parts", [])
        except self._client_error as err:
            if self._missing(err):  # completed or aborted since it was listed: nothing left to resume
                return None, []
            raise
        # parts arrive in order, each full but the last; a run of them from 1 is what a resume builds on
        run = []
        for i, part in enumerate(sorted(parts, key=lambda p: p["PartNumber"]), start=1):
            if part["PartNumber"] != i:
                break
            run.append(part)
        return upload_id, run

    def uploads_in_progress(self) -> set[str]:
        pages = self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                         Prefix=f"{self.prefix}uploads/")
        return {u["Key"].rsplit("/", 1)[-1] for page in pages for u in page.get("Uploads", ())}

    def upload_offset(self, sha256: str) -> int:
        _, parts = self.multipart(check_sha256(sha256))
        return sum(p["Size"] for p in parts)

    def open_upload(self, sha256: str, size: int, offset: int) -> "S3UploadWriter":
        check_sha256(sha256)
        self.check_size(size)
        return S3UploadWriter(self, sha256, size, offset)

    def expire_uploads(self, max_age_s: float) -> int:
        now, removed = time.time(), self.cache.expire_uploads(max_age_s)
        pages = self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                         Prefix=f"{self.prefix}uploads/")
        for page in pages:
            for upload in page.get("Uploads", ()):
                sha = upload["Key"].rsplit("/", 1)[-1]
                try:
                    with self.locks(f"upload:{sha}", wait=False):  # never under a live stream
                        parts = self.s3.list_parts(Bucket=self.bucket, Key=upload["Key"],
                                                   UploadId=upload["UploadId"]).get("Parts", [])
                        touched = max([p["LastModified"].timestamp() for p in parts]
                                      + [upload["Initiated"].timestamp()])
                        if now - touched > max_age_s:
                            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                            removed += 1
                except ConflictError:
                    continue
        # A staged object whose upload completed but was never named (its process died between the two):
        # a live upload holds its lock from the first part to the staged object's removal.
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=f"{self.prefix}uploads/"):
            for obj in page.get("Contents", ()):
                if now - obj["LastModified"].timestamp() <= max_age_s:
                    continue
                try:
                    with self.locks(f"upload:{obj['Key'].rsplit('/', 1)[-1]}", wait=False):
                        self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
                        removed += 1
                except ConflictError:
                    continue
        return removed


class S3BlobWriter:
    """A server-made blob: written and hashed in the local cache, then uploaded to its key."""

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self._local = store.cache.writer()
        self.sha256, self.size = "", 0

    def write(self, data: bytes | memoryview) -> None:
        self._local.write(data)
        self._store.check_size(self._local.size)

    def __enter__(self) -> "S3BlobWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._local.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.sha256, self.size = self._local.sha256, self._local.size
            self._store._publish(self.sha256)


class S3UploadWriter(ResumableUpload):
    """A client's upload of one blob as an S3 multipart upload; the interface of the local UploadWriter.

    One stream per blob across replicas (the catalog's lock ``upload:<sha256>``, held for the stream);
    a second gets ConflictError, as locally.
    """

    def __init__(self, store: S3BlobStore, sha256: str, size: int, offset: int) -> None:
        self._store, self.sha256, self.size = store, sha256, size
        self.part_bytes = part_size_for(size, store.part_bytes)
        self._lock = store.locks(f"upload:{sha256}", wait=False)
        try:
            self._lock.__enter__()
        except ConflictError:
            raise ConflictError(f"blob {sha256} is being uploaded by another stream; retry later") from None
        self._open = True
        self._local = None
        self._in_flight: list = []
        try:
            self._upload_id, self._parts = store.multipart(sha256)
            have = sum(p["Size"] for p in self._parts)
            if offset > have:
                raise InvalidInputError(
                    f"upload of blob {sha256} must resume at offset {have} (the bytes the hub holds) or before, "
                    f"not {offset}; ask GetUploadStatus where to resume")
            if offset > size:
                raise InvalidInputError(f"upload offset {offset} is past the declared size {size}")
            self._skip, self.offset = have - offset, have
            # the local mirror: usable when it holds at least what S3 holds (bytes past that were never a part)
            if store.cache.upload_offset(sha256) >= have:
                store.cache.truncate_upload(sha256, have)
                self._local = store.cache.open_upload(sha256, size, have)
            elif store.cache.upload_offset(sha256):
                store.cache.truncate_upload(sha256, 0)
            self._buffer = bytearray()
        except BaseException:
            self.close()
            raise

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def complete(self) -> bool:
        return self._store.has(self.sha256)

    def write(self, data: bytes) -> None:
        data = self._accept(data)
        if not data:
            return
        if self._local is not None:
            self._local.write(data)
        self._buffer += data
        self.offset += len(data)
        # a full part goes up unless it is the blob's last byte: a blob of one part is one PutObject
        while len(self._buffer) > self.part_bytes or (len(self._buffer) == self.part_bytes and self.offset < self.size):
            self._send_part(bytes(self._buffer[:self.part_bytes]))
            del self._buffer[:self.part_bytes]

    def _send_part(self, data: bytes) -> None:
        """Hands a part to the store's upload threads: receiving the next ones overlaps with sending this
        (at most PARTS_IN_FLIGHT per stream, so a fast client is held back rather than buffered)."""
        s3, key = self._store.s3, self._store.staging_key(self.sha256)
        if self._upload_id is None:
            self._upload_id = s3.create_multipart_upload(Bucket=self._store.bucket, Key=key)["UploadId"]
        number = len(self._parts) + len(self._in_flight) + 1
        self._in_flight.append(self._store.part_pool.submit(self._put_part, key, self._upload_id, number, data))
        while len(self._in_flight) >= PARTS_IN_FLIGHT:
            self._parts.append(self._in_flight.pop(0).result())

    def _put_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict:
        etag = self._store.s3.upload_part(Bucket=self._store.bucket, Key=key, UploadId=upload_id,
                                          PartNumber=number, Body=data)["ETag"]
        return {"PartNumber": number, "ETag": etag, "Size": len(data)}

    def _settle(self) -> None:
        """Waits for the parts in flight, in order; the first failure is raised once all have ended."""
        failure = None
        while self._in_flight:
            try:
                self._parts.append(self._in_flight.pop(0).result())
            except BaseException as err:  # noqa: BLE001 - raised below, after the rest settled
                failure = failure or err
        if failure is not None:
            raise failure

    def finish(self) -> None:
        """Verify the sha256 and move the blob to its key. Raises on a corrupt upload; a short one is kept."""
        if self.offset < self.size:
            if len(self._buffer) >= MIN_PART:  # worth keeping as a part of its own
                self._send_part(bytes(self._buffer))
            self._buffer.clear()
            self._settle()  # the resume offset counts what S3 holds
            if self._local is not None:
                self._local.finish()
            return
        store, s3, key = self._store, self._store.s3, self._store.staging_key(self.sha256)
        try:
            if self._upload_id is None:  # the whole blob is here: checked, then put at its key at once
                self._finish_whole()
                return
            if self._buffer:
                self._send_part(bytes(self._buffer))
                self._buffer.clear()
            self._settle()
            if self._local is not None:
                self._local.finish()  # verifies the sha256 (ChecksumMismatchError) and caches the blob
            s3.complete_multipart_upload(
                Bucket=store.bucket, Key=key, UploadId=self._upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in self._parts]})
            self._upload_id = None
            if self._local is None:
                self._verify_staged(key)
            source = {"Bucket": store.bucket, "Key": key}
            if self.size <= SINGLE_COPY_BYTES:  # one server-side request
                s3.copy_object(CopySource=source, Bucket=store.bucket, Key=store.key(self.sha256))
            else:  # past S3's 5 GiB for one copy, and faster before it: a multipart copy, in parallel
                s3.copy(source, store.bucket, store.key(self.sha256), Config=store.transfer)
            s3.delete_object(Bucket=store.bucket, Key=key)
        except ChecksumMismatchError:
            self._discard()
            raise
        finally:
            self.close()

    def _finish_whole(self) -> None:
        data = bytes(self._buffer)
        if self._local is not None:
            self._local.finish()  # verifies the sha256 (ChecksumMismatchError) and caches the blob
        elif hashlib.sha256(data).hexdigest() != self.sha256:
            raise ChecksumMismatchError(f"blob declared as sha256 {self.sha256} hashes to "
                                        f"{hashlib.sha256(data).hexdigest()}; the upload was discarded")
        self._store.s3.put_object(Bucket=self._store.bucket, Key=self._store.key(self.sha256), Body=data)
        self._buffer.clear()

    def _verify_staged(self, key: str) -> None:
        """A resume from another replica: the sha256 of the assembled object, read back before it is named."""
        digest = hashlib.sha256()
        body = self._store.s3.get_object(Bucket=self._store.bucket, Key=key)["Body"]
        chunks = body.iter_chunks(8 << 20)
        while chunk := self._store.s3.guard(next, chunks, b""):
            digest.update(chunk)
        if digest.hexdigest() != self.sha256:
            raise ChecksumMismatchError(f"blob declared as sha256 {self.sha256} hashes to {digest.hexdigest()}; "
                                        "the upload was discarded")

    def _discard(self) -> None:
        s3, store, key = self._store.s3, self._store, self._store.staging_key(self.sha256)
        if self._upload_id is not None:
            s3.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=self._upload_id)
            self._upload_id = None
        s3.delete_object(Bucket=store.bucket, Key=key)

    def close(self) -> None:
        for future in self._in_flight:  # a stream that failed: its parts end before the lock is let go
            future.exception()
        self._in_flight.clear()
        if self._local is not None:
            self._local.close()
        if self._open:
            self._open = False
            self._lock.__exit__(None, None, None)
