"""Where bytes and metadata live: a :class:`BlobStore` (local folder or S3) and a :class:`Catalog`
(SQLite or PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

from deltahub.errors import InvalidInputError
from deltahub.storage.blobs import BlobStore, BlobWriter, LocalBlobStore, UploadWriter
from deltahub.storage.catalog import Catalog


def open_blob_store(url: str | os.PathLike | None, scratch: Path, *, locks, max_blob_bytes: int | None = None,
                    cache_bytes: int | None = None) -> BlobStore:
    """``s3://bucket/prefix``, a folder (``file:///path`` or a path), or None: ``scratch`` itself.

    ``locks`` is the catalog's named lock, so that an object store shared by replicas is shared safely.
    """
    text = str(url) if url else ""
    if text.startswith("s3://"):
        from deltahub.storage.s3 import DEFAULT_CACHE_BYTES, S3BlobStore

        return S3BlobStore(text, scratch, locks=locks, max_blob_bytes=max_blob_bytes,
                           cache_bytes=cache_bytes if cache_bytes is not None else DEFAULT_CACHE_BYTES)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise InvalidInputError(f"blob store {text.split('://')[0]}:// is not supported: give a folder or "
                                "s3://bucket/prefix")
    return LocalBlobStore(Path(text) if text else scratch, max_blob_bytes=max_blob_bytes)


__all__ = ["BlobStore", "BlobWriter", "LocalBlobStore", "UploadWriter", "Catalog", "open_blob_store"]
