"""snapshot_download through deltahub's Hugging Face-compatible endpoint, against `deltahub pull` and a disk copy.

One run, the same files: a model folder of safetensors shards (~--size-mb)
pushed into a `deltahub serve --http-address` process, then

* disk copy (shutil.copytree) of the folder: the peer;
* `deltahub pull` (the SDK's download over gRPC, sha256 verified);
* `huggingface_hub.snapshot_download` with HF_ENDPOINT at the hub, in a
  process of its own, into an empty cache (it verifies nothing by default,
  so its figure is transfer and write alone);

each --repeat times, best kept. Prints MB/s and the ratios to the copy.

Usage: python bench/hf_download.py [--size-mb 500] [--shards 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from transfer import make_folder  # noqa: E402
from deltahub_client import Hub  # noqa: E402
from tests.helpers import ServeProcess  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = make_folder(tmp / "model", args.size_mb, args.shards)
        http = free_port()
        server = ServeProcess(tmp / "data", "--http-address", f"127.0.0.1:{http}")
        try:
            with Hub(server.address, progress=False) as hub:
                hub.push(tmp / "model", "bench/model", kind="model")
                n = [0]

                def copy():
                    n[0] += 1
                    shutil.copytree(tmp / "model", tmp / f"copy{n[0]}")

                def pull():
                    n[0] += 1
                    hub.pull("bench/model", tmp / f"pull{n[0]}")

                def snapshot():
                    n[0] += 1
                    code = (f"from huggingface_hub import snapshot_download; "
                            f"snapshot_download('bench/model', cache_dir={str(tmp / f'hf{n[0]}')!r})")
                    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{http}", "HF_HUB_OFFLINE": "0",
                           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
                    subprocess.run([sys.executable, "-c", code], env=env, check=True)

                t_copy = best(copy, args.repeat)
                t_pull = best(pull, args.repeat)
                t_snap = best(snapshot, args.repeat)
        finally:
            server.stop()
    mb = size / 1e6
    print(f"{mb:.0f} MB in {args.shards} shard(s), best of {args.repeat}, loopback, {os.cpu_count()} cores")
    for name, t in (("disk copy", t_copy), ("deltahub pull", t_pull), ("snapshot_download via HF_ENDPOINT", t_snap)):
        print(f"{name:<36} {t:7.2f} s  {mb / t:8.1f} MB/s  {t / t_copy:5.2f}x the copy")
    print("(snapshot_download's time includes starting its Python process)")


if __name__ == "__main__":
    main()
