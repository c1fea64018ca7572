"""A safetensors file encoded against its base's files, and rebuilt from that byte for byte.

The file is cut into regions that cover it whole: its header, then each tensor's bytes in file order
(and any bytes between them). A tensor whose name, dtype and shape a base file holds is encoded
against that tensor (:mod:`deltahub.deltas.codec` picks XOR or difference per tensor); every other
region is compressed on its own. Decoding writes the regions back in order, so the rebuilt file has
the sha256 it had; :func:`decode_file` checks it when given.

Tensors are read through memory maps and encoded on a pool of threads (zstd and numpy release the
GIL), a bounded window at a time, so memory stays near ``window`` tensors whatever the file's size.

Container: ``DHDL`` | version (u32 LE) | frames | index (JSON) | index length (u64 LE). Frames are
written as they are made and the index last, so encoding holds no more than its window in memory.
The index names each base file by sha256, so whoever stores an encoded file knows which blobs it
depends on.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from deltahub.deltas import codec
from deltahub.errors import IntegrityError
from deltahub.formats.safetensors_header import DTYPE_SIZES, read_header

MAGIC = b"DHDL"
VERSION = 1
PREFIX = struct.Struct("<4sI")
TRAILER = struct.Struct("<Q")
PAYS = 0.9
MAX_INDEX_BYTES = 64 << 20  # a client may send the container: its index is parsed only below this


@dataclass(frozen=True)
class EncodeStats:
    file_bytes: int
    stored_bytes: int
    tensors: int
    against_base: int  # tensors encoded as deltas
    depends_on: tuple[str, ...] = ()  # sha256 of the base files the container needs

    @property
    def pays(self) -> bool:
        """Whether the container is worth keeping (or sending) instead of the file: it needs a base and
        stores at most ``PAYS`` of the file's bytes (a rebuild costs a decode, so near-misses are not)."""
        return bool(self.depends_on) and self.stored_bytes <= PAYS * self.file_bytes


class _Maps:
    """Files mapped read-only, and the views cut from them: on exit the views are released, then the
    maps closed (a map cannot close while a view of it is alive)."""

    def __enter__(self) -> "_Maps":
        self._stack = ExitStack()
        self._views: list[memoryview] = []
        return self

    def open(self, path: Path) -> memoryview:
        fh = self._stack.enter_context(open(path, "rb"))
        if os.fstat(fh.fileno()).st_size == 0:
            return memoryview(b"")
        mapped = self._stack.enter_context(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        view = memoryview(mapped)
        self._views.append(view)
        return view

    def cut(self, view: memoryview, start: int, end: int) -> memoryview:
        part = view[start:end]
        self._views.append(part)
        return part

    def __exit__(self, *exc) -> None:
        for view in reversed(self._views):
            view.release()
        self._stack.close()


def encode_file(path: str | os.PathLike, bases: dict[str, str | os.PathLike], out: BinaryIO, *,
                level: int = codec.DEFAULT_LEVEL, workers: int | None = None, window: int = 16) -> EncodeStats:
    """Writes the container of ``path`` to ``out``; ``bases`` maps sha256 -> a base safetensors file."""
    path = Path(path)
    header = read_header(path)
    with _Maps() as maps:
        data = maps.open(path)
        base_tensors = {}
        for sha, base_path in bases.items():  # the first base file holding a name wins
            base_header = read_header(base_path)
            base_map = maps.open(Path(base_path))
            for name, info in base_header.tensors.items():
                base_tensors.setdefault(name, (sha, info, base_map, base_header.data_offset))
        regions = [(0, header.data_offset, 1, None)]  # (start, end, item size, (base sha, name, view) or None)
        at = header.data_offset
        for name, info in sorted(header.tensors.items(), key=lambda kv: kv[1].begin):
            start, end = header.data_offset + info.begin, header.data_offset + info.end
            if start > at:
                regions.append((at, start, 1, None))
            ref = None
            match = base_tensors.get(name)
            if match is not None:
                sha, base_info, base_map, base_offset = match
                if (base_info.dtype, base_info.shape) == (info.dtype, info.shape):
                    ref = (sha, name, maps.cut(base_map, base_offset + base_info.begin, base_offset + base_info.end))
            regions.append((start, end, DTYPE_SIZES[info.dtype], ref))
            at = max(at, end)
        if at < len(data):
            regions.append((at, len(data), 1, None))

        def one(region) -> bytes:
            start, end, size, ref = region
            with data[start:end] as view:
                return codec.encode(view, size, ref[2] if ref else None, level=level)

        index = {"file_size": len(data), "sha256": "", "bases": sorted(bases), "regions": []}
        out.write(PREFIX.pack(MAGIC, VERSION))
        stored = PREFIX.size
        digest = hashlib.sha256()
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for (start, end, _, ref), frame in _in_order(pool, one, regions, window):
                with data[start:end] as view:
                    digest.update(view)
                index["regions"].append({"start": start, "length": end - start, "frame": len(frame),
                                         "base": [ref[0], ref[1]] if ref and codec.needs_base(frame) else None})
                out.write(frame)
                stored += len(frame)
        index["sha256"] = digest.hexdigest()
    raw_index = json.dumps(index, separators=(",", ":")).encode()
    out.write(raw_index)
    out.write(TRAILER.pack(len(raw_index)))
    stored += len(raw_index) + TRAILER.size
    against = sum(1 for r in index["regions"] if r["base"])
    used = tuple(sorted({r["base"][0] for r in index["regions"] if r["base"]}))
    return EncodeStats(index["file_size"], stored, len(header.tensors), against, used)


def _in_order(pool: ThreadPoolExecutor, fn, items, window: int):
    """(item, fn(item)) in the items' order, with up to ``window`` computed ahead on the pool: the caller
    writes one result while the next ones are being computed, and memory stays near ``window`` results."""
    ahead: deque = deque()
    for item in items:
        ahead.append((item, pool.submit(fn, item)))
        if len(ahead) >= window:
            first, future = ahead.popleft()
            yield first, future.result()
    while ahead:
        first, future = ahead.popleft()
        yield first, future.result()


def read_index(container: BinaryIO) -> dict:
    """The container's index; ``container`` is left where its frames start.

    Read from the end first (trailer, index), the prefix last: a container read over the network
    (the client's RemoteBlob) then goes on from the prefix straight into its frames, in one stream."""
    end = container.seek(0, os.SEEK_END)
    if end < PREFIX.size + TRAILER.size:
        raise IntegrityError("not an encoded file: shorter than its prefix and trailer")
    container.seek(end - TRAILER.size)
    (n,) = TRAILER.unpack(container.read(TRAILER.size))
    if n > end - PREFIX.size - TRAILER.size:
        raise IntegrityError("not an encoded file: its index length is past its size")
    if n > MAX_INDEX_BYTES:
        raise IntegrityError(f"encoded file's index is {n} bytes; at most {MAX_INDEX_BYTES} are read")
    container.seek(end - TRAILER.size - n)
    raw = container.read(n)
    container.seek(0)
    magic, version = PREFIX.unpack(container.read(PREFIX.size).ljust(PREFIX.size, b"\0"))
    if magic != MAGIC or version != VERSION:
        raise IntegrityError(f"not an encoded file of version {VERSION} (magic {magic!r}, version {version})")
    try:
        index = json.loads(raw)
    except ValueError as err:
        raise IntegrityError(f"encoded file's index is corrupt: {err}") from None
    _check_index(index, end - TRAILER.size - n - PREFIX.size)
    return index


def _check_index(index, frame_bytes: int) -> None:
    """The index is read from bytes a client may have sent: its regions must tile the file it declares,
    and its frames fit in the container, before anything is decoded."""
    try:
        at = frames = 0
        for region in index["regions"]:
            if region["start"] != at or int(region["length"]) < 0 or int(region["frame"]) < 0:
                raise ValueError("regions do not tile the file")
            base = region["base"]
            if base is not None and not (isinstance(base, list) and len(base) == 2
                                         and all(isinstance(b, str) for b in base)):
                raise ValueError("a region's base is not [sha256, tensor name]")
            at += region["length"]
            frames += region["frame"]
        if at != index["file_size"] or frames != frame_bytes or not isinstance(index["sha256"], str):
            raise ValueError("regions do not add up to the file and frames declared")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise IntegrityError(f"encoded file's index is malformed: {err}") from None


def depends_on(container: BinaryIO) -> list[str]:
    """sha256 of the base files an encoded file needs to be rebuilt."""
    index = read_index(container)
    return sorted({r["base"][0] for r in index["regions"] if r["base"]})


def _frame_of(frame: bytes, region: dict) -> bytes:
    if codec.describe(frame)[2] != region["length"]:
        raise IntegrityError("a frame of the encoded file declares another length than its region")
    return frame


def decode_file(container: BinaryIO, bases: dict[str, str | os.PathLike], out: BinaryIO, *,
                workers: int | None = None, window: int = 16) -> str:
    """Rebuilds the file into ``out`` and returns its sha256, checked against the one recorded.

    Frames are decoded on a pool of threads, ``window`` at a time, and written in order."""
    index = read_index(container)
    digest = hashlib.sha256()
    with _Maps() as maps:
        base_views = {}
        for sha in {r["base"][0] for r in index["regions"] if r["base"]}:
            if sha not in bases:
                raise IntegrityError(f"the encoded file needs base file {sha}, which was not given")
            base_path = Path(bases[sha])
            base_views[sha] = (read_header(base_path), maps.open(base_path))

        def base_of(region) -> memoryview | None:
            if not region["base"]:
                return None
            sha, name = region["base"]
            header, view = base_views[sha]
            info = header.tensors.get(name)
            if info is None:
                raise IntegrityError(f"base file {sha} holds no tensor {name!r}")
            return maps.cut(view, header.data_offset + info.begin, header.data_offset + info.end)

        written = 0
        # frames are read in order as they are submitted (the container is read once, front to back)
        jobs = ((r, _frame_of(container.read(r["frame"]), r)) for r in index["regions"])
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for (region, _), data in _in_order(pool, lambda job: codec.decode(job[1], base_of(job[0])), jobs,
                                               window):
                if len(data) != region["length"] or region["start"] != written:
                    raise IntegrityError("encoded file's regions do not tile the file")
                out.write(data)
                digest.update(data)
                written += len(data)
    if written != index["file_size"] or digest.hexdigest() != index["sha256"]:
        raise IntegrityError(f"rebuilt file hashes to {digest.hexdigest()}, not the {index['sha256']} it was "
                             "encoded from")
    return digest.hexdigest()
