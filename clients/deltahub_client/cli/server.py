"""``deltahub serve`` and ``worker``: the hub server, and the workers that run every kind of job."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from deltahub import limits
from deltahub_client.cli.app import hub_command, limit_options, main


@main.command()
@click.option("--data-dir", envvar="DELTAHUB_DATA_DIR", default="./data", show_default=True,
              type=click.Path(file_okay=False),
              help="This server's folder: blobs and the SQLite catalog by default; scratch and cache otherwise.")
@click.option("--catalog", envvar="DELTAHUB_CATALOG", default=None,
              help="Catalog database: postgresql://user@host:port/db, shared by replicas "
                   "(default: a SQLite file in --data-dir).")
@click.option("--blob-store", envvar="DELTAHUB_BLOB_STORE", default=None,
              help="Where blobs live: s3://bucket/prefix (endpoint and credentials from AWS_ENDPOINT_URL, "
                   "AWS_ACCESS_KEY_ID, AWS_PROFILE...), shared by replicas (default: --data-dir).")
@click.option("--blob-cache-bytes", envvar="DELTAHUB_BLOB_CACHE_BYTES", type=int, default=20 << 30,
              show_default=True, help="Local copies of an object store's blobs kept at most (in --data-dir).")
@click.option("--address", default="127.0.0.1:50051", show_default=True, help="HOST:PORT to listen on.")
@click.option("--http-address", envvar="DELTAHUB_HTTP_ADDRESS", default=None,
              help="HOST:PORT for the Hugging Face Hub download API (HF_ENDPOINT=http://HOST:PORT); off by default.")
@click.option("--redis", "redis_url", envvar="DELTAHUB_REDIS_URL", default=None,
              help="Redis URL for jobs, events and the merge cache (in-process when absent).")
@click.option("--tokens", "tokens_file", envvar="DELTAHUB_TOKENS_FILE", default=None,
              help="Token file (YAML/JSON); without one the hub is open, on loopback only.")
@click.option("--max-blob-bytes", type=int, default=64 << 30, show_default=True, help="Refuse files larger than this.")
@click.option("--max-revision-bytes", type=int, default=512 << 30, show_default=True,
              help="Refuse revisions larger than this.")
@click.option("--embedder", default="all-minilm-l6-v2", show_default=True,
              help="Router embedder (a registry name); changing it re-embeds the cards.")
@click.option("--workers", "local_workers", type=int, default=None,
              help="In-process workers, for every kind of job (default 2 without --redis; 0 with it: "
                   "run `deltahub worker`, and the hub computes no tensors).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="Device of the in-process workers.")
@click.option("--tls-cert", envvar="DELTAHUB_SERVER_TLS_CERT", type=click.Path(exists=True, dir_okay=False),
              default=None, help="PEM certificate chain: serve TLS (with --tls-key; DELTAHUB_SERVER_TLS_CERT).")
@click.option("--tls-key", envvar="DELTAHUB_SERVER_TLS_KEY", type=click.Path(exists=True, dir_okay=False),
              default=None, help="PEM private key (DELTAHUB_SERVER_TLS_KEY).")
@click.option("--tls-client-ca", envvar="DELTAHUB_SERVER_TLS_CLIENT_CA", type=click.Path(exists=True, dir_okay=False),
              default=None, help="PEM CA: require client certificates it signed (mutual TLS).")
@click.option("--insecure", envvar="DELTAHUB_INSECURE", is_flag=True,
              help="Allow tokens in plaintext off loopback (only behind a proxy that terminates TLS).")
@click.option("--rpc-threads", type=int, default=16, show_default=True,
              help="Threads for blocking calls (catalog, disk); streams waiting on clients hold none.")
@click.option("--heavy-threads", type=int, default=2, show_default=True,
              help="Threads for heavy calls (checking merges and jobs before they are queued, GC).")
@click.option("--delta-encoding/--no-delta-encoding", default=True, show_default=True,
              help="Store models' and task vectors' files as deltas against their closest stored base, in the "
                   "background (reads rebuild them; pushed deltas are kept either way).")
@limit_options
@click.option("--log-level", default="INFO", show_default=True)
def serve(data_dir, catalog, blob_store, blob_cache_bytes, address, http_address, redis_url, tokens_file, max_blob_bytes, max_revision_bytes, embedder, local_workers,
          device, tls_cert, tls_key, tls_client_ca, insecure, rpc_threads, heavy_threads, delta_encoding, log_level, **limit_values):
    """Run the hub server: on its embedded defaults (blobs + SQLite under --data-dir), or as one of several
    replicas sharing --catalog postgresql://... and --blob-store s3://..."""
    from deltahub.auth import TokenTable
    from deltahub_server import ServerConfig
    from deltahub_server import serve as run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    groups = limits.from_flags(limit_values)
    run(ServerConfig(data_dir=Path(data_dir), catalog=catalog, blob_store=blob_store,
                     blob_cache_bytes=blob_cache_bytes, address=address, http_address=http_address, tokens=TokenTable.load(tokens_file),
                     redis_url=redis_url, max_blob_bytes=max_blob_bytes, max_revision_bytes=max_revision_bytes,
                     embedder=embedder, local_workers=local_workers, worker_device=device,
                     tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca, insecure=insecure,
                     workers=rpc_threads, heavy_workers=heavy_threads, streams=groups[limits.StreamLimits],
                     uploads=groups[limits.UploadLimits], inputs=groups[limits.InputLimits],
                     training_limits=groups[limits.TrainingLimits], jobs=groups[limits.JobLimits],
                     deltas=groups[limits.DeltaLimits], delta_encoding=delta_encoding))


@main.command()
@click.option("--catalog", envvar="DELTAHUB_CATALOG", default=None,
              help="postgresql://... or a SQLite path (default: the SQLite file in --data-dir).")
@click.option("--data-dir", envvar="DELTAHUB_DATA_DIR", default="./data", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--check", is_flag=True, help="Only say which migrations are missing (exit 1 if any).")
def migrate(catalog, data_dir, check):
    """Upgrade the catalog's schema in place (servers do this when they start; run it first to upgrade
    a shared catalog before replicas of a new version roll out)."""
    from deltahub.errors import DeltahubError
    from deltahub.storage.database import open_database
    from deltahub.storage.schema import LATEST, MIGRATIONS, current_version, upgrade

    url = catalog or str(Path(data_dir) / "catalog.sqlite")
    try:
        db = open_database(url)
        try:
            have = current_version(db)
            missing = [m for m in MIGRATIONS if m.version > have]
            where = getattr(db, "safe_url", db.url)
            if check or not missing:
                click.echo(f"catalog {where}: schema version {have} of {LATEST}")
                for m in missing:
                    click.echo(f"  missing {m.version}: {m.name}")
                if check and missing:
                    raise SystemExit(1)
                return
            for m in upgrade(db):
                click.echo(f"applied {m.version}: {m.name}")
            click.echo(f"catalog {where}: schema version {LATEST}")
        finally:
            db.close()
    except DeltahubError as err:
        raise click.ClickException(str(err)) from None


@hub_command(json_output=False, bars=False)
@click.option("--redis", "redis_url", envvar="DELTAHUB_REDIS_URL", required=True,
              help="Redis URL the hub's jobs go through (DELTAHUB_REDIS_URL).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: CUDA with bf16 when present, else CPU.")
@click.option("--name", default=None, help="Worker name (default host-pid-random).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where downloaded revisions are kept, by digest (and outputs, until uploaded).")
@click.option("--lease", "lease_s", type=float, default=30.0, show_default=True,
              help="Seconds a job stays held without renewal before another worker takes it.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs.")
@click.option("--log-level", default="INFO", show_default=True)
def worker(hub, ui, redis_url, device, name, cache_dir, lease_s, max_jobs, log_level):
    """Take jobs of every kind from Redis (training, merges, evaluation, assemblies, task vectors) and run
    them, on CUDA when present, until stopped. Its token needs write scope on the jobs' namespaces."""
    from deltahub.jobs import open_queue
    from deltahub_trainers.worker import Worker

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    queue = open_queue(redis_url, lease_s=lease_s)
    try:
        hub.health()
        w = Worker(hub, queue, device=device, name=name, cache_dir=cache_dir)
        click.echo(f"worker {w.name} on {w.device_type}, jobs from {redis_url}, hub {hub.address}", err=True)
        w.run(stop, max_jobs=max_jobs)
    finally:
        queue.close()
