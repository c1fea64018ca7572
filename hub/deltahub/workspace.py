"""Where long-running work reads its inputs and writes its outputs.

A job's spec names revisions by digest; the code that runs it (merges,
evaluation, task-vector extraction) asks a :class:`Workspace` for their
files and writes output blobs into the workspace's blob store. Two
workspaces exist: :class:`StoreWorkspace`, the hub's own store (the
in-process worker of ``deltahub serve``: no copy of anything), and the
remote worker's (``deltahub_trainers.workspace.HubWorkspace``: revisions
downloaded into a cache by digest, outputs uploaded before the commit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from deltahub.artifacts import FileEntry, Revision
from deltahub.formats.model import BaseModelInfo
from deltahub.storage.blobs import BlobStore


class Workspace(Protocol):
    blobs: BlobStore     # output blobs are written here
    tmp: Path            # scratch space on the same disk

    def revision(self, spec: str) -> Revision: ...

    def files(self, rev: Revision) -> dict[str, Path]: ...

    def base_info(self, rev: Revision) -> BaseModelInfo: ...

    def folder(self, rev: Revision, work: Path) -> Path:
        """The revision's files laid out as pushed (what ``from_pretrained`` reads); ``work`` is scratch."""

    def publish(self, files: list[FileEntry]) -> None:
        """Makes output blobs available to the hub's commit."""

    def discard(self, shas: list[str]) -> None:
        """Output blobs that no revision took."""


def link_tree(files: dict[str, Path], dest: Path) -> Path:
    """A folder of links to ``files`` laid out by path (what ``from_pretrained`` reads)."""
    for path, blob in files.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(blob, target)
    return dest


class StoreWorkspace:
    """The hub's own store, read in place."""

    def __init__(self, store) -> None:
        self.store = store
        self.blobs = store.blobs
        self.tmp = store.config.data_dir / "tmp"

    def revision(self, spec: str) -> Revision:
        return self.store.resolve(spec)

    def files(self, rev: Revision) -> dict[str, Path]:
        return self.store.local_files(rev)

    def base_info(self, rev: Revision) -> BaseModelInfo:
        return self.store.base_info(rev)

    def folder(self, rev: Revision, work: Path) -> Path:
        dest = work / rev.digest
        return dest if dest.exists() else link_tree(self.files(rev), dest)

    def publish(self, files: list[FileEntry]) -> None:
        return None  # written into the hub's own blob store already

    def discard(self, shas: list[str]) -> None:
        self.store.discard_unused(shas)
