"""Change events of the catalog, for whoever keeps state derived from it
(the router's index, caches, other server processes).

Every catalog write already records an event row in SQLite (the source of
truth, read with :meth:`Catalog.events_since`). With Redis configured, each
event is also appended to a Redis stream so processes on other machines
follow without polling SQLite. Publishing happens after the transaction has
committed; a subscriber that missed events catches up from the catalog.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("deltahub.events")

STREAM = "deltahub:events"
# initial metadata of a ref watch: the event log position it starts after (what a client resumes from)
EVENT_SEQ_HEADER = "deltahub-event-seq"
STREAM_MAXLEN = 100_000


@dataclass(frozen=True)
class Event:
    kind: str      # commit | ref | delete | card
    artifact: str
    digest: str


@dataclass(frozen=True)
class RefMove:
    """A ref moved to a revision, or deleted (``digest`` empty): what a cache keyed by revision id follows."""

    seq: int       # the event's place in the catalog's log: resume after it
    artifact: str
    ref: str
    digest: str
    at: float

    @property
    def deleted(self) -> bool:
        return not self.digest


class EventSink(Protocol):
    def publish(self, events: list[Event]) -> None: ...


class NullSink:
    def publish(self, events: list[Event]) -> None:
        return None


class RedisEventSink:
    """Appends events to a Redis stream (XADD, capped at about STREAM_MAXLEN entries)."""

    def __init__(self, url: str, *, stream: str = STREAM) -> None:
        import redis

        self.stream = stream
        self._redis = redis.Redis.from_url(url)
        self._redis.ping()  # fail at start-up, not on the first commit

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for e in events:
                pipe.xadd(self.stream, {"kind": e.kind, "artifact": e.artifact, "digest": e.digest},
                          maxlen=STREAM_MAXLEN, approximate=True)
            pipe.execute()
        except Exception:  # noqa: BLE001 - the catalog is the truth; followers catch up from it
            log.exception("could not publish %d catalog event(s) to Redis", len(events))


class RedisEventFollower:
    """Blocks on the catalog's Redis event stream until something new arrives (or a timeout)."""

    def __init__(self, url: str, *, stream: str = STREAM) -> None:
        import redis

        self.stream = stream
        self._redis = redis.Redis.from_url(url)
        self._last = "$"

    def wait(self, timeout_s: float) -> bool:
        """True when new events arrived (or Redis failed: then the caller polls the catalog)."""
        try:
            got = self._redis.xread({self.stream: self._last}, block=int(timeout_s * 1000), count=1000)
        except Exception:  # noqa: BLE001 - Redis is an accelerator here; the catalog is the truth
            log.warning("Redis event stream unavailable; polling the catalog")
            threading.Event().wait(timeout_s)
            return True
        for _, entries in got or ():
            if entries:
                self._last = entries[-1][0]
                return True
        return False
