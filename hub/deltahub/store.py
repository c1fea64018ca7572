"""HubStore: the hub's state and every operation on it, with no transport.

The gRPC servicers are thin adapters over this class; tests may also drive
it directly. It owns a :class:`BlobStore` and a :class:`Catalog` (by default both
in one data folder; PostgreSQL and S3 let several replicas share them) and keeps
three promises:

* a revision becomes visible only after every file is stored and validated
  (validation first, then one catalog transaction);
* a rejected commit leaves no new blob and no catalog row behind;
* blobs are removed only when no revision uses them, under a lock that
  commits also take (the catalog's, so it holds across replicas), so a commit
  never references a blob being removed.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from deltahub import auth as access
from deltahub import formats
from deltahub.auth import Scope
from deltahub.artifacts import (
    ArtifactInfo, DeleteResult, DomainCard, FileEntry, Kind, Lineage, Revision, check_sha256, manifest_digest,
)
from deltahub.deltas.lowrank import check_target
from deltahub.deltas.task_vector import check_compatible
from deltahub.events import RedisEventSink, RefMove
from deltahub.errors import (
    IntegrityError,
    InvalidInputError,
    PermissionDeniedError,
    LimitExceededError,
    NotFoundError,
    PreconditionError,
    StaleRefError,
)
from deltahub.formats.model import BaseModelInfo, validate_model
from deltahub.names import DEFAULT_REF, ArtifactName, RevisionSpec, check_namespace, check_ref, looks_like_digest
from deltahub.jobs.specs import TaskVectorSpec
from deltahub.limits import DeltaLimits, InputLimits, UploadLimits, check_annotations, check_card
from deltahub.deltas.filedelta import needs as needs_of, read_index, within_growth
from deltahub.storage import Catalog, UploadWriter, open_blob_store
from deltahub.storage.catalog import Encoding
from deltahub.storage.encoded import EncodedBlobStore

UNSET = object()  # "no compare-and-swap": distinct from "" (= the ref must not exist)
RESERVED_LABEL_PREFIX = "deltahub."  # labels the hub sets; clients cannot
ALLOW_CODE_LABEL = "deltahub.allow_code"


@dataclass
class StoreConfig:
    data_dir: Path                           # this replica's own folder (scratch and cache when shared)
    catalog: str | None = None               # None: data_dir/catalog.sqlite; or postgresql://...
    blob_store: str | None = None            # None: data_dir; or s3://bucket/prefix
    blob_cache_bytes: int | None = None      # local copies of an object store's blobs kept at most
    max_blob_bytes: int | None = None        # per file
    max_revision_bytes: int | None = None    # per revision
    gc_grace_s: float = 3600.0               # unreferenced blobs younger than this survive a full GC
    redis_url: str | None = None             # catalog change events also go to a Redis stream
    uploads: UploadLimits = field(default_factory=UploadLimits)
    inputs: InputLimits = field(default_factory=InputLimits)
    deltas: DeltaLimits = field(default_factory=DeltaLimits)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)


@dataclass
class CommitRequest:
    artifact: str
    kind: Kind | str
    files: list[FileEntry]
    base: str = ""
    card: DomainCard = field(default_factory=DomainCard)
    labels: dict[str, str] = field(default_factory=dict)
    lineage: Lineage = field(default_factory=Lineage)
    ref: str = DEFAULT_REF
    expected_revision: object = UNSET
    tags: list[str] = field(default_factory=list)
    created_by: str = ""
    session: str = ""  # the push session from open_session; "" for none
    allow_code: bool = False  # code files accepted, and recorded as the label ALLOW_CODE_LABEL
    # the recipe cache answers from this revision: only for builds the hub itself ran (a client's
    # lineage could otherwise claim any recipe's hash and be served to everyone asking for it)
    index_recipe: bool = False
    # files the client sent as deltas: file sha256 -> the uploaded container that rebuilds it
    encoded: dict[str, str] = field(default_factory=dict)


@dataclass
class TaskVectorRequest:
    """A task vector to extract: ``finetuned`` minus ``base``, stored as ``out``; low rank when ``rank`` or
    ``energy`` (the share of each delta's spectrum to keep) is given, else dense."""

    finetuned: str
    base: str
    out: str
    rank: int | None = None
    energy: float | None = None
    card: DomainCard = field(default_factory=DomainCard)
    labels: dict[str, str] = field(default_factory=dict)
    ref: str = DEFAULT_REF
    created_by: str = ""


def _replica_id(data_dir: Path) -> str:
    """This replica's name, kept in its folder: what its in-process workers are called by, so that a
    restart takes back its own running jobs and never another replica's."""
    path = data_dir / "replica-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        name = f"{os.uname().nodename.split('.')[0]}-{uuid.uuid4().hex[:8]}"
        path.write_text(name + "\n")
        return name


def check_labels_settable(labels: dict[str, str]) -> None:
    reserved = sorted(k for k in labels if str(k).startswith(RESERVED_LABEL_PREFIX))
    if reserved:
        raise InvalidInputError(f"labels {reserved} are reserved: the hub sets labels starting with "
                                f"{RESERVED_LABEL_PREFIX!r}")


class HubStore:
    def __init__(self, config: StoreConfig) -> None:
        # absolute, so links made into the store (checkouts for from_pretrained) point somewhere from anywhere
        config.data_dir = Path(config.data_dir).resolve()
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        sink = RedisEventSink(config.redis_url) if config.redis_url else None
        self.catalog = Catalog(config.catalog or config.data_dir / "catalog.sqlite", sink=sink)
        stored = open_blob_store(config.blob_store, config.data_dir, locks=self.catalog.lock,
                                 max_blob_bytes=config.max_blob_bytes, cache_bytes=config.blob_cache_bytes)
        self.blobs = EncodedBlobStore(stored, self.catalog, config.data_dir,
                                      cache_bytes=config.deltas.rebuilt_cache_bytes, workers=config.deltas.workers)
        self.replica = _replica_id(config.data_dir)
        self._base_cache: OrderedDict[str, BaseModelInfo] = OrderedDict()
        self._base_cache_lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: str | os.PathLike, **kwargs) -> "HubStore":
        return cls(StoreConfig(Path(data_dir), **kwargs))

    def close(self) -> None:
        self.catalog.close()

    def _blob_lock(self):
        """Blob removal against commits, across every process sharing the catalog."""
        return self.catalog.lock("blobs")

    # -- push --------------------------------------------------------------
    def check_manifest(self, artifact: str, kind: Kind | str, files: list[FileEntry],
                       allow_code: bool = False) -> tuple[ArtifactName, Kind]:
        """Everything that can be checked before a byte is sent."""
        name = ArtifactName.parse(artifact)
        kind = Kind.parse(kind)
        formats.check_files(files)
        formats.check_code(files, allow_code)
        formats.required_files(kind, {f.path for f in files})
        for f in files:
            self.blobs.check_size(f.size)
        total = sum(f.size for f in files)
        if self.config.max_revision_bytes is not None and total > self.config.max_revision_bytes:
            raise LimitExceededError(
                f"revision of {total} bytes exceeds the configured limit of {self.config.max_revision_bytes} bytes"
            )
        existing = self.catalog.artifact_kind(str(name))
        if existing is not None and existing is not kind:
            raise PreconditionError(f"artifact {name} holds {existing.value} revisions, not {kind.value}")
        return name, kind

    def plan_push(self, artifact: str, kind: Kind | str, files: list[FileEntry], base: str = "", *,
                  allow_code: bool = False) -> list[tuple[str, int, int]]:
        """(sha256, size, resume offset) of each blob the hub still needs."""
        _, kind = self.check_manifest(artifact, kind, files, allow_code)
        self._resolve_base(kind, base)
        missing: dict[str, tuple[str, int, int]] = {}
        stored = self.catalog.committed_files([f.sha256 for f in files])  # one query, not a request per file
        for f in files:
            if f.sha256 not in missing and f.sha256 not in stored and not self.blobs.has(f.sha256):
                missing[f.sha256] = (f.sha256, f.size, self.blobs.upload_offset(f.sha256))
        return list(missing.values())

    def delta_bases(self, have: list[str]) -> list[str]:
        """Of the blobs a client holds (sha256), those it may encode deltas against: the ones this hub
        stores as themselves (a rebuild is then one decode)."""
        return sorted(s for s in self.check_held(have) if self.blobs.inner.has(s) and self.blobs.encoding(s) is None)

    def check_held(self, have: list[str]) -> set[str]:
        """The sha256 a client says it holds, checked (well formed, within --max-held-blobs)."""
        limit = self.config.inputs.max_held_blobs
        if len(have) > limit:
            raise LimitExceededError(f"{len(have)} held blobs named; the limit is {limit} (--max-held-blobs): "
                                     "give a --base-dir holding the base model only")
        return {check_sha256(s) for s in have}

    def pull_plan(self, spec: str, have: list[str]) -> list[Encoding]:
        """The files of revision ``spec`` stored as deltas whose every base the client holds: what it may
        download as containers and rebuild itself."""
        rev = self.resolve(spec)
        held = self.check_held(have)
        plan = {}
        for f in rev.files:
            enc = self.blobs.encoding(f.sha256)
            if enc is not None and set(enc.bases) <= held and self.blobs.inner.has(enc.container):
                plan[f.sha256] = enc
        return list(plan.values())

    def open_session(self, principal: str, files: list[FileEntry]) -> str:
        """A push session over the planned files whose blobs no revision holds yet."""
        session = uuid.uuid4().hex
        with self.catalog.transaction() as db:
            self.catalog.join_session(db, session, principal, [
                (f.sha256, f.size) for f in {f.sha256: f for f in files}.values()
                if not self.catalog.blob_in_use(f.sha256)])
        return session

    def open_upload(self, sha256: str, size: int, offset: int, *, principal: str = "",
                    session: str = "") -> UploadWriter:
        """A writer for one blob's upload, within the principal's partial-upload allowance."""
        self.blobs.check_size(size)
        self._check_allowance(principal, check_sha256(sha256), size)
        writer = self.blobs.open_upload(sha256, size, offset)
        with self.catalog.transaction() as db:
            self.catalog.join_session(db, session or f"stream:{principal}", principal, [(sha256, size)])
        return writer

    def _check_allowance(self, principal: str, sha256: str, size: int) -> None:
        limits = self.config.uploads
        unfinished = self.blobs.uploads_in_progress()  # one look at the store, however many blobs
        partial = {sha: n for sha, n in self.catalog.session_blobs(principal).items()
                   if sha != sha256 and sha in unfinished}
        if len(partial) + 1 > limits.max_partial_uploads:
            raise LimitExceededError(
                f"{principal or 'this client'} has {len(partial)} partial uploads; the limit is "
                f"{limits.max_partial_uploads} (--max-partial-uploads): finish or let them expire "
                f"({limits.partial_ttl_s:g} s, --partial-upload-ttl)"
            )
        held = sum(partial.values())
        if held + size > limits.max_partial_bytes:
            raise LimitExceededError(
                f"{principal or 'this client'} has {held} bytes in partial uploads; {size} more exceeds the "
                f"limit of {limits.max_partial_bytes} bytes (--max-partial-bytes)"
            )

    def upload_status(self, sha256: str) -> tuple[int, bool]:
        """(offset, complete) of a blob's upload."""
        if self.blobs.has(sha256):
            return self.blobs.size(sha256), True
        return self.blobs.upload_offset(sha256), False

    def commit(self, req: CommitRequest) -> tuple[Revision, bool]:
        try:
            result = self._commit(req)
        except Exception:
            # A refused commit stores nothing: blobs its own session alone planned or
            # uploaded, that no revision uses, go too (a retry uploads them again).
            # Blobs another session planned, uploads or uploaded are that session's.
            if req.session:
                self._discard_session(req.session, [f.sha256 for f in req.files if isinstance(f, FileEntry)]
                                      + list(req.encoded.values()))
            raise
        if req.encoded:  # deltas of files the hub had meanwhile: not needed, unless another push sends them
            with self._blob_lock():
                self._delete_unused(req.encoded.values(), held_by=set())
        return result

    def _discard_session(self, session: str, shas: list[str]) -> None:
        with self._blob_lock(), self.catalog.transaction() as db:
            self._delete_unused(shas, held_by={session})
            self.catalog.end_session(db, session)

    def _delete_unused(self, shas, *, held_by: set[str]) -> None:
        """Deletes each blob no revision uses and exactly the sessions ``held_by`` hold (under the blob lock)."""
        for sha in set(shas):
            if self.catalog.sessions_of(sha) == held_by and not self.catalog.blob_in_use(sha):
                self.blobs.delete(sha)

    def _commit(self, req: CommitRequest) -> tuple[Revision, bool]:
        name, kind = self.check_manifest(req.artifact, req.kind, req.files, req.allow_code)
        check_labels_settable(req.labels)
        check_card(req.card, self.config.inputs)
        check_annotations(req.labels, len(json.dumps(req.lineage.to_dict(), default=str)), self.config.inputs)
        for parent in req.lineage.parents:  # lineage points at revisions that exist (and the caller reads)
            self.resolve(parent)
        ref = check_ref(req.ref or DEFAULT_REF)
        tags = [check_ref(t) for t in req.tags]
        base_rev = self._resolve_base(kind, req.base)
        self._adopt_deltas(req)
        missing = [f.path for f in req.files if not self.blobs.has(f.sha256)]
        if missing:
            raise PreconditionError(f"blobs of {missing[:10]} have not been uploaded; upload them, then commit")
        for f in req.files:
            actual = self.blobs.size(f.sha256)
            if actual != f.size:
                raise InvalidInputError(f"{f.path}: declared size {f.size} but its blob holds {actual} bytes")
        local = {f.path: self.blobs.require(f.sha256) for f in req.files}
        for f in req.files:
            formats.check_contents(f.path, local[f.path])
        formats.validate(kind, local, self.base_info(base_rev) if base_rev else None, self.config.inputs)
        base = base_rev.spec if base_rev else ""
        digest = manifest_digest(kind, base, list(req.files))
        labels = {**req.labels, **({ALLOW_CODE_LABEL: "true"} if req.allow_code else {})}
        rev = Revision(
            artifact=str(name), kind=kind, digest=digest, files=tuple(sorted(req.files)), base=base,
            card=req.card, labels=labels, lineage=req.lineage, created_at=time.time(),
            created_by=req.created_by,
        )
        with self._blob_lock(), self.catalog.transaction() as db:
            gone = [f.path for f in req.files if not self.blobs.has(f.sha256)]
            if gone:
                raise PreconditionError(f"blobs of {gone[:10]} were removed while committing; push again")
            existing = self.catalog.get_revision(rev.artifact, digest)
            created = existing is None
            head = self._cas(db, rev.artifact, ref, req.expected_revision)
            if created:
                rev = self._annotations_from(head, rev, req)
                self.catalog.insert_revision(db, rev, index_recipe=req.index_recipe)
            else:
                if req.index_recipe:
                    self.catalog.add_recipe(db, rev)
                self._reannotate(db, existing, req)
            self.catalog.set_ref(db, rev.artifact, ref, digest)
            for tag in tags:
                self.catalog.set_ref(db, rev.artifact, tag, digest)
            if req.session:
                self.catalog.end_session(db, req.session)
        return self.catalog.get_revision(rev.artifact, digest), created

    def _adopt_deltas(self, req: CommitRequest) -> None:
        """Files the client sent as deltas (containers against blobs this hub stores as themselves): each
        is rebuilt and checked against its declared sha256 and size before it counts as uploaded."""
        declared = {f.sha256: f for f in req.files}
        for sha, container in req.encoded.items():
            check_sha256(sha)
            check_sha256(container)
            f = declared.get(sha)
            if f is None:
                raise InvalidInputError(f"delta {container[:12]} is sent for blob {sha}, which no file of this "
                                        "revision has")
            if self.blobs.has(sha):
                continue
            if not self.blobs.inner.has(container):
                raise PreconditionError(f"{f.path}: its delta {container} has not been uploaded; upload it, then "
                                        "commit")
            try:
                with open(self.blobs.inner.require(container), "rb") as fh:
                    index = read_index(fh)
            except IntegrityError as err:
                raise InvalidInputError(f"{f.path}: the delta uploaded for it is not an encoded file ({err})") from None
            needs = needs_of(index)
            unusable = sorted(set(needs) - set(self.delta_bases(needs)))
            if unusable:
                raise PreconditionError(f"{f.path}: its delta needs base blob {unusable[0]}, which this hub does not "
                                        "store as itself; push without --base-dir")
            if index["file_size"] != f.size:
                raise InvalidInputError(f"{f.path}: the delta uploaded for it rebuilds {index['file_size']} bytes, "
                                        f"the file has {f.size}")
            base_bytes, growth = sum(self.blobs.inner.size(b) for b in needs), self.config.deltas.max_delta_growth
            if not within_growth(f.size, base_bytes, growth):
                raise LimitExceededError(f"{f.path}: {f.size} bytes rebuilt from a delta against {base_bytes} bytes "
                                         f"of base files is over --max-delta-growth {growth:g} times those; push it "
                                         "without --base-dir")
            enc = Encoding(sha, container, f.size, self.blobs.inner.size(container), tuple(needs))
            try:
                self.blobs.rebuild(enc)
            except IntegrityError as err:
                raise InvalidInputError(f"{f.path}: the delta uploaded for it does not rebuild it ({err})") from None
            with self._blob_lock(), self.catalog.transaction() as db:
                if not all(self.blobs.inner.has(b) for b in needs):
                    raise PreconditionError(f"{f.path}: a base blob its delta needs was removed meanwhile; push "
                                            "again")
                self.catalog.set_encoding(db, enc)

    def _annotations_from(self, head: str | None, rev: Revision, req: CommitRequest) -> Revision:
        """A new revision keeps the card and labels of the one its ref pointed at, unless the push gives
        its own: a card lives with an artifact, as a model card does with a repository."""
        previous = self.catalog.get_revision(rev.artifact, head) if head else None
        if previous is None:
            return rev
        card = rev.card if (rev.card.description or rev.card.samples) else previous.card
        kept = {k: v for k, v in previous.labels.items() if not k.startswith(RESERVED_LABEL_PREFIX)}
        labels = rev.labels if req.labels else {**kept, **rev.labels}
        return replace(rev, card=card, labels=labels)

    def _reannotate(self, db, existing: Revision, req: CommitRequest) -> None:
        """The same files pushed again with a card or labels: those are updated, not dropped."""
        card = req.card if (req.card.description or req.card.samples) else existing.card
        labels = {**existing.labels, **req.labels}
        if card != existing.card or labels != existing.labels:
            self.catalog.update_annotations(db, existing.artifact, existing.digest, card, labels)

    def _resolve_base(self, kind: Kind, base: str) -> Revision | None:
        if not base:
            if kind.needs_base:
                raise InvalidInputError(f"a {kind.value} needs a base model revision (--base namespace/name[@ref])")
            return None
        return self.resolve_base(base)

    def resolve_base(self, base: str) -> Revision:
        """A base model revision: it must exist and be a model."""
        return self.resolve_as(base, Kind.MODEL, "base")

    def resolve_as(self, spec: str, kind: Kind, role: str) -> Revision:
        """The revision ``spec`` names, which must exist and be of ``kind``; ``role`` names it in errors."""
        try:
            rev = self.resolve(spec)
        except NotFoundError as err:
            raise NotFoundError(f"{role} {spec!r} does not exist: {err}") from None
        if rev.kind is not kind:
            article = "an" if kind.value[0] in "aeiou" else "a"
            raise PreconditionError(f"{role} {spec!r} is a {rev.kind.value}, not {article} {kind.value}")
        return rev

    def discard_unused(self, shas: list[str]) -> tuple[int, int]:
        """Removes those of ``shas`` nothing uses; a removed delta's bases go too when nothing else needs them."""
        removed = freed = 0
        todo = set(shas)
        with self._blob_lock():
            while todo:
                sha = todo.pop()
                if self.catalog.blob_in_use(sha):
                    continue
                enc = self.catalog.encoding(sha)
                if (size := self.blobs.delete(sha)) is not None:
                    removed += 1
                    freed += size
                if enc is not None:
                    todo.update(enc.bases)
        return removed, freed

    # -- pinned blobs (training checkpoints) ------------------------------------
    def pin(self, owner: str, files: list[FileEntry]) -> None:
        """Keeps uploaded blobs alive under ``owner`` (a job id), replacing what it pinned before.

        The blobs the previous pin held and nothing else uses are removed.
        """
        formats.check_files(files)
        with self._blob_lock(), self.catalog.transaction() as db:
            missing = [f.path for f in files if not self.blobs.has(f.sha256)]
            if missing:
                raise PreconditionError(f"blobs of {missing[:10]} have not been uploaded; upload them, then pin")
            for f in files:
                if self.blobs.size(f.sha256) != f.size:
                    raise InvalidInputError(f"{f.path}: declared size {f.size} differs from its blob's")
            before = self.catalog.drop_pins(db, owner)
            self.catalog.set_pins(db, owner, files)
        self.discard_unused(before)

    def pinned(self, owner: str) -> list[FileEntry]:
        return self.catalog.pins(owner)

    def unpin(self, owner: str) -> None:
        with self._blob_lock(), self.catalog.transaction() as db:
            shas = self.catalog.drop_pins(db, owner)
        self.discard_unused(shas)

    # -- reading -----------------------------------------------------------
    def resolve(self, spec: str | RevisionSpec) -> Revision:
        """The revision ``spec`` names, if the caller may read it (whether named, inferred or reached)."""
        spec = RevisionSpec.parse(spec) if isinstance(spec, str) else spec
        access.require(spec.artifact.namespace, Scope.READ)
        rev = self._find(spec)
        access.require_read(rev.artifact, rev.lineage.parents)
        return rev

    def _find(self, spec: RevisionSpec) -> Revision:
        artifact = str(spec.artifact)
        if self.catalog.artifact_kind(artifact) is None:
            raise NotFoundError(f"artifact {artifact} does not exist")
        wanted = spec.revision or DEFAULT_REF
        refs = self.catalog.refs(artifact)
        if wanted in refs:
            return self.catalog.get_revision(artifact, refs[wanted])
        if looks_like_digest(wanted):
            matches = self.catalog.digests_with_prefix(artifact, wanted)
            if len(matches) == 1:
                return self.catalog.get_revision(artifact, matches[0])
            if len(matches) > 1:
                raise InvalidInputError(f"digest prefix {wanted!r} of {artifact} is ambiguous ({len(matches)} revisions)")
        known = ", ".join(sorted(refs)) or "none"
        raise NotFoundError(f"{artifact} has no ref or revision {wanted!r} (refs: {known})")

    def list_artifacts(self, namespace: str | None = None, kind: Kind | None = None) -> list[ArtifactInfo]:
        return self.catalog.list_artifacts(namespace or None, kind)

    def artifact(self, artifact: str) -> ArtifactInfo:
        name = str(ArtifactName.parse(artifact))
        found = self.catalog.get_artifact(name)
        if found is None:
            raise NotFoundError(f"artifact {name} does not exist")
        return found

    def list_revisions(self, artifact: str) -> list[Revision]:
        """Every revision of ``artifact`` the caller may read."""
        self.artifact(artifact)
        readable = []
        for rev in self.catalog.list_revisions(str(ArtifactName.parse(artifact))):
            try:
                access.require_read(rev.artifact, rev.lineage.parents)
            except PermissionDeniedError:
                continue
            readable.append(rev)
        return readable

    def local_files(self, rev: Revision) -> dict[str, Path]:
        return {f.path: self.blobs.require(f.sha256) for f in rev.files}

    def checkout(self, rev: Revision, dest: Path) -> Path:
        """A folder of links to the revision's blobs, laid out as pushed (for from_pretrained)."""
        from deltahub.workspace import link_tree

        return link_tree(self.local_files(rev), dest)

    def base_info(self, rev: Revision) -> BaseModelInfo:
        """Parameter shapes of a model revision, from its headers (cached: revisions are immutable)."""
        with self._base_cache_lock:
            if rev.digest in self._base_cache:
                self._base_cache.move_to_end(rev.digest)
                return self._base_cache[rev.digest]
        info = validate_model(self.local_files(rev), check_values=False)
        with self._base_cache_lock:
            self._base_cache[rev.digest] = info
            while len(self._base_cache) > 32:
                self._base_cache.popitem(last=False)
        return info

    # -- refs --------------------------------------------------------------
    def _cas(self, db, artifact: str, ref: str, expected: object) -> str | None:
        current = self.catalog.ref(db, artifact, ref)
        if expected is UNSET or expected is None:
            return current
        if expected == "":
            if current is not None:
                raise StaleRefError(f"ref {ref} of {artifact} already exists (points to {current[:12]}); expected it not to")
            return current
        if current is None or not current.startswith(str(expected)):
            where = f"points to {current[:12]}" if current else "does not exist"
            raise StaleRefError(f"ref {ref} of {artifact} {where}, not the expected {str(expected)[:12]}; reload and retry")
        return current

    def update_ref(self, artifact: str, ref: str, target: str, expected: object = UNSET) -> tuple[str, str | None]:
        name = str(ArtifactName.parse(artifact))
        check_ref(ref)
        rev = self.resolve(f"{name}@{target}")
        with self.catalog.transaction() as db:
            previous = self._cas(db, name, ref, expected)
            self.catalog.set_ref(db, name, ref, rev.digest)
        return rev.digest, previous

    def ref_moves(self, after: int, *, namespace: str | None = None, artifact: str | None = None,
                  limit: int = 1000) -> list[RefMove]:
        """Ref moves and deletions after event ``after`` (0: none of the past), oldest first; one namespace or
        artifact when given. Callers filter by what the reader may read."""
        if artifact:
            artifact = str(ArtifactName.parse(artifact))
        if namespace:
            check_namespace(namespace)
        rows = self.catalog.ref_events(after, namespace, artifact, limit)
        return [RefMove(r["seq"], r["artifact"], r["ref"], r["digest"], r["at"]) for r in rows]

    def last_event(self) -> int:
        return self.catalog.last_event()

    def delete_ref(self, artifact: str, ref: str, expected: object = UNSET) -> str:
        name = str(ArtifactName.parse(artifact))
        check_ref(ref)
        with self.catalog.transaction() as db:
            current = self.catalog.ref(db, name, ref)
            if current is None:
                raise NotFoundError(f"{name} has no ref {ref!r}")
            self._cas(db, name, ref, expected)
            self.catalog.delete_ref(db, name, ref)
        return current

    # -- deleting ------------------------------------------------------------
    def delete_revision(self, artifact: str, revision: str) -> DeleteResult:
        rev = self.resolve(f"{ArtifactName.parse(artifact)}@{revision}")
        if rev.refs:
            raise PreconditionError(
                f"revision {rev.digest[:12]} of {rev.artifact} is still the target of refs {list(rev.refs)}; "
                "delete or move them first"
            )
        return self._delete([rev], refs=[])

    def delete_artifact(self, artifact: str) -> DeleteResult:
        name = str(ArtifactName.parse(artifact))
        revs = self.list_revisions(name)
        refs = sorted(self.catalog.refs(name))
        return self._delete(revs, refs=refs, artifact=name)

    def _delete(self, revs: list[Revision], *, refs: list[str], artifact: str | None = None) -> DeleteResult:
        doomed = {r.spec for r in revs}
        shas: list[str] = []
        with self.catalog.transaction() as db:
            # checked inside the write transaction, so no commit can take one
            # of these revisions as its base between the check and the delete
            for r in revs:
                users = [d for d in self.catalog.dependents(db, r.spec) if d not in doomed]
                if users:
                    raise PreconditionError(
                        f"{r.artifact}@{r.digest[:12]} is the base of {len(users)} other revision(s), "
                        f"e.g. {users[0]}; delete those first"
                    )
            for ref in refs:
                self.catalog.delete_ref(db, artifact, ref)
            for r in revs:
                shas += self.catalog.delete_revision(db, r.artifact, r.digest)
            for name in {r.artifact for r in revs}:
                self.catalog.drop_if_empty(db, name)
        removed, freed = self.discard_unused(shas)
        return DeleteResult([r.digest for r in revs], refs, removed, freed)

    def collect_garbage(self, *, partial_upload_max_age_s: float | None = None) -> tuple[int, int, int]:
        """(blobs removed, bytes freed, partial uploads removed).

        Push sessions untouched for the partial-upload age expire first; an
        unreferenced blob is kept while a live session planned or uploaded it,
        or while younger than the grace period.
        """
        partials = self.expire_uploads(partial_upload_max_age_s)
        # encodings of blobs nothing uses any more (a process died between removing a revision and them)
        removed, freed = self.discard_unused([s for s in self.catalog.unused_encodings()
                                              if not self.catalog.sessions_of(s)])
        now = time.time()
        with self._blob_lock():
            used = self.catalog.blobs_in_use()
            for sha, size, mtime in list(self.blobs.iter_blobs()):
                if (sha not in used and now - mtime > self.config.gc_grace_s and not self.catalog.sessions_of(sha)
                        and (n := self.blobs.delete(sha)) is not None):
                    freed += n
                    removed += 1
        return removed, freed, partials

    def expire_uploads(self, max_age_s: float | None = None) -> int:
        """Removes push sessions and partial uploads untouched for ``max_age_s``; how many partials went.

        The server runs this every ``uploads.sweep_every_s``; complete blobs are left to a full GC.
        """
        max_age = self.config.uploads.partial_ttl_s if max_age_s is None else max_age_s
        with self.catalog.transaction() as db:
            self.catalog.expire_sessions(db, time.time() - max_age)
        return self.blobs.expire_uploads(max_age)

    # -- annotations -----------------------------------------------------------
    def update_card(
        self, spec: str, card: DomainCard | None, labels: dict[str, str] | None, *, replace_labels: bool = False
    ) -> Revision:
        rev = self.resolve(spec)
        new_labels = dict(labels or {}) if replace_labels else {**rev.labels, **(labels or {})}
        check_labels_settable(labels or {})
        reserved = {k: v for k, v in rev.labels.items() if k.startswith(RESERVED_LABEL_PREFIX)}
        new_labels = {**new_labels, **reserved}
        if card is not None:
            check_card(card, self.config.inputs)
        check_annotations(new_labels, 0, self.config.inputs)
        with self.catalog.transaction() as db:
            self.catalog.update_annotations(db, rev.artifact, rev.digest, card if card is not None else rev.card, new_labels)
        return self.catalog.get_revision(rev.artifact, rev.digest)

    # -- derived artifacts -------------------------------------------------------
    def task_vector_spec(self, req: TaskVectorRequest) -> TaskVectorSpec:
        """Checks a task-vector request and resolves its models: the spec of the job that extracts it."""
        ArtifactName.parse(req.out)
        check_target(req.rank, req.energy)
        check_labels_settable(req.labels)
        check_card(req.card, self.config.inputs)
        ft_rev, base_rev = self.resolve(req.finetuned), self.resolve(req.base)
        for what, rev in (("finetuned", ft_rev), ("base", base_rev)):
            if rev.kind is not Kind.MODEL:
                raise PreconditionError(f"{what} {rev.artifact} is a {rev.kind.value}, not a model")
        check_compatible(self.base_info(ft_rev), self.base_info(base_rev))  # refused now, not in the job
        return TaskVectorSpec(finetuned=ft_rev.spec, base=base_rev.spec, out=req.out, rank=req.rank or None,
                              energy=req.energy or None, card=req.card.to_dict(), labels=dict(req.labels),
                              ref=req.ref, created_by=req.created_by)

    def commit_task_vector(self, spec: TaskVectorSpec, files: list[FileEntry], metrics: dict) -> tuple[Revision, bool]:
        recipe = {"op": "task_vector", "finetuned": spec.finetuned, "base": spec.base,
                  "form": metrics.get("form", "lowrank" if (spec.rank or spec.energy) else "dense")}
        if spec.rank:
            recipe["rank"] = spec.rank
        if spec.energy:
            recipe["energy"] = spec.energy
        return self.commit(CommitRequest(
            artifact=spec.out, kind=Kind.TASK_VECTOR, files=files, base=spec.base,
            card=DomainCard.from_dict(spec.card), labels=dict(spec.labels),
            lineage=Lineage(parents=(spec.finetuned, spec.base), recipe=recipe,
                            metrics={k: v for k, v in metrics.items() if k != "form"}),
            ref=spec.ref, created_by=spec.created_by,
        ))
