"""Re-stores the safetensors files of models and task vectors as deltas against their closest stored base.

Pushes store files as they are (a push never waits on encoding; one that sends deltas is adopted at
commit, see ``HubStore._adopt_deltas``); this pass runs after they land: the server runs it in the
background after each commit, at start and every ``--compact-every``. What is left to do is read from
the catalog (files with no ``encodings`` row), so a crash or restart only means the next pass picks up
where this one stopped, and replicas share the work (a catalog lock per file).

For each file it chooses a base cheaply: the revision's named base, its lineage parents, the older
revisions of its artifact, then the newest older revisions of its kind, in that order of preference;
candidates whose tensors (same name, dtype and shape) cover less than half of the file's are dropped,
and of the rest the one whose sampled tensors encode smallest wins. The file is encoded against the
winner's files (:mod:`deltahub.deltas.filedelta`), the container decoded once to check it rebuilds
the file's sha256, and recorded only if it pays (``EncodeStats.pays``). A file nothing fits,
or whose delta does not pay, is recorded as kept as it is, so no later pass measures it again.

Bases stay stored as themselves (a file something is encoded against is never encoded), so a read
is one decode. The copy of a file as itself is removed ``copy_grace_s`` after its container is
recorded: readers handed its path just before keep a valid file meanwhile.
"""

from __future__ import annotations

import logging
import os
import mmap
import threading
import time
from dataclasses import dataclass, field

from deltahub.artifacts import Kind, Revision
from deltahub.deltas import codec
from deltahub.deltas.filedelta import decode_file, encode_file
from deltahub.errors import DeltahubError
from deltahub.formats.safetensors_header import DTYPE_SIZES, SafetensorsHeader, read_header
from deltahub.names import RevisionSpec
from deltahub.storage.catalog import Encoding
from deltahub.storage.database import LockBusy

log = logging.getLogger("deltahub.compaction")

KINDS = (Kind.MODEL, Kind.TASK_VECTOR)
SUFFIX = ".safetensors"
MIN_BYTES = 1 << 16     # smaller files are not worth a rebuild on read
MIN_COVERAGE = 0.5      # a candidate base must match at least this fraction of the file's tensor bytes
CANDIDATES = 8          # candidates measured by sampling, at most
NEWEST = 32             # newest revisions of the kind looked at, beyond the named ones
SAMPLE_TENSORS = 4
SAMPLE_BYTES = 256 << 10
DEFAULT_COPY_GRACE_S = 600.0


@dataclass
class CompactionStats:
    looked_at: int = 0
    encoded: int = 0
    kept: int = 0
    bytes_before: int = 0    # of the files encoded
    bytes_after: int = 0     # their containers
    copies_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: "CompactionStats") -> None:
        for name in ("looked_at", "encoded", "kept", "bytes_before", "bytes_after", "copies_dropped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.notes += other.notes


class Compactor:
    def __init__(self, store, *, workers: int | None = None, copy_grace_s: float = DEFAULT_COPY_GRACE_S,
                 level: int = codec.DEFAULT_LEVEL) -> None:
        self.store = store
        self.catalog = store.catalog
        self.blobs = store.blobs        # what readers see
        self.raw = store.blobs.inner    # where files and containers are stored
        self.workers = workers
        self.copy_grace_s = copy_grace_s
        self.level = level

    # -- passes ----------------------------------------------------------------------
    def run_once(self, *, limit: int = 256) -> CompactionStats:
        """Encodes up to ``limit`` files not looked at yet, and drops copies past their grace."""
        stats = CompactionStats()
        for row in self.catalog.unencoded_files(tuple(k.value for k in KINDS), SUFFIX, limit=limit):
            rev = self.catalog.get_revision(row["artifact"], row["digest"])
            if rev is None:  # deleted meanwhile
                continue
            try:
                stats.add(self.compact_file(rev, row["sha256"], row["size"]))
            except LockBusy:
                continue  # another replica is on it
        stats.copies_dropped += self.drop_copies()
        return stats

    def run_forever(self, stop: threading.Event, wake: threading.Event, *, every_s: float = 300.0) -> None:
        """Passes until ``stop``: on ``wake`` (a commit) and every ``every_s`` (what another replica left)."""
        while not stop.is_set():
            wake.clear()
            try:
                while not stop.is_set():
                    stats = self.run_once(limit=16)
                    if stats.encoded or stats.kept:
                        log.info("stored %d file(s) as deltas (%d -> %d bytes), kept %d as they are",
                                 stats.encoded, stats.bytes_before, stats.bytes_after, stats.kept)
                    if not stats.looked_at:
                        break
            except Exception:  # noqa: BLE001 - a pass that failed is retried by the next
                log.exception("storing files as deltas failed; the next pass retries")
            wake.wait(every_s)

    def drop_copies(self, *, grace_s: float | None = None) -> int:
        """Removes the copies as themselves of files encoded more than ``grace_s`` ago."""
        grace = self.copy_grace_s if grace_s is None else grace_s
        dropped = 0
        for sha in self.catalog.copies_to_drop(time.time() - grace):
            with self.store._blob_lock(), self.catalog.transaction() as db:
                if self.blobs.encoding(sha) is not None and self.blobs.retire_copy(sha):
                    dropped += 1
                self.catalog.copy_dropped(db, sha)
        return dropped

    # -- one file ------------------------------------------------------------------------
    def compact_file(self, rev: Revision, sha256: str, size: int) -> CompactionStats:
        stats = CompactionStats(looked_at=1)
        with self.catalog.lock(f"encode:{sha256}", wait=False):
            if self.catalog.encoding(sha256) is not None or not self.raw.has(sha256):
                return stats
            if size < MIN_BYTES or self.catalog.is_base(sha256) or self.catalog.is_named_base(rev.spec):
                # a revision others name as their base stays as itself, so they can be encoded against it
                return self._keep(stats, sha256, size, size, "small or a base")
            path = self.raw.require(sha256)
            header = read_header(path)
            choice = self._choose_base(rev, sha256, header)
            if choice is None:
                return self._keep(stats, sha256, size, size, "no stored base fits")
            base_rev, bases = choice
            with self.raw.writer() as out:
                encoded = encode_file(path, bases, out, level=self.level, workers=self.workers)
            container = out.sha256
            if not encoded.pays:
                self._discard(container)
                return self._keep(stats, sha256, size, encoded.stored_bytes, f"delta against {base_rev.spec} "
                                  "does not pay")
            self._verify(container, {b: bases[b] for b in encoded.depends_on}, sha256)
            enc = Encoding(sha256, container, size, encoded.stored_bytes, encoded.depends_on)
            if not self._record(enc):
                self._discard(container)
                return stats
        stats.encoded, stats.bytes_before, stats.bytes_after = 1, size, encoded.stored_bytes
        stats.notes.append(f"{rev.artifact}: {sha256[:12]} as a delta against {base_rev.spec} "
                           f"({encoded.stored_bytes / size:.3f}x)")
        return stats

    def _keep(self, stats: CompactionStats, sha256: str, size: int, stored: int, why: str) -> CompactionStats:
        with self.catalog.transaction() as db:
            self.catalog.set_encoding(db, Encoding(sha256, "", size, stored))
        stats.kept = 1
        stats.notes.append(f"{sha256[:12]} kept as it is: {why}")
        return stats

    def _verify(self, container: str, bases: dict, sha256: str) -> None:
        """Decodes the container once: only a delta that rebuilds the file's sha256 replaces it."""
        with open(self.raw.require(container), "rb") as fh, open(os.devnull, "wb") as nowhere:
            actual = decode_file(fh, bases, nowhere, workers=self.workers)
        if actual != sha256:
            self._discard(container)
            raise DeltahubError(f"a delta of blob {sha256} rebuilt as {actual}: not stored (a bug)")

    def _record(self, enc: Encoding) -> bool:
        """Records the encoding, unless things moved meanwhile: the file is no longer used, became a base,
        or a base stopped being stored as itself."""
        with self.store._blob_lock(), self.catalog.transaction() as db:
            if not self.catalog.blob_in_use(enc.sha256) or self.catalog.is_base(enc.sha256):
                return False
            if any(self.catalog.encoding(b) is not None and self.catalog.encoding(b).container
                   or not self.raw.has(b) for b in enc.bases):
                return False
            self.catalog.set_encoding(db, enc)
        return True

    def _discard(self, container: str) -> None:
        with self.store._blob_lock():
            if not self.catalog.blob_in_use(container):
                self.raw.delete(container)

    # -- choosing the base ------------------------------------------------------------------
    def _candidates(self, rev: Revision) -> list[Revision]:
        """Revisions to try, most likely first: the named base, lineage parents, the artifact's others,
        the newest of the kind."""
        found: dict[str, Revision] = {}

        def add(candidate: Revision | None, named: bool = False) -> None:
            # Unnamed candidates must be older: a base is pushed before what is tuned from it, so the
            # first of two models is never encoded against the second (which then could not use it).
            if (candidate is not None and candidate.kind is rev.kind and candidate.spec != rev.spec
                    and candidate.base != rev.spec and (named or candidate.created_at < rev.created_at)):
                found.setdefault(candidate.spec, candidate)

        for spec in (rev.base, *rev.lineage.parents):
            if spec:
                try:
                    parsed = RevisionSpec.parse(spec)
                except DeltahubError:
                    continue
                if parsed.revision:
                    add(self.catalog.get_revision(str(parsed.artifact), parsed.revision), named=True)
        for other in self.catalog.list_revisions(rev.artifact):
            add(other)
        for other in self.catalog.revisions_of_kind(rev.kind, before=rev.created_at, limit=NEWEST):
            add(other)
        return list(found.values())

    def _base_files(self, rev: Revision, exclude: str) -> dict[str, SafetensorsHeader]:
        """The revision's safetensors files stored as themselves (what a delta may be encoded against)."""
        files = {}
        for f in rev.files:
            if (not f.path.endswith(SUFFIX) or f.sha256 == exclude or not self.raw.has(f.sha256)
                    or self.blobs.encoding(f.sha256) is not None):
                continue
            try:
                files[f.sha256] = read_header(self.raw.require(f.sha256))
            except DeltahubError:
                continue
        return files

    def _choose_base(self, rev: Revision, sha256: str, header: SafetensorsHeader):
        """(base revision, {sha256: path}) of the closest candidate, or None when none covers enough."""
        wanted = {name: info for name, info in header.tensors.items()}
        total = sum(info.nbytes for info in wanted.values()) or 1
        scored = []
        for candidate in self._candidates(rev):
            files = self._base_files(candidate, sha256)
            matched = {}
            for base_sha, base_header in files.items():
                for name, info in base_header.tensors.items():
                    mine = wanted.get(name)
                    if mine is not None and name not in matched and (mine.dtype, mine.shape) == (info.dtype, info.shape):
                        matched[name] = (base_sha, base_header, info)
            coverage = sum(wanted[n].nbytes for n in matched) / total
            if coverage >= MIN_COVERAGE:
                scored.append((coverage, candidate, files, matched))
            if len(scored) >= CANDIDATES:
                break
        if not scored:
            return None
        path = self.raw.require(sha256)
        best = min(scored, key=lambda s: (self._sample_cost(path, header, s[3]) / s[0]))
        _, candidate, files, _ = best
        return candidate, {b: self.raw.require(b) for b in files}

    def _sample_cost(self, path, header: SafetensorsHeader, matched: dict) -> int:
        """Bytes the largest matched tensors' middle slices encode to against this candidate."""
        biggest = sorted(matched, key=lambda n: -header.tensors[n].nbytes)[:SAMPLE_TENSORS]
        cost = 0
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mine:
            for name in biggest:
                info = header.tensors[name]
                base_sha, base_header, base_info = matched[name]
                item = DTYPE_SIZES[info.dtype]
                n = min(info.nbytes, SAMPLE_BYTES) // item * item
                if n == 0:
                    continue
                mid = (info.nbytes - n) // 2 // item * item
                start = header.data_offset + info.begin + mid
                base_start = base_header.data_offset + base_info.begin + mid
                with open(self.raw.require(base_sha), "rb") as bf:
                    bf.seek(base_start)
                    theirs = bf.read(n)
                cost += len(codec.encode(mine[start:start + n], item, theirs, level=self.level))
        return cost
