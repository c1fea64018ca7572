"""The hub's blobs as readers see them, whether stored as themselves or as deltas against other blobs.

A blob may be stored as a *container* (:mod:`deltahub.deltas.filedelta`): a blob of its own in the
underlying store that rebuilds the original byte for byte from the base blobs it was encoded against.
The catalog's ``encodings`` table says which blobs are stored so and what each needs. Readers never
see the difference: :meth:`EncodedBlobStore.has`, ``size``, ``require`` and ``read_chunks`` answer
for the original sha256, rebuilding it on first read into a bounded local cache (verified against its
sha256, so a corrupted container or base is caught there as :class:`IntegrityError`).

Bases are always blobs stored as themselves: a rebuild is one decode, never a chain of them.
Uploads, server-made blobs and garbage collection's listing go to the underlying store as they are.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from deltahub.artifacts import check_sha256
from deltahub.deltas.filedelta import decode_file
from deltahub.errors import IntegrityError, NotFoundError
from deltahub.storage.blobs import BlobStore, LocalBlobStore, file_chunks, trim_lru
from deltahub.storage.catalog import Catalog, Encoding

log = logging.getLogger(__name__)

# The mode of a rebuilt file once it is on disk. It is set after the fsync has returned, so a file
# that has it after a crash has all its bytes; a restart keeps those and drops the rest, and a hub's
# plain readers find the deltas they read before it restarted still rebuilt.
SETTLED = 0o444


def _settle(path: Path) -> None:
    """fsyncs a rebuilt file, then marks it settled; one trimmed from the cache meanwhile is let be."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
        os.fchmod(fd, SETTLED)
    except OSError as err:  # left unsettled: the next start drops it, nothing is lost
        log.warning("rebuilt file %s not settled: %s", path.name, err)
    finally:
        os.close(fd)


class EncodedBlobStore(BlobStore):
    def __init__(self, inner: BlobStore, catalog: Catalog, scratch: Path, *,
                 cache_bytes: int, workers: int | None = None) -> None:
        self.inner = inner
        self.catalog = catalog
        self.url = inner.url
        self.max_blob_bytes = inner.max_blob_bytes
        self.rebuilt = LocalBlobStore(Path(scratch) / "rebuilt")
        # an earlier process's rebuilt files are kept once settled (see _settle); the others may have
        # been cut short by a crash, and go
        for sha, st in list(self.rebuilt.iter_stats()):
            if stat.S_IMODE(st.st_mode) != SETTLED:
                self.rebuilt.delete(sha)
        self.cache_bytes = cache_bytes
        self.workers = workers
        self._lock = threading.Lock()
        self._rebuilding: dict[str, tuple[threading.Lock, int]] = {}  # sha256 -> (lock, its users)

    def encoding(self, sha256: str) -> Encoding | None:
        """How ``sha256`` is stored encoded, or None when it is stored as itself (or not at all)."""
        enc = self.catalog.encoding(sha256)
        return enc if enc is not None and enc.container else None

    # -- reading ---------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        if self.inner.has(sha256):
            return True
        enc = self.encoding(sha256)
        return enc is not None and self.inner.has(enc.container)

    def size(self, sha256: str) -> int:
        if self.inner.has(sha256):
            return self.inner.size(sha256)
        enc = self.encoding(sha256)
        if enc is None:
            raise NotFoundError(f"blob {sha256} is not in the store")
        return enc.size

    def require(self, sha256: str) -> Path:
        check_sha256(sha256)
        if self.inner.has(sha256):
            return self.inner.require(sha256)
        with self._rebuild_lock(sha256):
            return self._rebuild(sha256)

    @contextmanager
    def _rebuild_lock(self, sha256: str) -> Iterator[None]:
        """One rebuild per blob however many readers ask at once."""
        with self._lock:
            rebuilding, users = self._rebuilding.get(sha256, (threading.Lock(), 0))
            self._rebuilding[sha256] = (rebuilding, users + 1)
        try:
            with rebuilding:
                yield
        finally:
            with self._lock:
                lock, users = self._rebuilding[sha256]
                if users == 1:
                    del self._rebuilding[sha256]
                else:
                    self._rebuilding[sha256] = (lock, users - 1)

    def _rebuild(self, sha256: str) -> Path:
        if self.rebuilt.has(sha256):
            path = self.rebuilt.path(sha256)
            os.utime(path)  # recently used: trimmed last
            return path
        enc = self.encoding(sha256)
        if enc is None:
            if self.inner.has(sha256):  # kept as itself meanwhile
                return self.inner.require(sha256)
            raise NotFoundError(f"blob {sha256} is not in the store")
        return self.rebuild(enc)

    def rebuild(self, enc: Encoding, tee: "Callable[[memoryview], None] | None" = None) -> Path:
        """Decodes ``enc`` into the rebuilt cache, checking it yields ``enc.sha256``; raises
        IntegrityError when a part is missing or the bytes are not the blob's. ``tee`` is handed the
        bytes as they are decoded (a reader streaming them meanwhile).

        The decode's own sha256 check is the only one, and a reader waiting for the last chunk does not
        wait for the disk: the file is fsynced after, on a thread of its own (:func:`_settle`)."""
        try:
            container = self.inner.require(enc.container)
            bases = {b: self.inner.require(b) for b in enc.bases}
        except NotFoundError as err:
            raise IntegrityError(f"blob {enc.sha256} is stored as a delta whose parts are missing ({err}); "
                                 "restore them from a backup or push the file again") from None
        with open(container, "rb") as fh, self.rebuilt.checked_writer(enc.sha256) as out:
            actual = decode_file(fh, bases, out, workers=self.workers, pieces=tee, size=enc.size, sha256=enc.sha256)
            size = os.fstat(out.fileno()).st_size
            if actual != enc.sha256 or size != enc.size:
                raise IntegrityError(f"blob {enc.sha256} rebuilds from its delta as {size} bytes of sha256 "
                                     f"{actual}; restore it from a backup or push the file again")
        path = self.rebuilt.path(enc.sha256)
        threading.Thread(target=_settle, args=(path,), name=f"settle-{enc.sha256[:12]}", daemon=True).start()
        trim_lru(self.rebuilt, self.cache_bytes, keep=enc.sha256)
        return path

    def retire_copy(self, sha256: str) -> bool:
        """Takes a file's copy as itself out of the store once its delta replaces it (False when there was
        none). A local store's copy moves into the rebuilt cache, settled (it was fsynced when stored),
        so the first plain read after compaction is not a decode; an object store's is deleted."""
        if isinstance(self.inner, LocalBlobStore):
            source = self.inner.path(check_sha256(sha256))
            try:
                os.chmod(source, SETTLED)
                self.rebuilt.install(source, sha256)
            except FileNotFoundError:
                return False
            except OSError as err:  # another file system: deleted below as an object store's is
                log.debug("copy of %s not moved into the rebuilt cache: %s", sha256[:12], err)
            else:
                trim_lru(self.rebuilt, self.cache_bytes)
                return True
        return self.inner.delete(sha256) is not None

    def read_chunks(self, sha256: str, *, offset: int = 0, length: int | None = None,
                    chunk_size: int = 1 << 20) -> Iterator[bytes]:
        check_sha256(sha256)
        if self.inner.has(sha256):
            return self.inner.read_chunks(sha256, offset=offset, length=length, chunk_size=chunk_size)
        if offset == 0 and length is None and not self.rebuilt.has(sha256):
            enc = self.encoding(sha256)
            if enc is not None:
                return self._streamed_rebuild(enc, chunk_size)
        # opened now: a rebuilt copy trimmed from the cache while this streams stays readable
        return file_chunks(open(self.require(sha256), "rb", buffering=0), offset, length, chunk_size)

    def _streamed_rebuild(self, enc: Encoding, chunk_size: int) -> Iterator[bytes]:
        """A whole read of a blob not rebuilt yet: its bytes stream as they are decoded (into the cache,
        on a thread of its own), so the reader waits for no full decode first. The last chunk is held
        back until the rebuilt file's sha256 is checked: a failed check ends the stream with
        IntegrityError and no reader ever gets a complete wrong file."""
        chunks: queue.Queue = queue.Queue(maxsize=8)
        gone = threading.Event()  # the reader stopped: the decode stops too
        done = object()

        def put(item) -> None:
            while not gone.is_set():
                try:
                    return chunks.put(item, timeout=0.5)
                except queue.Full:
                    continue
            raise _ReaderGone()

        pending = bytearray()  # pieces joined into whole chunks: a small tensor is not a message of its own

        def tee(data: memoryview) -> None:
            view = memoryview(data)
            while len(pending) + len(view) >= chunk_size:
                take = chunk_size - len(pending)
                # the piece's bytes copied once, into the chunk; only a piece's tail waits in pending
                put(b"".join((pending, view[:take])))
                pending.clear()
                view = view[take:]
            pending.extend(view)

        def produce() -> None:
            try:
                with self._rebuild_lock(enc.sha256):
                    if self.rebuilt.has(enc.sha256):  # another reader rebuilt it meanwhile
                        with open(self.rebuilt.path(enc.sha256), "rb") as fh:
                            while data := fh.read(chunk_size):
                                put(data)
                    else:
                        self.rebuild(enc, tee)
                        if pending:
                            put(bytes(pending))
                put(done)
            except _ReaderGone:
                pass
            except BaseException as err:  # noqa: BLE001 - handed to the reader, which raises it
                try:
                    put(err)
                except _ReaderGone:
                    pass

        def stream() -> Iterator[bytes]:
            threading.Thread(target=produce, name=f"rebuild-{enc.sha256[:12]}", daemon=True).start()
            held = None
            try:
                while True:
                    item = chunks.get()
                    if item is done:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    if held is not None:
                        yield held
                    held = item
                if held is not None:
                    yield held
            finally:
                gone.set()

        return stream()

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """What the underlying store holds: blobs stored as themselves, and containers."""
        return self.inner.iter_blobs()

    # -- removing ------------------------------------------------------------------
    def delete(self, sha256: str) -> int | None:
        """Removes a blob however it is stored (its copy as itself, its encoding and container, its rebuilt
        copy); the caller holds the hub's blob lock and has checked nothing uses it."""
        size = self.inner.delete(sha256)
        self.rebuilt.delete(sha256)
        with self.catalog.transaction() as db:
            enc = self.catalog.drop_encoding(db, sha256)
        if enc is not None and enc.container and not self.catalog.blob_in_use(enc.container):
            stored = self.inner.delete(enc.container)
            if size is None:
                size = stored
        return size

    def drop_copy(self, sha256: str) -> int | None:
        """Removes the copy of an encoded blob stored as itself (its container holds it now)."""
        return self.inner.delete(sha256)

    # -- everything else is the underlying store's ------------------------------------
    def upload_offset(self, sha256: str) -> int:
        return self.inner.upload_offset(sha256)

    def uploads_in_progress(self) -> set[str]:
        return self.inner.uploads_in_progress()

    def open_upload(self, sha256: str, size: int, offset: int):
        return self.inner.open_upload(sha256, size, offset)

    def expire_uploads(self, max_age_s: float) -> int:
        return self.inner.expire_uploads(max_age_s)

    def writer(self):
        return self.inner.writer()


class _ReaderGone(Exception):
    """The reader of a streamed rebuild went away: the decode stops (the cache keeps nothing of it)."""
