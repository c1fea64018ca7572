"""The remote worker's workspace: revisions downloaded by digest into a cache, outputs uploaded.

Revisions are immutable, so a folder named by digest is downloaded and
verified once and reused by every later job. Output blobs are written into
a blob store inside the cache and uploaded (only those the hub lacks)
before the worker asks the hub to commit them.
"""

from __future__ import annotations

from pathlib import Path

from deltahub.artifacts import FileEntry, Revision
from deltahub.formats.model import BaseModelInfo, validate_model
from deltahub.storage.blobs import LocalBlobStore

VERIFIED = ".deltahub-verified"  # written into a cached revision folder once every file checked out


class HubWorkspace:
    def __init__(self, hub, cache: Path) -> None:
        self.hub = hub
        self.cache = Path(cache)
        self.blobs = LocalBlobStore(self.cache / "outputs")
        self.tmp = self.cache / "tmp"
        self._infos: dict[str, BaseModelInfo] = {}

    def revision(self, spec: str) -> Revision:
        return self.hub.show(spec)

    def folder(self, rev: Revision, work: Path | None = None) -> Path:  # noqa: ARG002 - the cache is the place
        """The revision's files laid out as pushed, downloaded and verified once."""
        folder = self.cache / rev.digest
        if not (folder / VERIFIED).exists():
            self.hub.download(rev, folder, overwrite=True)  # the cache's own folder: a torn file goes
            (folder / VERIFIED).touch()
        return folder

    def files(self, rev: Revision) -> dict[str, Path]:
        folder = self.folder(rev)
        return {f.path: folder / f.path for f in rev.files}

    def base_info(self, rev: Revision) -> BaseModelInfo:
        if rev.digest not in self._infos:
            self._infos[rev.digest] = validate_model(self.files(rev), check_values=False)
        return self._infos[rev.digest]

    def publish(self, files: list[FileEntry]) -> None:
        """Uploads the blobs this worker wrote (those the hub lacks). Files an output takes from its inputs
        as they are (a model's config and tokenizer) are the hub's blobs already."""
        written = {f.path: self.blobs.path(f.sha256) for f in files if self.blobs.has(f.sha256)}
        if written:
            self.hub.upload_files(written)

    def discard(self, shas: list[str]) -> None:
        for sha in set(shas):
            self.blobs.delete(sha)


