"""Optimizer steps per second of each trainer beside a bare peft LoRA loop, same model and batch, one run.

    python bench/train_speed.py [--steps 40] [--hidden 256] [--layers 4] [--device auto]

The bare loop is what a peft user writes: get_peft_model, AdamW, forward with
labels, backward, step, zero_grad, on one pre-tokenised batch. The trainers
run through deltahub's loop (tokenising each batch, schedule, clipping, the
rank allocator or gates, progress); checkpoints are off. Ratios are
trainer time per step over the bare loop's (goal: LoRA <= 1.1, the
rank-adaptive trainers <= 1.5).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deltahub_trainers import make_trainer  # noqa: E402
from deltahub_trainers.loop import Hooks, TrainInputs, pick_device, train  # noqa: E402
from tests.helpers import WORDS, make_tiny_llama  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


def bare_peft_loop(base: Path, rows: list[dict], steps: int, batch: int, device) -> float:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS)).to(device)
    enc = tok([r["text"] for r in rows[:batch]], return_tensors="pt", padding=True, truncation=True, max_length=128)
    enc = {k: v.to(device) for k, v in enc.items()}
    labels = enc["input_ids"].clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    start = None
    for i in range(steps + 3):
        if i == 3:  # warm-up steps are not timed
            start = time.perf_counter()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def trainer_loop(name: str, config: dict, base: Path, rows: list[dict], steps: int, device: str) -> float:
    times = []

    def progress(p):
        times.append((p.step, time.perf_counter()))

    with tempfile.TemporaryDirectory() as work:
        trainer = make_trainer(name, {**config, "steps": steps + 3, "checkpoint_every": 10**9,
                                      "target_modules": TARGETS, "warmup_ratio": 0.0})
        train(trainer, TrainInputs(base, rows, device=device), Path(work), Hooks(progress=progress, progress_every_s=0))
    (s0, t0), (s1, t1) = times[2], times[-1]
    return (t1 - t0) / (s1 - s0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device, _ = pick_device(args.device)
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(64))} for _ in range(256)]
    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_llama(Path(tmp) / "base", hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                               num_hidden_layers=args.layers, num_attention_heads=max(4, args.hidden // 64),
                               num_key_value_heads=max(4, args.hidden // 64))
        configs = {
            "lora": {"r": 8, "lora_alpha": 16},
            "adalora": {"init_r": 12, "target_r": 8},
            "increlora": {"init_r": 2, "target_r": 8},
            "rank_selective": {"r": 8},
        }
        torch.manual_seed(0)
        bare = min(bare_peft_loop(base, rows, args.steps, args.batch, device) for _ in range(2))
        print(f"device {device.type}, model hidden {args.hidden} x {args.layers} layers, batch {args.batch}, "
              f"{args.steps} timed steps")
        print(f"{'bare peft LoRA loop':<22} {1 / bare:8.2f} steps/s   1.00x")
        for name, config in configs.items():
            took = min(trainer_loop(name, {**config, "batch_size": args.batch}, base, rows, args.steps,
                                    device.type) for _ in range(2))
            print(f"{name:<22} {1 / took:8.2f} steps/s   {took / bare:.2f}x the bare loop's time per step")


if __name__ == "__main__":
    main()
