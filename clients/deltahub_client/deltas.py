"""Files sent and received as deltas against a base model the client holds (``--base-dir``).

A push encodes each file the hub lacks against the base files the hub says it stores, and sends the
container instead when it pays; a pull downloads the containers the hub stores against base files the
client holds, and rebuilds each file here, checked against its sha256.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from deltahub.artifacts import FileEntry
from deltahub.deltas.filedelta import decode_file, encode_file, within_growth
from deltahub.errors import IntegrityError
from deltahub.limits import DeltaLimits
from deltahub.storage.hashing import HashingWriter, sha256_file
from deltahub_client.files import list_folder

SUFFIX = ".safetensors"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Held:
    """The safetensors files of a local base model, by sha256. ``claimed``: those whose sha256 was taken
    from the hub's manifest of the base (same path and size) instead of hashing them; a file rebuilt
    against one is still checked by its own sha256, and downloaded whole when that fails."""

    files: dict[str, Path]
    claimed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.files)


def held_files(base_dir: str | os.PathLike, manifest: Iterable[FileEntry] = ()) -> Held:
    """The safetensors files of the base model in ``base_dir``.

    A Hugging Face cache snapshot names each file's blob by its sha256 (``../../blobs/<sha256>``), which is
    taken as it is, as huggingface_hub does. A file at the path and of the size of one in ``manifest`` (the
    hub's record of the base revision) is claimed to be it, unhashed: hashing a base costs a pull as much
    as writing the file it rebuilds. Other files are hashed.
    """
    known = {f.path: f for f in manifest}
    files, claimed = {}, set()
    for rel, path in list_folder(base_dir).items():
        if not rel.endswith(SUFFIX):
            continue
        target = Path(os.path.realpath(path))
        entry = known.get(rel)
        if path.is_symlink() and target.parent.name == "blobs" and _SHA256.match(target.name):
            sha = target.name
        elif entry is not None and entry.size == target.stat().st_size:
            sha = entry.sha256
            claimed.add(sha)
        else:
            sha = sha256_file(path)
        files[sha] = path
    return Held(files, frozenset(claimed))


@dataclass(frozen=True)
class Container:
    path: Path
    sha256: str
    size: int


def encode_for_push(path: Path, bases: dict[str, Path], folder: Path) -> Container | None:
    """The container of ``path`` against ``bases``, written into ``folder``; None when it does not pay or
    would rebuild to more than a hub's default ``--max-delta-growth`` allows."""
    fd, name = tempfile.mkstemp(dir=folder, suffix=".dhdl")
    with os.fdopen(fd, "wb") as fh:
        out = HashingWriter(fh)  # the container's sha256 as it is written, not read back
        stats = encode_file(path, bases, out)
    base_bytes = sum(os.path.getsize(bases[sha]) for sha in stats.depends_on)
    if not stats.pays or not within_growth(stats.file_bytes, base_bytes, DeltaLimits().max_delta_growth):
        os.unlink(name)  # not worth it, or more than a hub takes as a delta by default: sent as it is
        return None
    return Container(Path(name), out.hexdigest(), stats.stored_bytes)


class RemoteBlob(io.RawIOBase):
    """A blob on the hub read as a file: a read away from the open stream opens a download from there
    (``open_at(offset, length)`` -> chunks, with ``close()``), so a container's index is read from its
    end and its frames are decoded as they arrive, while the rest is still on the wire.

    A download ends where an earlier one began: the frames' stream stops at the index already read,
    so no byte crosses the wire twice and no stream is cut short. A read within the last ``TAIL`` bytes,
    off the open stream, fetches all of them at once (a container's trailer and, nearly always, its
    whole index: one download where there were two, each a round trip to the hub's permission check)."""

    TAIL = 256 << 10

    def __init__(self, size: int, open_at: Callable[[int, int], Iterator[bytes]], received: Callable[[int], None]):
        self._size = size
        self._open_at = open_at
        self._received = received
        self._pos = 0
        self._stream: Iterator[bytes] | None = None
        self._stream_pos = -1  # where the open stream's next byte is
        self._stream_end = -1  # where it stops
        self._starts: list[int] = []  # where earlier downloads began
        self._buf = memoryview(b"")
        self._tail: memoryview | None = None  # the blob's last bytes, from _tail_at, once fetched
        self._tail_at = size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence] + offset
        return self._pos

    def _open(self, at: int) -> None:
        self._close_stream()
        end = min((s for s in self._starts if s > at), default=self._size)
        self._starts.append(at)
        self._stream, self._stream_pos, self._stream_end, self._buf = (self._open_at(at, end - at), at, end,
                                                                       memoryview(b""))

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        if n <= 0:
            return b""
        on_stream = self._stream is not None and self._stream_pos - len(self._buf) == self._pos
        if self._tail is None and not on_stream and self._pos >= self._size - self.TAIL:
            self._fetch_tail()
        head = self._from_stream(min(n, self._tail_at - self._pos)) if self._pos < self._tail_at else b""
        rest, at = n - len(head), self._pos - self._tail_at
        if not rest:
            return head
        self._pos += rest
        return head + self._tail[at:at + rest].tobytes()

    def _fetch_tail(self) -> None:
        at = max(0, self._size - self.TAIL)
        self._starts.append(at)
        stream, parts = self._open_at(at, self._size - at), []
        if at and self._stream is None:  # the frames come next, from the start: asked for now, so the
            self._open(0)                # two round trips overlap (the stream ends where the tail begins)
        try:
            for chunk in stream:
                self._received(len(chunk))
                parts.append(chunk)
        finally:
            stream.close()
        tail = b"".join(parts)
        if len(tail) != self._size - at:
            raise IntegrityError(f"the hub sent {len(tail)} bytes of a delta's last {self._size - at}")
        self._tail, self._tail_at = memoryview(tail), at

    def _from_stream(self, n: int) -> bytes:
        if self._stream is None or self._stream_pos - len(self._buf) != self._pos:
            self._open(self._pos)
        parts, want = [], n
        while want:
            if not self._buf:
                if self._stream_pos == self._stream_end:  # this download is done: the next goes on from here
                    self._open(self._stream_pos)
                chunk = next(self._stream, b"")
                if not chunk:
                    raise IntegrityError(f"the hub's stream of a delta ended {want} bytes early")
                self._received(len(chunk))
                self._buf = memoryview(chunk)
                self._stream_pos += len(chunk)
            take = self._buf[:want]
            parts.append(take)
            self._buf = self._buf[len(take):]
            want -= len(take)
        self._pos += n
        return b"".join(parts)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()  # a download left behind is cancelled
        self._stream = None

    def close(self) -> None:
        self._close_stream()
        super().close()


def rebuild(container: BinaryIO, bases: dict[str, Path], target: Path, entry: FileEntry, mode: int) -> None:
    """Decodes ``container`` into ``target`` (through a temp file), checking it is ``entry``'s file: the
    container's index must declare its size and sha256 before anything is decoded (a hub sending another
    file's delta, or one declaring terabytes, gets nothing written), and the rebuilt bytes must hash to it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, container as fh:
            try:
                actual = decode_file(fh, bases, out, size=entry.size, sha256=entry.sha256)
            except IntegrityError as err:
                raise IntegrityError(f"{target.name}: {err}; pull without --base-dir to download it whole") from None
        if actual != entry.sha256:
            raise IntegrityError(f"{target.name}: rebuilt from its delta, hashes to {actual}, expected {entry.sha256}")
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
