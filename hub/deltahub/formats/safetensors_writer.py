"""Writes a safetensors file one tensor at a time.

``safetensors.torch.save_file`` needs every tensor in memory at once; the
merge executor and task-vector builder produce one parameter at a time and
must not hold a model. Tensor bytes go to a spool file as they come; the
header, known only at the end, is written before them when finishing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import BinaryIO

import torch

_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


class SafetensorsWriter:
    def __init__(self, *, metadata: dict[str, str] | None = None, spool_dir: str | None = None) -> None:
        self._header: dict[str, dict] = {}
        self._metadata = dict(metadata or {})
        self._spool = tempfile.TemporaryFile(dir=spool_dir)
        self._offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._header:
            raise ValueError(f"tensor {name!r} written twice")
        t = tensor.detach().contiguous().cpu()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        self._spool.write(data)
        self._header[name] = {
            "dtype": _DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [self._offset, self._offset + len(data)],
        }
        self._offset += len(data)

    def finish(self, out: BinaryIO) -> None:
        doc = dict(self._header)
        if self._metadata:
            doc["__metadata__"] = self._metadata
        raw = json.dumps(doc, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data section 8-byte aligned, as safetensors does
        out.write(len(raw).to_bytes(8, "little"))
        out.write(raw)
        self._spool.seek(0)
        shutil.copyfileobj(self._spool, out, 8 << 20)
        self._spool.close()
