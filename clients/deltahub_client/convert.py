"""Protobuf <-> core types, client side."""

from __future__ import annotations

import json

from deltahub.artifacts import ArtifactInfo, DomainCard, FileEntry, Kind, Lineage, Revision
from deltahub.events import RefMove
from deltahub.jobs.model import Job
from deltahub.storage.catalog import Encoding
from deltahub.v1 import common_pb2 as pb
from deltahub.v1 import jobs_pb2 as jpb
from deltahub.v1 import merge_pb2 as mpb
from deltahub.v1 import registry_pb2 as rpb
from deltahub.v1 import transfer_pb2 as tpb

KIND_TO_PB = {kind: pb.ArtifactKind.Value(kind.wire_name) for kind in Kind}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}


def kind_to_pb(kind: Kind | str | None) -> int:
    return pb.ARTIFACT_KIND_UNSPECIFIED if kind is None else KIND_TO_PB[Kind.parse(kind)]


def files_to_pb(files: list[FileEntry]) -> list[pb.FileEntry]:
    return [pb.FileEntry(path=f.path, sha256=f.sha256, size=f.size) for f in files]


def encoded_to_pb(encoded: dict[str, str]) -> list[rpb.EncodedFile]:
    return [rpb.EncodedFile(sha256=sha, container=container) for sha, container in sorted(encoded.items())]


def pull_plan_from_pb(plan: tpb.PlanPullResponse) -> list[Encoding]:
    return [Encoding(e.sha256, e.container, e.size, e.container_size, tuple(e.bases)) for e in plan.encoded]


def card_to_pb(card: DomainCard | dict | None) -> pb.DomainCard | None:
    if card is None:
        return None
    card = DomainCard.from_dict(card) if isinstance(card, dict) else card
    return pb.DomainCard(description=card.description, samples=list(card.samples))


def lineage_to_pb(lineage: Lineage | None) -> pb.Lineage:
    lineage = lineage or Lineage()
    return pb.Lineage(parents=list(lineage.parents), **lineage.json_fields())


def revision_from_pb(msg: pb.Revision) -> Revision:
    return Revision(
        artifact=msg.artifact,
        kind=KIND_FROM_PB[msg.kind],
        digest=msg.digest,
        files=tuple(FileEntry(f.path, f.sha256, int(f.size)) for f in msg.files),
        base=msg.base,
        card=DomainCard(msg.card.description, tuple(msg.card.samples)),
        labels=dict(msg.labels),
        lineage=Lineage.from_json_fields(msg.lineage.parents, msg.lineage.recipe_json, msg.lineage.training_json,
                                         msg.lineage.metrics_json),
        created_at=msg.created_at.ToNanoseconds() / 1e9,
        created_by=msg.created_by,
        refs=tuple(msg.refs),
    )


def artifact_from_pb(msg: pb.Artifact) -> ArtifactInfo:
    return ArtifactInfo(
        name=msg.name,
        kind=KIND_FROM_PB[msg.kind],
        refs=dict(msg.refs),
        revision_count=msg.revision_count,
        size=msg.size,
        created_at=msg.created_at.ToNanoseconds() / 1e9,
        updated_at=msg.updated_at.ToNanoseconds() / 1e9,
    )


def _doc(text: str) -> dict:
    return json.loads(text) if text else {}


def job_from_pb(msg) -> Job:
    """A Jobs.Job message as the core's :class:`deltahub.jobs.Job` (one type on both sides)."""
    return Job(
        id=msg.id, kind=msg.kind, spec=_doc(msg.spec_json), state=jpb.JobState.Name(msg.state).removeprefix("JOB_STATE_"),
        attempts=msg.attempts, max_attempts=msg.max_attempts, worker=msg.worker, device=msg.device, stage=msg.stage,
        done=msg.done, total=msg.total, unit=msg.unit, metrics=_doc(msg.metrics_json),
        checkpoint=_doc(msg.checkpoint_json), error_code=msg.error_code, error_class=msg.error_class,
        error_message=msg.error_message, result=_doc(msg.result_json), cancel_requested=msg.cancel_requested,
        key=msg.idempotency_key, created_by=msg.created_by, created_at=msg.created_at, started_at=msg.started_at,
        finished_at=msg.finished_at, updated_at=msg.updated_at,
    )


def merge_request_to_pb(method: str, inputs, *, out: str, base, weights, params, input_params, max_error, form,
                        data, rank, energy, device, ref, tags, card, labels, idempotency_key, dtype):
    return mpb.MergeRequest(
        method=method, inputs=list(inputs), out=out, base=base or "", weights=list(weights or []),
        params_json=json.dumps(params or {}), input_params_json=json.dumps(list(input_params)) if input_params else "",
        max_error=float(max_error or 0.0), form=form, data=data or "", rank=rank or 0, energy=energy or 0.0,
        device=device, ref=ref, tags=list(tags), card=card_to_pb(card), labels=labels or {},
        idempotency_key=idempotency_key or "", dtype=dtype or "",
    )


def ref_move_from_pb(msg) -> RefMove:
    return RefMove(seq=msg.seq, artifact=msg.artifact, ref=msg.ref, digest=msg.revision,
                   at=msg.at.ToNanoseconds() / 1e9)
