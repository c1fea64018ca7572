"""Reads and checks a safetensors header without trusting it.

The safetensors library would reject a bad file too, but with messages a
user cannot act on; here every way a header can be wrong gets a sentence
naming the file and the tensor.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

from deltahub import jsondoc
from deltahub.errors import InvalidInputError, LimitExceededError

# bytes per element; sub-byte and exotic types are refused rather than guessed
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
FLOAT_DTYPES = {"F8_E5M2", "F8_E4M3", "F16", "BF16", "F32", "F64"}
MAX_HEADER_BYTES = 100 << 20


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_offset: int  # where tensor data starts in the file


def read_header(path: str | os.PathLike, *, label: str | None = None,
                max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    label = label or os.fspath(path)
    file_size = os.path.getsize(path)
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise InvalidInputError(f"{label}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", prefix)
        if n > file_size - 8:
            raise InvalidInputError(
                f"{label}: corrupt or truncated safetensors header (declares {n} header bytes, file has {file_size - 8})"
            )
        if n > max_header_bytes:
            raise LimitExceededError(
                f"{label}: safetensors header of {n} bytes exceeds the limit of {max_header_bytes} bytes "
                "(--max-safetensors-header-bytes)"
            )
        raw = fh.read(n)
    return parse_header(raw, file_size - 8 - n, label=label, data_offset=8 + n)


def parse_header(raw: bytes, data_size: int, *, label: str, data_offset: int = 0) -> SafetensorsHeader:
    # as strict as the safetensors library: UTF-8 JSON object from the first byte, unique names
    if not raw.startswith(b"{"):
        raise InvalidInputError(f"{label}: corrupt safetensors header (it must start with '{{')")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInputError(f"{label}: corrupt safetensors header (not UTF-8: {err})") from None
    doc = jsondoc.loads_object(text, f"{label}: safetensors header")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInputError(f"{label}: safetensors __metadata__ must map strings to strings")
    tensors: dict[str, TensorInfo] = {}
    for name, info in doc.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise InvalidInputError(f"{label}: tensor {name!r} has a malformed header entry")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise InvalidInputError(f"{label}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInputError(f"{label}: tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise InvalidInputError(f"{label}: tensor {name!r} has invalid data_offsets {offsets!r}")
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != expected:
            raise InvalidInputError(
                f"{label}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes but {dtype}{shape} needs {expected}"
            )
        tensors[name] = TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])
    # Tensors must tile the data section exactly: no gaps, no overlap, nothing past the end.
    cursor = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin != cursor:
            raise InvalidInputError(f"{label}: tensor {name!r} starts at byte {t.begin}, expected {cursor} (gap or overlap)")
        cursor = t.end
    if cursor != data_size:
        if cursor > data_size:
            raise InvalidInputError(
                f"{label}: header declares {cursor} bytes of tensor data but the file holds only {data_size} (truncated)"
            )
        raise InvalidInputError(f"{label}: {data_size - cursor} bytes trail the last tensor")
    return SafetensorsHeader(tensors, metadata, data_offset)
