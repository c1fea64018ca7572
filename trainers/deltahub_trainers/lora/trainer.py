"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021) through peft.

Nothing of LoRA is re-implemented: peft's ``LoraConfig`` takes the knobs as
peft users know them, and the adapter is saved by ``save_pretrained``. A job
that resumes from an earlier adapter trains that adapter further (its own
rank and targets), which is how a domain adapter is continued on new data.
"""

from __future__ import annotations

from pathlib import Path

from deltahub_trainers.base import Trainer
from deltahub_trainers.lora.config import LoraTrainConfig


class LoraTrainer(Trainer):
    name = "lora"
    title = "LoRA"
    paper = "https://arxiv.org/abs/2106.09685"
    config_cls = LoraTrainConfig
    resumable_from_adapter = True

    def build(self, model, *, task_type, resume_adapter: Path | None):
        from peft import LoraConfig, PeftModel, get_peft_model

        c: LoraTrainConfig = self.config
        if resume_adapter is not None:
            return PeftModel.from_pretrained(model, str(resume_adapter), is_trainable=True)
        return get_peft_model(model, LoraConfig(
            r=c.r, lora_alpha=c.lora_alpha, use_rslora=c.use_rslora, use_dora=c.use_dora,
            init_lora_weights=c.init_lora_weights, target_modules=c.target_modules, lora_dropout=c.lora_dropout,
            task_type=task_type,
        ))

    def export(self, model, dest: Path) -> dict:
        model.save_pretrained(str(dest))
        return {}
