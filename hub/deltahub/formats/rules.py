"""Rules every file of every revision obeys, checked before any byte is sent.

What a path can say is checked here; what the bytes are (a pickle under any
name) is checked at commit by :func:`check_contents`.
"""

from __future__ import annotations

import gzip
import posixpath
import unicodedata
import zipfile
from pathlib import Path

from deltahub.artifacts import FileEntry, check_sha256
from deltahub.errors import InvalidInputError, UnsafeFormatError

# Pickle-based weight formats: loading them runs code, so they are never accepted.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
# Files a loader may execute (transformers' trust_remote_code); a revision holds them only when asked to.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".sh", ".ipynb")
MAX_PATH = 512
MAX_COMPONENT_BYTES = 255  # what ext4, APFS and NTFS allow in one name


def check_path(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidInputError("a file path is empty")
    if len(path) > MAX_PATH:
        raise InvalidInputError(f"file path {path[:60]!r}... is longer than {MAX_PATH} characters")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidInputError(f"file path {path!r} must be relative, with '/' separators")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in path):
        raise InvalidInputError(f"file path {path!r} contains control or invisible formatting characters")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise InvalidInputError(f"file path {path!r} contains '..', '.' or an empty component")
    long = next((p for p in parts if len(p.encode()) > MAX_COMPONENT_BYTES), None)
    if long is not None:
        raise InvalidInputError(f"file path component {long[:40]!r}... is longer than {MAX_COMPONENT_BYTES} bytes")
    # any suffix counts: model.pth.tar, weights.bin.gz and last.ckpt.bak are pickles all the same
    suffixes = ["." + s for s in parts[-1].lower().split(".")[1:]]
    if any(s in PICKLE_SUFFIXES for s in suffixes):
        raise UnsafeFormatError(
            f"{path}: pickle-based weight files are not accepted (loading them can run code); "
            "save the weights as safetensors"
        )
    return path


def check_files(files: list[FileEntry]) -> None:
    if not files:
        raise InvalidInputError("a revision needs at least one file")
    seen: set[str] = set()
    for f in files:
        check_path(f.path)
        check_sha256(f.sha256)
        if f.size < 0:
            raise InvalidInputError(f"{f.path}: negative size")
        if f.path in seen:
            raise InvalidInputError(f"{f.path}: listed twice")
        seen.add(f.path)
    # a file cannot also be a folder: 'a.jsonl' and 'a.jsonl/b.jsonl' cannot both be checked out
    folders = {"/".join(p.split("/")[:i]) for p in seen for i in range(1, p.count("/") + 1)}
    clash = sorted(seen & folders)
    if clash:
        raise InvalidInputError(f"{clash[0]} is both a file and a folder of other files; rename one")


def is_code(path: str) -> bool:
    return path.lower().endswith(CODE_SUFFIXES)


def check_code(files: list[FileEntry], allow_code: bool) -> None:
    """Code files only with the explicit opt-in, which the revision then records."""
    code = [f.path for f in files if is_code(f.path)]
    if code and not allow_code:
        raise UnsafeFormatError(
            f"{code[:5]} are code a loader may run (trust_remote_code); push them only on purpose, with "
            "--allow-code (recorded on the revision), or leave them out"
        )


_PICKLE_MAGIC = tuple(bytes([0x80, proto]) for proto in range(2, 6))


def _looks_pickled(head: bytes) -> bool:
    return head.startswith(_PICKLE_MAGIC) or head.startswith(b"\x93NUMPY")


def check_contents(path: str, local: Path) -> None:
    """A pickle by its bytes, whatever the file is called: raw, gzipped, or inside a zip (torch.save)."""
    with open(local, "rb") as fh:
        head = fh.read(8)
    found = _looks_pickled(head)
    if not found and head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(local, "rb") as gz:
                found = _looks_pickled(gz.read(8))
        except (OSError, EOFError):
            found = False
    if not found and head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(local) as zf:
                found = any(n.endswith((".pkl", ".pickle")) for n in zf.namelist()[:10000])
        except (zipfile.BadZipFile, OSError):
            found = False
    if found:
        raise UnsafeFormatError(
            f"{path}: holds pickled data (loading it can run code), whatever its name says; "
            "save the weights as safetensors"
        )
