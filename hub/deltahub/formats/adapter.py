"""PEFT adapter folders, checked against the base they declare.

Key layout written by peft: ``base_model.model.<module>.<part>[.weight]`` where
part is ``lora_A``/``lora_B`` (LoRA), plus ``lora_E`` (AdaLoRA's singular
values), ``lora_embedding_A``/``lora_embedding_B`` (embeddings) and
``lora_magnitude_vector`` (DoRA). Any other key must be a base parameter
saved whole (``modules_to_save``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from deltahub.errors import InvalidInputError
from deltahub.formats import patterns
from deltahub.limits import InputLimits
from deltahub.formats.model import BaseModelInfo, load_json
from deltahub.formats.safetensors_header import read_header
from deltahub.formats.tensors import check_finite

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
SUPPORTED_PEFT_TYPES = {"LORA", "ADALORA"}
LORA_PART = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_E|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.[A-Za-z0-9_]+)?(?:\.weight)?$"
)


def saved_param(name: str) -> str:
    """The base parameter a whole tensor in an adapter stands for: peft saves ``modules_to_save`` under the
    module's own name (or ``.modules_to_save.<adapter>``), and a LoRA on an embedding with the layer itself
    (``<module>.base_layer.weight``, peft's ``save_embedding_layers``)."""
    return re.sub(r"\.modules_to_save\.[A-Za-z0-9_]+\.", ".", name).replace(".base_layer.", ".")


def _targets_fit(targets, module_names: set[str]) -> list[str]:
    """Target modules of the config that match no module of the base (a string is an RE2-matched pattern)."""
    if targets is None or targets == "all-linear":
        return []
    if isinstance(targets, str):
        return [] if patterns.matching(targets, sorted(module_names), f"{CONFIG_FILE}: target_modules") else [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise InvalidInputError(f"{CONFIG_FILE}: target_modules must be a string pattern or a list of module names")
    return [t for t in targets if not any(m == t or m.endswith("." + t) for m in module_names)]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_config(config: dict, module_names: set[str]) -> None:
    """What peft reads from ``adapter_config.json``, checked as peft would use it."""
    peft_type = config.get("peft_type")
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise InvalidInputError(
            f"{CONFIG_FILE}: peft_type {peft_type!r} is not supported; supported: {sorted(SUPPORTED_PEFT_TYPES)}"
        )
    for key in ("r", "init_r", "target_r"):
        if key in config and config[key] is not None and not (type(config[key]) is int and config[key] >= 1):
            raise InvalidInputError(f"{CONFIG_FILE}: {key} must be an integer >= 1, not {config[key]!r}")
    if "lora_alpha" in config and not _number(config["lora_alpha"]):
        raise InvalidInputError(f"{CONFIG_FILE}: lora_alpha must be a finite number, not {config['lora_alpha']!r}")
    missing = _targets_fit(config.get("target_modules"), module_names)
    if missing:
        raise InvalidInputError(f"{CONFIG_FILE}: target modules {missing} match no module of the base model")
    names = sorted(module_names)
    if peft_type == "ADALORA":
        _check_adalora_pattern(config.get("rank_pattern"), module_names)
        return
    for field_name, valid, wanted in (("rank_pattern", lambda v: type(v) is int and v >= 1, "an integer >= 1"),
                                      ("alpha_pattern", _number, "a finite number")):
        table = config.get(field_name) or {}
        if not isinstance(table, dict):
            raise InvalidInputError(f"{CONFIG_FILE}: {field_name} must map module patterns to values")
        for key, value in table.items():
            if not valid(value):
                raise InvalidInputError(f"{CONFIG_FILE}: {field_name}[{key!r}] must be {wanted}, not {value!r}")
            if not patterns.suffix_matching(key, names, f"{CONFIG_FILE}: {field_name}"):
                raise InvalidInputError(f"{CONFIG_FILE}: {field_name} key {key!r} matches no module of the base model")


def _check_adalora_pattern(pattern, module_names: set[str]) -> None:
    """AdaLoRA's rank_pattern: the mask of kept ranks per ``<module>.lora_E`` (names, not patterns)."""
    if pattern is None:
        return
    if not isinstance(pattern, dict):
        raise InvalidInputError(f"{CONFIG_FILE}: rank_pattern must map module names to rank masks")
    for key, mask in pattern.items():
        module = key[: -len(".lora_E")] if key.endswith(".lora_E") else key
        if not any(m == module or m.endswith("." + module) for m in module_names):
            raise InvalidInputError(f"{CONFIG_FILE}: rank_pattern key {key!r} matches no module of the base model")
        if not isinstance(mask, list) or not all(isinstance(b, bool) for b in mask):
            raise InvalidInputError(f"{CONFIG_FILE}: rank_pattern[{key!r}] must be a list of booleans (AdaLoRA's mask)")


def validate_adapter(files: dict[str, Path], base: BaseModelInfo, *, check_values: bool = True,
                     limits: InputLimits | None = None) -> dict:
    limits = limits or InputLimits()
    config = load_json(files[CONFIG_FILE], CONFIG_FILE, max_depth=limits.max_json_depth)
    check_config(config, base.module_names)
    header = read_header(files[WEIGHTS_FILE], label=WEIGHTS_FILE, max_header_bytes=limits.max_safetensors_header_bytes)
    if not header.tensors:
        raise InvalidInputError(f"{WEIGHTS_FILE}: holds no tensors")
    ranks: dict[str, int] = {}
    for key, t in header.tensors.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = LORA_PART.match(name)
        if not m:
            name = saved_param(name)
            if name not in base.shapes:
                raise InvalidInputError(f"{WEIGHTS_FILE}: tensor {key!r} is neither a LoRA factor nor a base parameter")
            if t.shape != base.shapes[name]:
                raise InvalidInputError(
                    f"{WEIGHTS_FILE}: tensor {key!r} has shape {list(t.shape)}, base has {list(base.shapes[name])}"
                )
            continue
        module, part = m["module"], m["part"]
        weight = f"{module}.weight"
        if weight not in base.shapes:
            raise InvalidInputError(f"{WEIGHTS_FILE}: tensor {key!r} targets module {module!r}, which the base does not have")
        bshape = base.shapes[weight]
        if len(bshape) != 2:
            raise InvalidInputError(f"{WEIGHTS_FILE}: module {module!r} has a {len(bshape)}-D weight; only 2-D weights take LoRA")
        out_f, in_f = bshape
        shape = t.shape
        if part == "lora_A":
            ok = len(shape) == 2 and shape[1] == in_f
            rank = shape[0] if ok else None
        elif part == "lora_B":
            ok = len(shape) == 2 and shape[0] == out_f
            rank = shape[1] if ok else None
        elif part == "lora_embedding_A":  # [r, num_embeddings]; the base weight is [num_embeddings, dim]
            ok = len(shape) == 2 and shape[1] == out_f
            rank = shape[0] if ok else None
        elif part == "lora_embedding_B":
            ok = len(shape) == 2 and shape[0] == in_f
            rank = shape[1] if ok else None
        elif part == "lora_E":
            ok = len(shape) == 2 and shape[1] == 1
            rank = shape[0] if ok else None
        else:  # lora_magnitude_vector: one magnitude per output feature
            ok = len(shape) == 1 and shape[0] in (out_f, in_f)
            rank = None
        if not ok:
            raise InvalidInputError(
                f"{WEIGHTS_FILE}: tensor {key!r} has shape {list(shape)}, which does not fit "
                f"base weight {weight!r} of shape {list(bshape)}"
            )
        if rank is not None:
            if module in ranks and ranks[module] != rank:
                raise InvalidInputError(
                    f"{WEIGHTS_FILE}: module {module!r} has factors of ranks {ranks[module]} and {rank}"
                )
            ranks[module] = rank
    if not ranks:
        raise InvalidInputError(f"{WEIGHTS_FILE}: no LoRA factors found")
    if check_values:
        check_finite(files[WEIGHTS_FILE], header, label=WEIGHTS_FILE)
    return {"ranks": ranks, "config": config}
