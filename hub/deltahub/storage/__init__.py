"""Where bytes and metadata live: :class:`BlobStore` and :class:`Catalog`."""

from deltahub.storage.blobs import BlobStore, BlobWriter, UploadWriter
from deltahub.storage.catalog import Catalog

__all__ = ["BlobStore", "BlobWriter", "UploadWriter", "Catalog"]
