"""sha256-addressed blobs: the interface every blob store offers, and the local-disk one.

:class:`LocalBlobStore` (the embedded default) lays them out under its root: ``blobs/ab/<sha256>`` for verified blobs,
``uploads/<sha256>.part`` for uploads in progress (their size is the offset a
client resumes from), ``tmp/`` for files being written. A blob becomes
visible only by ``os.replace`` after fsync, so a crash leaves either the whole
verified blob or nothing under ``blobs/``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from deltahub.artifacts import check_sha256
from deltahub.storage.hashing import StreamHasher
from deltahub.errors import (
    ChecksumMismatchError,
    ConflictError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
)

STALE_TMP_S = 3600.0  # a temp file untouched this long was left by a writer that died


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore(ABC):
    """Blobs by sha256: verified on the way in, immutable once there, removed only by the hub's GC."""

    max_blob_bytes: int | None = None
    url: str = ""

    @abstractmethod
    def has(self, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, sha256: str) -> int:
        """Raises NotFoundError for a blob not in the store."""

    @abstractmethod
    def require(self, sha256: str) -> Path:
        """A local file holding the blob (for readers that need a path: validation, merges, checkouts)."""

    @abstractmethod
    def read_chunks(self, sha256: str, *, offset: int = 0, length: int | None = None,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The blob's bytes from ``offset`` (``length`` of them, or to the end), streamed."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size, mtime) of every stored blob."""

    @abstractmethod
    def upload_offset(self, sha256: str) -> int:
        """Bytes of an unfinished upload the store holds: where a client resumes."""

    @abstractmethod
    def uploads_in_progress(self) -> set[str]:
        """sha256 of every unfinished upload holding bytes (one look, not one per blob)."""

    @abstractmethod
    def open_upload(self, sha256: str, size: int, offset: int):
        """A writer for a client's upload (``write``, ``finish``, ``close``, ``offset``, ``complete``)."""

    @abstractmethod
    def expire_uploads(self, max_age_s: float) -> int:
        """Removes unfinished uploads untouched for ``max_age_s``; how many went."""

    @abstractmethod
    def writer(self):
        """Context manager writing a new blob whose hash is learned as it is written (``sha256``, ``size``)."""

    @abstractmethod
    def delete(self, sha256: str) -> int | None:
        """Removes a blob; its size, or None when it was not there."""

    def check_size(self, size: int) -> None:
        if size < 0:
            raise InvalidInputError(f"blob size {size} is negative")
        if self.max_blob_bytes is not None and size > self.max_blob_bytes:
            raise LimitExceededError(
                f"blob of {size} bytes exceeds the configured limit of {self.max_blob_bytes} bytes per file"
            )

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        with self.writer() as w:
            w.write(data)
        return w.sha256, w.size


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike, *, max_blob_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self.max_blob_bytes = max_blob_bytes
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._tmp = self.root / "tmp"
        for d in (self._blobs, self._uploads, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        # Temp files left by a process that died mid-write are garbage by construction; only old ones
        # go, since other processes sharing this folder may be writing theirs (a writer touches its file
        # with every write)
        now = time.time()
        for stale in self._tmp.iterdir():
            try:
                if now - stale.stat().st_mtime > STALE_TMP_S:
                    stale.unlink()
            except FileNotFoundError:
                continue

    # -- reading ---------------------------------------------------------
    def path(self, sha256: str) -> Path:
        return self._blobs / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def require(self, sha256: str) -> Path:
        path = self.path(check_sha256(sha256))
        if not path.is_file():
            raise NotFoundError(f"blob {sha256} is not in the store")
        return path

    def size(self, sha256: str) -> int:
        return self.require(sha256).stat().st_size

    def read_chunks(self, sha256: str, *, offset: int = 0, length: int | None = None,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return file_chunks(open(self.require(sha256), "rb", buffering=0), offset, length, chunk_size)

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        for sha, st in self.iter_stats():
            yield sha, st.st_size, st.st_mtime

    def iter_stats(self) -> Iterator[tuple[str, os.stat_result]]:
        """(sha256, stat) of every stored blob, one stat each."""
        for sub in self._blobs.iterdir():
            for path in sub.iterdir():
                yield path.name, path.stat()

    # -- uploads -----------------------------------------------------------
    def upload_offset(self, sha256: str) -> int:
        part = self._uploads / f"{check_sha256(sha256)}.part"
        try:
            return part.stat().st_size
        except FileNotFoundError:
            return 0

    def open_upload(self, sha256: str, size: int, offset: int) -> "UploadWriter":
        check_sha256(sha256)
        self.check_size(size)
        return UploadWriter(self, sha256, size, offset)

    def uploads_in_progress(self) -> set[str]:
        found = set()
        for part in self._uploads.glob("*.part"):
            try:
                if part.stat().st_size:
                    found.add(part.stem)
            except FileNotFoundError:
                continue
        return found

    def expire_uploads(self, max_age_s: float) -> int:
        now, removed = time.time(), 0
        for part in self._uploads.glob("*.part"):
            try:
                if now - part.stat().st_mtime > max_age_s:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def truncate_upload(self, sha256: str, size: int) -> None:
        """Drops an unfinished upload's bytes past ``size`` (a mirror of it kept fewer)."""
        part = self._uploads / f"{check_sha256(sha256)}.part"
        if part.exists():
            os.truncate(part, size)

    # -- writing server-made content -----------------------------------------
    def writer(self) -> "BlobWriter":
        return BlobWriter(self)

    @contextmanager
    def checked_writer(self, sha256: str) -> Iterator[BinaryIO]:
        """A new file, open for reading and writing, that becomes blob ``sha256`` when the block ends
        without error. The caller has checked its bytes are that blob (a decode does), so they are not
        hashed again, nor fsynced here: for a cache whose owner syncs its files later, off the reader's
        path (the rebuilt cache: ``encoded._settle``)."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="c-")
        try:
            with os.fdopen(fd, "w+b") as fh:
                yield fh
            self.check_size(os.path.getsize(name))
            dest = self.path(check_sha256(sha256))
            dest.parent.mkdir(exist_ok=True)
            os.replace(name, dest)
        finally:
            if os.path.exists(name):
                os.unlink(name)

    def install(self, tmp_path: Path, sha256: str) -> None:
        """Moves a file that is blob ``sha256`` (checked and fsynced by the caller) into the store, durably."""
        dest = self.path(sha256)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)

    def delete(self, sha256: str) -> int | None:
        path = self.path(sha256)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return None


def file_chunks(fh, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
    """``length`` bytes (or to the end) of an open file from ``offset``, streamed; closes it when done.
    A range past the end is clipped to it, as an object store's is (a client's offset may be any u64)."""
    left = length if length is not None else float("inf")
    with fh:
        fh.seek(min(offset, os.fstat(fh.fileno()).st_size))
        while left > 0 and (chunk := fh.read(int(min(chunk_size, left)))):
            left -= len(chunk)
            yield chunk


def trim_lru(cache: LocalBlobStore, max_bytes: int, *, keep: str = "") -> None:
    """Least recently used blobs of a local cache go until it fits ``max_bytes`` (``keep`` stays; open
    readers keep theirs)."""
    blobs = sorted(cache.iter_blobs(), key=lambda b: b[2])
    total = sum(size for _, size, _ in blobs)
    for sha, size, _ in blobs:
        if total <= max_bytes:
            break
        if sha != keep:
            cache.delete(sha)
            total -= size


class ResumableUpload:
    """What a client upload's writer of any store shares: a stream resumed before the bytes the store
    holds has its overlap dropped (the sha256 at the end covers every byte, whoever sent it), and none
    may go past the declared size."""

    sha256: str
    size: int
    offset: int
    _skip: int

    def _accept(self, data: bytes) -> bytes:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        if self.offset + len(data) > self.size:
            raise InvalidInputError(f"upload of blob {self.sha256} sent more than its declared {self.size} bytes")
        return data


class BlobWriter:
    """Writes a new blob whose hash is learned as it is written."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store._tmp, prefix="w-")
        self._fh = os.fdopen(fd, "wb")
        self._tmp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256 = ""

    def write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        self._hash.update(data)
        self.size += len(data)
        self._store.check_size(self.size)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self.sha256 = self._hash.hexdigest()
                if self._store.has(self.sha256):
                    self._tmp.unlink()
                else:
                    self._store.install(self._tmp, self.sha256)
        finally:
            if not self._fh.closed:
                self._fh.close()
            self._tmp.unlink(missing_ok=True)


class UploadWriter(ResumableUpload):
    """Appends a client's chunks to ``uploads/<sha>.part``; ``finish`` verifies and installs.

    The part file is locked for the life of the stream so two streams cannot
    interleave bytes of one blob; the second gets ConflictError (the server
    waits, bounded, for the first to finish before answering it).
    """

    def __init__(self, store: LocalBlobStore, sha256: str, size: int, offset: int) -> None:
        self._store = store
        self.sha256 = sha256
        self.size = size
        self._part = store._uploads / f"{sha256}.part"
        self._hasher: StreamHasher | None = None
        fd = os.open(self._part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise ConflictError(f"blob {sha256} is being uploaded by another stream; retry later") from None
            raise
        self._fd = fd
        have = os.fstat(fd).st_size
        if offset > have:
            self._abandon(have)
            raise InvalidInputError(
                f"upload of blob {sha256} must resume at offset {have} (the bytes the hub holds) or before, "
                f"not {offset}; ask GetUploadStatus where to resume"
            )
        if offset > size:
            self._abandon(have)
            raise InvalidInputError(f"upload offset {offset} is past the declared size {size}")
        # A stream that starts before what the hub holds (another stream of the same
        # content got further meanwhile) has its overlap dropped; the sha256 at the end
        # covers every byte, whoever sent it.
        self._skip = have - offset
        self.offset = have
        os.lseek(fd, have, os.SEEK_SET)
        self._hasher = StreamHasher(prefix_of=self._part, prefix=have, flush_fd=fd)

    def write(self, data: bytes) -> None:
        data = self._accept(data)
        if not data:
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.offset += len(data)
        self._hasher.update(data)

    def finish(self) -> None:
        """Verify the sha256 and move the blob into place. Raises on a short or corrupt upload."""
        if self.offset < self.size:
            self._hasher.stop()
            os.fsync(self._fd)
            return  # incomplete: kept for resumption
        actual = self._hasher.hexdigest()
        os.fsync(self._fd)
        if actual != self.sha256:
            self._part.unlink(missing_ok=True)
            self.close()
            raise ChecksumMismatchError(
                f"blob declared as sha256 {self.sha256} hashes to {actual}; the upload was discarded"
            )
        if self._store.has(self.sha256):
            self._part.unlink(missing_ok=True)
        else:
            self._store.install(self._part, self.sha256)
        self.close()

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def complete(self) -> bool:
        return self._store.has(self.sha256)

    def _abandon(self, have: int) -> None:
        """A refused stream leaves no empty part file behind (only bytes worth resuming stay)."""
        if have == 0:
            self._part.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            if self._hasher is not None:
                self._hasher.stop()
            os.close(self._fd)
            self._fd = -1
