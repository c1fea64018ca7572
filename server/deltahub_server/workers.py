"""The server's side of long-running work: the job queue, and the in-process workers of an embedded hub.

Without Redis, jobs are kept in the catalog and ``local_workers`` threads
(default 2, so a merge need not wait behind a training run) run every kind
of job, reading and writing the hub's own store. With Redis the queue is
shared and ``deltahub worker`` processes run the jobs; local workers stay 0
unless asked for, and the API process computes no tensors. A local worker is
the same :class:`Worker` a remote one is, talking to this server over
loopback gRPC with a token of its own when tokens are on.
"""

from __future__ import annotations

import logging
import secrets
import threading

from deltahub.auth import ANY_NAMESPACE, Principal, Scope, TokenTable
from deltahub.jobs import DEFAULT_LEASE_S, JobQueue, open_queue
from deltahub.store import HubStore
from deltahub.workspace import StoreWorkspace

log = logging.getLogger("deltahub.server")

DEFAULT_LOCAL_WORKERS = 2


class WorkerPool:
    def __init__(self, store: HubStore, redis_url: str | None, *, local_workers: int | None = None,
                 lease_s: float = DEFAULT_LEASE_S, device: str = "auto") -> None:
        self.store = store
        self.queue: JobQueue = open_queue(redis_url, catalog=store.catalog, lease_s=lease_s)
        self.local_workers = local_workers if local_workers is not None else (0 if redis_url else DEFAULT_LOCAL_WORKERS)
        self.device = device
        self.shared = bool(redis_url)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hubs: list = []

    def start(self, port: int, tokens: TokenTable) -> None:
        if not self.shared:
            # this queue's workers live in this process: what the last one left running, it left for good
            recovered = self.queue.recover(f"{self.store.replica}/")
            if recovered:
                log.info("jobs: %d job(s) left running by the last run are queued again", recovered)
            if not self.local_workers:
                log.warning("jobs: no in-process workers and no --redis: jobs wait until the hub starts with "
                            "--workers N")
        elif not self.local_workers:
            log.info("jobs: run on `deltahub worker --redis ...` processes; the hub itself computes no tensors")
        if not self.local_workers:
            return
        from deltahub_client import Hub
        from deltahub_trainers.worker import Worker

        token = None
        if tokens:  # an open hub needs none; a closed one gets a token only these threads know
            token = secrets.token_urlsafe(32)
            tokens.add(token, Principal("in-process-worker", {ANY_NAMESPACE: Scope.WRITE}))
        for i in range(self.local_workers):
            hub = Hub(f"127.0.0.1:{port}", token, progress=False, timeout=600)
            worker = Worker(hub, self.queue, device=self.device, name=f"{self.store.replica}/in-process-{i}",
                            workspace=StoreWorkspace(self.store))
            # a thread of its own has no caller: jobs were authorised when submitted, and reading the
            # store is the hub's own work
            thread = threading.Thread(target=worker.run, args=(self._stop,), name=f"deltahub-worker-{i}", daemon=True)
            thread.start()
            self._hubs.append(hub)
            self._threads.append(thread)
        log.info("jobs: %d in-process worker(s) on %s", self.local_workers, worker.device_type)

    def stop(self) -> None:
        """Running jobs see the stop at their next step and stay RUNNING: the next start queues them again."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for hub in self._hubs:
            hub.close()
        self.queue.close()
