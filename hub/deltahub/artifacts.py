"""The data model: kinds, file entries, domain cards, lineage and revisions.

A revision is an immutable manifest of files. Its digest is the sha256 of the
canonical manifest: the kind, the base revision it applies to, and the sorted
``(path, sha256, size)`` list, as compact sorted-key JSON. Domain cards and
labels are annotations (they can be updated, see issue "cards can be
updated"), so they are kept beside the manifest, not inside it; lineage is
written once, at commit.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from deltahub import jsondoc
from deltahub.errors import InvalidInputError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Kind(str, enum.Enum):
    MODEL = "model"
    ADAPTER = "adapter"
    TASK_VECTOR = "task_vector"
    DATASET = "dataset"

    @classmethod
    def parse(cls, text: "str | Kind") -> "Kind":
        if isinstance(text, Kind):
            return text
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(k.value for k in cls)
            raise InvalidInputError(f"unknown kind {text!r}; known kinds: {known}") from None

    @property
    def wire_name(self) -> str:
        """The name of this kind in the API's ArtifactKind enum."""
        return f"ARTIFACT_KIND_{self.name}"

    @property
    def needs_base(self) -> bool:
        return self in (Kind.ADAPTER, Kind.TASK_VECTOR)


def check_sha256(value: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise InvalidInputError(f"{value!r} is not a sha256 digest (64 lowercase hex characters)")
    return value


@dataclass(frozen=True, order=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DomainCard:
    description: str = ""
    samples: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "DomainCard":
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInputError("a domain card must be a mapping with 'description' and 'samples'")
        unknown = set(data) - {"description", "samples"}
        if unknown:
            raise InvalidInputError(f"domain card has unknown fields {sorted(unknown)}; known: description, samples")
        description = data.get("description", "") or ""
        samples = data.get("samples", []) or []
        if not isinstance(description, str):
            raise InvalidInputError("domain card 'description' must be a string")
        if not isinstance(samples, list) or not all(isinstance(s, str) for s in samples):
            raise InvalidInputError("domain card 'samples' must be a list of strings")
        return cls(description, tuple(samples))

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "samples": list(self.samples)}

    def __bool__(self) -> bool:
        return bool(self.description or self.samples)


@dataclass(frozen=True)
class Lineage:
    parents: tuple[str, ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parents": list(self.parents),
            "recipe": self.recipe,
            "training": self.training,
            "metrics": self.metrics,
        }

    # The API carries recipe, training and metrics as JSON text (any client
    # language can read it); these two are that encoding, for both sides.
    def json_fields(self) -> dict[str, str]:
        def dumps(doc: dict) -> str:
            return json.dumps(doc, sort_keys=True) if doc else ""

        return {"recipe_json": dumps(self.recipe), "training_json": dumps(self.training),
                "metrics_json": dumps(self.metrics)}

    @classmethod
    def from_json_fields(cls, parents, recipe_json: str, training_json: str, metrics_json: str) -> "Lineage":
        def loads(text: str, what: str) -> dict:
            return jsondoc.loads_object(text, f"lineage {what}") if text else {}

        return cls(tuple(parents), loads(recipe_json, "recipe"), loads(training_json, "training"),
                   loads(metrics_json, "metrics"))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Lineage":
        data = data or {}
        return cls(
            tuple(data.get("parents", ())),
            dict(data.get("recipe") or {}),
            dict(data.get("training") or {}),
            dict(data.get("metrics") or {}),
        )


def canonical_manifest(kind: Kind, base: str | None, files: list[FileEntry]) -> bytes:
    """The bytes whose sha256 is a revision's digest."""
    doc = {
        "base": base or "",
        "files": [[f.path, f.sha256, f.size] for f in sorted(files)],
        "kind": kind.value,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_digest(kind: Kind, base: str | None, files: list[FileEntry]) -> str:
    return hashlib.sha256(canonical_manifest(kind, base, files)).hexdigest()


@dataclass(frozen=True)
class Revision:
    artifact: str
    kind: Kind
    digest: str
    files: tuple[FileEntry, ...]
    base: str = ""  # "namespace/name@digest" or ""
    card: DomainCard = DomainCard()
    labels: dict[str, str] = field(default_factory=dict)
    lineage: Lineage = Lineage()
    created_at: float = field(default_factory=time.time)
    created_by: str = ""
    refs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def spec(self) -> str:
        return f"{self.artifact}@{self.digest}"

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["kind"] = self.kind.value
        doc["files"] = [asdict(f) for f in self.files]
        doc["card"] = self.card.to_dict()
        doc["lineage"] = self.lineage.to_dict()
        doc["refs"] = list(self.refs)
        doc["size"] = self.size
        return doc


@dataclass(frozen=True)
class DeleteResult:
    deleted_revisions: list[str]
    deleted_refs: list[str]
    blobs_removed: int
    bytes_freed: int


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    kind: Kind
    refs: dict[str, str]
    revision_count: int
    size: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["kind"] = self.kind.value
        return doc
