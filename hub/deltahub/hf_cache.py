"""Hugging Face cache and snapshot folders, in and out. Filesystem only.

``huggingface_hub`` does the path work: it names the repo folder
(``models--org--name``), finds snapshots (``snapshot_download`` with
``local_files_only``) and reads the cache back. Exported files land the way
it writes them: ``blobs/<sha256>``, ``snapshots/<commit>/<path>`` as relative
symlinks to the blobs, ``refs/<ref>`` holding the commit. The commit is the
first 40 hex digits of the revision digest, so the export of one revision is
always the same snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.file_download import repo_folder_name

from deltahub.errors import InvalidInputError, NotFoundError

REPO_TYPES = ("model", "dataset")


def commit_hash(digest: str) -> str:
    return digest[:40]


def find_snapshot(source: str | os.PathLike, *, repo_id: str | None = None, revision: str | None = None,
                  repo_type: str = "model") -> Path:
    """A snapshot folder, given either that folder or a cache folder plus a repo id."""
    source = Path(source)
    if repo_type not in REPO_TYPES:
        raise InvalidInputError(f"repo type {repo_type!r} is not one of {REPO_TYPES}")
    if repo_id is None:
        if not source.is_dir():
            raise NotFoundError(f"{source} is not a folder")
        if (source / "snapshots").is_dir():
            raise InvalidInputError(f"{source} is a cache repo folder; point at one of its snapshots or give --repo-id")
        return source
    try:
        return Path(
            snapshot_download(
                repo_id, repo_type=repo_type, revision=revision, cache_dir=source, local_files_only=True
            )
        )
    except LocalEntryNotFoundError as err:
        raise NotFoundError(f"{repo_id}@{revision or 'main'} is not in the cache at {source}: {err}") from None


def repo_folder(cache_dir: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    if repo_type not in REPO_TYPES:
        raise InvalidInputError(f"repo type {repo_type!r} is not one of {REPO_TYPES}")
    return Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


def blob_path(cache_dir: str | os.PathLike, repo_id: str, sha256: str, repo_type: str = "model") -> Path:
    path = repo_folder(cache_dir, repo_id, repo_type) / "blobs" / sha256
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _snapshots(cache_dir: str | os.PathLike, repo_id: str, repo_type: str) -> Path | None:
    """The repo's snapshots folder in the cache; None for a name or type no cache holds (looked up, not
    pushed: no error)."""
    try:
        return repo_folder(cache_dir, repo_id, repo_type) / "snapshots"
    except (InvalidInputError, ValueError):
        return None


def cached_repo(cache_dir: str | os.PathLike, repo_id: str, repo_type: str = "model") -> bool:
    snapshots = _snapshots(cache_dir, repo_id, repo_type)
    return snapshots is not None and snapshots.is_dir()


def cached_snapshot(cache_dir: str | os.PathLike, repo_id: str, digest: str, repo_type: str = "model") -> Path | None:
    """The snapshot folder of revision ``digest`` of ``repo_id`` when the cache holds it (as an export
    leaves it), else None."""
    snapshots = _snapshots(cache_dir, repo_id, repo_type)
    if snapshots is None:
        return None
    folder = snapshots / commit_hash(digest)
    return folder if folder.is_dir() else None


def link_snapshot(cache_dir: str | os.PathLike, repo_id: str, digest: str, files: list[tuple[str, str]],
                  *, ref: str = "main", repo_type: str = "model") -> Path:
    """Makes ``snapshots/<commit>`` point at blobs already in place; ``files`` is (path, sha256)."""
    folder = repo_folder(cache_dir, repo_id, repo_type)
    snapshot = folder / "snapshots" / commit_hash(digest)
    for rel, sha in files:
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(folder / "blobs" / sha, link.parent)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit_hash(digest))
    return snapshot
