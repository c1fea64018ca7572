"""The hub under concurrent load and abuse, against itself idle.

Starts a real `deltahub serve` process on loopback and, in one run, measures:

* idle: health-check and small-read (GetRevision) latency with nothing else
  going on, from a client process of its own: the peer;
* under load and abuse for --seconds: pushers (fresh 256 KB datasets),
  pullers (a model folder), readers (show, ls), compare-and-swap clients
  racing on one ref, while --stalled upload streams (one chunk, then
  silence) and --watches watch streams stay open; throughput and p50/p99 of
  each kind, and health/read latency as ratios to idle;
* lost updates: the ref walks a chain of pre-pushed revisions v0, v1, ...
  and each successful compare-and-swap moves it one step, so the final step
  must equal the number of successes; the difference is updates lost (must be 0).

Traffic goes to 127.0.0.1 only; every loop is bounded in time and stops by itself.

Usage: python bench/load.py [--seconds 20] [--stalled 200] [--watches 100] [--cas-clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import grpc
import torch
from safetensors.torch import save_file

from deltahub.errors import DeltahubError, StaleRefError
from deltahub.v1 import train_pb2, train_pb2_grpc, transfer_pb2, transfer_pb2_grpc
from deltahub_client import Hub


def start_server(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("deltahub")
    proc = subprocess.Popen([str(exe), "serve", "--data-dir", str(data_dir), "--address", "127.0.0.1:0",
                             "--workers", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("server exited")
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, f"{m[1]}:{m[2]}"
    raise RuntimeError("server did not start")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(hub: Hub, spec: str, n: int) -> tuple[list[float], list[float]]:
    health, reads = [], []
    for _ in range(n):
        t = time.perf_counter()
        hub.health()
        health.append(time.perf_counter() - t)
        t = time.perf_counter()
        hub.show(spec)
        reads.append(time.perf_counter() - t)
    return health, reads


def probe(address: str, spec: str, n: int) -> tuple[list[float], list[float]]:
    """Health and read latencies measured from a process of their own, so the load's client threads
    (this process's GIL) do not stand in the numbers: what a separate client of the hub sees."""
    out = subprocess.run([sys.executable, __file__, "--probe", address, spec, str(n)], capture_output=True,
                         text=True, timeout=600, check=True)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return doc["health"], doc["reads"]


def make_model(dest: Path, mb: int) -> None:
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(json.dumps({"model_type": "bench"}))
    save_file({"w": torch.randn(mb * 250_000).to(torch.float32)}, str(dest / "model.safetensors"))


def make_dataset(dest: Path, tag: str, kb: int = 1) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    row = json.dumps({"text": f"{tag} " + "x" * 200}) + "\n"
    (dest / "train.jsonl").write_text(row * max(1, kb * 1024 // len(row)))
    return dest


async def abuse(address: str, stalled: int, watches: int, stop: asyncio.Event, opened: list[int]) -> None:
    """Stalled uploads (one chunk, then silence) and watches of unknown jobs kept open until ``stop``."""
    async with grpc.aio.insecure_channel(address) as ch:
        transfer = transfer_pb2_grpc.TransferStub(ch)
        train = train_pb2_grpc.TrainStub(ch)

        async def one_upload(i: int):
            sha = hashlib.sha256(f"stall-{i}-{os.getpid()}".encode()).hexdigest()

            async def chunks():
                yield transfer_pb2.UploadChunk(sha256=sha, size=1 << 20, offset=0, data=b"x" * 1024)
                opened[0] += 1
                await stop.wait()

            try:
                await transfer.UploadBlob(chunks())
            except grpc.aio.AioRpcError:
                pass

        async def one_watch(i: int):
            call = train.WatchJob(train_pb2.WatchJobRequest(id=f"bench/never-{i}"))
            try:
                await asyncio.wait_for(stop.wait(), timeout=None)
            finally:
                call.cancel()

        await asyncio.gather(*(one_upload(i) for i in range(stalled)), *(one_watch(i) for i in range(watches)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--stalled", type=int, default=200)
    ap.add_argument("--watches", type=int, default=100)
    ap.add_argument("--pushers", type=int, default=2)
    ap.add_argument("--pullers", type=int, default=2)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--cas-clients", type=int, default=8)
    ap.add_argument("--chain", type=int, default=600, help="revisions the CAS ref can walk through")
    ap.add_argument("--probe", nargs=3, metavar=("ADDRESS", "SPEC", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        with Hub(args.probe[0], progress=False) as h:
            health, reads = latencies(h, args.probe[1], int(args.probe[2]))
        print(json.dumps({"health": health, "reads": reads}))
        return

    tmp = Path(tempfile.mkdtemp(prefix="deltahub-load-"))
    streams = str(args.stalled + args.watches + 64)
    proc, address = start_server(tmp / "data", "--max-streams-per-principal", streams,
                                 "--max-partial-uploads", streams)
    try:
        hub = Hub(address, progress=False)
        make_model(tmp / "model", 8)
        hub.push(tmp / "model", "bench/model", kind="model")
        print(f"setting up: {args.chain} revisions for the compare-and-swap chain ...", flush=True)
        chain = []
        for i in range(args.chain):
            rev = hub.push(make_dataset(tmp / "chain" / str(i), f"v{i}"), "bench/chain", kind="dataset",
                           ref=f"v{i}").revision
            chain.append(rev.digest)
        step_of = {d: i for i, d in enumerate(chain)}
        hub.tag("bench/chain", "counter", chain[0])

        idle_health, idle_reads = probe(address, "bench/model", 200)

        lat: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, int] = defaultdict(int)
        cas_ok = [0]
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds
        stop_abuse = threading.Event()
        opened = [0]

        def run_abuse():
            async def go():
                stop = asyncio.Event()
                task = asyncio.create_task(abuse(address, args.stalled, args.watches, stop, opened))
                while not stop_abuse.is_set():
                    await asyncio.sleep(0.1)
                stop.set()
                await asyncio.wait_for(task, timeout=30)

            asyncio.run(go())

        abuser = threading.Thread(target=run_abuse, daemon=True)
        abuser.start()
        t0 = time.monotonic()
        while opened[0] < args.stalled and time.monotonic() - t0 < 30:
            time.sleep(0.1)

        def timed(kind: str, fn) -> None:
            t = time.perf_counter()
            try:
                fn()
            except StaleRefError:
                raise
            except DeltahubError as err:
                with lock:
                    errors[f"{kind}: {type(err).__name__}"] += 1
                return
            with lock:
                lat[kind].append(time.perf_counter() - t)

        def pusher(i: int):
            with Hub(address, progress=False) as h:
                n = 0
                while time.monotonic() < deadline:
                    folder = make_dataset(tmp / "push" / f"{i}-{n}", f"p{i}-{n}", kb=256)
                    timed("push 256 KB", lambda: h.push(folder, f"bench/p{i}", kind="dataset"))
                    shutil.rmtree(folder, ignore_errors=True)
                    n += 1

        def puller(i: int):
            with Hub(address, progress=False) as h:
                n = 0
                while time.monotonic() < deadline:
                    dest = tmp / "pull" / f"{i}-{n}"
                    timed("pull 8 MB", lambda: h.pull("bench/model", dest))
                    shutil.rmtree(dest, ignore_errors=True)
                    n += 1

        def reader(i: int):
            with Hub(address, progress=False) as h:
                while time.monotonic() < deadline:
                    timed("show", lambda: h.show("bench/model"))
                    timed("ls", lambda: h.list_artifacts("bench"))
                    timed("health", h.health)

        def cas(i: int):
            rng = random.Random(i)
            with Hub(address, progress=False) as h:
                while time.monotonic() < deadline:
                    current = h.show("bench/chain@counter").digest
                    nxt = step_of[current] + 1
                    if nxt >= len(chain):
                        return
                    t = time.perf_counter()
                    try:
                        h.tag("bench/chain", "counter", chain[nxt], expected_revision=current)
                    except StaleRefError:
                        with lock:
                            lat["cas lost race"].append(time.perf_counter() - t)
                        time.sleep(rng.random() * 0.002)
                        continue
                    with lock:
                        cas_ok[0] += 1
                        lat["cas won"].append(time.perf_counter() - t)

        threads = [threading.Thread(target=f, args=(i,)) for f, n in
                   ((pusher, args.pushers), (puller, args.pullers), (reader, args.readers), (cas, args.cas_clients))
                   for i in range(n)]
        started = time.monotonic()
        for t in threads:
            t.start()
        busy_health, busy_reads = probe(address, "bench/model", 150)
        for t in threads:
            t.join()
        took = time.monotonic() - started
        stop_abuse.set()
        abuser.join(timeout=40)
        final = step_of[hub.show("bench/chain@counter").digest]

        print(f"\nload for {took:.1f} s with {opened[0]} stalled uploads and {args.watches} watches open "
              f"({args.pushers} pushers, {args.pullers} pullers, {args.readers} readers, {args.cas_clients} CAS clients)")
        print(f"{'operation':<16} {'ops':>6} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for kind in sorted(lat):
            v = lat[kind]
            print(f"{kind:<16} {len(v):>6} {len(v) / took:>8.1f} {pct(v, 0.5) * 1e3:>8.1f} {pct(v, 0.99) * 1e3:>8.1f}")
        ih, ir, bh, br = (pct(idle_health, 0.5), pct(idle_reads, 0.5), pct(busy_health, 0.5), pct(busy_reads, 0.5))
        print(f"\nhealth p50 idle {ih * 1e3:.2f} ms, under abuse {bh * 1e3:.2f} ms ({bh / ih:.1f}x); "
              f"p99 {pct(idle_health, 0.99) * 1e3:.2f} -> {pct(busy_health, 0.99) * 1e3:.2f} ms, "
              f"max under abuse {max(busy_health) * 1e3:.1f} ms")
        print(f"read   p50 idle {ir * 1e3:.2f} ms, under abuse {br * 1e3:.2f} ms ({br / ir:.1f}x); "
              f"p99 {pct(idle_reads, 0.99) * 1e3:.2f} -> {pct(busy_reads, 0.99) * 1e3:.2f} ms")
        print(f"compare-and-swap: {cas_ok[0]} won, ref moved {final} steps: lost updates {cas_ok[0] - final}")
        if errors:
            print("errors:", dict(errors))
        hub.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
