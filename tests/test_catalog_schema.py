"""The catalog's versioned schema: fresh databases, in-place upgrades, and named locks, on both backends."""

from __future__ import annotations

import sqlite3

import pytest

from deltahub.errors import PreconditionError
from deltahub.storage import Catalog
from deltahub.storage.database import LockBusy, open_database
from deltahub.storage.schema import LATEST, MIGRATIONS, current_version, upgrade


def test_a_fresh_catalog_is_at_the_latest_version(catalog_url):
    catalog = Catalog(catalog_url)
    try:
        assert [m.version for m in catalog.migrations] == [m.version for m in MIGRATIONS]
        assert current_version(catalog.db) == LATEST
    finally:
        catalog.close()
    again = Catalog(catalog_url)  # opened again: nothing to apply
    assert again.migrations == []
    again.close()


def test_a_catalog_of_an_older_version_is_upgraded_in_place(catalog_url):
    db = open_database(catalog_url)
    assert [m.version for m in upgrade(db, target=1)] == [1]
    with db.begin() as tx:
        tx.execute("INSERT INTO artifacts VALUES (?,?,?,?,?)", ("a/b", "a", "dataset", 1.0, 1.0))
        tx.execute("INSERT INTO events (at, kind, artifact, digest) VALUES (?,?,?,?)", (1.0, "commit", "a/b", "d"))
    db.close()
    catalog = Catalog(catalog_url)
    try:
        assert [m.version for m in catalog.migrations] == list(range(2, LATEST + 1))
        assert catalog.get_artifact("a/b") is not None  # the rows stay
        assert [dict(zip(r.keys(), r))["ref"] for r in catalog.events_since(0)] == [""]  # the new column
    finally:
        catalog.close()


def test_a_catalog_from_before_versioning_is_adopted(tmp_path):
    """Catalogs made before the schema had versions: tables there, no schema_migrations, no events.ref."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE artifacts (name TEXT PRIMARY KEY, namespace TEXT NOT NULL, kind TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
            artifact TEXT NOT NULL, digest TEXT NOT NULL);
        INSERT INTO artifacts VALUES ('a/b', 'a', 'dataset', 1, 1);
    """)
    conn.commit()
    conn.close()
    catalog = Catalog(path)
    try:
        assert current_version(catalog.db) == LATEST and catalog.get_artifact("a/b") is not None
        assert catalog.db.has_column(catalog.db._db, "events", "ref")
    finally:
        catalog.close()


def test_a_catalog_a_newer_deltahub_upgraded_is_refused(catalog_url):
    Catalog(catalog_url).close()
    db = open_database(catalog_url)
    with db.begin() as tx:
        tx.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (LATEST + 1, "from the future", 0.0))
    db.close()
    with pytest.raises(PreconditionError, match=f"schema version {LATEST + 1}, newer than this deltahub"):
        Catalog(catalog_url)


def test_named_locks_hold_across_catalog_connections(catalog_url):
    one, two = Catalog(catalog_url), Catalog(catalog_url)
    try:
        with one.lock("recipe:x"):
            with pytest.raises(LockBusy):
                with two.lock("recipe:x", wait=False):
                    pass
            with two.lock("recipe:y", wait=False):  # another name is free
                pass
        with two.lock("recipe:x", wait=False):  # released
            pass
    finally:
        one.close()
        two.close()


def test_an_unknown_catalog_scheme_says_what_is_supported(tmp_path):
    from deltahub.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="postgresql://"):
        open_database("mysql://root@localhost/hub")


def test_an_unreachable_postgresql_says_what_to_check():
    with pytest.raises(PreconditionError, match="check --catalog"):
        open_database("postgresql://postgres@127.0.0.1:1/nothing")


def test_deltahub_migrate_says_what_is_missing_and_applies_it(tmp_path, pg_url):
    from tests.conftest import run_cli

    for where in (("--data-dir", str(tmp_path / "data")), ("--catalog", pg_url)):
        check = run_cli("migrate", *where, "--check")
        assert check.returncode == 1 and f"schema version 0 of {LATEST}" in check.stdout
        assert "missing 2: ref events name their ref" in check.stdout
        done = run_cli("migrate", *where)
        assert done.returncode == 0 and f"applied {LATEST}:" in done.stdout
        assert run_cli("migrate", *where, "--check").returncode == 0
    refused = run_cli("migrate", "--catalog", "mysql://x")
    assert refused.returncode != 0 and "postgresql://" in refused.stderr


def test_a_postgresql_catalog_reconnects_and_a_lost_one_is_unavailable(pg_url):
    import psycopg

    from deltahub.errors import UnavailableError

    catalog = Catalog(pg_url)
    try:
        catalog.list_artifacts()
        kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() " \
               "AND datname = current_database() AND application_name = ''"
        with psycopg.connect(pg_url, autocommit=True, application_name="killer") as admin:
            admin.execute(kill)
        assert catalog.list_artifacts() == []  # dropped connections are replaced, reads and writes go on
        with catalog.transaction() as tx:
            catalog.record_event(tx, "commit", "a/b", "d")
        catalog.db.url = "postgresql://postgres@127.0.0.1:1/gone"
        with psycopg.connect(pg_url, autocommit=True, application_name="killer") as admin:
            admin.execute(kill)
        with pytest.raises(UnavailableError, match="retry"):
            catalog.list_artifacts()
    finally:
        catalog.close()
