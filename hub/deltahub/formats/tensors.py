"""Reading tensors from safetensors files, and checks on their values."""

from __future__ import annotations

import math
import mmap
import os
import threading
from contextlib import ExitStack
from pathlib import Path

from safetensors import safe_open

from deltahub.errors import InvalidInputError
from deltahub.formats.safetensors_header import FLOAT_DTYPES, SafetensorsHeader

# Elements per slice when scanning exactly: bounds memory by a slice, not by the largest tensor.
_SCAN_ELEMENTS = 1 << 24


def _fast_sum(dtype: str):
    """(view dtype, accumulator) torch can sum straight from the file's bytes without overflow (float16's
    largest value times any tensor size stays far inside float32), or None. torch is imported here, not
    at module level: the formats package is imported by clients that never check tensors."""
    import torch

    return {"F16": (torch.float16, torch.float32), "BF16": (torch.bfloat16, torch.float32),
            "F32": (torch.float32, torch.float32), "F64": (torch.float64, torch.float64)}.get(dtype)


def check_finite(path: str | os.PathLike, header: SafetensorsHeader, *, label: str) -> None:
    """Raise if any floating-point tensor holds NaN or Inf.

    One pass per tensor: the sum of a tensor is finite only if every element is (NaN and Inf propagate
    through a sum), so a finite sum clears the tensor with no temporary as large as it is. A sum that is
    not finite may also be a legitimate overflow (large bfloat16/float32 values), so such a tensor, and
    any the fast path cannot view in place, is scanned element by element to decide and to name the fault.
    """
    floats = [name for name, t in header.tensors.items() if t.dtype in FLOAT_DTYPES and t.nbytes]
    if not floats:
        return
    suspects = []
    with open(path, "rb") as fh:
        # copy-on-write mapping: torch gets a writable buffer without a copy; nothing is written back
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        try:
            for name in floats:
                if not _sums_finite(mapped, header, name):
                    suspects.append(name)
        finally:
            mapped.close()
    if suspects:
        _scan_exactly(path, header, suspects, label=label)


def _sums_finite(mapped: mmap.mmap, header: SafetensorsHeader, name: str) -> bool:
    import torch

    info = header.tensors[name]
    fast = _fast_sum(info.dtype)
    start = header.data_offset + info.begin
    if fast is None or start % fast[0].itemsize:
        return False  # no in-place view: leave it to the exact scan
    view = torch.frombuffer(mapped, dtype=fast[0], count=info.nbytes // fast[0].itemsize, offset=start)
    try:
        return bool(torch.isfinite(view.sum(dtype=fast[1])))
    finally:
        del view  # the mapping closes only once no tensor views it


def _scan_exactly(path: str | os.PathLike, header: SafetensorsHeader, names: list[str], *, label: str) -> None:
    import torch

    with safe_open(os.fspath(path), framework="pt") as fh:
        for name in names:
            shape = header.tensors[name].shape
            sl = fh.get_slice(name)
            rows = shape[0] if shape else 1
            per_row = math.prod(shape[1:]) or 1
            step = max(1, _SCAN_ELEMENTS // per_row)
            for start in range(0, rows, step):
                part = sl[start : start + step] if shape else fh.get_tensor(name)
                if part.element_size() == 1:  # float8: torch has no isfinite for it; widening is exact
                    part = part.to(torch.float16)
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
