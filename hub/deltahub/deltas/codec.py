"""Lossless encoding of a tensor's bytes against its base's: what lets a fine-tune be stored as a delta.

Pure functions, bytes in and bytes out (numpy for the bit work, zstandard for entropy coding); no file,
catalog or transport here. A frame decodes to exactly the bytes that were encoded, so a file rebuilt
from frames has the sha256 it was pushed with.

The choice, by measurement (all-MiniLM-L6-v2 fine-tuned 80 AdamW steps at lr 5e-5; bytes stored /
tensor bytes, summed over the model; zstd level 1 unless said; MB/s of compression on one core):

==========================  ========  ===========
encoding                    float32   bfloat16
==========================  ========  ===========
zstd alone                  0.919x    0.780x
byte planes + zstd          0.838x    0.692x
XOR + byte planes + zstd    0.468x    0.220x (0.216x at level 9, 150 MB/s)
diff + byte planes + zstd   0.423x    0.239x
diff + 16-bit planes + zstd 0.423x
XOR + 16-bit planes + zstd  0.513x
XOR, no planes              0.558x    0.255x
==========================  ========  ===========

* **XOR or integer difference** of the bit patterns: equal bits become zeros. For float32 the
  difference wins (0.42x vs 0.47x: a small change of a weight is a small integer step, and its
  borrow chain stays in the low bytes); for 16-bit floats XOR wins (0.22x vs 0.24x). Neither wins
  everywhere, so each tensor gets the smaller of the two.
* **Byte planes** (all first bytes, then all second bytes, ...): the sign/exponent plane of a delta is
  nearly all zeros and compresses away; without planes XOR costs 0.56x instead of 0.47x. A float32
  difference goes in 16-bit planes instead (its high half is 0x0000 or 0xffff): the same size, and
  rejoined twice as fast (3.6 GB/s against 1.8), which is most of a decode's time after zstd's. Two
  planes (16-bit items; float32 halves) are cut with a mask and a shift and rejoined with a shift and an
  or, not by strided copies: per 1 MiB, 0.54 -> 0.26 ms (16-bit items) and 0.30 -> 0.21 ms (halves,
  with the add of the base), cutting 0.46 -> 0.17 and 0.27 -> 0.15 ms.
* **Pieces**: callers encode large tensors in pieces (``filedelta.PIECE``); an input above
  ``2 * SAMPLE * SAMPLES`` bytes chooses its method on samples and is compressed once.
* **zstd level 1**: within 1-4% of level 9 at 5-10x the speed (750-930 MB/s against 76-150).
* **What a decode costs against what it saves in transfer** (same fine-tune, 1 MiB pieces, one core,
  hot cache; ms per MB): zstd takes 0.53-0.59 per MB of file (float32; bfloat16 0.50-0.56), rejoining
  planes 0.14-0.21 and the XOR/add 0.08, hashing and writing the rebuilt file (a raw download does both
  too) 1.1. Most of zstd's time goes to planes that compress but are not empty: a float32 difference's
  low halves (stored at 0.238x, 1.1-1.2 ms/MB: half of all zstd time), an XOR's sign/exponent plane
  (0.114x, 0.83-0.93) and the plane below it (0.766x, 0.7-0.9). Planes that do not compress zstd keeps as
  raw blocks itself (0.987x, 0.1 ms/MB), so storing them raw gains nothing (every threshold from 0.98x to
  0.85x of a plane: 0.529 -> 0.523 ms/MB). A pull over loopback costs client and hub 1.6-2.1 ms of CPU
  per MB sent (2 cores), so a delta saves about as much CPU in transfer as its decode costs: with the
  sender on the same host a pull with deltas runs at 0.8-1.0x of a raw one, and ahead on any link
  slower than the decoder. Tried for the slow planes and left out: lz4 (its fast mode decodes the low
  halves in 0.56 ms/MB but stores them at 0.467x, twice zstd's bytes; high compression reaches 0.290x
  but encodes at 3 MB/s), zstd at levels -3 and 3 and min_match 6-7 (decode within 10%; level 3 stores
  both halves at 0.114x instead of 0.124x for half the encode speed).
* A tensor whose delta does not pay (a new head, a resized embedding, noise) is stored as its byte
  planes compressed, or as it is when even that does not pay: a frame is never larger than its
  input by more than its header.

Frame: ``DHDF`` | method (u8) | item size (u8) | plane width (u8; 0 in frames from before it, read as
1) | a reserved byte | decoded length (u64 LE) | payload.
The payload of a compressed method is one zstd frame with its content checksum, so a corrupted frame
is detected at decode (:class:`IntegrityError`), as is a base of the wrong length.
"""

from __future__ import annotations

import struct
import threading

import numpy as np

from deltahub.errors import IntegrityError, InvalidInputError

MAGIC = b"DHDF"
HEADER = struct.Struct("<4sBBBxQ")
PLAIN, PLANES, XOR, DIFF = 0, 1, 2, 3
METHODS = {PLAIN: "plain", PLANES: "planes", XOR: "xor", DIFF: "diff"}
DEFAULT_LEVEL = 1
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
# Planes are cut and joined this many items at a time, one strided copy per plane per block: the block
# stays in cache, 3x faster than whole-array strided copies and 4x faster than a transposed copy.
_BLOCK = 1 << 16
# Inputs above this many bytes choose their method on samples (SAMPLES slices of SAMPLE bytes spread over
# the input) and compress once; smaller ones try every method. Within 0.3% of trying all (all-MiniLM-L6-v2,
# 80 steps: float32 0.417x either way, bfloat16 0.221x against 0.220x), at 1.3-1.5x the speed.
SAMPLE, SAMPLES = 16 << 10, 4


def _zstd():
    import zstandard  # imported on use: the hub needs it only once it stores deltas

    return zstandard


_local = threading.local()


def _decompressor():
    """This thread's decompressor (one is not safe to share between threads): making one per frame
    took 1.7% of a client's CPU in a pull with ``--base-dir`` (perf, float32 fine-tune)."""
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = _zstd().ZstdDecompressor()
    return d


_SCRATCH_KEPT = 4 << 20  # a larger frame (a whole tensor decoded at once) gets a buffer of its own


def _scratch(length: int) -> memoryview:
    """This thread's buffer for a frame's planes, ``length`` bytes of it: one buffer reused from frame to
    frame, where a new one per frame had the kernel fault in (and zero) fresh pages for every piece."""
    if length > _SCRATCH_KEPT:
        return memoryview(bytearray(length))
    buf = getattr(_local, "scratch", None)
    if buf is None or len(buf) < length:
        buf = _local.scratch = bytearray(length)
    return memoryview(buf)[:length]


def _decompress_into(payload, view: memoryview) -> tuple[int, bool]:
    """(bytes the zstd frame ``payload`` decoded into ``view``, whether it holds more than fit). Read on to
    the frame's end, so its content checksum is checked."""
    reader = _decompressor().stream_reader(payload, read_across_frames=False)
    got = 0
    while got < len(view) and (n := reader.readinto(view[got:])):
        got += n
    return got, bool(reader.read(1))


def planes(data: bytes | memoryview | np.ndarray, itemsize: int, width: int = 1) -> np.ndarray:
    """Planes: the first ``width`` bytes of every item, then the next ``width``, ... (as bytes; an item
    of ``width`` bytes leaves them as they are)."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if itemsize == width:
        return raw
    if itemsize == 2 * width:  # two planes: a mask and a shift, 1.8-2.7x faster than the strided copies
        words, out = raw.view(_UINT[itemsize]), np.empty(len(raw), dtype=np.uint8)
        low, high = np.split(out.view(_UINT[width]), 2)
        np.bitwise_and(words, np.iinfo(_UINT[width]).max, out=low, casting="unsafe")
        np.right_shift(words, 8 * width, out=high, casting="unsafe")
        return out
    items = raw.view(_UINT[width]).reshape(-1, itemsize // width)
    out = np.empty((itemsize // width, items.shape[0]), dtype=_UINT[width])
    for at in range(0, items.shape[0], _BLOCK):
        block = items[at:at + _BLOCK]
        for k in range(itemsize // width):
            out[k, at:at + _BLOCK] = block[:, k]
    return out.reshape(-1).view(np.uint8)


def unplanes(data: bytes | memoryview, itemsize: int, out: np.ndarray | None = None, width: int = 1) -> np.ndarray:
    """The items whose planes (of ``width`` bytes) ``data`` holds, written into ``out`` (flat uint8) when
    given."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if out is None:
        out = np.empty(len(raw), dtype=np.uint8)
    if itemsize == width:
        out[:] = raw
        return out
    if itemsize == 2 * width:  # two planes: high << bits | low, 1.5-2x faster than the strided copies
        low, high = np.split(raw.view(_UINT[width]), 2)
        words = out.view(_UINT[itemsize])
        words[:] = high
        words <<= 8 * width
        words |= low
        return out
    n = itemsize // width
    rows, items = raw.view(_UINT[width]).reshape(n, -1), out.view(_UINT[width]).reshape(-1, n)
    for at in range(0, rows.shape[1], _BLOCK):
        block = items[at:at + _BLOCK]
        for k in range(n):
            block[:, k] = rows[k, at:at + _BLOCK]
    return out


def _words(data, itemsize: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).view(_UINT[itemsize])


def _check(data, itemsize: int, base) -> None:
    if itemsize not in _UINT:
        raise InvalidInputError(f"item size {itemsize} is not 1, 2, 4 or 8 bytes")
    if len(data) % itemsize:
        raise InvalidInputError(f"{len(data)} bytes are not a whole number of {itemsize}-byte items")
    if base is not None and len(base) != len(data):
        raise InvalidInputError(f"the base holds {len(base)} bytes, the tensor {len(data)}: no delta between them")


def _frame(method: int, itemsize: int, length: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, method, itemsize, _width(method, itemsize), length) + payload


def _width(method: int, itemsize: int) -> int:
    """Bytes per plane element: 2 for float32 differences (a small difference fills the low half and
    leaves the high half 0x0000 or 0xffff: halves compress as well as byte planes, 0.4235x either way,
    and rejoin twice as fast), else single bytes (halves cost XOR 0.51x instead of 0.47x)."""
    return 2 if method == DIFF and itemsize == 4 else 1


def _shaped(method: int, data, itemsize: int, base) -> np.ndarray:
    """What a method compresses: the planes of the data, or of its XOR or difference with the base."""
    if method == PLANES:
        return planes(data, itemsize)
    words, ref = _words(data, itemsize), _words(base, itemsize)
    return planes(words ^ ref if method == XOR else words - ref, itemsize, _width(method, itemsize))


def _sample(data, itemsize: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    step = (len(raw) // SAMPLES) // itemsize * itemsize
    return np.concatenate([raw[i * step:i * step + SAMPLE] for i in range(SAMPLES)])


def encode(data: bytes | memoryview, itemsize: int, base: bytes | memoryview | None = None, *,
           level: int = DEFAULT_LEVEL) -> bytes:
    """A frame of ``data`` (a tensor's raw bytes, items of ``itemsize``), against ``base`` when given
    (the base's tensor, same length): the smallest of the methods above."""
    _check(data, itemsize, base)
    compressor = _zstd().ZstdCompressor(level=level, write_checksum=True)
    methods = [PLANES] + ([XOR, DIFF] if base is not None else [])
    if len(methods) > 1 and len(data) > 2 * SAMPLE * SAMPLES:
        part, ref = _sample(data, itemsize), _sample(base, itemsize)
        methods = [min(methods, key=lambda m: len(compressor.compress(_shaped(m, part, itemsize, ref))))]
    best: tuple[int, bytes | memoryview] = (PLAIN, data)
    for method in methods:
        payload = compressor.compress(_shaped(method, data, itemsize, base))
        if len(payload) < len(best[1]):
            best = (method, payload)
    return _frame(best[0], itemsize, len(data), bytes(best[1]))


def describe(frame: bytes | memoryview) -> tuple[str, int, int]:
    """(method name, item size, decoded length) of a frame."""
    method, itemsize, _, length = _header(frame)
    return METHODS[method], itemsize, length


def needs_base(frame: bytes | memoryview) -> bool:
    return _header(frame)[0] in (XOR, DIFF)


def _header(frame) -> tuple[int, int, int, int]:
    """(method, item size, plane width, decoded length) of a frame."""
    if len(frame) < HEADER.size:
        raise IntegrityError(f"delta frame of {len(frame)} bytes is shorter than its header")
    magic, method, itemsize, width, length = HEADER.unpack_from(frame)
    width = width or 1  # frames written before planes had a width
    if magic != MAGIC or method not in METHODS or itemsize not in _UINT or width not in _UINT or itemsize % width:
        raise IntegrityError("not a delta frame (bad magic, method, item size or plane width)")
    if length % itemsize:
        raise IntegrityError(f"delta frame declares {length} bytes, not a whole number of {itemsize}-byte items")
    return method, itemsize, width, length


def decode(frame: bytes | memoryview, base: bytes | memoryview | None = None) -> memoryview:
    """The bytes ``frame`` encodes (a flat byte view); ``base`` is the same base it was encoded against
    (when it needs one)."""
    out = np.empty(_header(frame)[3], dtype=np.uint8)
    decode_into(frame, out, base)
    return memoryview(out)


def decode_into(frame: bytes | memoryview, out: np.ndarray, base: bytes | memoryview | None = None) -> None:
    """Decodes ``frame`` into ``out`` (flat, writable uint8 of the frame's decoded length): a file's own
    pages when it is rebuilt through a memory map, so the bytes are never copied again."""
    method, itemsize, width, length = _header(frame)
    if out.size != length:
        raise InvalidInputError(f"a frame of {length} bytes is decoded into {out.size}")
    payload = memoryview(frame)[HEADER.size:]
    if method == PLAIN:
        if len(payload) != length:
            raise IntegrityError(f"delta frame holds {len(payload)} bytes, not the {length} it declares")
        out[:] = np.frombuffer(payload, dtype=np.uint8)
        return
    if method in (XOR, DIFF):
        if base is None:
            raise InvalidInputError(f"a {METHODS[method]} frame decodes only against its base tensor")
        if len(base) != length:
            raise IntegrityError(f"the base holds {len(base)} bytes; the frame was encoded against {length}")
    zstandard = _zstd()
    try:
        # a frame may come from a client: one declaring more than its header's length is refused
        # before anything is allocated for it
        if zstandard.frame_content_size(payload) not in (length, -1):
            raise IntegrityError(f"delta frame's payload declares another length than its {length} bytes")
        shaped = _scratch(length)
        got, extra = _decompress_into(payload, shaped)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"delta frame is corrupt: {err}") from None
    if got != length or extra:
        raise IntegrityError(f"delta frame decodes to {'more than ' if extra else ''}{got} bytes, not the {length} "
                             "it declares")
    unplanes(shaped, itemsize, out, width)
    if method != PLANES:
        delta, ref = out.view(_UINT[itemsize]), _words(base, itemsize)
        (np.bitwise_xor if method == XOR else np.add)(delta, ref, out=delta)
