"""The training loop every trainer shares: data, AdamW, schedule, checkpoints, progress.

A checkpoint is a folder of two files: ``state.safetensors`` (the trainable
parameters, the optimizer's moments and the trainer's own tensors, e.g. the
rank allocator's importance scores) and ``state.json`` (the step and the
trainer's own JSON state). No pickle: safetensors and JSON only. Because the
data order and dropout are seeded by (seed, step), a job resumed from a
checkpoint computes the same steps it would have computed unbroken.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from deltahub.errors import CancelledError, InvalidInputError, PreconditionError
from deltahub_trainers.base import Trainer
from deltahub_trainers.data import Batches, split_rows
from deltahub_trainers.schedule import lr_factor, warmup_steps

log = logging.getLogger("deltahub.trainers")

STATE_TENSORS = "state.safetensors"
STATE_DOC = "state.json"


@dataclass
class Progress:
    step: int
    total: int
    loss: float
    lr: float
    tokens_per_s: float
    rank_pattern: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.rank_pattern is not None:
            doc["total_rank"] = sum(self.rank_pattern.values())
        return doc


@dataclass
class Hooks:
    progress: Callable[[Progress], None] = lambda p: None
    should_stop: Callable[[], bool] = lambda: False
    # (folder holding the checkpoint files, step) -> None; the folder is reused, copy what you keep
    checkpoint: Callable[[Path, int], None] = lambda folder, step: None
    progress_every_s: float = 0.5


@dataclass
class TrainInputs:
    base_dir: Path
    rows: list[dict]
    replay_rows: list[dict] = field(default_factory=list)
    resume_adapter: Path | None = None
    checkpoint: Path | None = None
    device: str = "auto"


@dataclass
class TrainResult:
    adapter_dir: Path
    metrics: dict[str, Any]
    rank_pattern: dict[str, int] | None


def pick_device(requested: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 where present, else CPU with fp32."""
    if requested not in ("auto", "cpu", "cuda"):
        raise InvalidInputError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    if requested == "cuda":
        raise PreconditionError("--device cuda was asked for but no CUDA device is present")
    return torch.device("cpu"), torch.float32


def label_ids(rows: list[dict]) -> dict:
    labels = sorted({r["label"] for r in rows if "label" in r}, key=lambda v: (isinstance(v, str), v))
    if not labels or any("label" not in r for r in rows):
        raise InvalidInputError("objective 'classification' needs a 'label' on every row of the domain data")
    if len(labels) < 2:
        raise InvalidInputError("objective 'classification' needs at least two distinct labels")
    return {v: i for i, v in enumerate(labels)}


def load_base(base_dir: Path, config, rows: list[dict], dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    except Exception as err:  # noqa: BLE001 - any loader failure means: no usable tokenizer
        raise PreconditionError(f"the base model has no usable tokenizer: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    labels = None
    if config.objective == "classification":
        labels = label_ids(rows)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=len(labels), dtype=dtype,
            id2label={i: str(v) for v, i in labels.items()}, label2id={str(v): i for v, i in labels.items()})
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    return tokenizer, model, labels


def _named_trainables(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model, optimizer, trainer: Trainer, step: int, extra: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = _named_trainables(model)
    names = {id(p): n for n, p in params.items()}
    tensors = {f"param.{n}": p.detach().float().cpu().contiguous() for n, p in params.items()}
    for p, st in optimizer.state.items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{names[id(p)]}.{key}"] = value.detach().cpu().contiguous()
    # rank masks and counters that are buffers, not parameters (e.g. AdaLoRA's ranknum)
    for n, b in model.named_buffers():
        if "lora_" in n or "rank_gate" in n:
            tensors[f"buffer.{n}"] = b.detach().cpu().contiguous()
    own_tensors, own_doc = trainer.state()
    tensors.update({f"trainer.{k}": v.detach().cpu().contiguous() for k, v in own_tensors.items()})
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_DOC).write_text(json.dumps({"step": step, "trainer": own_doc, **extra}, sort_keys=True))
    return folder


def load_checkpoint(folder: Path, model, optimizer, trainer: Trainer) -> dict:
    tensors = load_file(str(folder / STATE_TENSORS))
    doc = json.loads((folder / STATE_DOC).read_text())
    params = _named_trainables(model)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("param."):
                name = key[len("param."):]
                if name not in params:
                    raise PreconditionError(f"checkpoint holds {name!r}, which this trainer's model does not train")
                params[name].copy_(value.to(params[name].dtype))
            elif key.startswith("buffer.") and key[len("buffer."):] in buffers:
                buffers[key[len("buffer."):]].copy_(value)
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            name, state_key = key[len("optim."):].rsplit(".", 1)
            moments.setdefault(name, {})[state_key] = value
    for name, p in params.items():
        if name in moments:
            optimizer.state[p] = {k: v.to(p.device) for k, v in moments[name].items()}
    trainer.load_state(model, {k[len("trainer."):]: v for k, v in tensors.items() if k.startswith("trainer.")},
                       doc.get("trainer", {}))
    return doc


def _eval_loss(model, batches: Batches, rows: list[dict], device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batches.n_domain or 1):
            batch = {k: v.to(device) for k, v in batches.encode(rows[i:i + batches.n_domain]).items()}
            total += float(model(**batch).loss) * len(batch["input_ids"])
            count += len(batch["input_ids"])
    model.train()
    return total / max(1, count)


def train(trainer: Trainer, inputs: TrainInputs, workdir: Path, hooks: Hooks | None = None) -> TrainResult:
    """Trains, checkpointing through ``hooks``; returns the exported adapter folder and metrics."""
    hooks = hooks or Hooks()
    config = trainer.config
    device, dtype = pick_device(inputs.device)
    split = split_rows(inputs.rows, config.eval_fraction, config.seed)
    tokenizer, model, labels = load_base(inputs.base_dir, config, split.train, dtype)
    total = config.total_steps(len(split.train))
    torch.manual_seed(config.seed)
    task_type = "SEQ_CLS" if labels is not None else "CAUSAL_LM"
    trainer.total_steps = total
    model = trainer.build(model, task_type=task_type, resume_adapter=inputs.resume_adapter)
    model.to(device)
    model.train()
    batches = Batches(tokenizer, split.train, batch_size=config.batch_size, max_length=config.max_length,
                      seed=config.seed, replay=inputs.replay_rows, replay_fraction=config.replay_fraction,
                      labels=labels)
    params = trainer.optimizer_params(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = warmup_steps(total, config.warmup_ratio, continuing=inputs.resume_adapter is not None,
                        rewarm=config.rewarm)
    start, losses = 0, []
    if inputs.checkpoint is not None:
        doc = load_checkpoint(inputs.checkpoint, model, optimizer, trainer)
        start, losses = int(doc["step"]), list(doc.get("losses", []))
        log.info("resumed %s from the checkpoint at step %d of %d", trainer.name, start, total)
    ckpt_dir = workdir / "checkpoint"
    tokens, t0, last_report = 0, time.perf_counter(), 0.0
    for step in range(start, total):
        if hooks.should_stop():
            raise CancelledError(f"training stopped at step {step} of {total}")
        torch.manual_seed(config.seed * 7919 + step)  # dropout: same masks whoever runs this step
        lr = config.lr * lr_factor(step, total, warmup=warm, schedule=config.schedule, min_ratio=config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in batches.at(step).items()}
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = model(**batch).loss  # peft's AdaLoRA adds its orthogonal penalty here, given labels
            extra = trainer.extra_loss(model)
            if extra is not None:
                loss = loss + extra
        if not torch.isfinite(loss):
            raise PreconditionError(f"the loss became {float(loss.detach())} at step {step}; lower lr or check the data")
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        trainer.before_step(model, step)
        optimizer.step()
        trainer.after_step(model, step, lr)
        optimizer.zero_grad(set_to_none=True)
        tokens += batches.tokens(batch)
        losses.append(float(loss.detach()))
        done = step + 1
        now = time.perf_counter()
        if now - last_report >= hooks.progress_every_s or done == total:
            last_report = now
            hooks.progress(Progress(done, total, losses[-1], lr, tokens / max(now - t0, 1e-9),
                                    trainer.rank_pattern(model)))
        if done % config.checkpoint_every == 0 and done < total:
            hooks.checkpoint(save_checkpoint(ckpt_dir, model, optimizer, trainer, done, {"losses": losses}), done)
    seconds = time.perf_counter() - t0
    tail = losses[-max(1, len(losses) // 10):] if losses else [math.nan]
    metrics: dict[str, Any] = {
        "steps": total, "train_loss": sum(tail) / len(tail), "tokens": tokens,
        "seconds": round(seconds, 3), "device": device.type,
    }
    if split.held_out:
        metrics["eval_loss"] = _eval_loss(model, batches, split.held_out, device)
        metrics["eval_rows"] = len(split.held_out)
    if labels is not None:
        metrics["labels"] = [str(v) for v in labels]
    model.eval()
    out = workdir / "adapter"
    facts = trainer.export(model, out)
    rank_pattern = facts.get("rank_pattern")
    if rank_pattern is not None:
        metrics["total_rank"] = sum(rank_pattern.values())
    return TrainResult(out, metrics, rank_pattern)
