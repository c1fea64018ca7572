"""Read each merge input as a delta against the base, one parameter at a time.

Every source answers ``delta(name, base)`` (the input's ``tau`` for that base
parameter, or None where the input does not touch it) from memory-mapped
safetensors, and ``factors(name)`` where the delta is exactly a low-rank
product ``B @ A`` (adapters, low-rank task vectors), which is what LoRA-space
merging concatenates.

Adapter deltas follow peft's own formulas: LoRA ``scale * B @ A`` with
``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA) per module after
``rank_pattern`` / ``alpha_pattern``; AdaLoRA ``B @ (A * E) * alpha / init_r``
(peft's ``ranknum`` stays ``init_r`` after pruning); transposed for
``fan_in_fan_out``; embeddings ``(B_emb @ A_emb).T * scale``; a
``modules_to_save`` tensor is a replacement, so its delta is ``saved - base``.
DoRA (peft's ``use_dora``) on a linear layer merges to
``W' = m / ||W0 + dW||_row * (W0 + dW)`` with ``dW`` the LoRA's delta and
``m`` the stored magnitude (one per output feature; on an embedding, one per
embedding dimension, the norm taken over the vocabulary), so its delta
``W' - W0`` is exact given the base, and full rank: it has no factors.
Tests compare each against peft's ``merge_and_unload``.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from deltahub.errors import PreconditionError
from deltahub.deltas.task_vector import delta_dtype as work_dtype
from deltahub.formats.adapter import CONFIG_FILE, LORA_PART, PREFIX, WEIGHTS_FILE, saved_param
from deltahub.formats.model import BaseModelInfo, load_json
from deltahub.formats.task_vector import split_key
from deltahub.formats.tensors import TensorFiles
from deltahub.merging.params import is_embedding


class DeltaSource:
    label: str

    def delta(self, name: str, base: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B, A) with delta == B @ A exactly, or None."""
        return None

    def theta(self, name: str, base: torch.Tensor) -> torch.Tensor | None:
        """The input's own tensor as stored (the base's where it does not touch it),
        or None where the source holds no full tensor (adapters, task vectors)."""
        return None

    def replacement(self, name: str) -> torch.Tensor | None:
        """The input's own tensor where its shape differs from the base (a resized vocabulary)."""
        return None


class ModelSource(DeltaSource):
    """A full model fine-tuned from the base: tau = theta - theta_0."""

    def __init__(self, label: str, info: BaseModelInfo, files: dict[str, Path], base: BaseModelInfo,
                 stack: ExitStack, *, allow_resized_embeddings: bool = False) -> None:
        self.label, self.info, self._files = label, info, files
        self._io = TensorFiles(stack)
        self.resized: set[str] = set()
        extra = sorted(set(info.shapes) - set(base.shapes))
        if extra:
            raise PreconditionError(f"input {label} has parameters the base lacks, e.g. {extra[:3]}; is it from this base?")
        for name, shape in info.shapes.items():
            if base.shapes[name] != shape:
                if allow_resized_embeddings and is_embedding(name):
                    self.resized.add(name)
                    continue
                raise PreconditionError(
                    f"input {label}: parameter {name!r} has shape {list(shape)}, the base has "
                    f"{list(base.shapes[name])}; is it from this base?"
                )

    def _tensor(self, name: str) -> torch.Tensor:
        return self._io.get(self._files[self.info.weight_files[name]], name)

    def delta(self, name, base):
        if name not in self.info.shapes or name in self.resized:
            return None
        t = self._tensor(name)
        dtype = work_dtype(t.dtype)
        return t.to(dtype) - base.to(dtype)

    def theta(self, name, base):
        if name in self.resized:
            return None
        return self._tensor(name) if name in self.info.shapes else base

    def replacement(self, name):
        return self._tensor(name) if name in self.resized else None


class TaskVectorSource(DeltaSource):
    def __init__(self, label: str, files: dict[str, Path], stack: ExitStack) -> None:
        self.label = label
        self._io = TensorFiles(stack)
        self._dense: dict[str, tuple[Path, str]] = {}
        self._lowrank: dict[str, dict[str, tuple[Path, str]]] = {}
        for path in sorted(p for p in files if p.endswith(".safetensors")):
            with safe_open(str(files[path]), framework="pt") as fh:
                for key in fh.keys():
                    param, part = split_key(key)
                    if part == "dense":
                        self._dense[param] = (files[path], key)
                    else:
                        self._lowrank.setdefault(param, {})[part] = (files[path], key)

    def factors(self, name):
        if name not in self._lowrank:
            return None
        parts = self._lowrank[name]
        B, A = (self._io.get(*parts[p]) for p in ("B", "A"))
        dtype = work_dtype(B.dtype)
        return B.to(dtype), A.to(dtype)

    def delta(self, name, base):
        if name in self._dense:
            t = self._io.get(*self._dense[name])
            return t.to(work_dtype(t.dtype))
        f = self.factors(name)
        return f[0] @ f[1] if f else None


@dataclass
class _Module:
    scale: float
    parts: dict[str, str] = field(default_factory=dict)  # lora_A / lora_B / lora_E / ... -> key


def _pattern_value(patterns: dict, module: str, default):
    from peft.utils.other import get_pattern_key

    if not patterns:
        return default
    key = get_pattern_key(list(patterns), module)
    return patterns.get(key, default)


class AdapterSource(DeltaSource):
    """A LoRA or AdaLoRA adapter folder written by peft."""

    def __init__(self, label: str, files: dict[str, Path], stack: ExitStack) -> None:
        self.label = label
        self._io = TensorFiles(stack)
        self._path = files[WEIGHTS_FILE]
        config = load_json(files[CONFIG_FILE], CONFIG_FILE)
        self.config = config
        self.peft_type = config.get("peft_type")
        self._fan_in_fan_out = bool(config.get("fan_in_fan_out"))
        self._modules: dict[str, _Module] = {}
        self._saved: dict[str, str] = {}  # base parameter -> key of a modules_to_save tensor
        with safe_open(str(self._path), framework="pt") as fh:
            keys = list(fh.keys())
            shapes = {k: fh.get_slice(k).get_shape() for k in keys}
        for key in keys:
            name = key[len(PREFIX):] if key.startswith(PREFIX) else key
            m = LORA_PART.match(name)
            if not m:
                self._saved[saved_param(name)] = key
                continue
            module, part = m["module"], m["part"]
            self._modules.setdefault(module, _Module(0.0)).parts[part] = key
        self.ranks: dict[str, int] = {}
        for module, mod in self._modules.items():
            a_key = mod.parts.get("lora_A") or mod.parts.get("lora_embedding_A")
            if a_key:
                self.ranks[module] = shapes[a_key][0]
            mod.scale = self._scale(module, self.ranks.get(module, 0))

    def _scale(self, module: str, rank: int) -> float:
        c = self.config
        if rank == 0:
            return 0.0
        if self.peft_type == "ADALORA":
            # peft keeps ranknum at init_r when it prunes to a rank pattern, so the scale stays as trained
            ranknum = c.get("init_r") or rank
            alpha = c.get("lora_alpha") or 0
            return (alpha if alpha > 0 else ranknum) / (ranknum + 1e-5)
        alpha = _pattern_value(c.get("alpha_pattern") or {}, module, c.get("lora_alpha", 8))
        r = _pattern_value(c.get("rank_pattern") or {}, module, c.get("r", rank))
        return alpha / math.sqrt(r) if c.get("use_rslora") else alpha / r

    def _low_rank(self, name):
        """The LoRA's own (B, A), scaled, in the stored weight's orientation."""
        mod = self._modules.get(name[: -len(".weight")])
        if mod is None or "lora_A" not in mod.parts:
            return None
        A = self._io.get(self._path, mod.parts["lora_A"]).to(torch.float32)
        B = self._io.get(self._path, mod.parts["lora_B"]).to(torch.float32)
        if "lora_E" in mod.parts:
            A = A * self._io.get(self._path, mod.parts["lora_E"]).to(torch.float32)
        B = B * mod.scale
        if self._fan_in_fan_out:  # the module stores W.T: delta = (B @ A).T = A.T @ B.T
            return A.T.contiguous(), B.T.contiguous()
        return B, A

    def _magnitude(self, name) -> torch.Tensor | None:
        mod = self._modules.get(name[: -len(".weight")]) if name.endswith(".weight") else None
        key = mod.parts.get("lora_magnitude_vector") if mod else None
        return self._io.get(self._path, key).to(torch.float32) if key else None

    def factors(self, name):
        if not name.endswith(".weight") or name in self._saved:  # a whole tensor too: only its full delta is exact
            return None
        if self._magnitude(name) is not None:  # DoRA: full rank once normalised
            return None
        return self._low_rank(name)

    def _dora_delta(self, base: torch.Tensor, low: torch.Tensor, magnitude: torch.Tensor, *,
                    per_column: bool | None = None) -> torch.Tensor:
        """peft's DoRA merge less the base, in float32: the weight norm is taken per output feature of a
        linear layer (per column of a ``fan_in_fan_out`` one, and of an embedding)."""
        per_column = self._fan_in_fan_out if per_column is None else per_column
        w0 = base.to(torch.float32)
        w = w0 + low
        rows = w.T if per_column else w
        merged = (magnitude / torch.linalg.norm(rows, dim=1))[:, None] * rows
        return (merged.T if per_column else merged) - w0

    @property
    def saved_params(self) -> set[str]:
        """Base parameters this adapter holds whole (modules_to_save, saved embedding layers)."""
        return set(self._saved)

    def delta(self, name, base):
        whole = None
        if name in self._saved:  # a whole tensor: its difference from the base
            t = self._io.get(self._path, self._saved[name])
            dtype = work_dtype(t.dtype)
            whole = t.to(dtype) - base.to(dtype)
        low = None
        f = self._low_rank(name) if name.endswith(".weight") and name not in self._saved else None
        if f is not None:
            low = f[0] @ f[1]
            magnitude = self._magnitude(name)
            if magnitude is not None:
                low = self._dora_delta(base, low, magnitude)
        elif name.endswith(".weight"):
            mod = self._modules.get(name[: -len(".weight")])
            if mod is not None and "lora_embedding_A" in mod.parts:
                A = self._io.get(self._path, mod.parts["lora_embedding_A"]).to(torch.float32)
                B = self._io.get(self._path, mod.parts["lora_embedding_B"]).to(torch.float32)
                low = (B @ A).T * mod.scale
                magnitude = self._magnitude(name)
                if magnitude is not None:  # DoRA on an embedding: norms per embedding dimension (peft's layout)
                    under = base if whole is None else base.to(whole.dtype) + whole  # the layer it saved, if any
                    low = self._dora_delta(under, low, magnitude, per_column=True)
        if whole is not None and low is not None:  # a LoRA on top of the layer it saved (an embedding)
            return whole + low.to(whole.dtype)
        return whole if whole is not None else low
