"""A merge recipe, canonicalised and hashed.

The recipe is everything that determines the result: method, resolved
parameters (defaults filled in; each a mergekit setting in normal form: a
scalar, a gradient over layers or filters), inputs by revision digest,
weights and per-input parameters, base revision, held-out data revision, output form
and compression target, and the versions of the libraries doing the math.
Its hash is the sha256 of the compact sorted-key JSON. The device is left
out on purpose: the same recipe on GPU may differ in the last bits, and is
still the same recipe (the device used is kept in the revision's metrics).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = {}
    for lib in ("deltahub", "torch", "mergekit"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "none"
    return tuple(out.items())


def library_versions() -> dict[str, str]:
    """Versions of the libraries doing the math (read once per process: metadata lookups are slow)."""
    return dict(_versions())


@dataclass(frozen=True)
class Recipe:
    method: str
    inputs: tuple[str, ...]              # namespace/name@digest, in order
    base: str                            # namespace/name@digest
    form: str                            # model | task_vector | adapter
    params: dict[str, Any] = field(default_factory=dict)
    weights: tuple[float, ...] | None = None
    input_params: tuple[dict[str, Any], ...] | None = None  # one mapping per input (mergekit's per-model ones)
    data: str = ""                       # dataset namespace/name@digest, for methods that need one
    rank: int | None = None
    energy: float | None = None
    dtype: str | None = None             # stored dtype of a model output's floating tensors; None: the base's
    versions: dict[str, str] = field(default_factory=library_versions)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["inputs"] = list(self.inputs)
        doc["weights"] = list(self.weights) if self.weights is not None else None
        if self.input_params is None:
            del doc["input_params"]  # recipes without them keep the hash they had before the field existed
        else:
            doc["input_params"] = [dict(p) for p in self.input_params]
        return doc

    def canonical(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          default=str).encode()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()
