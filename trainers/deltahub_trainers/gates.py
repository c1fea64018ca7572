"""Per-rank gates on peft's LoRA layers, for the trainers peft does not have.

peft's ``lora.Linear`` computes ``lora_B(lora_A(dropout(x))) * scaling``. A
forward hook on ``lora_A`` multiplies its output (one value per rank) by the
gate's vector, which turns the layer into ``B diag(g) A``: CoDyRA's gated
ranks, or IncreLoRA's ``P Lambda Q`` with masked, growing ranks. The layer is
built with ``lora_alpha = r`` so peft's own scaling is 1 and the gate carries
the whole scale. Everything else (targets, dropout, device moves, heads for
classification) stays peft's.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from deltahub_trainers.base import module_key
from deltahub_trainers.export import ADAPTER, fold, write_lora


class RankGate(nn.Module):
    """Subclasses hold the parameters and define :meth:`vector` (length r)."""

    def vector(self) -> torch.Tensor:
        raise NotImplementedError


def lora_layers(model) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A]


def attach(model, make: Callable[[str, nn.Module], RankGate]) -> dict[str, RankGate]:
    """Gives every LoRA layer a gate; returns them by the module's name in the base model."""
    gates: dict[str, RankGate] = {}
    for name, layer in lora_layers(model):
        gate = make(name, layer)
        layer.add_module("rank_gate", gate)
        layer.lora_A[ADAPTER].register_forward_hook(lambda mod, args, out, g=gate: out * g.vector().to(out.dtype))
        gates[module_key(name)] = gate
    return gates


def gated_lora(model, r: int, config, task_type: str, make: Callable[[str, nn.Module], RankGate]):
    """peft's LoRA of rank ``r`` (``lora_alpha = r``: peft's scaling is 1) with a gate on every layer."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules=config.target_modules,
                                                  lora_dropout=config.lora_dropout, task_type=task_type))
    return peft_model, attach(peft_model, make)


def export_gated(model, gates: dict[str, RankGate], dest,
                 diag_and_scale: Callable[[RankGate], tuple[torch.Tensor, float]]) -> dict:
    """Folds each gated layer into a LoRA of its live ranks and writes the adapter (see export.py)."""
    ab = factors(model)
    with torch.no_grad():
        folded = {k: fold(a, b, *diag_and_scale(gates[k])) for k, (a, b) in ab.items()}
    ranks = write_lora(dest, folded, model)
    return {"rank_pattern": {**{k: 0 for k in ab}, **ranks}}


def factors(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) of each gated layer, by the module's name in the base model."""
    return {module_key(n): (m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight) for n, m in lora_layers(model)}
