"""Task vectors: safetensors of deltas keyed by the base's parameter names.

A delta is stored either dense under the parameter's own name, or low-rank
as two factors ``<param>.delta_A`` (r x in) and ``<param>.delta_B``
(out x r) with ``delta = delta_B @ delta_A``. Mixed files are fine: 1-D
parameters (norms, biases) are always dense.
"""

from __future__ import annotations

from pathlib import Path

from deltahub.errors import InvalidInputError
from deltahub.formats.model import BaseModelInfo, read_headers
from deltahub.formats.safetensors_header import FLOAT_DTYPES
from deltahub.formats.tensors import check_finite
from deltahub.limits import InputLimits

FORMAT = "deltahub.task_vector/1"
DEFAULT_FILE = "task_vector.safetensors"
LOW_RANK_A = ".delta_A"
LOW_RANK_B = ".delta_B"


def split_key(key: str) -> tuple[str, str]:
    """(parameter, part) where part is 'dense', 'A' or 'B'."""
    if key.endswith(LOW_RANK_A):
        return key[: -len(LOW_RANK_A)], "A"
    if key.endswith(LOW_RANK_B):
        return key[: -len(LOW_RANK_B)], "B"
    return key, "dense"


def validate_task_vector(files: dict[str, Path], base: BaseModelInfo, *, check_values: bool = True,
                         limits: InputLimits | None = None) -> dict:
    headers = read_headers(files, limits)
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    dense = 0
    seen: dict[tuple[str, str], str] = {}  # (parameter, part) -> file: one entry per parameter
    for path, header in headers.items():
        for key, t in header.tensors.items():
            param, part = split_key(key)
            if param not in base.shapes:
                raise InvalidInputError(f"{path}: tensor {key!r} names no parameter of the base model")
            if t.dtype not in FLOAT_DTYPES:
                raise InvalidInputError(f"{path}: delta {key!r} is {t.dtype}; task-vector deltas are floating point")
            other = seen.get((param, "dense")) if part != "dense" else (
                seen.get((param, "A")) or seen.get((param, "B")) or seen.get((param, "dense")))
            if other is not None or (param, part) in seen:
                raise InvalidInputError(f"{path}: parameter {param!r} has more than one delta "
                                        f"(also in {other or seen[(param, part)]}); give each parameter one")
            seen[(param, part)] = path
            bshape = base.shapes[param]
            if part == "dense":
                if t.shape != bshape:
                    raise InvalidInputError(
                        f"{path}: delta {key!r} has shape {list(t.shape)}, base parameter has {list(bshape)}"
                    )
                dense += 1
            else:
                factors.setdefault(param, {})[part] = t.shape
        if check_values:
            check_finite(files[path], header, label=path)
    for param, parts in factors.items():
        if set(parts) != {"A", "B"}:
            raise InvalidInputError(f"low-rank delta of {param!r} needs both {param}{LOW_RANK_A} and {param}{LOW_RANK_B}")
        a, b = parts["A"], parts["B"]
        out_f, in_f = base.shapes[param] if len(base.shapes[param]) == 2 else (None, None)
        if out_f is None or len(a) != 2 or len(b) != 2 or a[1] != in_f or b[0] != out_f or a[0] != b[1]:
            raise InvalidInputError(
                f"low-rank delta of {param!r}: factors {list(b)} @ {list(a)} do not make base shape {list(base.shapes[param])}"
            )
    return {"dense": dense, "low_rank": len(factors)}
