"""Single-flight: one build per recipe hash, however many ask at once.

A build holds an exclusive ``flock`` on ``<lock dir>/<key>.lock``; a second
request for the same key blocks on it and, once it gets the lock, finds the
result in the catalog (recipe hash -> revision) instead of building again.
flock is per open file description, so this excludes threads of one server
and other server processes on the same data folder alike.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if missing) for the duration of the block."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class SingleFlight:
    def __init__(self, lock_dir: str | os.PathLike) -> None:
        self.lock_dir = Path(lock_dir)
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    def hold(self, key: str):
        return exclusive(self.lock_dir / f"{key}.lock")
