"""Push and pull through a replica on the S3 store, against a plain boto3 transfer of the same files.

One run, the same files (a model folder of safetensors shards, ~--size-mb), one S3 server
(moto's standalone server on loopback, or your own with --endpoint and the usual AWS variables):

* boto3 ``upload_file``/``download_file`` of each file, the managed transfer `aws s3 cp` uses: the peer;
* `deltahub push` into a `deltahub serve --catalog postgresql://... --blob-store s3://...` replica
  (multipart upload of 8 MiB parts, sha256 verified, staged then server-side copied to its key);
* `deltahub pull` through a second replica that holds no local copy (streamed from S3, verified by the client);
* the same push into a replica keeping blobs in a local folder (same catalog): what the object store adds.

moto completes multipart uploads and copies objects in Python, in memory; a real object store does both
server-side, so these ratios are an upper bound on what S3 costs a push.

each --repeat times into a fresh bucket prefix and catalog schema, best kept. Prints MB/s and the ratios.

Usage: python bench/object_store.py [--size-mb 200] [--shards 4] [--repeat 3] [--endpoint URL]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import boto3  # noqa: E402
import psycopg  # noqa: E402

from transfer import make_folder  # noqa: E402
from deltahub_client import Hub  # noqa: E402
from tests.helpers import MotoServer, ServeProcess  # noqa: E402

PG = os.environ.get("DELTAHUB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint of your own (default: moto on loopback)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = make_folder(tmp / "model", args.size_mb, args.shards)
        files = sorted(p for p in (tmp / "model").iterdir())
        moto = MotoServer(tmp) if args.endpoint is None else None
        if moto is not None:
            moto.__enter__()
        db = f"deltahub_bench_{os.getpid()}"
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {db}")
        try:
            s3 = boto3.client("s3")
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            times: dict[str, list[float]] = {"boto3 upload_file": [], "boto3 upload_file + copy_object": [],
                                             "boto3 download_file": [],
                                             "deltahub push (replica 1)": [], "deltahub pull (replica 2)": [],
                                             "push, local folder instead": []}
            for run in range(args.repeat):
                t0 = time.perf_counter()
                for f in files:
                    s3.upload_file(str(f), bucket, f"peer{run}/{f.name}")
                times["boto3 upload_file"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()  # what naming a verified upload costs on top: staged, then copied
                for f in files:
                    s3.upload_file(str(f), bucket, f"staged{run}/{f.name}")
                    s3.copy_object(CopySource={"Bucket": bucket, "Key": f"staged{run}/{f.name}"}, Bucket=bucket,
                                   Key=f"named{run}/{f.name}")
                times["boto3 upload_file + copy_object"].append(time.perf_counter() - t0)
                (tmp / f"down{run}").mkdir()
                t0 = time.perf_counter()
                for f in files:
                    s3.download_file(bucket, f"peer{run}/{f.name}", str(tmp / f"down{run}" / f.name))
                times["boto3 download_file"].append(time.perf_counter() - t0)

                schema = f"run{run}"
                with psycopg.connect(PG.rsplit("/", 1)[0] + f"/{db}", autocommit=True) as conn:
                    conn.execute(f"CREATE SCHEMA {schema}")
                shared = ("--catalog", PG.rsplit("/", 1)[0] + f"/{db}?options=-csearch_path%3D{schema}",
                          "--blob-store", f"s3://{bucket}/hub{run}", "--workers", "0")
                one, two = ServeProcess(tmp / f"a{run}", *shared), ServeProcess(tmp / f"b{run}", *shared)
                try:
                    with Hub(one.address, progress=False) as hub:
                        t0 = time.perf_counter()
                        hub.push(tmp / "model", "bench/model", kind="model")
                        times["deltahub push (replica 1)"].append(time.perf_counter() - t0)
                    with Hub(two.address, progress=False) as hub:
                        t0 = time.perf_counter()
                        hub.pull("bench/model", tmp / f"pull{run}")
                        times["deltahub pull (replica 2)"].append(time.perf_counter() - t0)
                finally:
                    one.stop()
                    two.stop()
                # the same push with the blobs in a local folder: what the object store adds
                local = ServeProcess(tmp / f"l{run}", *shared[:2], "--workers", "0")
                try:
                    with Hub(local.address, progress=False) as hub:
                        t0 = time.perf_counter()
                        hub.push(tmp / "model", "bench/local", kind="model")
                        times["push, local folder instead"].append(time.perf_counter() - t0)
                finally:
                    local.stop()
        finally:
            with psycopg.connect(PG, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            if moto is not None:
                moto.__exit__(None, None, None)
    mb = size / 1e6
    where = args.endpoint or "moto_server on loopback"
    print(f"{mb:.0f} MB in {args.shards} shard(s), best of {args.repeat}, S3 at {where}, {os.cpu_count()} cores")
    best = {name: min(ts) for name, ts in times.items()}
    for name, t in best.items():
        peer = best["boto3 download_file" if name in ("boto3 download_file", "deltahub pull (replica 2)")
                    else "boto3 upload_file"]
        print(f"{name:<34} {t:7.2f} s  {mb / t:8.1f} MB/s  {t / peer:5.2f}x boto3")


if __name__ == "__main__":
    main()
