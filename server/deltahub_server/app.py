"""Building and running the server.

``create_server`` binds and returns ``(server, port, store, training)`` without blocking, so
tests bind port 0 and talk over a real channel; ``serve`` adds logging,
signal handling and a graceful stop around it.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from deltahub.auth import TokenTable
from deltahub.errors import InvalidInputError
from deltahub.store import HubStore, StoreConfig
from deltahub.merge_engine import MergeEngine
from deltahub.operations import OperationManager
from deltahub.routing.assembly import Assembler
from deltahub.routing.embedders import DEFAULT_EMBEDDER
from deltahub.routing.router import Router
from deltahub.v1 import (
    merge_pb2,
    merge_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    train_pb2,
    train_pb2_grpc,
    transfer_pb2,
    transfer_pb2_grpc,
)
from deltahub_server.auth import AuthInterceptor
from deltahub_server.merge import MergeServicer
from deltahub_server.operations import OperationsServicer
from deltahub_server.registry import RegistryServicer
from deltahub_server.router import RouterServicer
from deltahub_server.train import TrainServicer
from deltahub_server.training import Training
from deltahub_server.transfer import CHUNK_SIZE, TransferServicer

log = logging.getLogger("deltahub.server")

SERVICE_NAMES = (
    registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
    transfer_pb2.DESCRIPTOR.services_by_name["Transfer"].full_name,
    merge_pb2.DESCRIPTOR.services_by_name["Merge"].full_name,
    operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name,
    router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,
    train_pb2.DESCRIPTOR.services_by_name["Train"].full_name,
)
DEFAULT_ADDRESS = "127.0.0.1:50051"


@dataclass
class ServerConfig:
    data_dir: Path = Path("./data")
    address: str = DEFAULT_ADDRESS
    tokens: TokenTable = field(default_factory=TokenTable)
    redis_url: str | None = None
    max_blob_bytes: int | None = None
    max_revision_bytes: int | None = None
    workers: int = 16
    merge_workers: int = 2  # merges running at once; more wait in the operation queue
    embedder: str = DEFAULT_EMBEDDER
    local_workers: int | None = None  # in-process training workers; None: 1 without Redis, 0 with it
    lease_s: float = 30.0             # training job leases
    worker_device: str = "auto"

    def store_config(self) -> StoreConfig:
        return StoreConfig(Path(self.data_dir), max_blob_bytes=self.max_blob_bytes,
                           max_revision_bytes=self.max_revision_bytes, redis_url=self.redis_url)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_server(
    config: ServerConfig, store: HubStore | None = None, *, health_servicer: health.HealthServicer | None = None,
    operations: OperationManager | None = None, router: Router | None = None, training: Training | None = None,
) -> tuple[grpc.Server, int, HubStore, Training]:
    """Builds, binds and starts the server. Returns (server, bound port, store, training).

    Pass ``health_servicer`` to flip it to NOT_SERVING on shutdown,
    ``operations`` to cancel running merges on shutdown, and a started
    ``router`` to have the index loaded before the first query (``serve``
    does all three); otherwise the router loads on its first call. Stop the
    returned ``training`` (job queue, in-process workers) after the server.
    """
    if not config.tokens and not is_loopback(config.address):
        raise InvalidInputError(
            f"refusing to listen on {config.address} with no tokens configured: an open hub listens on "
            "loopback only (give --tokens FILE, or an address such as 127.0.0.1:50051)"
        )
    store = store or HubStore(config.store_config())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="deltahub-rpc"),
        interceptors=[AuthInterceptor(config.tokens)],
        options=[
            ("grpc.max_receive_message_length", 2 * CHUNK_SIZE + (64 << 10)),
            ("grpc.max_send_message_length", 2 * CHUNK_SIZE + (64 << 10)),
            ("grpc.so_reuseport", 0),
        ],
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(store), server)
    transfer_pb2_grpc.add_TransferServicer_to_server(TransferServicer(store), server)
    operations = operations or OperationManager(workers=config.merge_workers)
    engine = MergeEngine(store)
    merge_pb2_grpc.add_MergeServicer_to_server(MergeServicer(engine, operations), server)
    router = router or Router(store.catalog, embedder=config.embedder, redis_url=config.redis_url, store=store)
    router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(store, router, Assembler(router, engine)), server)
    operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(operations), server)
    training = training or Training(config.redis_url, local_workers=config.local_workers, lease_s=config.lease_s,
                                    device=config.worker_device)
    train_pb2_grpc.add_TrainServicer_to_server(TrainServicer(store, training.queue), server)
    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(config.address)
    if port == 0:
        raise InvalidInputError(f"could not bind {config.address}")
    server.start()
    training.start(port, config.tokens)
    return server, port, store, training


def serve(config: ServerConfig, *, ready: threading.Event | None = None) -> None:
    """Runs until SIGINT/SIGTERM, then drains in-flight calls for up to 10 s."""
    health_servicer = health.HealthServicer()
    operations = OperationManager(workers=config.merge_workers)
    store = HubStore(config.store_config())
    router = Router(store.catalog, embedder=config.embedder, redis_url=config.redis_url, store=store).start()
    # counted before the server starts: its in-process workers add a token of their own
    if config.tokens:
        log.info("auth: %d token(s) loaded; clients pass --token or DELTAHUB_TOKEN", len(config.tokens))
    else:
        log.warning("auth: no tokens configured; the hub is open to anyone on this machine (loopback only)")
    server, port, store, training = create_server(config, store, health_servicer=health_servicer,
                                                  operations=operations, router=router)
    host = config.address.rsplit(":", 1)[0]
    if config.redis_url:
        log.info("catalog events go to the Redis stream deltahub:events at %s", config.redis_url)
    # the last start-up line: once it is out, the hub answers
    # a wildcard address is not one a client can dial: point at loopback, and at this machine's name for others
    wildcard = host.strip("[]") in ("0.0.0.0", "::", "")
    reach = f"127.0.0.1:{port}" if wildcard else f"{host}:{port}"
    log.info(
        "deltahub listening on %s:%d (data in %s); connect with: deltahub --hub %s ls  "
        "(or export DELTAHUB_ADDRESS=%s)%s",
        host, port, Path(config.data_dir).resolve(), reach, reach,
        f"; from other machines use {socket.gethostname()}:{port}" if wildcard else "",
    )
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    if ready:
        ready.set()
    stop.wait()
    log.info("stopping: draining in-flight calls")
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=10).wait()
    operations.shutdown()  # running merges are cancelled: they store nothing
    training.stop()  # in-process workers leave their jobs at the next step
    router.stop()
    store.close()
    log.info("stopped")
