"""The router: domain cards -> embeddings -> an in-memory index -> routes.

What is routed: per artifact of kind adapter or task vector, the revision its
``main`` ref points to (its newest revision when it has no ``main``). Older
revisions stay addressable by digest; a route names the current one.

Keeping current: every catalog write records an event. The router reads the
events it has not seen before each route (one indexed SQLite query), and a
follower thread does the same as soon as this process commits (a catalog
listener), when another process does (a Redis stream read, with Redis
configured) or every ``poll_s`` seconds (without Redis), so cards are usually
embedded before anyone routes. Embeddings are stored in the catalog with the
embedder's name and the card's hash: a restart, or another server process,
reuses them; a new card or another embedder re-embeds.

An adapter pushed without a card but with a dataset among its lineage's
parents (its training data) is known by that data: the first
``DATA_SAMPLES`` row texts serve as its card's samples (when the router is
given the store to read them).

Adapters with neither cannot be routed from text. They are left out of the
index and every answer says how many matched the filters and were left out,
and why (data-free routing by weights is what an Arrow mixture from
``Assemble`` offers among chosen adapters).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from deltahub.artifacts import DomainCard, Kind
from deltahub.errors import InvalidInputError, NotFoundError, PreconditionError
from deltahub.events import RedisEventFollower
from deltahub.formats.dataset import read_rows
from deltahub.routing import scoring
from deltahub.auth import acting_as_hub
from deltahub.limits import InputLimits
from deltahub.routing.embedders import DEFAULT_EMBEDDER, EMBEDDERS, Embedder, load_embedder
from deltahub.routing.index import AdapterIndex, IndexEntry, RouteFilter
from deltahub.routing.results import QueryRoute, RouteAnswer, Routed

log = logging.getLogger("deltahub.router")

ROUTED_KINDS = ("adapter", "task_vector")
DEFAULT_K = 3
MAX_K = 100
MAX_QUERIES = 1024
MAX_UNROUTED_LISTED = 20
QUERY_CACHE = 4096  # recent query embeddings kept (0: none)
EMBED_BATCH = 512
ROUTE_SYNC_WAIT_S = 2.0  # a route waits this long for a catalog sync under way, then routes on the index as is
DATA_SAMPLES = 16   # training-data rows that stand in for a missing card   # card texts embedded per encoder call while indexing
NO_CARD = ("no domain card and no training data in its lineage: routing needs a description or sample texts "
           "(deltahub card NAME --card FILE)")


def card_texts(card: DomainCard) -> list[str]:
    """The texts an adapter is known by: its description, then its samples, blanks and repeats dropped.

    At most the card limit's worth, so one tenant's card (stored before the limit, say) cannot make
    indexing or scoring cost more than any other's.
    """
    texts = [card.description, *card.samples[:InputLimits.max_card_samples]]
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def card_sha(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


@dataclass
class RouteRequest:
    queries: list[str]
    k: int = DEFAULT_K
    base: str = ""                  # a resolved base revision spec (namespace/name@digest)
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    temperature: float = scoring.DEFAULT_TEMPERATURE
    min_score: float | None = None  # None: the embedder's default_min_score
    scoring: str = scoring.DEFAULT_SCORING

    def check(self) -> None:
        if not self.queries:
            raise InvalidInputError("give at least one query text")
        if len(self.queries) > MAX_QUERIES:
            raise InvalidInputError(f"at most {MAX_QUERIES} queries per call, got {len(self.queries)}")
        for i, q in enumerate(self.queries):
            if not isinstance(q, str) or not q.strip():
                raise InvalidInputError(f"query {i} is empty")
        if not 1 <= self.k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if not self.temperature > 0:
            raise InvalidInputError(f"temperature must be > 0, got {self.temperature}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidInputError(f"min_score is a cosine, between -1 and 1; got {self.min_score}")
        if self.scoring not in scoring.SCORINGS:
            raise InvalidInputError(f"unknown scoring {self.scoring!r}; known: {', '.join(scoring.SCORINGS)}")


class Router:
    def __init__(self, catalog, *, embedder: str = DEFAULT_EMBEDDER, poll_s: float = 1.0,
                 redis_url: str | None = None, index: AdapterIndex | None = None,
                 query_cache: int = QUERY_CACHE, store=None) -> None:
        self.catalog = catalog
        self.store = store  # reads training data for adapters without a card
        EMBEDDERS.get(embedder)  # an unknown name fails at start-up, listing the known ones
        self.embedder_name = embedder
        self.poll_s = poll_s
        self.redis_url = redis_url
        self._embedder: Embedder | None = None
        self.index = index
        self._unrouted: dict[str, IndexEntry] = {}
        # query text -> embedding: repeated queries (the cache-hit path of Assemble) skip the encoder
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache = query_cache
        self._queries_lock = threading.Lock()
        self._seq = 0
        self._sync_lock = threading.Lock()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------
    def start(self) -> "Router":
        """Loads the embedder and the index in the background, then follows the catalog. Idempotent."""
        with self._sync_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name="deltahub-router", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_ready(self, timeout: float | None = 120.0) -> None:
        """Starts the router if needed and blocks until the index is loaded; raises what stopped it."""
        self.start()
        if not self._ready.wait(timeout):
            raise PreconditionError("the router is still loading its index; try again shortly")
        if self._failure is not None:
            raise PreconditionError(f"the router could not start: {self._failure}")

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.embedder_name)
        return self._embedder

    def _load(self) -> None:
        try:
            with self._sync_lock:
                seq = self.catalog.last_event()
                if self.index is None:
                    self.index = AdapterIndex(self.embedder.dim)
                self._index_rows(self.catalog.routed_revisions(ROUTED_KINDS), self.catalog.embeddings(self.embedder_name))
                self._seq = seq
            if self.index.needs_ivf():
                self.index.build_ivf()
            log.info("router: %d adapter(s) indexed with %s, %d without a card", len(self.index),
                     self.embedder_name, len(self._unrouted))
        except BaseException as exc:  # noqa: BLE001 - reported to every caller of wait_ready
            self._failure = exc
            log.exception("router: could not load the index")
        finally:
            self._ready.set()

    def _follow(self) -> None:
        self._load()
        if self._failure is not None:
            return
        self.catalog.listeners.append(self._wake.set)
        stream = RedisEventFollower(self.redis_url) if self.redis_url else None
        last_sync = time.monotonic()
        while not self._stop.is_set() and not self.catalog.closed:
            # short waits, so stop() is prompt; a sync when woken or every poll_s
            woke = stream.wait(1.0) if stream is not None else self._wake.wait(min(self.poll_s, 1.0))
            woke = woke or self._wake.is_set()
            self._wake.clear()
            if self._stop.is_set() or self.catalog.closed:
                break
            if not woke and time.monotonic() - last_sync < self.poll_s:
                continue
            last_sync = time.monotonic()
            try:
                self.sync()
                if self.index.needs_ivf():
                    self.index.build_ivf()
            except Exception:  # noqa: BLE001 - the next round retries; routes sync themselves too
                log.exception("router: could not follow the catalog")

    # -- keeping current ---------------------------------------------------------------
    def sync(self, wait_s: float | None = None) -> int:
        """Applies the catalog events not seen yet; returns how many artifacts changed.

        ``wait_s`` bounds the wait for a sync already under way (the follower embedding a new card):
        a route then answers from the index as it is rather than wait behind the encoder.
        """
        self.wait_ready()
        if not self._sync_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            return 0
        try:
            with acting_as_hub():
                return self._sync()
        finally:
            self._sync_lock.release()

    def _sync(self) -> int:
        events = self.catalog.events_since(self._seq)
        if not events:
            return 0
        touched = list(dict.fromkeys(e["artifact"] for e in events))
        for artifact in touched:
            rows = self.catalog.routed_revisions(ROUTED_KINDS, artifact)
            if not rows:
                self.index.remove(artifact)
                self._unrouted.pop(artifact, None)
                continue
            self._index_rows(rows, self.catalog.embeddings(self.embedder_name, artifact))
        self._seq = events[-1]["seq"]
        return len(touched)

    def _index_rows(self, rows, stored: dict) -> None:
        pending: list[tuple[IndexEntry, list[str], str]] = []
        for row in rows:
            entry = IndexEntry(row["artifact"], row["digest"], row["base"], row["kind"], json.loads(row["labels"]))
            if entry.labels.get("assembled") == "true":  # built from routed adapters: not a domain of its own
                self.index.remove(entry.artifact)
                self._unrouted.pop(entry.artifact, None)
                continue
            texts = card_texts(DomainCard.from_dict(json.loads(row["card"])))
            if not texts:
                texts = self._data_texts(json.loads(row["lineage"]).get("parents") or [])
            if not texts:
                self.index.remove(entry.artifact)
                self._unrouted[entry.artifact] = entry
                continue
            self._unrouted.pop(entry.artifact, None)
            sha = card_sha(texts)
            have = stored.get((entry.artifact, entry.digest))
            if have is not None and have[0] == sha and have[2] == self.index.dim:
                vectors = np.frombuffer(have[1], dtype=np.float16).reshape(-1, have[2])
                self.index.upsert(entry, vectors.astype(np.float32))
            else:
                pending.append((entry, texts, sha))
        self._embed_cards(pending)

    def _data_texts(self, parents: list[str]) -> list[str]:
        """Row texts of the datasets among a revision's parents: its training data stands in for a card."""
        if self.store is None:
            return []
        texts: list[str] = []
        for spec in parents:
            try:
                rev = self.store.resolve(spec)
            except NotFoundError:
                continue
            if rev.kind is Kind.DATASET:
                rows = read_rows(self.store.local_files(rev), limit=DATA_SAMPLES - len(texts))
                texts.extend(str(r["text"]) for r in rows if isinstance(r, dict) and r.get("text"))
            if len(texts) >= DATA_SAMPLES:
                break
        return list(dict.fromkeys(t.strip() for t in texts if t.strip()))

    def _embed_cards(self, pending: list[tuple[IndexEntry, list[str], str]]) -> None:
        """Embeds cards in encoder batches of about EMBED_BATCH texts, storing and indexing each batch."""
        while pending:
            batch, n = [], 0
            while pending and (not batch or n + len(pending[0][1]) <= EMBED_BATCH):
                batch.append(pending.pop(0))
                n += len(batch[-1][1])
            vectors = self.embedder.embed([t for _, texts, _ in batch for t in texts])
            rows, start = [], 0
            for entry, texts, sha in batch:
                mine = vectors[start:start + len(texts)]
                start += len(texts)
                self.index.upsert(entry, mine)
                rows.append((entry.artifact, entry.digest, sha, self.index.dim, mine.astype(np.float16).tobytes()))
            self.catalog.save_embeddings(self.embedder_name, rows)

    # -- routing -------------------------------------------------------------------
    def min_score(self, req: RouteRequest) -> float:
        """The request's floor, else the embedder's: a query nothing fits gets the base, not noise."""
        if req.min_score is not None:
            return req.min_score
        return float(getattr(self.embedder, "default_min_score", 0.0))

    def route(self, req: RouteRequest, *, namespaces: frozenset[str] | None = None) -> RouteAnswer:
        """Top-k adapters per query. ``namespaces``: those the caller may read (None: all)."""
        req.check()
        self.sync(wait_s=ROUTE_SYNC_WAIT_S)
        flt = RouteFilter(base=req.base, namespace=req.namespace, labels=dict(req.labels), namespaces=namespaces)
        queries = self.embed_queries(list(req.queries))
        found = self.index.search(queries, req.k, flt, scoring_name=req.scoring)
        floor = self.min_score(req)
        routes = []
        for text, hits in zip(req.queries, found):
            best = hits[0][1] if hits else None
            kept = [(e, s) for e, s in hits if s >= floor]
            if not kept:
                reason = ("no adapter matches the filters" if best is None else
                          f"no adapter scores at least {floor:.3f} (best {best:.3f}): serve the base"
                          + (" (the embedder's default --min-score)" if req.min_score is None else ""))
                routes.append(QueryRoute(text, (), best, reason))
                continue
            weights = scoring.softmax_weights(np.array([s for _, s in kept]), req.temperature)
            routes.append(QueryRoute(text, tuple(
                Routed(e.artifact, e.digest, float(s), float(w)) for (e, s), w in zip(kept, weights)), best))
        unrouted = sorted(a for a, e in self._unrouted.items() if flt.admits(e))
        return RouteAnswer(
            routes=tuple(routes), embedder=self.embedder_name, scoring=req.scoring,
            candidates=self.index.count(flt), unrouted_count=len(unrouted),
            unrouted=tuple(unrouted[:MAX_UNROUTED_LISTED]), unrouted_reason=NO_CARD if unrouted else "",
        )

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Embeddings of query texts; those not seen recently are embedded together in one batch."""
        with self._queries_lock:
            known = {t: self._queries[t] for t in texts if t in self._queries}
            for t in known:
                self._queries.move_to_end(t)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = self.embedder.embed(missing)
            known.update(zip(missing, fresh))
            if self._query_cache:
                with self._queries_lock:
                    self._queries.update(zip(missing, fresh))
                    while len(self._queries) > self._query_cache:
                        self._queries.popitem(last=False)
        return np.stack([known[t] for t in texts])

    def status(self) -> dict:
        ready = self._ready.is_set() and self._failure is None
        return {
            "embedder": self.embedder_name, "ready": ready,
            "dim": self.index.dim if self.index is not None else 0,
            "indexed": len(self.index) if self.index is not None else 0,
            "unrouted": len(self._unrouted),
            "search": self.index.search_kind if self.index is not None else "exact",
            "error": str(self._failure) if self._failure else "",
        }
