"""Reading tensors from safetensors files, and checks on their values."""

from __future__ import annotations

import math
import os
import threading
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open


from deltahub.errors import InvalidInputError
from deltahub.formats.safetensors_header import FLOAT_DTYPES, SafetensorsHeader

# Elements per slice when scanning: bounds memory by a slice, not by the largest tensor.
_SCAN_ELEMENTS = 1 << 24


def check_finite(path: str | os.PathLike, header: SafetensorsHeader, *, label: str) -> None:
    """Raise if any floating-point tensor holds NaN or Inf."""
    floats = [name for name, t in header.tensors.items() if t.dtype in FLOAT_DTYPES and t.nbytes]
    if not floats:
        return
    with safe_open(os.fspath(path), framework="pt") as fh:
        for name in floats:
            shape = header.tensors[name].shape
            sl = fh.get_slice(name)
            rows = shape[0] if shape else 1
            per_row = math.prod(shape[1:]) or 1
            step = max(1, _SCAN_ELEMENTS // per_row)
            for start in range(0, rows, step):
                part = sl[start : start + step] if shape else fh.get_tensor(name)
                if not torch.isfinite(part).all():
                    bad = "NaN" if torch.isnan(part).any() else "Inf"
                    raise InvalidInputError(f"{label}: tensor {name!r} contains {bad} values")


class TensorFiles:
    """Memory-mapped safetensors handles, opened once each and closed with ``stack``.

    Safe to share between threads (the merge executor reads from its workers):
    opening is locked, reading an open handle needs no lock.
    """

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._handles: dict[str, object] = {}
        self._lock = threading.Lock()

    def _handle(self, path: Path):
        p = str(path)
        handle = self._handles.get(p)
        if handle is None:
            with self._lock:
                handle = self._handles.get(p)
                if handle is None:
                    handle = self._handles[p] = self._stack.enter_context(safe_open(p, framework="pt"))
        return handle

    def get(self, path: Path, key: str) -> torch.Tensor:
        return self._handle(path).get_tensor(key)

    def numel(self, path: Path, key: str) -> int:
        """Elements of a tensor, from the header (nothing read)."""
        return math.prod(self._handle(path).get_slice(key).get_shape())
