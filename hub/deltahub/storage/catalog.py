"""The catalog: artifacts, revisions, their files and refs, in SQLite or PostgreSQL.

Every write runs in one transaction of :meth:`Database.begin`, so a process killed mid-commit leaves
the previous state, and writers take turns across every process sharing the database (replicas).
The schema is versioned (:mod:`deltahub.storage.schema`) and upgraded in place on open.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from deltahub.artifacts import ArtifactInfo, DomainCard, FileEntry, Kind, Lineage, Revision
from deltahub.events import Event, EventSink, NullSink
from deltahub.storage.database import Database, open_database
from deltahub.storage.schema import upgrade

Row = Any  # a result row: by column name or position (Row, or the PostgreSQL side's)
Tx = Any   # what a transaction yields: ``execute`` and ``executemany``


@dataclass(frozen=True)
class Encoding:
    """How a blob is stored when not as itself: the container blob that rebuilds it, and the base blobs
    that container needs. ``container`` "" records a blob measured and kept as it is."""

    sha256: str
    container: str
    size: int
    stored: int
    bases: tuple[str, ...] = ()


class Catalog:
    def __init__(self, database: "str | Path | Database", *, sink: "EventSink | None" = None) -> None:
        self.db = database if isinstance(database, Database) else open_database(database)
        self.url = self.db.url
        self.sink = sink or NullSink()
        self._pending: list[Event] = []
        # called (no arguments) after a transaction that recorded events commits:
        # in-process followers such as the router wake up at once
        self.listeners: list[Callable[[], None]] = []
        self._local = threading.local()
        try:
            self.migrations = upgrade(self.db)  # applied now: empty when the schema was current
        except BaseException:
            self.db.close()
            raise

    @property
    def closed(self) -> bool:
        return self.db.closed

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction; called inside another on the same thread, it is that one (a blob
        removal that drops its encoding row joins the removal that called it)."""
        outer = getattr(self._local, "tx", None)
        if outer is not None:
            yield outer
            return
        with self.db.begin() as tx:
            self._pending = []
            self._local.tx = tx  # reads inside see this transaction's writes
            try:
                yield tx
            except BaseException:
                self._pending = []
                raise
            finally:
                self._local.tx = None
            events, self._pending = self._pending, []
        self.sink.publish(events)
        if events:
            for listener in list(self.listeners):
                listener()

    def lock(self, key: str, *, wait: bool = True):
        """A named lock across every process sharing this catalog (see :meth:`Database.lock`)."""
        return self.db.lock(key, wait=wait)

    def query(self, sql: str, args: tuple = ()) -> list[Row]:
        """A read, outside a transaction on this thread's reader, inside one on the writer."""
        return self._query(sql, args)

    def _query(self, sql: str, args: tuple = ()) -> list[Row]:
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            return tx.execute(sql, args).fetchall()
        return self.db.read(sql, args)

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
            " (SELECT CAST(COALESCE(SUM(f.size), 0) AS BIGINT) FROM files f WHERE f.artifact=a.name) AS size"
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
    def _revision(self, row: Row, refs: dict[str, str] | None = None) -> Revision:
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
            "SELECT digest FROM revisions WHERE artifact=? AND substr(digest, 1, CAST(? AS INTEGER)) = ?",
            (artifact, len(prefix), prefix),
        )
        return [r["digest"] for r in rows]

    def list_revisions(self, artifact: str) -> list[Revision]:
        refs = self.refs(artifact)
        rows = self._query("SELECT * FROM revisions WHERE artifact=? ORDER BY seq DESC", (artifact,))
        return [self._revision(r, refs) for r in rows]

    def dependents(self, db: Tx, base: str) -> list[str]:
        """Revisions (``name@digest``) whose base is the revision ``base`` (``name@digest``)."""
        rows = db.execute("SELECT artifact, digest FROM revisions WHERE base = ?", (base,)).fetchall()
        return [f"{r['artifact']}@{r['digest']}" for r in rows]

    def insert_revision(self, db: Tx, rev: Revision, *, index_recipe: bool = False) -> None:
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

    def add_recipe(self, db: Tx, rev: Revision) -> None:
        """The recipe cache answers from ``rev`` for its lineage's recipe hash."""
        if recipe_hash := rev.lineage.recipe.get("hash"):
            db.execute("INSERT INTO recipes(hash, artifact, digest) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                       (recipe_hash, rev.artifact, rev.digest))

    def revisions_with_recipe(self, recipe_hash: str) -> list[tuple[str, str]]:
        """(artifact, digest) of the revisions a merge recipe built, oldest first."""
        rows = self._query(
            "SELECT r.artifact, r.digest FROM recipes r JOIN revisions v ON v.artifact=r.artifact AND v.digest=r.digest"
            " WHERE r.hash=? ORDER BY v.created_at", (recipe_hash,))
        return [(row["artifact"], row["digest"]) for row in rows]

    def update_annotations(self, db: Tx, artifact: str, digest: str, card: DomainCard, labels: dict) -> None:
        db.execute(
            "UPDATE revisions SET card=?, labels=? WHERE artifact=? AND digest=?",
            (json.dumps(card.to_dict()), json.dumps(labels, sort_keys=True), artifact, digest),
        )
        self.record_event(db, "card", artifact, digest)

    def delete_revision(self, db: Tx, artifact: str, digest: str) -> list[str]:
        """Deletes one revision; returns the sha256s its files used."""
        shas = [r[0] for r in db.execute("SELECT sha256 FROM files WHERE artifact=? AND digest=?", (artifact, digest))]
        db.execute("DELETE FROM files WHERE artifact=? AND digest=?", (artifact, digest))
        db.execute("DELETE FROM revisions WHERE artifact=? AND digest=?", (artifact, digest))
        db.execute("DELETE FROM recipes WHERE artifact=? AND digest=?", (artifact, digest))
        db.execute("DELETE FROM embeddings WHERE artifact=? AND digest=?", (artifact, digest))
        self.record_event(db, "delete", artifact, digest)
        return shas

    def drop_if_empty(self, db: Tx, artifact: str) -> None:
        """An artifact lives as long as it has revisions: drop it (and its refs) when it has none."""
        if not db.execute("SELECT 1 FROM revisions WHERE artifact=? LIMIT 1", (artifact,)).fetchone():
            for (name,) in db.execute("SELECT name FROM refs WHERE artifact=?", (artifact,)).fetchall():
                self.delete_ref(db, artifact, name)
            db.execute("DELETE FROM artifacts WHERE name=?", (artifact,))

    # -- refs --------------------------------------------------------------
    def refs(self, artifact: str) -> dict[str, str]:
        return {r["name"]: r["digest"] for r in self._query("SELECT name, digest FROM refs WHERE artifact=? ORDER BY name", (artifact,))}

    def ref(self, db: Tx, artifact: str, name: str) -> str | None:
        row = db.execute("SELECT digest FROM refs WHERE artifact=? AND name=?", (artifact, name)).fetchone()
        return row[0] if row else None

    def set_ref(self, db: Tx, artifact: str, name: str, digest: str) -> None:
        db.execute(
            "INSERT INTO refs(artifact, name, digest, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT(artifact, name) DO UPDATE SET digest=excluded.digest, updated_at=excluded.updated_at",
            (artifact, name, digest, time.time()),
        )
        db.execute("UPDATE artifacts SET updated_at=? WHERE name=?", (time.time(), artifact))
        self.record_event(db, "ref", artifact, digest, ref=name)

    def delete_ref(self, db: Tx, artifact: str, name: str) -> None:
        if db.execute("DELETE FROM refs WHERE artifact=? AND name=?", (artifact, name)).rowcount:
            self.record_event(db, "ref", artifact, "", ref=name)

    # -- blobs -------------------------------------------------------------
    # A blob is in use while a revision holds it, a job pins it, or a stored encoding needs it (as its
    # container, or as a base it was encoded against: so deleting a base keeps what its dependants need)
    _USERS = ("SELECT sha256 FROM files UNION SELECT sha256 FROM pins UNION SELECT base FROM encoding_bases "
              "UNION SELECT container FROM encodings WHERE container != ''")

    def blob_in_use(self, sha256: str) -> bool:
        return bool(self._query(
            "SELECT 1 FROM files WHERE sha256=? UNION ALL SELECT 1 FROM pins WHERE sha256=? "
            "UNION ALL SELECT 1 FROM encoding_bases WHERE base=? UNION ALL SELECT 1 FROM encodings WHERE container=? "
            "LIMIT 1", (sha256,) * 4))

    def blobs_in_use(self) -> set[str]:
        return {r[0] for r in self._query(self._USERS)}

    def committed_files(self, shas: list[str]) -> set[str]:
        """Of ``shas``, the files some revision holds: stored (a commit checks its blobs, under the blob
        lock, and only unused blobs are removed), so a push plan need not ask the blob store of them."""
        shas, found = sorted(set(shas)), set()
        for at in range(0, len(shas), 500):  # within every database's limit of bound parameters
            part = shas[at:at + 500]
            found |= {r[0] for r in self._query(
                f"SELECT DISTINCT sha256 FROM files WHERE sha256 IN ({', '.join('?' * len(part))})", tuple(part))}
        return found

    # -- encodings: blobs stored as deltas against base blobs --------------------------
    def encoding(self, sha256: str) -> Encoding | None:
        rows = self._query("SELECT sha256, container, size, stored FROM encodings WHERE sha256=?", (sha256,))
        if not rows:
            return None
        bases = tuple(r[0] for r in self._query(
            "SELECT base FROM encoding_bases WHERE sha256=? ORDER BY base", (sha256,)))
        r = rows[0]
        return Encoding(r["sha256"], r["container"], r["size"], r["stored"], bases)

    def set_encoding(self, db: Tx, enc: Encoding) -> None:
        db.execute("DELETE FROM encoding_bases WHERE sha256=?", (enc.sha256,))
        db.execute("INSERT INTO encodings (sha256, container, size, stored, at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (sha256) DO UPDATE SET container=excluded.container, size=excluded.size, "
                   "stored=excluded.stored, at=excluded.at",
                   (enc.sha256, enc.container, enc.size, enc.stored, time.time()))
        db.executemany("INSERT INTO encoding_bases (sha256, base) VALUES (?, ?)",
                       [(enc.sha256, b) for b in enc.bases])

    def drop_encoding(self, db: Tx, sha256: str) -> Encoding | None:
        enc = self.encoding(sha256)
        db.execute("DELETE FROM encoding_bases WHERE sha256=?", (sha256,))
        db.execute("DELETE FROM encodings WHERE sha256=?", (sha256,))
        return enc

    def is_base(self, sha256: str) -> bool:
        return bool(self._query("SELECT 1 FROM encoding_bases WHERE base=? LIMIT 1", (sha256,)))

    def is_named_base(self, spec: str) -> bool:
        """Whether some revision names ``spec`` (``artifact@digest``) as its base."""
        return bool(self._query("SELECT 1 FROM revisions WHERE base=? LIMIT 1", (spec,)))

    def unencoded_files(self, kinds: tuple[str, ...], suffix: str, *, limit: int = 1000) -> list[Row]:
        """(artifact, digest, sha256, size) of files of revisions of ``kinds`` named ``*suffix`` that no
        encoding row covers yet, oldest revision first: what a sweep still has to look at."""
        marks = ",".join("?" * len(kinds))
        return self._query(
            f"SELECT f.artifact, f.digest, f.sha256, MAX(f.size) AS size FROM files f "
            f"JOIN revisions r ON r.artifact=f.artifact AND r.digest=f.digest "
            f"WHERE r.kind IN ({marks}) AND f.path LIKE ? "
            f"AND NOT EXISTS (SELECT 1 FROM encodings e WHERE e.sha256=f.sha256) "
            f"GROUP BY f.artifact, f.digest, f.sha256 ORDER BY MIN(r.created_at) LIMIT ?",
            (*kinds, "%" + suffix, limit))

    def copies_to_drop(self, before: float) -> list[str]:
        """Encoded blobs, encoded before ``before``, whose copy as themselves may still be in the store."""
        return [r[0] for r in self._query(
            "SELECT sha256 FROM encodings WHERE container != '' AND copy_dropped = 0 AND at < ?", (before,))]

    def copy_dropped(self, db: Tx, sha256: str) -> None:
        db.execute("UPDATE encodings SET copy_dropped = 1 WHERE sha256=?", (sha256,))

    def revisions_of_kind(self, kind: Kind, *, before: float, limit: int) -> list[Revision]:
        """The newest revisions of ``kind`` created before ``before``, newest first (the candidates a file
        is encoded against)."""
        rows = self._query("SELECT * FROM revisions WHERE kind=? AND created_at < ? ORDER BY created_at DESC "
                           "LIMIT ?", (kind.value, before, limit))
        return [self._revision(r) for r in rows]

    def unused_encodings(self) -> list[str]:
        """Blobs with an encoding row that nothing uses any more (their revisions and pins are gone)."""
        return [r[0] for r in self._query(
            "SELECT sha256 FROM encodings e WHERE NOT EXISTS (SELECT 1 FROM files WHERE sha256=e.sha256) "
            "AND NOT EXISTS (SELECT 1 FROM pins WHERE sha256=e.sha256) "
            "AND NOT EXISTS (SELECT 1 FROM encoding_bases WHERE base=e.sha256)")]

    # -- pins: blobs a training job's checkpoint holds --------------------------------
    def set_pins(self, db: Tx, owner: str, files: list[FileEntry]) -> None:
        """Replaces what ``owner`` pins (a new checkpoint supersedes the last)."""
        db.execute("DELETE FROM pins WHERE owner=?", (owner,))
        db.executemany("INSERT INTO pins (owner, path, sha256, size) VALUES (?, ?, ?, ?)",
                       [(owner, f.path, f.sha256, f.size) for f in files])

    def pins(self, owner: str) -> list[FileEntry]:
        return [FileEntry(r["path"], r["sha256"], r["size"])
                for r in self._query("SELECT path, sha256, size FROM pins WHERE owner=? ORDER BY path", (owner,))]

    def drop_pins(self, db: Tx, owner: str) -> list[str]:
        shas = [r[0] for r in db.execute("SELECT sha256 FROM pins WHERE owner=?", (owner,)).fetchall()]
        db.execute("DELETE FROM pins WHERE owner=?", (owner,))
        return shas

    # -- push sessions ---------------------------------------------------------------
    def join_session(self, db: Tx, session: str, principal: str,
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

    def end_session(self, db: Tx, session: str) -> None:
        db.execute("DELETE FROM upload_sessions WHERE session=?", (session,))

    def expire_sessions(self, db: Tx, older_than: float) -> None:
        db.execute("DELETE FROM upload_sessions WHERE at < ?", (older_than,))

    # -- routing: the revision each artifact routes to, card embeddings ---------------
    def routed_revisions(self, kinds: tuple[str, ...], artifact: str | None = None) -> list[Row]:
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
            f" WHERE {where}) picked WHERE pick=1",
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
        with self.db.begin() as tx:
            tx.executemany(
                "INSERT INTO embeddings(artifact, digest, embedder, card_sha, dim, vectors)"
                " SELECT ?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM revisions WHERE artifact=? AND digest=?)"
                " ON CONFLICT (artifact, digest, embedder) DO UPDATE SET card_sha=excluded.card_sha,"
                " dim=excluded.dim, vectors=excluded.vectors",
                [(a, d, embedder, sha, dim, vec, a, d) for a, d, sha, dim, vec in rows])

    def last_event(self) -> int:
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    # -- change events (the router and caches follow these) ---------------------
    def record_event(self, db: Tx, kind: str, artifact: str, digest: str, ref: str = "") -> None:
        """``ref`` events name the ref; a deleted ref's digest is empty."""
        db.execute("INSERT INTO events(at, kind, artifact, digest, ref) VALUES (?,?,?,?,?)",
                   (time.time(), kind, artifact, digest, ref))
        self._pending.append(Event(kind, artifact, digest))

    def ref_events(self, after: int, namespace: str | None = None, artifact: str | None = None,
                   limit: int = 1000) -> list[Row]:
        """Ref moves and deletions after event ``after``, oldest first."""
        sql, args = "SELECT * FROM events WHERE seq > ? AND kind = 'ref'", [after]
        if artifact:
            sql, args = sql + " AND artifact = ?", [*args, artifact]
        elif namespace:
            prefix = namespace + "/"
            sql, args = sql + " AND substr(artifact, 1, CAST(? AS INTEGER)) = ?", [*args, len(prefix), prefix]
        return self._query(sql + " ORDER BY seq LIMIT ?", (*args, limit))

    def events_since(self, seq: int) -> list[Row]:
        return self._query("SELECT * FROM events WHERE seq > ? ORDER BY seq", (seq,))
