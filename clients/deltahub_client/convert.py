"""Protobuf <-> core types, client side: the only client module that builds or reads messages (the
requests each verb sends, and what it makes of the answer)."""

from __future__ import annotations

import json
from typing import Any

from grpc_health.v1 import health_pb2

from deltahub.artifacts import ArtifactInfo, DeleteResult, DomainCard, FileEntry, Kind, Lineage, Revision
from deltahub.events import RefMove
from deltahub.jobs.model import Job
from deltahub.routing.results import Assembly, QueryRoute, RouteAnswer, Routed
from deltahub.storage.catalog import Encoding
from deltahub.v1 import common_pb2 as pb
from deltahub.v1 import jobs_pb2 as jpb
from deltahub.v1 import merge_pb2 as mpb
from deltahub.v1 import registry_pb2 as rpb
from deltahub.v1 import router_pb2 as routerpb
from deltahub.v1 import train_pb2 as trpb
from deltahub.v1 import transfer_pb2 as tpb
from deltahub_client.results import EvalResult, TaskVectorResult

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


def _expected(expected_revision: str | None) -> dict:
    """A compare-and-swap's field: absent (no CAS) when None; "" means the ref must not exist."""
    return {} if expected_revision is None else {"expected_revision": expected_revision}


# -- health ------------------------------------------------------------------------
def health_request(service: str) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


def health_from_pb(resp) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


# -- transfer ----------------------------------------------------------------------
def plan_push_request(artifact: str, kind, entries: list[FileEntry], base: str | None, allow_code: bool,
                      held) -> tpb.PlanPushRequest:
    return tpb.PlanPushRequest(artifact=artifact, kind=kind_to_pb(kind), files=files_to_pb(entries), base=base or "",
                               allow_code=allow_code, held=sorted(held))


def push_plan_from_pb(plan) -> tuple[list[tuple[str, int, int]], str, list[str]]:
    """(blobs to send as (sha256, size, offset to resume from), push session, held blobs the hub stores
    as themselves: what files may be sent as deltas against)."""
    return [(m.sha256, m.size, m.offset) for m in plan.missing], plan.session, list(plan.delta_bases)


def upload_status_request(sha256: str) -> tpb.GetUploadStatusRequest:
    return tpb.GetUploadStatusRequest(sha256=sha256)


def upload_status_from_pb(status) -> tuple[int, bool]:
    """(bytes the hub holds of the upload, whether it is complete)."""
    return status.offset, status.complete


def upload_chunk(data: bytes, *, sha256: str = "", size: int = 0, offset: int = 0,
                 session: str = "") -> tpb.UploadChunk:
    """A chunk of an upload: the first one names the blob, its size, where it resumes and the session."""
    return tpb.UploadChunk(sha256=sha256, size=size, offset=offset, data=data, session=session)


def plan_pull_request(spec: str, held) -> tpb.PlanPullRequest:
    return tpb.PlanPullRequest(revision=spec, held=sorted(held))


def download_request(sha256: str, offset: int = 0, length: int = 0) -> tpb.DownloadBlobRequest:
    return tpb.DownloadBlobRequest(sha256=sha256, offset=offset, length=length)


def chunk_from_pb(chunk) -> bytes:
    return chunk.data


# -- registry ----------------------------------------------------------------------
def commit_request(artifact: str, kind, entries: list[FileEntry], *, base, card, labels, lineage, ref, tags,
                   session: str, allow_code: bool, expected_revision, encoded: dict[str, str]
                   ) -> rpb.CommitRevisionRequest:
    return rpb.CommitRevisionRequest(
        artifact=artifact, kind=kind_to_pb(kind), files=files_to_pb(entries), base=base or "", card=card_to_pb(card),
        labels=labels or {}, lineage=lineage_to_pb(lineage), ref=ref, tags=list(tags), session=session,
        allow_code=allow_code, encoded=encoded_to_pb(encoded), **_expected(expected_revision))


def committed_from_pb(resp) -> tuple[Revision, bool]:
    return revision_from_pb(resp.revision), resp.created


def list_artifacts_request(namespace: str | None, kind) -> rpb.ListArtifactsRequest:
    return rpb.ListArtifactsRequest(namespace=namespace or "", kind=kind_to_pb(kind))


def artifacts_from_pb(resp) -> list[ArtifactInfo]:
    return [artifact_from_pb(a) for a in resp.artifacts]


def artifact_request(artifact: str) -> rpb.GetArtifactRequest:
    return rpb.GetArtifactRequest(artifact=artifact)


def revision_request(spec: str) -> rpb.GetRevisionRequest:
    return rpb.GetRevisionRequest(spec=spec)


def revisions_request(artifact: str) -> rpb.ListRevisionsRequest:
    return rpb.ListRevisionsRequest(artifact=artifact)


def revisions_from_pb(resp) -> list[Revision]:
    return [revision_from_pb(r) for r in resp.revisions]


def update_ref_request(artifact: str, ref: str, revision: str, expected_revision: str | None) -> rpb.UpdateRefRequest:
    return rpb.UpdateRefRequest(artifact=artifact, ref=ref, revision=revision, **_expected(expected_revision))


def ref_updated_from_pb(resp) -> tuple[str, str]:
    """(digest the ref now names, the one it named before or "")."""
    return resp.digest, resp.previous


def delete_ref_request(artifact: str, ref: str, expected_revision: str | None) -> rpb.DeleteRefRequest:
    return rpb.DeleteRefRequest(artifact=artifact, ref=ref, **_expected(expected_revision))


def ref_deleted_from_pb(resp) -> str:
    return resp.digest


def watch_refs_request(namespace: str | None, artifact: str | None, after: int) -> rpb.WatchRefsRequest:
    return rpb.WatchRefsRequest(namespace=namespace or "", artifact=artifact or "", after=after)


def delete_revision_request(artifact: str, revision: str) -> rpb.DeleteRevisionRequest:
    return rpb.DeleteRevisionRequest(artifact=artifact, revision=revision)


def delete_artifact_request(artifact: str) -> rpb.DeleteArtifactRequest:
    return rpb.DeleteArtifactRequest(artifact=artifact)


def deleted_from_pb(resp) -> DeleteResult:
    return DeleteResult(list(resp.deleted_revisions), list(resp.deleted_refs), resp.blobs_removed, resp.bytes_freed)


def update_card_request(spec: str, card, labels: dict[str, str] | None, replace_labels: bool) -> rpb.UpdateCardRequest:
    """``card`` None leaves the card as it is (the field unset), as opposed to an empty card."""
    return rpb.UpdateCardRequest(spec=spec, card=card_to_pb(card), labels=labels or {}, replace_labels=replace_labels)


def task_vector_request(finetuned: str, base: str, out: str, *, rank: int, energy: float, card, labels,
                        ref: str) -> rpb.CreateTaskVectorRequest:
    return rpb.CreateTaskVectorRequest(finetuned=finetuned, base=base, out=out, rank=rank, energy=energy,
                                       card=card_to_pb(card), labels=labels or {}, ref=ref)


def task_vector_from_pb(resp) -> TaskVectorResult:
    return TaskVectorResult(revision_from_pb(resp.revision), resp.created, resp.relative_error, resp.job)


def collect_garbage_request(partial_upload_max_age_s: float) -> rpb.CollectGarbageRequest:
    return rpb.CollectGarbageRequest(partial_upload_max_age_s=partial_upload_max_age_s)


def collected_from_pb(resp) -> dict[str, int]:
    return {"blobs_removed": resp.blobs_removed, "bytes_freed": resp.bytes_freed,
            "partial_uploads_removed": resp.partial_uploads_removed}


# -- jobs --------------------------------------------------------------------------
def job_request(job_id: str) -> jpb.GetJobRequest:
    return jpb.GetJobRequest(id=job_id)


def list_jobs_request(namespace: str | None, kind: str | None, state: str | None, limit: int) -> jpb.ListJobsRequest:
    return jpb.ListJobsRequest(namespace=namespace or "", kind=kind or "", state=state or "", limit=limit)


def jobs_from_pb(resp) -> list[Job]:
    return [job_from_pb(j) for j in resp.jobs]


def watch_job_request(job_id: str) -> jpb.WatchJobRequest:
    return jpb.WatchJobRequest(id=job_id)


def cancel_job_request(job_id: str) -> jpb.CancelJobRequest:
    return jpb.CancelJobRequest(id=job_id)


def pin_checkpoint_request(job_id: str, worker: str, entries: list[FileEntry]) -> jpb.PinCheckpointRequest:
    return jpb.PinCheckpointRequest(job_id=job_id, worker=worker, files=files_to_pb(entries))


def release_checkpoint_request(job_id: str, worker: str) -> jpb.ReleaseCheckpointRequest:
    return jpb.ReleaseCheckpointRequest(job_id=job_id, worker=worker)


def commit_job_result_request(job_id: str, worker: str, files: list[FileEntry],
                              metrics: dict) -> jpb.CommitJobResultRequest:
    return jpb.CommitJobResultRequest(job_id=job_id, worker=worker, files=files_to_pb(files),
                                      metrics_json=json.dumps(metrics, sort_keys=True))


def job_result_from_pb(resp) -> dict | None:
    """The job's result; None when a merge looked up in the hub's cache was never built."""
    return json.loads(resp.result_json) if resp.found else None


# -- merges and training -----------------------------------------------------------
def methods_request() -> mpb.ListMethodsRequest:
    return mpb.ListMethodsRequest()


def methods_from_pb(resp) -> list[dict[str, Any]]:
    return [{"name": m.name, "title": m.title, "paper": m.paper, "url": m.url, "source": m.source,
             "needs_data": m.needs_data, "params": json.loads(m.params_json or "[]")} for m in resp.methods]


def evaluate_request(target: str, data: str, device: str) -> mpb.EvaluateRequest:
    return mpb.EvaluateRequest(target=target, data=data, device=device)


def evaluation_from_pb(r) -> EvalResult:
    acc = r.metric == "accuracy"
    return EvalResult(r.target, r.data, r.metric, r.score, r.samples, None if acc else r.loss,
                      None if acc else r.perplexity, r.accuracy if acc else None, r.job)


def submit_job_request(trainer: str, *, base: str, datasets: list[str], out: str, config, replay, resume_from,
                       card, labels, idempotency_key, max_attempts: int) -> trpb.SubmitJobRequest:
    return trpb.SubmitJobRequest(
        trainer=trainer, base=base, datasets=datasets, out=out, config_json=json.dumps(config or {}),
        replay=list(replay), resume_from=resume_from or "", card=card_to_pb(card), labels=labels or {},
        idempotency_key=idempotency_key or "", max_attempts=max_attempts)


def submitted_from_pb(resp) -> tuple[Job, bool]:
    """(the job a StartMerge or SubmitJob call queued or found by its idempotency key, whether it is new)."""
    return job_from_pb(resp.job), resp.created


def trainers_request() -> trpb.ListTrainersRequest:
    return trpb.ListTrainersRequest()


def trainers_from_pb(resp) -> list[dict[str, Any]]:
    return [{"name": t.name, "title": t.title, "paper": t.paper, "rank_adaptive": t.rank_adaptive,
             "defaults": json.loads(t.defaults_json), "help": json.loads(t.help_json)} for t in resp.trainers]


# -- routing -----------------------------------------------------------------------
def _route_options(k, base, namespace, labels, temperature, min_score, scoring) -> routerpb.RouteOptions:
    """Options left None stay unset: the hub's defaults apply."""
    options = routerpb.RouteOptions(base=base or "", namespace=namespace or "", labels=labels or {},
                                    scoring=scoring or "")
    if min_score is not None:
        options.min_score = min_score
    if k is not None:
        options.k = k
    if temperature is not None:
        options.temperature = temperature
    return options


def _adapters(msgs) -> tuple[Routed, ...]:
    return tuple(Routed(m.artifact, m.digest, m.score, m.weight) for m in msgs)


def route_request(queries: list[str], **options) -> routerpb.RouteRequest:
    """``options``: k, base, namespace, labels, temperature, min_score, scoring (see Hub.route)."""
    return routerpb.RouteRequest(queries=queries, options=_route_options(**options))


def route_answer_from_pb(resp) -> RouteAnswer:
    routes = tuple(
        QueryRoute(r.query, _adapters(r.adapters), r.best_score if r.HasField("best_score") else None, r.reason)
        for r in resp.routes
    )
    return RouteAnswer(routes, resp.embedder, resp.scoring, resp.candidates, resp.unrouted_count,
                       tuple(resp.unrouted), resp.unrouted_reason)


def assemble_request(query: str | None, *, adapters, weights, method: str, form: str, params, rank, energy, out,
                     **options) -> routerpb.AssembleRequest:
    return routerpb.AssembleRequest(
        query=query or "", adapters=list(adapters or []), weights=list(weights or []),
        options=_route_options(**options), method=method, form=form, params_json=json.dumps(params or {}),
        rank=rank or 0, energy=energy or 0.0, out=out or "")


def assembly_from_pb(r) -> Assembly:
    return Assembly(_adapters(r.adapters), r.method, r.form, r.base, r.artifact, r.digest, r.cached, r.recipe_hash,
                    r.reason)


def router_status_request() -> routerpb.GetRouterStatusRequest:
    return routerpb.GetRouterStatusRequest()


def router_status_from_pb(s) -> dict[str, Any]:
    return {"embedder": s.embedder, "embedders": list(s.embedders), "ready": s.ready, "dim": s.dim,
            "indexed": s.indexed, "unrouted": s.unrouted, "search": s.search, "error": s.error}
