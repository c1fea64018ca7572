"""The hub's own background work beside the calls it answers: storing files as deltas."""

from __future__ import annotations

import logging
import threading

from deltahub.compaction import Compactor
from deltahub.store import HubStore

log = logging.getLogger("deltahub.server")


class BackgroundCompaction:
    """A thread that stores newly committed files as deltas: woken by every commit (the catalog's
    listeners), and every ``compact_every_s`` for what another replica committed."""

    def __init__(self, store: HubStore) -> None:
        limits = store.config.deltas
        self.compactor = Compactor(store, workers=limits.workers, copy_grace_s=limits.delta_copy_grace_s)
        self._every_s = limits.compact_every_s
        self._store = store
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self.compactor.run_forever, args=(self._stop, self._wake),
                                        kwargs={"every_s": self._every_s}, name="deltahub-compaction", daemon=True)

    def start(self) -> None:
        self._store.catalog.listeners.append(self._wake.set)
        self._thread.start()
        log.info("storing models' files as deltas in the background (--no-delta-encoding turns it off)")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._wake.set in self._store.catalog.listeners:
            self._store.catalog.listeners.remove(self._wake.set)
        self._thread.join(timeout=60)
