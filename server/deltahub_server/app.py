"""Building and running the server.

``create_server`` binds, starts and returns a :class:`RunningServer` without
blocking, so tests bind port 0 and talk over a real channel; ``serve`` adds
logging, signal handling and a graceful stop around it. The server is
``grpc.aio`` on an event loop of its own thread: calls that wait on their
client hold no thread (see ``runtime``).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deltahub.auth import TokenTable
from deltahub.errors import InvalidInputError
from deltahub.pem import read_pem
from deltahub.store import HubStore, StoreConfig
from deltahub.merge_engine import MergeEngine
from deltahub.routing.assembly import Assembler
from deltahub.routing.embedders import DEFAULT_EMBEDDER
from deltahub.routing.router import Router
from deltahub.v1 import (
    merge_pb2,
    merge_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    train_pb2,
    train_pb2_grpc,
    transfer_pb2,
    transfer_pb2_grpc,
)
from deltahub_server.background import BackgroundCompaction
from deltahub_server.auth import AuthInterceptor
from deltahub_server.discovery import enable_reflection
from deltahub_server.hfapi import HfEndpoint, bound_port, start_http
from deltahub_server.merge import MergeServicer
from deltahub_server.jobs import JobBoard, JobsServicer
from deltahub_server.registry import RegistryServicer
from deltahub_server.router import RouterServicer
from deltahub_server.train import TrainServicer
from deltahub_server.workers import WorkerPool
from deltahub.limits import DeltaLimits, InputLimits, JobLimits, StreamLimits, TrainingLimits, UploadLimits
from deltahub_server.runtime import Blocking, StreamBudget
from deltahub_server.transfer import CHUNK_SIZE, TransferServicer

log = logging.getLogger("deltahub.server")

SERVICE_NAMES = (
    registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
    transfer_pb2.DESCRIPTOR.services_by_name["Transfer"].full_name,
    merge_pb2.DESCRIPTOR.services_by_name["Merge"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name,
    router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,
    train_pb2.DESCRIPTOR.services_by_name["Train"].full_name,
)
DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_MAX_BLOB_BYTES = 64 << 30        # one file: a 5-10 GB shard is the usual, 64 GiB leaves room
DEFAULT_MAX_REVISION_BYTES = 512 << 30   # a 70B model in fp32 with room to spare


@dataclass
class ServerConfig:
    data_dir: Path = Path("./data")   # this replica's folder: everything, or scratch and cache when shared
    catalog: str | None = None        # postgresql://... shared by replicas; None: SQLite in data_dir
    blob_store: str | None = None     # s3://bucket/prefix shared by replicas; None: data_dir
    blob_cache_bytes: int | None = None
    address: str = DEFAULT_ADDRESS
    tokens: TokenTable = field(default_factory=TokenTable)
    redis_url: str | None = None
    max_blob_bytes: int | None = DEFAULT_MAX_BLOB_BYTES
    max_revision_bytes: int | None = DEFAULT_MAX_REVISION_BYTES
    workers: int = 16                 # threads for blocking calls (store, catalog)
    heavy_workers: int = 2            # threads for heavy calls (merge planning, job submission, GC)
    streams: StreamLimits = field(default_factory=StreamLimits)
    uploads: UploadLimits = field(default_factory=UploadLimits)
    inputs: InputLimits = field(default_factory=InputLimits)
    training_limits: TrainingLimits = field(default_factory=TrainingLimits)
    jobs: JobLimits = field(default_factory=JobLimits)
    deltas: DeltaLimits = field(default_factory=DeltaLimits)
    delta_encoding: bool = True       # store files as deltas in the background (deltahub.compaction)
    embedder: str = DEFAULT_EMBEDDER
    local_workers: int | None = None  # in-process workers (every kind of job); None: 2 without Redis, 0 with it
    lease_s: float = 30.0             # job leases
    worker_device: str = "auto"
    tls_cert: Path | None = None      # PEM certificate chain; with tls_key, the server speaks TLS
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # PEM CA: clients must present a certificate it signed (mutual TLS)
    insecure: bool = False            # allow tokens in plaintext off loopback (behind a TLS proxy, say)
    http_address: str | None = None   # HOST:PORT of the Hugging Face-compatible download API (hfapi.py)

    def store_config(self) -> StoreConfig:
        return StoreConfig(Path(self.data_dir), catalog=self.catalog, blob_store=self.blob_store,
                           blob_cache_bytes=self.blob_cache_bytes, max_blob_bytes=self.max_blob_bytes,
                           max_revision_bytes=self.max_revision_bytes, redis_url=self.redis_url,
                           uploads=self.uploads, inputs=self.inputs, deltas=self.deltas)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServerConfig) -> None:
    """Refuses set-ups that expose the hub: open off loopback, or bearer tokens in plaintext on a network."""
    if bool(config.tls_cert) != bool(config.tls_key):
        raise InvalidInputError("TLS needs both --tls-cert and --tls-key")
    if config.tls_client_ca and not config.tls:
        raise InvalidInputError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if config.http_address and not is_loopback(config.http_address) and not (config.tokens and config.insecure):
        raise InvalidInputError(
            f"refusing to serve the download API on {config.http_address}: it speaks plaintext HTTP, so off "
            "loopback it needs tokens and --insecure (behind a proxy that terminates TLS)")
    if is_loopback(config.address):
        return
    if not config.tokens:
        raise InvalidInputError(
            f"refusing to listen on {config.address} with no tokens configured: an open hub listens on "
            "loopback only (give --tokens FILE, or an address such as 127.0.0.1:50051)"
        )
    if not config.tls and not config.insecure:
        raise InvalidInputError(
            f"refusing to listen on {config.address} in plaintext: bearer tokens would cross the network "
            "readable. Give --tls-cert CERT --tls-key KEY, or --insecure if a TLS proxy in front encrypts"
        )


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    cert, key = read_pem(config.tls_cert, "--tls-cert"), read_pem(config.tls_key, "--tls-key")
    ca = read_pem(config.tls_client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


class RunningServer:
    """A started hub: the gRPC server on its event-loop thread, its store and workers; one ``stop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, server: grpc.aio.Server,
                 port: int, store: HubStore, workers: WorkerPool, blocking: Blocking, health_servicer,
                 own_store: bool, sweeper: asyncio.Task) -> None:
        self._sweeper = sweeper
        self.loop, self._thread, self.server = loop, thread, server
        self.port, self.store, self.workers = port, store, workers
        self._blocking, self._health = blocking, health_servicer
        self._own_store = own_store
        self._stopped = False
        self.http = None  # the download API's runner, when it serves one
        self.http_port = 0
        self.compaction: BackgroundCompaction | None = None

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, gives in-flight ones ``grace`` seconds, then stops workers and the loop."""
        if self._stopped:
            return
        self._stopped = True
        self.loop.call_soon_threadsafe(self._sweeper.cancel)
        self._call(self._health.enter_graceful_shutdown())
        if self.http is not None:
            self._call(self.http.cleanup())
        self._call(self.server.stop(grace))
        self.workers.stop()  # in-process workers leave their jobs at the next step (queued again on restart)
        if self.compaction is not None:
            self.compaction.stop()  # a file half encoded is looked at again by the next start
        self._blocking.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if self._own_store:
            self.store.close()


def preload() -> None:
    """Imports what merges, evaluation and training import lazily, once, before the first call.

    transformers resolves its names through a lazy module that is not safe to
    initialise from two threads at once: a merge and a training job started
    together right after start-up could see a half-imported module.
    """
    import mergekit.merge_methods  # noqa: F401
    import peft  # noqa: F401
    from peft.tuners.adalora import AdaLoraLayer  # noqa: F401
    from peft.tuners.lora import LoraLayer  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

    try:  # the router's encoder (the router extra) imports transformers too, from its own thread
        import sentence_transformers  # noqa: F401
    except ImportError:
        pass


def create_server(
    config: ServerConfig, store: HubStore | None = None, *, router: Router | None = None,
) -> RunningServer:
    """Builds, binds and starts the server on its own event-loop thread.

    Pass a started ``router`` to have the index loaded before the first query
    (``serve`` does); otherwise the router loads on its first call. A store
    given here is the caller's to close; one made here closes with ``stop``.
    """
    check_exposure(config)
    credentials = server_credentials(config) if config.tls else None
    preload()
    own_store = store is None
    store = store or HubStore(config.store_config())
    router = router or Router(store.catalog, embedder=config.embedder, redis_url=config.redis_url, store=store)
    workers = WorkerPool(store, config.redis_url, local_workers=config.local_workers, lease_s=config.lease_s,
                         device=config.worker_device)
    blocking = Blocking(config.workers, config.heavy_workers)
    board = JobBoard(workers.queue, blocking, config.jobs)
    streams = StreamBudget(config.streams)
    engine = MergeEngine(store)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="deltahub-server", daemon=True)
    thread.start()

    async def start():
        server = grpc.aio.server(
            interceptors=[AuthInterceptor(config.tokens)],
            maximum_concurrent_rpcs=config.streams.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", 2 * CHUNK_SIZE + (64 << 10)),
                ("grpc.max_send_message_length", 2 * CHUNK_SIZE + (64 << 10)),
                ("grpc.so_reuseport", 0),
                # peers that vanished without closing are found and their calls ended
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
            ],
        )
        registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(store, board, blocking, streams), server)
        transfer_pb2_grpc.add_TransferServicer_to_server(TransferServicer(store, blocking, streams), server)
        merge_pb2_grpc.add_MergeServicer_to_server(MergeServicer(engine, board, blocking), server)
        router_pb2_grpc.add_RouterServicer_to_server(
            RouterServicer(store, router, Assembler(router, engine), board, blocking), server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(store, engine, board, blocking, streams), server)
        train_pb2_grpc.add_TrainServicer_to_server(
            TrainServicer(store, board, blocking, config.training_limits), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        enable_reflection(server, (*SERVICE_NAMES, health.SERVICE_NAME))
        try:
            if credentials is not None:
                port = server.add_secure_port(config.address, credentials)
                # in-process workers reach the hub over plaintext loopback, which never leaves the machine
                inner = server.add_insecure_port("127.0.0.1:0") if workers.local_workers else port
            else:
                port = inner = server.add_insecure_port(config.address)
        except RuntimeError as err:
            raise InvalidInputError(f"could not bind {config.address}: {err}") from None
        if port == 0:
            raise InvalidInputError(f"could not bind {config.address}")
        await server.start()
        http = None
        if config.http_address:
            endpoint = HfEndpoint(store, config.tokens, blocking, streams)
            try:
                http = await start_http(endpoint, config.http_address)
            except (OSError, ValueError) as err:
                await server.stop(None)
                raise InvalidInputError(f"could not bind --http-address {config.http_address}: {err}") from None
        sweeper = asyncio.get_running_loop().create_task(sweep())
        return server, port, inner, health_servicer, sweeper, http

    async def sweep() -> None:
        """Expired partial uploads and push sessions go, so abandoned uploads do not hold a principal's
        allowance; finished jobs beyond the retention limits go too."""
        while True:
            await asyncio.sleep(config.uploads.sweep_every_s)
            try:
                removed = await blocking.run(store.expire_uploads, heavy=True)
                if removed:
                    log.info("removed %d expired partial upload(s)", removed)
                forgotten = await blocking.run(workers.queue.trim, config.jobs.keep_finished,
                                               config.jobs.keep_days * 86400, heavy=True)
                if forgotten:
                    log.info("forgot %d finished job(s) (--keep-jobs, --keep-jobs-days)", forgotten)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("sweeping expired uploads and old jobs failed")

    try:
        server, port, inner, health_servicer, sweeper, http = asyncio.run_coroutine_threadsafe(start(), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        blocking.shutdown()
        if own_store:
            store.close()
        raise
    workers.start(inner, config.tokens)
    running = RunningServer(loop, thread, server, port, store, workers, blocking, health_servicer, own_store, sweeper)
    if http is not None:
        running.http, running.http_port = http, bound_port(http)
    if config.delta_encoding:
        running.compaction = BackgroundCompaction(store)
        running.compaction.start()
    return running


def serve(config: ServerConfig, *, ready: threading.Event | None = None) -> None:
    """Runs until SIGINT/SIGTERM, then drains in-flight calls for up to 10 s."""
    check_exposure(config)
    preload()  # before the router's thread starts importing
    store = HubStore(config.store_config())
    router = Router(store.catalog, embedder=config.embedder, redis_url=config.redis_url, store=store).start()
    # counted before the server starts: its in-process workers add a token of their own
    if config.tokens:
        log.info("auth: %d token(s) loaded; clients pass --token or DELTAHUB_TOKEN", len(config.tokens))
    else:
        log.warning("auth: no tokens configured; the hub is open to anyone on this machine (loopback only)")
    running = create_server(config, store, router=router)
    port = running.port
    host = config.address.rsplit(":", 1)[0]
    if config.redis_url:
        log.info("catalog events go to the Redis stream deltahub:events at %s", config.redis_url)
    if config.tls:
        log.info("TLS on (%s)%s; clients pass --tls-ca CA or DELTAHUB_TLS_CA unless the system trusts it",
                 config.tls_cert, ", client certificates required" if config.tls_client_ca else "")
    elif not is_loopback(config.address):
        log.warning("plaintext on %s (--insecure): bearer tokens cross the network readable", config.address)
    # the last start-up line: once it is out, the hub answers
    # a wildcard address is not one a client can dial: point at loopback, and at this machine's name for others
    wildcard = host.strip("[]") in ("0.0.0.0", "::", "")
    reach = f"127.0.0.1:{port}" if wildcard else f"{host}:{port}"
    tls_hint = " --tls-ca CA" if config.tls else ""
    log.info(
        "deltahub listening on %s:%d (data in %s); connect with: deltahub --hub %s%s ls  "
        "(or export DELTAHUB_ADDRESS=%s)%s",
        host, port, Path(config.data_dir).resolve(), reach, tls_hint, reach,
        f"; from other machines use {socket.gethostname()}:{port}" if wildcard else "",
    )
    if running.http is not None:
        log.info("Hugging Face download API on http://%s:%d (HF_ENDPOINT=http://%s:%d)", host_of(config.http_address),
                 running.http_port, host_of(config.http_address), running.http_port)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    if ready:
        ready.set()
    stop.wait()
    log.info("stopping: draining in-flight calls")
    running.stop(grace=10)
    router.stop()
    store.close()
    log.info("stopped")
