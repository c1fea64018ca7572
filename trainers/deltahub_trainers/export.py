"""Saving any trainer's result as a standard LoRA adapter that plain peft loads.

Rank-adaptive trainers end with modules of different ranks, each a product
``B diag(g) A`` times a scale (AdaLoRA's singular values over its rank count,
IncreLoRA's the same, CoDyRA's gates). The conversion is exact: the diagonal
and the scale are folded into A, ranks whose diagonal entry is zero are
dropped, modules left with no rank are dropped from ``target_modules``, and
each module gets its rank in ``rank_pattern`` and ``alpha_pattern`` equal to
that rank, so peft's scaling ``alpha / r`` is 1 and adds nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from deltahub.errors import PreconditionError
from deltahub_trainers.base import PEFT_PREFIX

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER = "default"  # the adapter name peft gives a model built with get_peft_model


def fold(a: torch.Tensor, b: torch.Tensor, diag: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') with B' @ A' == B @ diag(diag) @ A * scale, keeping only the ranks whose entry is non-zero."""
    keep = diag.reshape(-1) != 0
    a_folded = a[keep] * (diag.reshape(-1)[keep] * scale).unsqueeze(1)
    return a_folded, b[:, keep]


def trained_extras(model) -> dict[str, torch.Tensor]:
    """Weights of fully trained modules (a classification head), under the names peft saves them."""
    marker = "modules_to_save.default."
    return {n.replace(marker, ""): p.detach().cpu().contiguous()
            for n, p in model.named_parameters() if marker in n}


def write_lora(dest: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], model) -> dict[str, int]:
    """Writes ``adapter_config.json`` and ``adapter_model.safetensors``; returns the rank pattern.

    ``factors`` maps a module's name in the base model to its folded (A, B); ``model`` is the trained peft
    model, whose config gives the base's name, the task type and the dropout, and whose fully trained
    modules (a classification head) are saved beside the factors.
    """
    from peft import LoraConfig

    trained = model.peft_config[ADAPTER]
    extras = trained_extras(model)
    factors = {k: (a, b) for k, (a, b) in factors.items() if a.shape[0] > 0}
    if not factors:
        raise PreconditionError("every module ended with rank 0: nothing to save (lower the sparsity threshold l1)")
    ranks = {k: int(a.shape[0]) for k, (a, _) in factors.items()}
    r = max(ranks.values())
    modules_to_save = sorted({n[len(PEFT_PREFIX):].rsplit(".", 1)[0] for n in extras}) or None
    config = LoraConfig(
        r=r, lora_alpha=r, target_modules=sorted(ranks), rank_pattern=dict(ranks), alpha_pattern=dict(ranks),
        lora_dropout=trained.lora_dropout, task_type=trained.task_type,
        base_model_name_or_path=trained.base_model_name_or_path,
        modules_to_save=modules_to_save,
    )
    dest.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(dest))
    tensors = dict(extras)
    for key, (a, b) in factors.items():
        tensors[f"{PEFT_PREFIX}{key}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{key}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    save_file(tensors, str(dest / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return ranks
