"""AdaLoRA (Zhang et al., "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning", ICLR 2023) through peft.

peft's ``AdaLoraConfig`` and ``update_and_allocate`` do the method. Around it:

* ``total_step`` is the real number of optimizer steps and ``tfinal`` > 0, so
  the pattern fixed at ``total_step - tfinal`` is the one the last steps train
  (peft masks with it every step after) and the one exported;
* ``update_and_allocate(step)`` runs once per optimizer step, after the step
  and before the gradients are cleared (it reads them for the importance);
* the orthogonal penalty is added by peft's forward only when the model
  computes the loss, which the loop always lets it do (labels are passed);
* peft's own checkpoints resize modules and cannot be resumed mid-pruning,
  so the checkpoint keeps the unpruned P, E, Q (masked entries as zeros) and
  the allocator's sensitivity/uncertainty averages and rank pattern.

Export: each module's ``B (A * E) * alpha / ranknum`` is folded into a LoRA
of the module's final rank (ranks with E = 0 dropped), exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from deltahub_trainers.adalora.config import AdaLoraTrainConfig
from deltahub_trainers.base import Trainer, module_key
from deltahub_trainers.export import fold, write_lora


def _adalora_layers(model):
    from peft.tuners.adalora import AdaLoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdaLoraLayer) and "default" in m.lora_E]


class AdaLoraTrainer(Trainer):
    name = "adalora"
    title = "AdaLoRA"
    paper = "https://arxiv.org/abs/2303.10512"
    config_cls = AdaLoraTrainConfig
    rank_adaptive = True

    def build(self, model, *, task_type, resume_adapter: Path | None):
        from peft import AdaLoraConfig, get_peft_model

        c: AdaLoraTrainConfig = self.config
        tinit, tfinal, delta_t = c.phases(self.total_steps)
        self.model = get_peft_model(model, AdaLoraConfig(
            init_r=c.init_r, target_r=c.target_r, lora_alpha=c.lora_alpha, tinit=tinit, tfinal=tfinal,
            deltaT=delta_t, beta1=c.beta1, beta2=c.beta2, orth_reg_weight=c.orth_reg_weight,
            total_step=self.total_steps, target_modules=c.target_modules, lora_dropout=c.lora_dropout,
            task_type=task_type,
        ))
        return self.model

    def after_step(self, model, step: int, lr: float) -> None:
        model.base_model.update_and_allocate(step)

    def rank_pattern(self, model) -> dict[str, int]:
        return {module_key(n): int((m.lora_E["default"] != 0).sum()) for n, m in _adalora_layers(model)}

    def state(self):
        # the allocator's EMAs, keyed by parameter name; the fixed pattern once set
        alloc = self._allocator
        tensors = {}
        for kind in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            for name, value in getattr(alloc, kind).items():
                tensors[f"{kind}.{name}"] = value
        pattern = self._config.rank_pattern
        return tensors, {"rank_pattern": pattern}

    def load_state(self, model, tensors, doc) -> None:
        alloc = self._allocator
        for key, value in tensors.items():
            kind, name = key.split(".", 1)
            getattr(alloc, kind)[name] = value.to(next(model.parameters()).device)
        if doc.get("rank_pattern"):
            self._config.rank_pattern = doc["rank_pattern"]

    @property
    def _allocator(self):
        return self.model.base_model.rankallocator

    @property
    def _config(self):
        return self.model.peft_config["default"]

    def export(self, model, dest: Path) -> dict:
        factors = {}
        with torch.no_grad():
            for n, m in _adalora_layers(model):
                scale = float(m.scaling["default"]) / (float(m.ranknum["default"]) + 1e-5)
                factors[module_key(n)] = fold(m.lora_A["default"], m.lora_B["default"], m.lora_E["default"], scale)
        ranks = write_lora(dest, factors, model)
        full = {module_key(n): 0 for n, _ in _adalora_layers(model)}
        return {"rank_pattern": {**full, **ranks}}
