"""HF model folders: config, safetensors weights (one file or shards + index), tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deltahub import jsondoc
from deltahub.errors import InvalidInputError
from deltahub.formats.safetensors_header import SafetensorsHeader, read_header
from deltahub.formats.tensors import check_finite
from deltahub.limits import InputLimits

INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class BaseModelInfo:
    """What an adapter or task vector is checked against: the base's parameters."""

    config: dict
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str] = field(default_factory=dict)
    # parameter -> file path in the revision, in file order then offset order
    # (reading parameters in this order reads each memory map front to back)
    weight_files: dict[str, str] = field(default_factory=dict)

    @property
    def module_names(self) -> set[str]:
        return {name.rsplit(".", 1)[0] for name in self.shapes if "." in name}


def load_json(path: Path, label: str, *, max_depth: int = jsondoc.DEFAULT_MAX_DEPTH) -> dict:
    return jsondoc.loads_object(path.read_bytes(), label, max_depth=max_depth)


def weight_paths(files: dict[str, Path]) -> list[str]:
    return sorted(p for p in files if p.endswith(".safetensors"))


def read_headers(files: dict[str, Path], limits: InputLimits | None = None) -> dict[str, SafetensorsHeader]:
    limits = limits or InputLimits()
    return {p: read_header(files[p], label=p, max_header_bytes=limits.max_safetensors_header_bytes)
            for p in weight_paths(files)}


def validate_model(files: dict[str, Path], *, check_values: bool = True,
                   limits: InputLimits | None = None) -> BaseModelInfo:
    limits = limits or InputLimits()
    config = load_json(files["config.json"], "config.json", max_depth=limits.max_json_depth)
    headers = read_headers(files, limits)
    if INDEX_FILE in files:
        index = load_json(files[INDEX_FILE], INDEX_FILE, max_depth=limits.max_json_depth)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise InvalidInputError(f"{INDEX_FILE}: has no weight_map")
        for name, shard in weight_map.items():
            if shard not in headers:
                raise InvalidInputError(f"{INDEX_FILE}: parameter {name!r} maps to {shard!r}, which is not in the revision")
            if name not in headers[shard].tensors:
                raise InvalidInputError(f"{INDEX_FILE}: parameter {name!r} is not in shard {shard!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    where: dict[str, str] = {}
    for path, header in headers.items():
        for name, t in sorted(header.tensors.items(), key=lambda kv: kv[1].begin):
            if name in where:
                raise InvalidInputError(f"parameter {name!r} appears in both {where[name]} and {path}")
            shapes[name], dtypes[name], where[name] = t.shape, t.dtype, path
        if check_values:
            check_finite(files[path], header, label=path)
    return BaseModelInfo(config, shapes, dtypes, where)
