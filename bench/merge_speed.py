"""Merge speed and peak memory: deltahub's streaming executor vs mergekit's run_merge.

Builds a Llama-shaped base and three fine-tunes (bf16, ~--params parameters
each) in-process, then runs, each in its own subprocess so peak RSS is its
own, the same merges over the same files:

* mergekit ``run_merge`` (the peer) for task_arithmetic and ties;
* deltahub's MergeEngine on a hub data folder holding the same files, for
  task_arithmetic and ties (model output), plus MagMax and a LoRA-space
  uniform soup of three adapters (timed, no mergekit peer).

Prints wall seconds, peak RSS and the ratios mergekit/deltahub.
Usage: python bench/merge_speed.py [--params 300e6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def llama_config(params: float) -> dict:
    hidden = 1024
    layers = max(2, round(params / (12.6 * hidden * hidden)))
    return dict(vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers,
                num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=False, torch_dtype="bfloat16")


def build(root: Path, params: float) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**llama_config(params))
    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg).to(torch.bfloat16)
    base.save_pretrained(root / "base")
    print(f"models of {sum(p.numel() for p in base.parameters()) / 1e6:.0f}M parameters", flush=True)
    for i in range(3):
        g = torch.Generator().manual_seed(i + 1)
        ft = LlamaForCausalLM(cfg).to(torch.bfloat16)
        ft.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in ft.parameters():
                p.add_((torch.randn(p.shape, generator=g) * 1e-3).to(p.dtype))
        ft.save_pretrained(root / f"ft{i}")
        del ft
    small = LlamaForCausalLM(cfg)  # adapters need a float32 module to attach to
    small.load_state_dict(base.state_dict())
    for i in range(3):
        torch.manual_seed(10 + i)
        pm = get_peft_model(small, LoraConfig(r=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        pm.save_pretrained(root / f"lora{i}")
        small = pm.unload()


def run_mergekit(root: Path, method: str) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    params = {"density": 0.5} if method == "ties" else {}
    config = {"merge_method": method, "base_model": str(root / "base"), "dtype": "bfloat16",
              "models": [{"model": str(root / f"ft{i}"), "parameters": {"weight": 1.0, **params}} for i in range(3)]}
    run_merge(MergeConfiguration.model_validate(config), str(root / f"out-mk-{method}"),
              options=MergeOptions(copy_tokenizer=False, lazy_unpickle=True))


def hub_store(root: Path):
    from deltahub.artifacts import FileEntry
    from deltahub.store import CommitRequest, HubStore

    store = HubStore.open(root / "hub")
    if store.list_artifacts():
        return store

    def put(folder: Path, name: str, kind: str, base: str = "") -> None:
        files = []
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            with store.blobs.writer() as w, open(path, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    w.write(chunk)
            files.append(FileEntry(path.name, w.sha256, w.size))
        store.commit(CommitRequest(artifact=name, kind=kind, files=files, base=base))

    put(root / "base", "bench/base", "model")
    for i in range(3):
        put(root / f"ft{i}", f"bench/ft{i}", "model")
        put(root / f"lora{i}", f"bench/lora{i}", "adapter", base="bench/base")
    return store


def run_deltahub(root: Path, method: str) -> None:
    from deltahub.merge_engine import MergeEngine, MergeRequest

    store = hub_store(root)
    if method == "lora_soup":
        req = MergeRequest(method="uniform_soup", inputs=[f"bench/lora{i}" for i in range(3)], out="bench/lora-soup",
                           form="adapter", device="cpu")
    else:
        params = {"density": 0.5} if method == "ties" else {}
        req = MergeRequest(method=method, inputs=[f"bench/ft{i}" for i in range(3)], base="bench/base",
                           out=f"bench/{method}", params=params, device="cpu")
    result = MergeEngine(store).merge(req)
    assert not result.cached


def child(args) -> None:
    root = Path(args.root)
    if args.side == "prepare":  # a fresh hub each run, so no merge is answered from the recipe cache
        import shutil

        shutil.rmtree(root / "hub", ignore_errors=True)
        hub_store(root)
        return
    start = time.perf_counter()
    (run_mergekit if args.side == "mergekit" else run_deltahub)(root, args.method)
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": args.side, "method": args.method, "seconds": seconds, "peak_rss_mb": rss_mb}))


def measure(root: Path, side: str, method: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", side, "--method", method, "--root", str(root)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=float, default=300e6)
    ap.add_argument("--keep", default=None, help="reuse/keep the models in this folder")
    ap.add_argument("--child", dest="side", default=None)
    ap.add_argument("--method", default="task_arithmetic")
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    root = Path(args.keep or tempfile.mkdtemp(prefix="deltahub-merge-bench-"))
    if not (root / "base").exists():
        build(root, args.params)
    subprocess.run([sys.executable, __file__, "--child", "prepare", "--root", str(root)], check=True)
    for method in ("task_arithmetic", "ties"):
        mk = measure(root, "mergekit", method)
        dh = measure(root, "deltahub", method)
        print(f"{method:<16} mergekit {mk['seconds']:7.2f} s {mk['peak_rss_mb']:7.0f} MB | deltahub {dh['seconds']:7.2f} s "
              f"{dh['peak_rss_mb']:7.0f} MB | speed-up {mk['seconds'] / dh['seconds']:.2f}x, "
              f"memory ratio {dh['peak_rss_mb'] / mk['peak_rss_mb']:.2f}")
    for method in ("magmax", "lora_soup"):
        dh = measure(root, "deltahub", method)
        print(f"{method:<16} deltahub {dh['seconds']:7.2f} s {dh['peak_rss_mb']:7.0f} MB")


if __name__ == "__main__":
    main()
