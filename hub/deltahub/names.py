"""Names of artifacts, refs and revision specs (``namespace/name[@ref_or_digest]``).

Names become folder names on clients and keys in the catalog, so they are
checked once here: no path separators beyond the one slash, no ``..``, no
leading dots, a short ASCII alphabet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deltahub.errors import InvalidInputError

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")
DEFAULT_REF = "main"
MIN_DIGEST_PREFIX = 7


def _check_part(part: str, what: str, whole: str) -> None:
    if not part:
        raise InvalidInputError(f"{what} is empty in {whole!r}; expected 'namespace/name'")
    if ".." in part or "/" in part or "\\" in part:
        raise InvalidInputError(f"{what} {part!r} in {whole!r} contains a path separator or '..'")
    if not _PART.match(part):
        raise InvalidInputError(
            f"{what} {part!r} in {whole!r} must start with a letter or digit and use only "
            "letters, digits, '.', '_' and '-' (at most 96 characters)"
        )


@dataclass(frozen=True, order=True)
class ArtifactName:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> "ArtifactName":
        if not isinstance(text, str) or not text:
            raise InvalidInputError("artifact name is empty; expected 'namespace/name'")
        if "\\" in text or text.startswith("/") or text.count("/") != 1:
            raise InvalidInputError(
                f"artifact name {text!r} must be exactly 'namespace/name' (one '/', no other path separators)"
            )
        namespace, name = text.split("/")
        _check_part(namespace, "namespace", text)
        _check_part(name, "name", text)
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def check_namespace(namespace: str) -> str:
    _check_part(namespace, "namespace", namespace)
    return namespace


def check_ref(ref: str) -> str:
    if not ref or not _REF.match(ref) or ".." in ref:
        raise InvalidInputError(
            f"ref {ref!r} must start with a letter or digit and use only letters, digits, "
            "'.', '_' and '-' (at most 64 characters)"
        )
    return ref


def looks_like_digest(text: str) -> bool:
    return len(text) >= MIN_DIGEST_PREFIX and len(text) <= 64 and bool(_HEX.match(text))


@dataclass(frozen=True)
class RevisionSpec:
    """``namespace/name`` plus an optional ref or digest (prefix)."""

    artifact: ArtifactName
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> "RevisionSpec":
        if not isinstance(text, str) or not text:
            raise InvalidInputError("revision spec is empty; expected 'namespace/name[@ref_or_digest]'")
        name, sep, rev = text.partition("@")
        if sep and not rev:
            raise InvalidInputError(f"revision spec {text!r} has an empty ref after '@'")
        if rev and not (looks_like_digest(rev) or _REF.match(rev)):
            raise InvalidInputError(f"revision spec {text!r}: {rev!r} is neither a ref nor a digest")
        return cls(ArtifactName.parse(name), rev or None)

    def __str__(self) -> str:
        return f"{self.artifact}@{self.revision}" if self.revision else str(self.artifact)
