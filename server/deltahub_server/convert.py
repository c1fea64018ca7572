"""Protobuf <-> core types, server side. The only server module that builds messages."""

from __future__ import annotations

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


def lineage_from_pb(lineage: pb.Lineage) -> Lineage:
    return Lineage.from_json_fields(lineage.parents, lineage.recipe_json, lineage.training_json, lineage.metrics_json)


def revision_to_pb(rev: Revision) -> pb.Revision:
    return pb.Revision(
        artifact=rev.artifact,
        kind=KIND_TO_PB[rev.kind],
        digest=rev.digest,
        files=[pb.FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in rev.files],
        base=rev.base,
        card=pb.DomainCard(description=rev.card.description, samples=list(rev.card.samples)),
        labels=rev.labels,
        lineage=pb.Lineage(parents=list(rev.lineage.parents), **rev.lineage.json_fields()),
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
