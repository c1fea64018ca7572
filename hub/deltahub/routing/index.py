"""The adapter index: one row per routed artifact, in memory.

Rows hold the card's centroid (float32, searched) and its sample embeddings
(float16, for re-scoring a short list), plus the columns filters need
(base revision, namespace, labels) as integer codes so a filter is a few
vectorised comparisons, not a Python loop over 100k entries.

Search is two-stage. A short list of candidates comes from the centroids:
an exact matrix product while the index is small, a faiss IVF index
(inverted lists over k-means cells; ``nprobe`` cells visited) once it holds
``ivf_min`` rows or more, since an exact scan of 100k x 384 floats costs as
much as embedding the query. The short list is then scored exactly by the
chosen scoring (``deltahub.routing.scoring``).

A filter that leaves at most ``ivf_min`` rows is searched exactly over just
those rows, so a narrow filter never loses its matches to the IVF cells it
did not visit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from deltahub.routing import scoring

IVF_MIN = 20_000       # rows from which the centroid search uses IVF
NPROBE = 32            # IVF cells visited per query (of about sqrt(rows))
SHORT_LIST = 64        # candidates re-scored exactly per query (at least 8 * k)


@dataclass(frozen=True)
class IndexEntry:
    artifact: str
    digest: str
    base: str
    kind: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.artifact.split("/", 1)[0]


@dataclass(frozen=True)
class RouteFilter:
    """Which rows may be returned. Empty fields do not filter.

    ``namespaces`` is the set the caller may read (None: all), applied on top
    of the ``namespace`` the caller asked for.
    """

    base: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    namespaces: frozenset[str] | None = None

    def admits(self, entry: IndexEntry) -> bool:
        return ((not self.base or entry.base == self.base)
                and (not self.namespace or entry.namespace == self.namespace)
                and (self.namespaces is None or entry.namespace in self.namespaces)
                and (not self.kinds or entry.kind in self.kinds)
                and all(entry.labels.get(k) == v for k, v in self.labels.items()))


class _Codes:
    """Strings to small ints, so a column compares as an int array."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, value: str) -> int:
        return self.ids.setdefault(value, len(self.ids))

    def get(self, value: str) -> int:
        return self.ids.get(value, -1)


class AdapterIndex:
    def __init__(self, dim: int, *, ivf_min: int = IVF_MIN, nprobe: int = NPROBE) -> None:
        self.dim = dim
        self.ivf_min = ivf_min
        self.nprobe = nprobe
        self._lock = threading.RLock()
        self._rows: dict[str, int] = {}
        self._entries: list[IndexEntry | None] = []
        self._samples: list[np.ndarray | None] = []
        self._free: list[int] = []
        self._centroids = np.zeros((0, dim), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._base_codes, self._ns_codes, self._kind_codes = _Codes(), _Codes(), _Codes()
        self._base = np.zeros(0, dtype=np.int32)
        self._ns = np.zeros(0, dtype=np.int32)
        self._kind = np.zeros(0, dtype=np.int32)
        self._labels: dict[tuple[str, str], set[int]] = {}
        self._ivf = None            # faiss index over alive rows, ids = row numbers
        self._ivf_rows = 0          # rows it was trained for
        self._dirty: set[int] | None = None  # rows changed while an IVF is being built

    # -- contents ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, artifact: str) -> bool:
        return artifact in self._rows

    def entry(self, artifact: str) -> IndexEntry | None:
        row = self._rows.get(artifact)
        return None if row is None else self._entries[row]

    def entries(self) -> list[IndexEntry]:
        with self._lock:
            return [e for e in self._entries if e is not None]

    def _grow(self, need: int) -> None:
        cap = len(self._alive)
        if need <= cap:
            return
        new = max(need, 2 * cap, 64)
        self._centroids = np.concatenate([self._centroids, np.zeros((new - cap, self.dim), dtype=np.float32)])
        self._alive = np.concatenate([self._alive, np.zeros(new - cap, dtype=bool)])
        for name in ("_base", "_ns", "_kind"):
            setattr(self, name, np.concatenate([getattr(self, name), np.full(new - cap, -1, dtype=np.int32)]))

    def upsert(self, entry: IndexEntry, samples: np.ndarray) -> None:
        """Adds or replaces the row of ``entry.artifact``; ``samples`` are its card's unit embeddings."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 2 or samples.shape[1] != self.dim or len(samples) == 0:
            raise ValueError(f"samples must be (n >= 1, {self.dim}), got {samples.shape}")
        with self._lock:
            row = self._rows.get(entry.artifact)
            if row is not None:
                self._unlabel(row)
            else:
                row = self._free.pop() if self._free else len(self._entries)
                if row == len(self._entries):
                    self._entries.append(None)
                    self._samples.append(None)
                self._grow(row + 1)
                self._rows[entry.artifact] = row
            self._entries[row] = entry
            self._samples[row] = samples.astype(np.float16)
            self._centroids[row] = scoring.centroid(samples)
            self._alive[row] = True
            self._base[row] = self._base_codes(entry.base)
            self._ns[row] = self._ns_codes(entry.namespace)
            self._kind[row] = self._kind_codes(entry.kind)
            for item in entry.labels.items():
                self._labels.setdefault(item, set()).add(row)
            self._ivf_update(row)

    def remove(self, artifact: str) -> bool:
        with self._lock:
            row = self._rows.pop(artifact, None)
            if row is None:
                return False
            self._unlabel(row)
            self._entries[row] = None
            self._samples[row] = None
            self._alive[row] = False
            self._centroids[row] = 0.0
            self._free.append(row)
            self._ivf_update(row)
            return True

    def _unlabel(self, row: int) -> None:
        old = self._entries[row]
        for item in (old.labels.items() if old else ()):
            rows = self._labels.get(item)
            if rows is not None:
                rows.discard(row)

    # -- filters -------------------------------------------------------------------
    def _mask(self, flt: RouteFilter) -> np.ndarray:
        n = len(self._entries)
        mask = self._alive[:n].copy()
        if flt.base:
            mask &= self._base[:n] == self._base_codes.get(flt.base)
        if flt.namespace:
            mask &= self._ns[:n] == self._ns_codes.get(flt.namespace)
        if flt.namespaces is not None:
            mask &= np.isin(self._ns[:n], [self._ns_codes.get(ns) for ns in flt.namespaces])
        if flt.kinds:
            mask &= np.isin(self._kind[:n], [self._kind_codes.get(k) for k in flt.kinds])
        for item in flt.labels.items():
            keep = np.zeros(n, dtype=bool)
            keep[list(self._labels.get(item, ()))] = True
            mask &= keep
        return mask

    def count(self, flt: RouteFilter | None = None) -> int:
        with self._lock:
            return int(self._mask(flt).sum()) if flt else len(self._rows)

    # -- search ------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, flt: RouteFilter | None = None, *,
               scoring_name: str = scoring.DEFAULT_SCORING, top_m: int = scoring.DEFAULT_TOP_M,
               short_list: int = SHORT_LIST) -> list[list[tuple[IndexEntry, float]]]:
        """Per query, up to ``k`` (entry, score) pairs, best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self._lock:
            n = len(self._entries)
            if n == 0:
                return [[] for _ in queries]
            filtered = flt is not None and flt != RouteFilter()
            mask = self._mask(flt) if filtered else None
            want = max(short_list, 8 * k)
            shortlists = self._short_lists(queries, want, mask)
            out = []
            for q, rows in zip(queries, shortlists):
                if len(rows) == 0:
                    out.append([])
                    continue
                if scoring_name == "centroid":
                    scores = self._centroids[rows] @ q
                else:
                    blocks = [self._samples[r] for r in rows]
                    # torch widens float16 several times faster than numpy does
                    stacked = torch.from_numpy(np.concatenate(blocks)).float().numpy()
                    scores = scoring.best_sample_scores(q[None], stacked, np.array([len(b) for b in blocks]), top_m)[0]
                best = scoring.top_k(scores, k)
                out.append([(self._entries[rows[i]], float(scores[i])) for i in best])
            return out

    def _short_lists(self, queries: np.ndarray, want: int, mask: np.ndarray | None) -> list[np.ndarray]:
        n = len(self._entries)
        allowed = None if mask is None else np.flatnonzero(mask)
        if self._ivf is not None and (allowed is None or len(allowed) > self.ivf_min):
            return self._ivf_search(queries, want, mask)
        if allowed is None:
            rows = np.flatnonzero(self._alive[:n]) if len(self._free) else np.arange(n)
        else:
            rows = allowed
        if len(rows) == 0:
            return [rows for _ in queries]
        sims = queries @ self._centroids[rows].T
        return [rows[scoring.top_k(s, want)] for s in sims]

    # -- IVF -----------------------------------------------------------------------
    def _ivf_search(self, queries: np.ndarray, want: int, mask: np.ndarray | None) -> list[np.ndarray]:
        import faiss

        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        _, ids = self._ivf.search(queries, want, params=params)
        return [row[row >= 0] for row in ids]

    def _ivf_update(self, row: int) -> None:
        if self._dirty is not None:
            self._dirty.add(row)
        if self._ivf is None:
            return
        ids = np.array([row], dtype=np.int64)
        self._ivf.remove_ids(ids)
        if self._alive[row]:
            self._ivf.add_with_ids(self._centroids[row:row + 1], ids)

    @property
    def search_kind(self) -> str:
        return "ivf" if self._ivf is not None else "exact"

    def needs_ivf(self) -> bool:
        """True when the index has grown to (or twice past) the size an IVF should be (re)built for."""
        alive = len(self._rows)
        return alive >= self.ivf_min and (self._ivf is None or alive >= 2 * self._ivf_rows)

    def build_ivf(self) -> bool:
        """(Re)builds the IVF over the current rows; searches go on meanwhile.

        Rows changed during the build are replayed into the new index before
        it replaces the old one. Returns False when faiss is not installed
        (searches stay exact) or the index is below ``ivf_min`` rows.
        """
        try:
            import faiss
        except ImportError:
            return False
        with self._lock:
            if len(self._rows) < self.ivf_min:
                self._ivf = None
                return False
            rows = np.flatnonzero(self._alive[:len(self._entries)])
            vectors = self._centroids[rows].copy()
            self._dirty = set()
        nlist = max(16, int(math.sqrt(len(rows))))  # coarse cells, more of them probed: recall over speed
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = vectors[rng.choice(len(vectors), min(len(vectors), 40 * nlist), replace=False)]
        ivf.train(train)
        ivf.add_with_ids(vectors, rows.astype(np.int64))
        with self._lock:
            for row in self._dirty:
                ids = np.array([row], dtype=np.int64)
                ivf.remove_ids(ids)
                if self._alive[row]:
                    ivf.add_with_ids(self._centroids[row:row + 1], ids)
            self._dirty = None
            self._ivf, self._ivf_rows = ivf, len(rows)
        return True
