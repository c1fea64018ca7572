"""Writes a safetensors file one tensor at a time.

``safetensors.torch.save_file`` needs every tensor in memory at once; the
merge executor and task-vector builder produce one parameter at a time and
must not hold a model. :class:`SafetensorsWriter` spools tensor bytes as they
come and writes the header, known only at the end, before them when
finishing. When every name, dtype and shape is known up front (a merged
model has the base's layout) :class:`PlannedSafetensorsWriter` writes the
header first and the tensors straight to the output: one pass, no spool.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import BinaryIO

import torch

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


DTYPE_SIZES = {name: torch.empty((), dtype=dt).element_size() for dt, name in DTYPE_NAMES.items()}
TORCH_DTYPES = {name: dt for dt, name in DTYPE_NAMES.items()}


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (a view of its storage)."""
    t = tensor.detach().contiguous().cpu()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def encode_header(entries: dict[str, dict], metadata: dict[str, str] | None) -> bytes:
    """The 8-byte length and the JSON header, padded so data starts 8-byte aligned as safetensors does."""
    doc = dict(entries)
    if metadata:
        doc["__metadata__"] = dict(metadata)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


class SafetensorsWriter:
    def __init__(self, *, metadata: dict[str, str] | None = None, spool_dir: str | None = None) -> None:
        self._header: dict[str, dict] = {}
        self._metadata = dict(metadata or {})
        self._spool = tempfile.TemporaryFile(dir=spool_dir)
        self._offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._header:
            raise ValueError(f"tensor {name!r} written twice")
        data = _tensor_bytes(tensor)
        self._spool.write(data)
        self._header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [self._offset, self._offset + len(data)],
        }
        self._offset += len(data)

    def finish(self, out: BinaryIO) -> None:
        out.write(encode_header(self._header, self._metadata))
        self._spool.seek(0)
        shutil.copyfileobj(self._spool, out, 8 << 20)
        self._spool.close()


class PlannedSafetensorsWriter:
    """Writes a safetensors file whose layout is known before the first tensor.

    Args:
        out: where the bytes go (a blob writer).
        layout: (name, dtype name, shape) in the order the tensors will come.
        metadata: the header's ``__metadata__``.
    """

    def __init__(self, out: BinaryIO, layout: list[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        self._out = out
        self._order = [name for name, _, _ in layout]
        entries, offset = {}, 0
        for name, dtype, shape in layout:
            n = DTYPE_SIZES[dtype] * _numel(shape)
            entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        self._entries = entries
        self._next = 0
        out.write(encode_header(entries, metadata))

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing"
            raise ValueError(f"tensor {name!r} written out of plan order; expected {expected}")
        entry = self._entries[name]
        if DTYPE_NAMES[tensor.dtype] != entry["dtype"] or list(tensor.shape) != entry["shape"]:
            raise ValueError(
                f"tensor {name!r} is {DTYPE_NAMES[tensor.dtype]}{list(tensor.shape)}, "
                f"planned {entry['dtype']}{entry['shape']}"
            )
        self._out.write(_tensor_bytes(tensor))
        self._next += 1

    def finish(self) -> None:
        if self._next != len(self._order):
            raise ValueError(f"{len(self._order) - self._next} planned tensors were never written")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
