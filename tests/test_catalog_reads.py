"""Catalog reads: a transaction sees its own writes; other threads read the last commit without waiting."""

from __future__ import annotations

import threading
import time

from deltahub.storage import Catalog


def test_reads_see_commits_and_do_not_wait_for_a_writer(catalog_url):
    catalog = Catalog(catalog_url)
    try:
        seen_outside: list[int] = []
        inside = threading.Event()
        release = threading.Event()

        def writer():
            with catalog.transaction() as db:
                catalog.record_event(db, "commit", "a/b", "d" * 64)
                # the writer's own reads see its uncommitted event
                assert catalog.last_event() == 1
                inside.set()
                release.wait(10)

        t = threading.Thread(target=writer)
        t.start()
        assert inside.wait(10)
        started = time.monotonic()
        seen_outside.append(catalog.last_event())  # another thread: the last commit, at once
        waited = time.monotonic() - started
        release.set()
        t.join()
        assert seen_outside == [0] and waited < 1.0
        assert catalog.last_event() == 1
    finally:
        catalog.close()
