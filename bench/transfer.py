"""Push and pull throughput over loopback, as ratios to a disk copy of the same files.

Builds a model folder of safetensors shards (~--size-mb in all), starts a real
`deltahub serve` process, and in one run measures:

* disk copy (shutil.copytree) of the folder: the peer; and the same copy
  followed by fsync of every file, the durability the hub gives each blob;
* push (hash, plan, upload in 1 MiB chunks, validate, commit) and its MB/s;
* pull (download, verify sha256) and its MB/s;
* a re-push of the unchanged folder: blob bytes sent (must be 0);
* a bare gRPC stream (grpcio, 1 MiB messages of raw bytes from memory, as
  many parallel streams as the hub client uses, nothing hashed or written),
  server in its own process: the transport's own rate, the peer that shows
  how much of the gap to a disk copy is the transport;
* sha256 of the folder on one core, for the ceiling content addressing sets:
  the client hashes every byte to ask which blobs are missing and the server
  hashes every byte to verify it, so a push over loopback, with both ends on
  this machine's cores, cannot beat cores x sha256 rate / 2 even if sending,
  writing and validating cost nothing; a pull hashes once (the client
  verifies), so it cannot beat the bytes over (CPU of the bare stream + one
  hash) / cores, even if writing cost nothing.

Usage: python bench/transfer.py [--size-mb 500] [--shards 4] [--repeat 3]
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
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import psutil
import torch
from safetensors.torch import save_file

from deltahub.storage.hashing import sha256_file
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


BARE_METHOD = "/bench.Bare/Stream"
BARE_CHUNK = 1 << 20
BARE_STREAMS = 4  # the hub client's parallel transfers


def serve_bare() -> None:
    """A grpcio server streaming N bytes (the request, as text) in 1 MiB messages; prints its port."""
    block = os.urandom(BARE_CHUNK)

    def stream(request: bytes, context):
        left = int(request)
        while left > 0:
            n = min(left, BARE_CHUNK)
            yield block[:n] if n < BARE_CHUNK else block
            left -= n

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2 * BARE_STREAMS))
    handler = grpc.method_handlers_generic_handler("bench.Bare", {
        "Stream": grpc.unary_stream_rpc_method_handler(stream)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def bare_stream(total: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of both ends) for a bare gRPC server process to stream ``total``
    bytes to this process over BARE_STREAMS streams."""
    proc = subprocess.Popen([sys.executable, __file__, "--bare-server"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 4 << 20)]) as ch:
            call = ch.unary_stream(BARE_METHOD)
            got = [0] * BARE_STREAMS

            def one(i: int) -> None:
                for msg in call(str(total // BARE_STREAMS).encode()):
                    got[i] += len(msg)

            one(0)  # warm the channel
            got[0] = 0
            threads = [threading.Thread(target=one, args=(i,)) for i in range(BARE_STREAMS)]
            cpu0, t0 = process_cpu_s(proc.pid) + time.process_time(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - t0
            cpu = process_cpu_s(proc.pid) + time.process_time() - cpu0
            assert sum(got) == total // BARE_STREAMS * BARE_STREAMS, got
            return seconds, cpu
    finally:
        proc.terminate()
        proc.wait()


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
    ap.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_server:
        serve_bare()
        return
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        total = make_folder(tmp / "src", args.size_mb, args.shards)
        mb = total / 1e6
        proc, address = start_server(tmp / "data")
        try:
            hub = Hub(address, progress=False)
            copies, durable, pushes, pulls, hashes, bare = [], [], [], [], [], []
            for i in range(args.repeat):
                bare.append(bare_stream(total))
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
    bare_s, bare_cpu = min(bare)
    bare_mbps = mb / bare_s
    # a pull moves the bytes (at least the bare stream's CPU) and hashes them once, on the same cores
    pull_ceiling = mb / ((bare_cpu + min(hashes)) / cores)
    report = {
        "bytes": total,
        "disk_copy_MBps": round(mb / copy_s, 1),
        "push_MBps": round(mb / push_s, 1),
        "pull_MBps": round(mb / pull_s, 1),
        "disk_copy_fsync_MBps": round(mb / durable_s, 1),
        "push_vs_copy": round(copy_s / push_s, 3),
        "push_vs_copy_fsync": round(durable_s / push_s, 3),
        "pull_vs_copy": round(copy_s / pull_s, 3),
        "bare_grpc_stream_MBps": round(bare_mbps, 1),
        "bare_grpc_vs_copy": round(bare_mbps / (mb / copy_s), 3),
        "bare_grpc_cpu_s": round(bare_cpu, 3),
        "pull_vs_bare_grpc": round((mb / pull_s) / bare_mbps, 3),
        "pull_ceiling_MBps": round(pull_ceiling, 1),
        "pull_ceiling_vs_copy": round(pull_ceiling / (mb / copy_s), 3),
        "push_vs_bare_grpc": round((mb / push_s) / bare_mbps, 3),
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
          f"{report['hash_ceiling_MBps']} MB/s = {report['hash_ceiling_vs_copy']}x disk copy on {cores} cores; "
          f"a bare gRPC stream moves {report['bare_grpc_stream_MBps']} MB/s = {report['bare_grpc_vs_copy']}x "
          f"disk copy (pull {report['pull_vs_bare_grpc']}x, push {report['push_vs_bare_grpc']}x of it); its CPU plus "
          f"one hash caps a pull at {report['pull_ceiling_MBps']} MB/s = {report['pull_ceiling_vs_copy']}x disk copy")


if __name__ == "__main__":
    main()
