"""Files sent and received as deltas against a base model the client holds (``--base-dir``).

A push encodes each file the hub lacks against the base files the hub says it stores, and sends the
container instead when it pays; a pull downloads the containers the hub stores against base files the
client holds, and rebuilds each file here, checked against its sha256.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deltahub.deltas.filedelta import decode_file, encode_file
from deltahub.errors import IntegrityError
from deltahub.storage.hashing import sha256_file
from deltahub_client.files import list_folder

SUFFIX = ".safetensors"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def held_files(base_dir: str | os.PathLike) -> dict[str, Path]:
    """sha256 -> path of the safetensors files of a local base model.

    A Hugging Face cache snapshot names each file's blob by its sha256 (``../../blobs/<sha256>``), which is
    taken as it is, as huggingface_hub does; other files are hashed.
    """
    held = {}
    for rel, path in list_folder(base_dir).items():
        if not rel.endswith(SUFFIX):
            continue
        target = Path(os.path.realpath(path))
        sha = target.name if path.is_symlink() and target.parent.name == "blobs" and _SHA256.match(target.name) \
            else sha256_file(path)
        held[sha] = path
    return held


@dataclass(frozen=True)
class Container:
    path: Path
    sha256: str
    size: int


def encode_for_push(path: Path, bases: dict[str, Path], folder: Path) -> Container | None:
    """The container of ``path`` against ``bases``, written into ``folder``; None when it does not pay."""
    fd, name = tempfile.mkstemp(dir=folder, suffix=".dhdl")
    with os.fdopen(fd, "wb") as out:
        stats = encode_file(path, bases, out)
    if not stats.pays:
        os.unlink(name)
        return None
    return Container(Path(name), sha256_file(name), stats.stored_bytes)


def rebuild(container: Path, bases: dict[str, Path], target: Path, sha256: str, mode: int) -> None:
    """Decodes ``container`` into ``target`` (through a temp file), checking the file's sha256."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, open(container, "rb") as fh:
            actual = decode_file(fh, bases, out)
        if actual != sha256:
            raise IntegrityError(f"{target.name}: rebuilt from its delta, hashes to {actual}, expected {sha256}")
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
