"""The server's side of training: the job queue, and the in-process workers of an embedded hub.

Without Redis the queue lives in the server's memory and ``local_workers``
threads (default 1) run its jobs; with Redis the queue is shared and
``deltahub worker`` processes run them (local workers stay 0 unless asked
for). A local worker is the same :class:`Worker` a remote one is, talking
to this server over loopback gRPC with a token of its own when tokens are on.
"""

from __future__ import annotations

import logging
import secrets
import threading

from deltahub.auth import ANY_NAMESPACE, Principal, Scope, TokenTable
from deltahub.jobs import DEFAULT_LEASE_S, JobQueue, open_queue

log = logging.getLogger("deltahub.server")


class Training:
    def __init__(self, redis_url: str | None, *, local_workers: int | None = None, lease_s: float = DEFAULT_LEASE_S,
                 device: str = "auto") -> None:
        self.queue: JobQueue = open_queue(redis_url, lease_s=lease_s)
        self.local_workers = local_workers if local_workers is not None else (0 if redis_url else 1)
        self.device = device
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hubs: list = []

    def start(self, port: int, tokens: TokenTable) -> None:
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
            worker = Worker(hub, self.queue, device=self.device, name=f"in-process-{i}")
            thread = threading.Thread(target=worker.run, args=(self._stop,), name=f"deltahub-worker-{i}", daemon=True)
            thread.start()
            self._hubs.append(hub)
            self._threads.append(thread)
        log.info("training: %d in-process worker(s) on %s", self.local_workers, worker.device_type)

    def stop(self) -> None:
        """Running jobs see the stop at their next step and are cancelled (in-process jobs die with the server)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for hub in self._hubs:
            hub.close()
        self.queue.close()
