"""Training configuration: the knobs every trainer shares, as a dataclass.

Each trainer's config subclasses :class:`TrainConfig` and adds its own
fields. Configs come from JSON/YAML files and ``--set KEY=VALUE`` pairs, so
:meth:`TrainConfig.from_dict` checks names (an unknown one lists the known
ones) and types, and ``__post_init__`` checks values; both raise
:class:`InvalidInputError`, which the hub turns into INVALID_ARGUMENT at submit.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from deltahub.errors import InvalidInputError

SCHEDULES = ("cosine", "linear", "constant")
OBJECTIVES = ("causal_lm", "classification")


def knob(default: Any, help: str, **kwargs) -> Any:  # noqa: A002 - peft's spelling
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


# Hugging Face TrainingArguments / peft spellings of our keys: an unknown key names ours
HF_NAMES = {"max_steps": "steps", "num_train_epochs": "epochs", "learning_rate": "lr",
            "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
            "max_seq_length": "max_length", "lr_scheduler_type": "schedule", "warmup_steps": "warmup_ratio",
            "save_steps": "checkpoint_every", "rank": "r"}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Any:
    """A number written as text (YAML 1.1 reads 2e-4 as a string; some clients send numbers as strings)."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return float(text) if any(c in text for c in ".eE") else int(text)
    return value


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    options = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    if str not in options:
        value = _number(value)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise InvalidInputError(f"config {name!r} must be a finite number, not {value!r}")
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    wanted = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise InvalidInputError(f"config {name!r} must be {wanted}, not {value!r}")


@dataclass
class TrainConfig:
    """What every trainer takes. Zero or negative "auto" values are derived from the data at the start."""

    steps: int = knob(0, "optimizer steps; 0 = epochs x batches per epoch")
    epochs: float = knob(1.0, "passes over the domain data when steps is 0")
    batch_size: int = knob(8, "rows per optimizer step (replay rows included)")
    max_length: int = knob(128, "tokens per row; longer rows are truncated")
    lr: float = knob(2e-4, "peak learning rate")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    warmup_ratio: float = knob(0.06, "fraction of the steps spent warming the learning rate up from 0")
    schedule: str = knob("cosine", "decay after warm-up: cosine, linear or constant")
    min_lr_ratio: float = knob(0.1, "the decay ends at lr x min_lr_ratio")
    rewarm: bool = knob(True, "when resuming from an adapter, warm up again (re-warming) rather than start at the peak")
    grad_clip: float = knob(1.0, "global gradient-norm clip; 0 turns it off")
    seed: int = knob(0, "seed of the initialisation, data order and dropout")
    objective: str = knob("causal_lm", "causal_lm (continual pre-training) or classification (a head on the label field)")
    replay_fraction: float = knob(0.0, "share of each batch drawn from the replay datasets (general data against forgetting)")
    target_modules: list[str] | str | None = knob(None, "module names to adapt, or 'all-linear'; default: peft's for the architecture")
    lora_dropout: float = knob(0.0, "dropout on the adapter's input")
    checkpoint_every: int = knob(50, "steps between checkpoints (to the hub, so another worker can resume)")
    eval_fraction: float = knob(0.0, "share of the domain rows held out and scored at the end (eval_loss in the metrics)")

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise InvalidInputError("config 'steps' must be >= 0")
        if not self.epochs > 0:
            raise InvalidInputError("config 'epochs' must be > 0")
        if self.batch_size < 1 or self.max_length < 2:
            raise InvalidInputError("config 'batch_size' must be >= 1 and 'max_length' >= 2")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInputError("config 'lr' must be a positive number")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise InvalidInputError("config 'warmup_ratio' must be in [0, 1) and 'min_lr_ratio' in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise InvalidInputError(f"config 'schedule' must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.objective not in OBJECTIVES:
            raise InvalidInputError(f"config 'objective' must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if not 0 <= self.replay_fraction < 1:
            raise InvalidInputError("config 'replay_fraction' must be in [0, 1)")
        if not 0 <= self.eval_fraction < 1:
            raise InvalidInputError("config 'eval_fraction' must be in [0, 1)")
        if not 0 <= self.lora_dropout < 1:
            raise InvalidInputError("config 'lora_dropout' must be in [0, 1)")
        if self.checkpoint_every < 1:
            raise InvalidInputError("config 'checkpoint_every' must be >= 1")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise InvalidInputError("config 'grad_clip' and 'weight_decay' must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainConfig":
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            ours = [f"{k} -> {HF_NAMES[k]}" for k in unknown if HF_NAMES.get(k) in fields]
            hint = f" (deltahub's names: {', '.join(ours)})" if ours else ""
            raise InvalidInputError(f"unknown config key(s) {unknown}{hint}; known: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _check_type(k, v, hints[k]) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def total_steps(self, rows: int) -> int:
        """The number of optimizer steps for ``rows`` domain rows."""
        if self.steps:
            return self.steps
        domain_per_batch = max(1, self.batch_size - round(self.batch_size * self.replay_fraction))
        return max(1, math.ceil(self.epochs * math.ceil(rows / domain_per_batch)))
