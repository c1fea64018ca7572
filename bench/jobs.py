"""What running merges as jobs costs: the job path against the engine called directly, in the same run.

Builds a Llama-shaped base and three fine-tunes (float32, ~--params
parameters each) and merges them with task_arithmetic, each in a fresh hub
data folder (so nothing is answered from the recipe cache):

* direct: ``MergeEngine(store).merge`` in this process (the peer);
* embedded: ``hub.merge`` against ``deltahub serve``'s in-process worker
  (job in the catalog, the worker reads the store in place, commits over
  loopback gRPC);
* remote: ``hub.merge`` with ``--redis`` and ``--workers 0`` and a
  ``deltahub worker`` process with a cold cache, which downloads the inputs
  and uploads the result; its peer is direct + a disk copy of the inputs and
  the output (what moving the bytes costs at the least).

Then the queue itself: claim + progress + succeed cycles per second on the
catalog queue and on Redis.

Usage: python bench/jobs.py [--params 50e6] [--redis redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def build(root: Path, params: float) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden = 512
    layers = max(2, round(params / (12.6 * hidden * hidden)))
    config = LlamaConfig(vocab_size=8000, hidden_size=hidden, intermediate_size=1376, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    for i in range(3):
        with torch.no_grad():
            for p in base.parameters():
                p.add_(torch.randn_like(p) * 1e-3)
        base.save_pretrained(root / f"ft{i}")


def push_all(hub, root: Path) -> None:
    hub.push(root / "base", "bench/base", kind="model")
    for i in range(3):
        hub.push(root / f"ft{i}", f"bench/ft{i}", kind="model")


INPUTS = [f"bench/ft{i}" for i in range(3)]


def direct(root: Path, work: Path) -> float:
    from deltahub.merge_engine import MergeEngine, MergeRequest
    from deltahub.store import HubStore

    store = HubStore.open(work / "direct")
    for name in ("base", "ft0", "ft1", "ft2"):
        _push_local(store, root / name, f"bench/{name}")
    start = time.perf_counter()
    MergeEngine(store).merge(MergeRequest(method="task_arithmetic", inputs=INPUTS, base="bench/base", out="bench/m",
                                          device="cpu"))
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def _push_local(store, folder: Path, artifact: str) -> None:
    from deltahub.artifacts import FileEntry, Kind
    from deltahub.store import CommitRequest

    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with store.blobs.writer() as w, open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                w.write(chunk)
        files.append(FileEntry(path.relative_to(folder).as_posix(), w.sha256, w.size))
    store.commit(CommitRequest(artifact=artifact, kind=Kind.MODEL, files=files))


def through_hub(root: Path, work: Path, redis_url: str | None) -> float:
    from deltahub_client import Hub
    from deltahub_server import ServerConfig, create_server

    data = work / ("remote" if redis_url else "embedded")
    running = create_server(ServerConfig(data_dir=data, address="127.0.0.1:0", redis_url=redis_url,
                                         local_workers=0 if redis_url else 1))
    worker = None
    try:
        with Hub(f"127.0.0.1:{running.port}", progress=False) as hub:
            push_all(hub, root)
            if redis_url:
                exe = Path(sys.executable).with_name("deltahub")
                worker = subprocess.Popen([str(exe), "--hub", f"127.0.0.1:{running.port}", "worker", "--redis",
                                           redis_url, "--device", "cpu", "--cache-dir", str(work / "cache")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(8)  # the worker's imports, before the clock starts
            start = time.perf_counter()
            result = hub.merge("task_arithmetic", INPUTS, base="bench/base", out="bench/m", device="cpu")
            seconds = time.perf_counter() - start
            assert not result.cached
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        running.stop(grace=None)
    return seconds


def copy_cost(root: Path, work: Path) -> float:
    """A disk copy of the three inputs, the base and one output: the bytes a remote worker moves."""
    start = time.perf_counter()
    for name in ("base", "ft0", "ft1", "ft2", "ft0"):
        shutil.copytree(root / name, work / "copy" / f"{name}-{time.monotonic_ns()}")
    return time.perf_counter() - start


def queue_rate(queue, n: int) -> float:
    from deltahub.jobs import MERGE

    start = time.perf_counter()
    for i in range(n):
        job, _ = queue.submit(MERGE, "bench", {"i": i, "t": start})
        taken = queue.claim("w", "cpu", timeout_s=1)
        queue.progress(taken.id, "w", "merging", 1, 2, {"bytes": 1})
        queue.succeed(taken.id, "w", {"artifact": "bench/x", "digest": "0"})
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=float, default=50e6)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--cycles", type=int, default=300)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="deltahub-jobs-bench-"))
    try:
        build(root / "models", args.params)
        models = root / "models"
        d = direct(models, root)
        e = through_hub(models, root, None)
        import redis

        client = redis.Redis.from_url(args.redis)
        client.flushdb()
        r = through_hub(models, root, args.redis)
        c = copy_cost(models, root)
        print(f"task_arithmetic of 3 x {args.params / 1e6:.0f}M params (float32):")
        print(f"  direct engine      {d:7.2f} s")
        print(f"  embedded job       {e:7.2f} s   {e / d:.2f}x direct")
        print(f"  remote worker      {r:7.2f} s   {r / d:.2f}x direct; {r / (d + c):.2f}x direct + disk copy "
              f"({c:.2f} s) of what it moves")
        from deltahub.jobs.redis_queue import RedisQueue
        from deltahub.jobs.catalog_queue import CatalogQueue
        from deltahub.storage.catalog import Catalog

        client.flushdb()
        cat = queue_rate(CatalogQueue(Catalog(root / "q.sqlite")), args.cycles)
        red = queue_rate(RedisQueue(args.redis), args.cycles)
        client.flushdb()
        print(f"queue: submit+claim+progress+succeed cycles/s: catalog {cat:.0f}, redis {red:.0f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
