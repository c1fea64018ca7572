"""The catalog's schema, as a numbered history of migrations, for SQLite and PostgreSQL alike.

A database records the migrations applied to it in ``schema_migrations``; opening it applies the
missing ones in order inside one write transaction (so two replicas starting at once upgrade it
once), and refuses a database a newer deltahub has moved past. Catalogs made before versioning hold
some of these tables already: every step is idempotent (``IF NOT EXISTS``, a column added only when
missing), so they are upgraded in place like any other.

Add a migration at the end; never edit one that has shipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from deltahub.errors import PreconditionError
from deltahub.storage.database import Database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...] = ()
    add_columns: tuple[tuple[str, str, str], ...] = ()  # (table, column, definition), each when missing


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "artifacts, revisions, files, refs, recipes, embeddings, pins, push sessions, events", (
        """CREATE TABLE IF NOT EXISTS artifacts (
            name {text} PRIMARY KEY, namespace {text} NOT NULL, kind {text} NOT NULL,
            created_at {real} NOT NULL, updated_at {real} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS artifacts_namespace ON artifacts(namespace)",
        """CREATE TABLE IF NOT EXISTS revisions (
            artifact {text} NOT NULL REFERENCES artifacts(name), digest {text} NOT NULL, kind {text} NOT NULL,
            base {text} NOT NULL, card {text} NOT NULL, labels {text} NOT NULL, lineage {text} NOT NULL,
            created_at {real} NOT NULL, created_by {text} NOT NULL, seq {int} NOT NULL,
            PRIMARY KEY (artifact, digest))""",
        "CREATE INDEX IF NOT EXISTS revisions_base ON revisions(base)",
        """CREATE TABLE IF NOT EXISTS files (
            artifact {text} NOT NULL, digest {text} NOT NULL, path {text} NOT NULL, sha256 {text} NOT NULL,
            size {int} NOT NULL, PRIMARY KEY (artifact, digest, path))""",
        "CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256)",
        """CREATE TABLE IF NOT EXISTS refs (
            artifact {text} NOT NULL, name {text} NOT NULL, digest {text} NOT NULL, updated_at {real} NOT NULL,
            PRIMARY KEY (artifact, name))""",
        """CREATE TABLE IF NOT EXISTS recipes (
            hash {text} NOT NULL, artifact {text} NOT NULL, digest {text} NOT NULL, PRIMARY KEY (hash, artifact, digest))""",
        """CREATE TABLE IF NOT EXISTS embeddings (
            artifact {text} NOT NULL, digest {text} NOT NULL, embedder {text} NOT NULL, card_sha {text} NOT NULL,
            dim {int} NOT NULL, vectors {blob} NOT NULL, PRIMARY KEY (artifact, digest, embedder))""",
        # blobs kept alive outside any revision: a training job's checkpoint, owned by the job id
        """CREATE TABLE IF NOT EXISTS pins (
            owner {text} NOT NULL, path {text} NOT NULL, sha256 {text} NOT NULL, size {int} NOT NULL,
            PRIMARY KEY (owner, path))""",
        "CREATE INDEX IF NOT EXISTS pins_sha ON pins (sha256)",
        # push sessions: who planned or uploaded each not-yet-committed blob. They are the upload
        # leases garbage collection honours, and a refused commit removes a blob only when its own
        # session is the only one that did
        """CREATE TABLE IF NOT EXISTS upload_sessions (
            session {text} NOT NULL, sha256 {text} NOT NULL, principal {text} NOT NULL, size {int} NOT NULL,
            at {real} NOT NULL, PRIMARY KEY (session, sha256))""",
        "CREATE INDEX IF NOT EXISTS upload_sessions_sha ON upload_sessions (sha256)",
        "CREATE INDEX IF NOT EXISTS upload_sessions_principal ON upload_sessions (principal)",
        """CREATE TABLE IF NOT EXISTS events (
            seq {serial}, at {real} NOT NULL, kind {text} NOT NULL, artifact {text} NOT NULL, digest {text} NOT NULL)""",
    )),
    Migration(2, "ref events name their ref", add_columns=(("events", "ref", "TEXT NOT NULL DEFAULT ''"),)),
    Migration(3, "the job queue kept in the catalog (without Redis)", (
        """CREATE TABLE IF NOT EXISTS jobs (
            id {text} PRIMARY KEY, namespace {text} NOT NULL, kind {text} NOT NULL, state {text} NOT NULL,
            lease_until {real} NOT NULL, created_at {real} NOT NULL, finished_at {real} NOT NULL,
            key {text} NOT NULL, doc {text} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at)",
        "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at)",
        "CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (namespace, key) WHERE key != ''",
        "CREATE TABLE IF NOT EXISTS job_flights (key {text} PRIMARY KEY, job {text} NOT NULL)",
    )),
    Migration(4, "event log read by kind and artifact", (
        "CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq)",
    )),
    Migration(5, "blobs stored encoded against base blobs (deltas), and what each depends on", (
        # container '' records a blob measured and kept as it is (its delta did not pay), so no sweep
        # encodes it again
        """CREATE TABLE IF NOT EXISTS encodings (
            sha256 {text} PRIMARY KEY, container {text} NOT NULL, size {int} NOT NULL, stored {int} NOT NULL,
            at {real} NOT NULL, copy_dropped {int} NOT NULL DEFAULT 0)""",
        "CREATE INDEX IF NOT EXISTS encodings_container ON encodings (container)",
        """CREATE TABLE IF NOT EXISTS encoding_bases (
            sha256 {text} NOT NULL, base {text} NOT NULL, PRIMARY KEY (sha256, base))""",
        "CREATE INDEX IF NOT EXISTS encoding_bases_base ON encoding_bases (base)",
    )),
)
LATEST = MIGRATIONS[-1].version
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (version {int} PRIMARY KEY, name {text} NOT NULL, " \
                "applied_at {real} NOT NULL)"


def current_version(db: Database) -> int:
    with db.begin() as tx:
        tx.execute(db.ddl(VERSION_TABLE))
        return tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def upgrade(db: Database, *, target: int = LATEST) -> list[Migration]:
    """Applies the migrations ``db`` lacks, up to ``target``; returns them (none: it was current)."""
    with db.begin() as tx:
        tx.execute(db.ddl(VERSION_TABLE))
        have = tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        if have > LATEST:
            raise PreconditionError(
                f"the catalog at {getattr(db, 'safe_url', db.url)} is at schema version {have}, newer than this "
                f"deltahub knows ({LATEST}); run the deltahub version that upgraded it, or a newer one")
        applied = []
        for migration in MIGRATIONS:
            if have < migration.version <= target:
                for statement in migration.statements:
                    tx.execute(db.ddl(statement))
                for table, column, definition in migration.add_columns:
                    if not db.has_column(tx, table, column):
                        tx.execute(db.ddl(f"ALTER TABLE {table} ADD COLUMN {column} {definition}"))
                tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                           (migration.version, migration.name, time.time()))
                applied.append(migration)
        return applied
