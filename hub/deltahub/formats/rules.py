"""Rules every file of every revision obeys, checked before any byte is sent."""

from __future__ import annotations

import posixpath

from deltahub.artifacts import FileEntry, check_sha256
from deltahub.errors import InvalidInputError, UnsafeFormatError

# Pickle-based weight formats: loading them runs code, so they are never accepted.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
MAX_PATH = 512


def check_path(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidInputError("a file path is empty")
    if len(path) > MAX_PATH:
        raise InvalidInputError(f"file path {path[:60]!r}... is longer than {MAX_PATH} characters")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidInputError(f"file path {path!r} must be relative, with '/' separators")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise InvalidInputError(f"file path {path!r} contains '..', '.' or an empty component")
    if path.lower().endswith(PICKLE_SUFFIXES):
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
