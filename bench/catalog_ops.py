"""Catalog operations per second on SQLite and PostgreSQL, with 1 and 2 replicas.

A replica here is a process with its own HubStore over the catalog (SQLite: the same file, which is
how replicas share it on one machine; PostgreSQL: the same database), --threads callers each, all on
one local blob folder so that only the catalog differs. For --seconds each, they run:

* commits: a new dataset revision (one small blob, validated) and its ref;
* ref moves: compare-and-swap of a ref of their own between two revisions;
* listings: the artifacts of a namespace with their refs.

Prints operations per second per backend and the PostgreSQL/SQLite ratio in the same run.

Usage: python bench/catalog_ops.py [--seconds 5] [--threads 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hub"))

import psycopg  # noqa: E402

from deltahub.artifacts import FileEntry, Kind  # noqa: E402
from deltahub.store import CommitRequest, HubStore, StoreConfig  # noqa: E402

PG = os.environ.get("DELTAHUB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
OPS = ("commits", "ref moves", "listings")


def _replica(catalog: str, blobs: str, data_dir: str, op: str, threads: int, seconds: float, tag: str, out) -> None:
    store = HubStore(StoreConfig(Path(data_dir), catalog=catalog, blob_store=blobs))
    # each caller owns an artifact with two revisions to swing a ref between
    seeds = {}
    for t in range(threads):
        name = f"bench/{tag}-{t}"
        revs = []
        for i in range(2):
            sha, size = store.blobs.put_bytes(f'{{"text": "{tag} {t} {i}"}}\n'.encode())
            rev, _ = store.commit(CommitRequest(name, Kind.DATASET, [FileEntry("train.jsonl", sha, size)],
                                                ref=f"r{i}"))
            revs.append(rev.digest)
        seeds[t] = (name, revs)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(t: int) -> None:
        name, revs = seeds[t]
        n = 0
        while time.monotonic() < stop:
            if op == "commits":
                sha, size = store.blobs.put_bytes(f'{{"text": "{tag} {t} {n} {uuid.uuid4().hex}"}}\n'.encode())
                store.commit(CommitRequest(name, Kind.DATASET, [FileEntry("train.jsonl", sha, size)]))
            elif op == "ref moves":
                store.update_ref(name, "swing", revs[n % 2], expected=revs[(n + 1) % 2] if n else "")
            else:
                store.list_artifacts("bench")
            n += 1
        counts[t] = n

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.close()
    out.put(sum(counts))


def measure(catalog: str, blobs: str, tmp: Path, replicas: int, op: str, threads: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_replica, args=(catalog, blobs, str(tmp / f"r{i}-{uuid.uuid4().hex[:6]}"), op,
                                                threads, seconds, f"{op[:3]}{replicas}{i}", out))
             for i in range(replicas)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    db = f"deltahub_bench_{os.getpid()}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
    results: dict[tuple[str, int, str], float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for replicas in (1, 2):
                for op in OPS:
                    # a fresh catalog per figure, so earlier rows do not weigh on later ones
                    sqlite = str(tmp / f"catalog-{replicas}-{op[:3]}.sqlite")
                    schema = f"s{replicas}_{op[:3]}"
                    with psycopg.connect(PG.rsplit("/", 1)[0] + f"/{db}", autocommit=True) as conn:
                        conn.execute(f"CREATE SCHEMA {schema}")
                    pg = PG.rsplit("/", 1)[0] + f"/{db}?options=-csearch_path%3D{schema}"
                    for backend, url in (("sqlite", sqlite), ("postgresql", pg)):
                        results[(backend, replicas, op)] = measure(url, str(tmp / f"blobs-{backend}"), tmp, replicas,
                                                                   op, args.threads, args.seconds)
    finally:
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    print(f"operations/s, {args.threads} threads per replica, {args.seconds:g} s each, {os.cpu_count()} cores, "
          "PostgreSQL on loopback")
    print(f"{'operation':<11} {'replicas':>8} {'SQLite':>10} {'PostgreSQL':>11} {'PG/SQLite':>10}")
    for replicas in (1, 2):
        for op in OPS:
            lite, pg = results[("sqlite", replicas, op)], results[("postgresql", replicas, op)]
            print(f"{op:<11} {replicas:>8} {lite:>10.0f} {pg:>11.0f} {pg / lite:>9.2f}x")


if __name__ == "__main__":
    main()
