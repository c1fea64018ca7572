"""The catalog: artifacts, revisions, their files and refs, in SQLite.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so a process killed
mid-commit leaves the previous state. WAL mode lets readers in other
processes see a consistent snapshot while one writer works.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from deltahub.artifacts import ArtifactInfo, DomainCard, FileEntry, Kind, Lineage, Revision
from deltahub.events import Event, EventSink, NullSink

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_namespace ON artifacts(namespace);
CREATE TABLE IF NOT EXISTS revisions (
    artifact TEXT NOT NULL REFERENCES artifacts(name),
    digest TEXT NOT NULL,
    kind TEXT NOT NULL,
    base TEXT NOT NULL,
    card TEXT NOT NULL,
    labels TEXT NOT NULL,
    lineage TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (artifact, digest)
);
CREATE INDEX IF NOT EXISTS revisions_base ON revisions(base);
CREATE TABLE IF NOT EXISTS files (
    artifact TEXT NOT NULL,
    digest TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (artifact, digest, path)
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS refs (
    artifact TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (artifact, name)
);
CREATE TABLE IF NOT EXISTS recipes (
    hash TEXT NOT NULL,
    artifact TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (hash, artifact, digest)
);
CREATE TABLE IF NOT EXISTS embeddings (
    artifact TEXT NOT NULL,
    digest TEXT NOT NULL,
    embedder TEXT NOT NULL,
    card_sha TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vectors BLOB NOT NULL,
    PRIMARY KEY (artifact, digest, embedder)
);
-- blobs kept alive outside any revision: a training job's checkpoint, owned by the job id
CREATE TABLE IF NOT EXISTS pins (
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (owner, path)
);
CREATE INDEX IF NOT EXISTS pins_sha ON pins (sha256);
-- push sessions: who planned or uploaded each not-yet-committed blob (a refused
-- commit removes a blob only when its own session is the only one that did)
CREATE TABLE IF NOT EXISTS upload_sessions (
    session TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    principal TEXT NOT NULL,
    size INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (session, sha256)
);
CREATE INDEX IF NOT EXISTS upload_sessions_sha ON upload_sessions (sha256);
CREATE INDEX IF NOT EXISTS upload_sessions_principal ON upload_sessions (principal);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    artifact TEXT NOT NULL,
    digest TEXT NOT NULL,
    ref TEXT NOT NULL DEFAULT ''
);
"""


class Catalog:
    def __init__(self, path: str | Path, *, sink: "EventSink | None" = None) -> None:
        self.path = str(path)
        self.sink = sink or NullSink()
        self._pending: list[Event] = []
        # called (no arguments) after a transaction that recorded events commits:
        # in-process followers such as the router wake up at once
        self.listeners: list[Callable[[], None]] = []
        self.closed = False
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        # catalogs written before ref events named their ref (a versioned migration path is issue 16's)
        if "ref" not in {row["name"] for row in self._db.execute("PRAGMA table_info(events)")}:
            self._db.execute("ALTER TABLE events ADD COLUMN ref TEXT NOT NULL DEFAULT ''")
        # Reads outside a transaction use a connection per thread: under WAL they see the last
        # commit without waiting for a writer's fsync, so small reads do not queue behind pushes.
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._db.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "reader", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            with self._readers_lock:  # not the writer's lock: a thread's first read must not wait for a commit
                if self.closed:
                    conn.close()
                    raise sqlite3.ProgrammingError("the catalog is closed")
                self._readers.append(conn)
            self._local.reader = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._pending = []
            self._local.in_tx = True  # reads inside see this transaction's writes: the writer's connection
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending = []
                raise
            else:
                self._db.execute("COMMIT")
                events, self._pending = self._pending, []
            finally:
                self._local.in_tx = False
        self.sink.publish(events)
        if events:
            for listener in list(self.listeners):
                listener()

    def add_schema(self, script: str) -> None:
        """Tables another module keeps in this database (the job queue's)."""
        with self._lock:
            self._db.executescript(script)

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """A read, outside a transaction on this thread's reader, inside one on the writer."""
        return self._query(sql, args)

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        if getattr(self._local, "in_tx", False):
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        return self._reader().execute(sql, args).fetchall()

    # -- artifacts -----------------------------------------------------------
    def artifact_kind(self, name: str) -> Kind | None:
        rows = self._query("SELECT kind FROM artifacts WHERE name=?", (name,))
        return Kind(rows[0]["kind"]) if rows else None

    def list_artifacts(self, namespace: str | None = None, kind: Kind | None = None,
                       name: str | None = None) -> list[ArtifactInfo]:
        where, args = "", []
        for column, value in (("a.namespace", namespace), ("a.kind", kind.value if kind else None), ("a.name", name)):
            if value:
                where += f" AND {column}=?"
                args.append(value)
        rows = self._query(
            "SELECT a.*, (SELECT COUNT(*) FROM revisions r WHERE r.artifact=a.name) AS n,"
            " (SELECT COALESCE(SUM(f.size),0) FROM files f WHERE f.artifact=a.name) AS size"
            f" FROM artifacts a WHERE 1=1{where} ORDER BY a.name",
            tuple(args),
        )
        # one query for the refs of every listed artifact, not one per artifact
        refs: dict[str, dict[str, str]] = {}
        for r in self._query(
            f"SELECT r.artifact, r.name, r.digest FROM refs r JOIN artifacts a ON a.name=r.artifact WHERE 1=1{where}"
            " ORDER BY r.name",
            tuple(args),
        ):
            refs.setdefault(r["artifact"], {})[r["name"]] = r["digest"]
        return [
            ArtifactInfo(
                name=row["name"],
                kind=Kind(row["kind"]),
                refs=refs.get(row["name"], {}),
                revision_count=row["n"],
                size=row["size"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
            for row in rows
        ]

    def get_artifact(self, name: str) -> ArtifactInfo | None:
        found = self.list_artifacts(name=name)
        return found[0] if found else None

    # -- revisions -----------------------------------------------------------
    def _revision(self, row: sqlite3.Row, refs: dict[str, str] | None = None) -> Revision:
        files = tuple(
            FileEntry(r["path"], r["sha256"], r["size"])
            for r in self._query(
                "SELECT path, sha256, size FROM files WHERE artifact=? AND digest=? ORDER BY path",
                (row["artifact"], row["digest"]),
            )
        )
        refs = self.refs(row["artifact"]) if refs is None else refs
        return Revision(
            artifact=row["artifact"],
            kind=Kind(row["kind"]),
            digest=row["digest"],
            files=files,
            base=row["base"],
            card=DomainCard.from_dict(json.loads(row["card"])),
            labels=json.loads(row["labels"]),
            lineage=Lineage.from_dict(json.loads(row["lineage"])),
            created_at=row["created_at"],
            created_by=row["created_by"],
            refs=tuple(sorted(r for r, d in refs.items() if d == row["digest"])),
        )

    def get_revision(self, artifact: str, digest: str) -> Revision | None:
        rows = self._query("SELECT * FROM revisions WHERE artifact=? AND digest=?", (artifact, digest))
        return self._revision(rows[0]) if rows else None

    def digests_with_prefix(self, artifact: str, prefix: str) -> list[str]:
        rows = self._query(
            "SELECT digest FROM revisions WHERE artifact=? AND digest >= ? AND digest < ?",
            (artifact, prefix, prefix + "g"),
        )
        return [r["digest"] for r in rows]

    def list_revisions(self, artifact: str) -> list[Revision]:
        refs = self.refs(artifact)
        rows = self._query("SELECT * FROM revisions WHERE artifact=? ORDER BY seq DESC", (artifact,))
        return [self._revision(r, refs) for r in rows]

    def dependents(self, db: sqlite3.Connection, base: str) -> list[str]:
        """Revisions (``name@digest``) whose base is the revision ``base`` (``name@digest``)."""
        rows = db.execute("SELECT artifact, digest FROM revisions WHERE base = ?", (base,)).fetchall()
        return [f"{r['artifact']}@{r['digest']}" for r in rows]

    def insert_revision(self, db: sqlite3.Connection, rev: Revision, *, index_recipe: bool = False) -> None:
        now = time.time()
        ns = rev.artifact.split("/")[0]
        db.execute(
            "INSERT INTO artifacts(name, namespace, kind, created_at, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET updated_at=excluded.updated_at",
            (rev.artifact, ns, rev.kind.value, now, now),
        )
        seq = db.execute("SELECT COALESCE(MAX(seq),0)+1 FROM revisions WHERE artifact=?", (rev.artifact,)).fetchone()[0]
        db.execute(
            "INSERT INTO revisions(artifact, digest, kind, base, card, labels, lineage, created_at, created_by, seq)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                rev.artifact,
                rev.digest,
                rev.kind.value,
                rev.base,
                json.dumps(rev.card.to_dict()),
                json.dumps(rev.labels, sort_keys=True),
                json.dumps(rev.lineage.to_dict(), sort_keys=True),
                rev.created_at,
                rev.created_by,
                seq,
            ),
        )
        db.executemany(
            "INSERT INTO files(artifact, digest, path, sha256, size) VALUES (?,?,?,?,?)",
            [(rev.artifact, rev.digest, f.path, f.sha256, f.size) for f in rev.files],
        )
        if index_recipe:
            self.add_recipe(db, rev)
        self.record_event(db, "commit", rev.artifact, rev.digest)

    def add_recipe(self, db: sqlite3.Connection, rev: Revision) -> None:
        """The recipe cache answers from ``rev`` for its lineage's recipe hash."""
        if recipe_hash := rev.lineage.recipe.get("hash"):
            db.execute("INSERT OR IGNORE INTO recipes(hash, artifact, digest) VALUES (?,?,?)",
                       (recipe_hash, rev.artifact, rev.digest))

    def revisions_with_recipe(self, recipe_hash: str) -> list[tuple[str, str]]:
        """(artifact, digest) of the revisions a merge recipe built, oldest first."""
        rows = self._query(
            "SELECT r.artifact, r.digest FROM recipes r JOIN revisions v ON v.artifact=r.artifact AND v.digest=r.digest"
            " WHERE r.hash=? ORDER BY v.created_at", (recipe_hash,))
        return [(row["artifact"], row["digest"]) for row in rows]

    def update_annotations(self, db: sqlite3.Connection, artifact: str, digest: str, card: DomainCard, labels: dict) -> None:
        db.execute(
            "UPDATE revisions SET card=?, labels=? WHERE artifact=? AND digest=?",
            (json.dumps(card.to_dict()), json.dumps(labels, sort_keys=True), artifact, digest),
        )
        self.record_event(db, "card", artifact, digest)

    def delete_revision(self, db: sqlite3.Connection, artifact: str, digest: str) -> list[str]:
        """Deletes one revision; returns the sha256s its files used."""
        shas = [r[0] for r in db.execute("SELECT sha256 FROM files WHERE artifact=? AND digest=?", (artifact, digest))]
        db.execute("DELETE FROM files WHERE artifact=? AND digest=?", (artifact, digest))
        db.execute("DELETE FROM revisions WHERE artifact=? AND digest=?", (artifact, digest))
        db.execute("DELETE FROM recipes WHERE artifact=? AND digest=?", (artifact, digest))
        db.execute("DELETE FROM embeddings WHERE artifact=? AND digest=?", (artifact, digest))
        self.record_event(db, "delete", artifact, digest)
        return shas

    def drop_if_empty(self, db: sqlite3.Connection, artifact: str) -> None:
        """An artifact lives as long as it has revisions: drop it (and its refs) when it has none."""
        if not db.execute("SELECT 1 FROM revisions WHERE artifact=? LIMIT 1", (artifact,)).fetchone():
            for (name,) in db.execute("SELECT name FROM refs WHERE artifact=?", (artifact,)).fetchall():
                self.delete_ref(db, artifact, name)
            db.execute("DELETE FROM artifacts WHERE name=?", (artifact,))

    # -- refs --------------------------------------------------------------
    def refs(self, artifact: str) -> dict[str, str]:
        return {r["name"]: r["digest"] for r in self._query("SELECT name, digest FROM refs WHERE artifact=? ORDER BY name", (artifact,))}

    def ref(self, db: sqlite3.Connection, artifact: str, name: str) -> str | None:
        row = db.execute("SELECT digest FROM refs WHERE artifact=? AND name=?", (artifact, name)).fetchone()
        return row[0] if row else None

    def set_ref(self, db: sqlite3.Connection, artifact: str, name: str, digest: str) -> None:
        db.execute(
            "INSERT INTO refs(artifact, name, digest, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT(artifact, name) DO UPDATE SET digest=excluded.digest, updated_at=excluded.updated_at",
            (artifact, name, digest, time.time()),
        )
        db.execute("UPDATE artifacts SET updated_at=? WHERE name=?", (time.time(), artifact))
        self.record_event(db, "ref", artifact, digest, ref=name)

    def delete_ref(self, db: sqlite3.Connection, artifact: str, name: str) -> None:
        if db.execute("DELETE FROM refs WHERE artifact=? AND name=?", (artifact, name)).rowcount:
            self.record_event(db, "ref", artifact, "", ref=name)

    # -- blobs -------------------------------------------------------------
    def blob_in_use(self, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM files WHERE sha256=? UNION ALL SELECT 1 FROM pins WHERE sha256=? LIMIT 1",
                                (sha256, sha256)))

    def blobs_in_use(self) -> set[str]:
        return {r[0] for r in self._query("SELECT sha256 FROM files UNION SELECT sha256 FROM pins")}

    # -- pins: blobs a training job's checkpoint holds --------------------------------
    def set_pins(self, db: sqlite3.Connection, owner: str, files: list[FileEntry]) -> None:
        """Replaces what ``owner`` pins (a new checkpoint supersedes the last)."""
        db.execute("DELETE FROM pins WHERE owner=?", (owner,))
        db.executemany("INSERT INTO pins (owner, path, sha256, size) VALUES (?, ?, ?, ?)",
                       [(owner, f.path, f.sha256, f.size) for f in files])

    def pins(self, owner: str) -> list[FileEntry]:
        return [FileEntry(r["path"], r["sha256"], r["size"])
                for r in self._query("SELECT path, sha256, size FROM pins WHERE owner=? ORDER BY path", (owner,))]

    def drop_pins(self, db: sqlite3.Connection, owner: str) -> list[str]:
        shas = [r[0] for r in db.execute("SELECT sha256 FROM pins WHERE owner=?", (owner,)).fetchall()]
        db.execute("DELETE FROM pins WHERE owner=?", (owner,))
        return shas

    # -- push sessions ---------------------------------------------------------------
    def join_session(self, db: sqlite3.Connection, session: str, principal: str,
                     blobs: list[tuple[str, int]]) -> None:
        db.executemany(
            "INSERT INTO upload_sessions (session, sha256, principal, size, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (session, sha256) DO UPDATE SET at=excluded.at",
            [(session, sha, principal, size, time.time()) for sha, size in blobs])

    def sessions_of(self, sha256: str) -> set[str]:
        return {r[0] for r in self._query("SELECT session FROM upload_sessions WHERE sha256=?", (sha256,))}

    def session_blobs(self, principal: str) -> dict[str, int]:
        """sha256 -> declared size of every blob ``principal``'s sessions planned or uploaded."""
        return {r[0]: r[1] for r in self._query(
            "SELECT sha256, MAX(size) FROM upload_sessions WHERE principal=? GROUP BY sha256", (principal,))}

    def end_session(self, db: sqlite3.Connection, session: str) -> None:
        db.execute("DELETE FROM upload_sessions WHERE session=?", (session,))

    def expire_sessions(self, db: sqlite3.Connection, older_than: float) -> None:
        db.execute("DELETE FROM upload_sessions WHERE at < ?", (older_than,))

    # -- routing: the revision each artifact routes to, card embeddings ---------------
    def routed_revisions(self, kinds: tuple[str, ...], artifact: str | None = None) -> list[sqlite3.Row]:
        """Per artifact of these kinds, the revision ``main`` points to, else its newest.

        Rows carry artifact, digest, kind, base, card, labels and lineage (JSON).
        """
        marks = ",".join("?" * len(kinds))
        where, args = f"r.kind IN ({marks})", list(kinds)
        if artifact is not None:
            where += " AND r.artifact=?"
            args.append(artifact)
        return self._query(
            "SELECT artifact, digest, kind, base, card, labels, lineage FROM ("
            " SELECT r.artifact, r.digest, r.kind, r.base, r.card, r.labels, r.lineage, ROW_NUMBER() OVER ("
            "  PARTITION BY r.artifact ORDER BY (f.digest IS NOT NULL) DESC, r.seq DESC) AS pick"
            " FROM revisions r LEFT JOIN refs f ON f.artifact=r.artifact AND f.name='main' AND f.digest=r.digest"
            f" WHERE {where}) WHERE pick=1",
            tuple(args),
        )

    def embeddings(self, embedder: str, artifact: str | None = None) -> dict[tuple[str, str], tuple[str, bytes, int]]:
        """(artifact, digest) -> (card_sha, float16 vectors, dim) stored for this embedder."""
        sql, args = "SELECT artifact, digest, card_sha, vectors, dim FROM embeddings WHERE embedder=?", [embedder]
        if artifact is not None:
            sql += " AND artifact=?"
            args.append(artifact)
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in self._query(sql, tuple(args))}

    def save_embeddings(self, embedder: str, rows: list[tuple[str, str, str, int, bytes]]) -> None:
        """Stores (artifact, digest, card_sha, dim, vectors) rows; no event (derived data)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO embeddings(artifact, digest, embedder, card_sha, dim, vectors)"
                    " SELECT ?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM revisions WHERE artifact=? AND digest=?)",
                    [(a, d, embedder, sha, dim, vec, a, d) for a, d, sha, dim, vec in rows])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def last_event(self) -> int:
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    # -- change events (the router and caches follow these) ---------------------
    def record_event(self, db: sqlite3.Connection, kind: str, artifact: str, digest: str, ref: str = "") -> None:
        """``ref`` events name the ref; a deleted ref's digest is empty."""
        db.execute("INSERT INTO events(at, kind, artifact, digest, ref) VALUES (?,?,?,?,?)",
                   (time.time(), kind, artifact, digest, ref))
        self._pending.append(Event(kind, artifact, digest))

    def ref_events(self, after: int, namespace: str | None = None, artifact: str | None = None,
                   limit: int = 1000) -> list[sqlite3.Row]:
        """Ref moves and deletions after event ``after``, oldest first."""
        sql, args = "SELECT * FROM events WHERE seq > ? AND kind = 'ref'", [after]
        if artifact:
            sql, args = sql + " AND artifact = ?", [*args, artifact]
        elif namespace:
            prefix = namespace + "/"
            sql, args = sql + " AND substr(artifact, 1, ?) = ?", [*args, len(prefix), prefix]
        return self._query(sql + " ORDER BY seq LIMIT ?", (*args, limit))

    def events_since(self, seq: int) -> list[sqlite3.Row]:
        return self._query("SELECT * FROM events WHERE seq > ? ORDER BY seq", (seq,))
