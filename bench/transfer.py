"""Push and pull throughput over loopback, as ratios to a disk copy of the same files.

Builds a model folder of safetensors shards (~--size-mb in all), starts a real
`deltahub serve` process, and in one run measures:

* disk copy (shutil.copytree) of the folder: the peer; and the same copy
  followed by fsync of every file, the durability the hub gives each blob;
* push (hash, plan, upload in 1 MiB chunks, validate, commit) and its MB/s;
* pull (download, verify sha256) and its MB/s;
* a re-push of the unchanged folder: blob bytes sent (must be 0);
* sha256 of the folder on one core, for the ceiling content addressing sets:
  the client hashes every byte to ask which blobs are missing and the server
  hashes every byte to verify it, so a push over loopback, with both ends on
  this machine's cores, cannot beat cores x sha256 rate / 2 even if sending,
  writing and validating cost nothing.

Usage: python bench/transfer.py [--size-mb 500] [--shards 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from deltahub.storage.blobs import sha256_file
from deltahub_client import Hub


def make_folder(dest: Path, size_mb: int, shards: int) -> int:
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(json.dumps({"model_type": "bench", "note": "synthetic shards"}))
    per_shard = size_mb * 1_000_000 // shards
    g = torch.Generator().manual_seed(0)
    for i in range(shards):
        n = per_shard // 2 // 8  # float16, 8 tensors a shard
        tensors = {f"layers.{i}.w{j}": torch.randn(n, generator=g).to(torch.float16) for j in range(8)}
        save_file(tensors, str(dest / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"))
    return sum(p.stat().st_size for p in dest.iterdir())


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("deltahub")
    proc = subprocess.Popen([str(exe), "serve", "--data-dir", str(data_dir), "--address", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc_log = []
    while True:
        line = proc.stdout.readline()
        proc_log.append(line)
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        if m:
            return proc, f"{m[1]}:{m[2]}"
        if not line:
            raise RuntimeError("".join(proc_log))


def copy_durable(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest)
    for path in dest.iterdir():
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        total = make_folder(tmp / "src", args.size_mb, args.shards)
        mb = total / 1e6
        proc, address = start_server(tmp / "data")
        try:
            hub = Hub(address, progress=False)
            copies, durable, pushes, pulls, hashes = [], [], [], [], []
            for i in range(args.repeat):
                _, t = timed(lambda: [sha256_file(p) for p in sorted((tmp / "src").iterdir())])
                hashes.append(t)
                _, t = timed(lambda: shutil.copytree(tmp / "src", tmp / f"copy{i}"))
                copies.append(t)
                shutil.rmtree(tmp / f"copy{i}")
                _, t = timed(lambda: copy_durable(tmp / "src", tmp / f"dcopy{i}"))
                durable.append(t)
                shutil.rmtree(tmp / f"dcopy{i}")
                if i:
                    hub.delete_artifact("bench/model")
                result, t = timed(lambda: hub.push(tmp / "src", "bench/model", kind="model"))
                assert result.bytes_sent == total, (result.bytes_sent, total)
                pushes.append(t)
                _, t = timed(lambda: hub.pull("bench/model", tmp / f"pulled{i}"))
                pulls.append(t)
                shutil.rmtree(tmp / f"pulled{i}")
            again, t_re = timed(lambda: hub.push(tmp / "src", "bench/model", kind="model"))
            hub.close()
        finally:
            proc.terminate()
            proc.wait()
    copy_s, durable_s, push_s, pull_s = min(copies), min(durable), min(pushes), min(pulls)
    cores = len(os.sched_getaffinity(0))
    sha_mbps = mb / min(hashes)
    ceiling = cores * sha_mbps / 2
    report = {
        "bytes": total,
        "disk_copy_MBps": round(mb / copy_s, 1),
        "push_MBps": round(mb / push_s, 1),
        "pull_MBps": round(mb / pull_s, 1),
        "disk_copy_fsync_MBps": round(mb / durable_s, 1),
        "push_vs_copy": round(copy_s / push_s, 3),
        "push_vs_copy_fsync": round(durable_s / push_s, 3),
        "pull_vs_copy": round(copy_s / pull_s, 3),
        "sha256_MBps_one_core": round(sha_mbps, 1),
        "cores": cores,
        "hash_ceiling_MBps": round(ceiling, 1),
        "hash_ceiling_vs_copy": round(ceiling / (mb / copy_s), 3),
        "push_vs_hash_ceiling": round((mb / push_s) / ceiling, 3),
        "repush_blob_bytes": again.bytes_sent,
        "repush_s": round(t_re, 3),
        "best_of": args.repeat,
    }
    print(json.dumps(report, indent=2))
    print(f"push {report['push_MBps']} MB/s = {report['push_vs_copy']}x disk copy "
          f"({report['push_vs_copy_fsync']}x copy+fsync); "
          f"pull {report['pull_MBps']} MB/s = {report['pull_vs_copy']}x disk copy; "
          f"re-push sent {again.bytes_sent} blob bytes; hashing both ends caps a push at "
          f"{report['hash_ceiling_MBps']} MB/s = {report['hash_ceiling_vs_copy']}x disk copy on {cores} cores")


if __name__ == "__main__":
    main()
