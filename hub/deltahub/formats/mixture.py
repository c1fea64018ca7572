"""An Arrow mixture: several LoRA adapters in one folder, routed per token at run time.

Layout (what :func:`deltahub_client` loads with ``peft.create_arrow_model``)::

    arrow_config.json            {"task_adapters": ["task_0", ...], "top_k": 2, "router_temperature": 1.0, ...}
    task_0/adapter_config.json   each folder a plain PEFT LoRA adapter (PeftModel.from_pretrained loads it)
    task_0/adapter_model.safetensors
    ...

peft's Arrow router needs every expert to have one rank and one set of
target modules; that is checked here, before anything is committed.
"""

from __future__ import annotations

from pathlib import Path

from deltahub.errors import InvalidInputError
from deltahub.formats.adapter import CONFIG_FILE, WEIGHTS_FILE, validate_adapter
from deltahub.formats.model import BaseModelInfo, load_json

MIXTURE_FILE = "arrow_config.json"


def expert_folders(config: dict) -> list[str]:
    names = config.get("task_adapters")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n and "/" not in n for n in names):
        raise InvalidInputError(f"{MIXTURE_FILE}: task_adapters must list the expert folders")
    top_k = config.get("top_k")
    if not isinstance(top_k, int) or not 1 <= top_k <= len(names):
        raise InvalidInputError(f"{MIXTURE_FILE}: top_k must be between 1 and {len(names)}, got {top_k!r}")
    temperature = config.get("router_temperature")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise InvalidInputError(f"{MIXTURE_FILE}: router_temperature must be > 0, got {temperature!r}")
    return names


def required_mixture_files(paths: set[str]) -> None:
    """The cheap pre-upload check: the experts' files are named in arrow_config.json, so only its presence here."""
    if MIXTURE_FILE not in paths:
        raise InvalidInputError(f"a mixture needs {MIXTURE_FILE}")


def validate_mixture(files: dict[str, Path], base: BaseModelInfo) -> dict:
    names = expert_folders(load_json(files[MIXTURE_FILE], MIXTURE_FILE))
    expected = {MIXTURE_FILE} | {f"{n}/{f}" for n in names for f in (CONFIG_FILE, WEIGHTS_FILE)}
    if set(files) != expected:
        odd = sorted(set(files) ^ expected)
        raise InvalidInputError(f"mixture files do not match {MIXTURE_FILE}: {odd[:5]}")
    shape = None
    for name in names:
        sub = {path.split("/", 1)[1]: p for path, p in files.items() if path.startswith(name + "/")}
        validate_adapter(sub, base)
        config = load_json(sub[CONFIG_FILE], f"{name}/{CONFIG_FILE}")
        if config.get("peft_type") != "LORA" or config.get("rank_pattern"):
            raise InvalidInputError(f"{name}: an Arrow expert must be a LoRA adapter of one rank (no rank_pattern)")
        mine = (config.get("r"), sorted(config.get("target_modules") or []))
        if shape is not None and mine != shape:
            raise InvalidInputError(
                f"Arrow experts need one rank and one set of target modules (peft's requirement): "
                f"{names[0]} has r={shape[0]} on {shape[1]}, {name} has r={mine[0]} on {mine[1]}")
        shape = mine
    return {"experts": len(names), "rank": shape[0]}
