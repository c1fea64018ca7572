"""Local folders: listing the files of a push, hashing them."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from deltahub.artifacts import FileEntry
from deltahub.errors import InvalidInputError
from deltahub.storage.hashing import sha256_file

# Tool caches and VCS folders are never part of an artifact.
SKIP_DIRS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints", ".deltahub"}


def list_folder(folder: str | os.PathLike) -> dict[str, Path]:
    """Revision path -> local file; follows symlinks (HF snapshots are made of them)."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".lock", ".incomplete")):
                continue
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = path
    if not found:
        raise InvalidInputError(f"{root} holds no files")
    return found


def hash_files(files: dict[str, Path], *, progress: bool = True) -> list[FileEntry]:
    sizes = {rel: path.stat().st_size for rel, path in files.items()}
    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="hashing",
              disable=None if progress else True) as bar:

        def one(item):
            rel, path = item
            digest = sha256_file(path)
            bar.update(sizes[rel])
            return FileEntry(rel, digest, sizes[rel])

        # hashlib releases the GIL on large updates: two threads use two cores
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            return sorted(pool.map(one, files.items()))
