"""Protobuf <-> core types, server side. The only server module that builds messages."""

from __future__ import annotations

import json

from google.protobuf.timestamp_pb2 import Timestamp

from deltahub.artifacts import ArtifactInfo, DomainCard, FileEntry, Kind, Lineage, Revision
from deltahub.errors import InvalidInputError
from deltahub.v1 import common_pb2 as pb

KIND_TO_PB = {kind: pb.ArtifactKind.Value(kind.wire_name) for kind in Kind}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}


def kind_from_pb(value: int, *, required: bool = True) -> Kind | None:
    if value in KIND_FROM_PB:
        return KIND_FROM_PB[value]
    if value == pb.ARTIFACT_KIND_UNSPECIFIED and not required:
        return None
    known = ", ".join(k.value for k in Kind)
    raise InvalidInputError(f"unknown or missing artifact kind ({value}); known kinds: {known}")


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def files_from_pb(entries) -> list[FileEntry]:
    return [FileEntry(e.path, e.sha256, int(e.size)) for e in entries]


def card_from_pb(card: pb.DomainCard) -> DomainCard:
    return DomainCard(card.description, tuple(card.samples))


def _json_obj(text: str, what: str) -> dict:
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"lineage {what} is not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"lineage {what} must be a JSON object")
    return doc


def lineage_from_pb(lineage: pb.Lineage) -> Lineage:
    return Lineage(
        tuple(lineage.parents),
        _json_obj(lineage.recipe_json, "recipe"),
        _json_obj(lineage.training_json, "training"),
        _json_obj(lineage.metrics_json, "metrics"),
    )


def _dumps(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True) if doc else ""


def revision_to_pb(rev: Revision) -> pb.Revision:
    return pb.Revision(
        artifact=rev.artifact,
        kind=KIND_TO_PB[rev.kind],
        digest=rev.digest,
        files=[pb.FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in rev.files],
        base=rev.base,
        card=pb.DomainCard(description=rev.card.description, samples=list(rev.card.samples)),
        labels=rev.labels,
        lineage=pb.Lineage(
            parents=list(rev.lineage.parents),
            recipe_json=_dumps(rev.lineage.recipe),
            training_json=_dumps(rev.lineage.training),
            metrics_json=_dumps(rev.lineage.metrics),
        ),
        size=rev.size,
        created_at=timestamp(rev.created_at),
        created_by=rev.created_by,
        refs=list(rev.refs),
    )


def artifact_to_pb(a: ArtifactInfo) -> pb.Artifact:
    return pb.Artifact(
        name=a.name,
        kind=KIND_TO_PB[a.kind],
        refs=a.refs,
        revision_count=a.revision_count,
        size=a.size,
        created_at=timestamp(a.created_at),
        updated_at=timestamp(a.updated_at),
    )
