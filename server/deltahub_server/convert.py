"""Protobuf <-> core types, server side: the only server module that builds messages (the servicers'
answers included) or reads what is particular to protobuf in them. A request that stands for a core
request type (a commit, a merge, a task vector, a training job, an assembly, a route) is read here into
it; so is every field whose meaning depends on protobuf (presence, zero for unset, repeated and map
fields, enums, JSON carried in strings). The servicers read only plain scalar fields they pass straight
on (a name, a spec, an id, an idempotency key)."""

from __future__ import annotations

import json
from typing import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from deltahub.artifacts import ArtifactInfo, DeleteResult, DomainCard, FileEntry, Kind, Lineage, Revision
from deltahub import jsondoc
from deltahub.errors import InvalidInputError
from deltahub.merge_engine import MergeRequest
from deltahub.store import UNSET, CommitRequest, TaskVectorRequest
from deltahub.v1 import common_pb2 as pb
from deltahub.v1 import merge_pb2 as mpb
from deltahub.v1 import jobs_pb2 as jpb
from deltahub.v1 import registry_pb2 as rpb_registry
from deltahub.v1 import router_pb2 as rpb
from deltahub.v1 import train_pb2 as trpb
from deltahub.v1 import transfer_pb2 as tpb
from deltahub.routing.assembly import DEFAULT_FORM, DEFAULT_METHOD, AssembleRequest
from deltahub.routing.router import DEFAULT_K, RouteRequest
from deltahub.routing.scoring import DEFAULT_SCORING, DEFAULT_TEMPERATURE
from deltahub.jobs import KINDS, STATES
from deltahub_trainers.submit import TrainRequest

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


def ref_move_to_pb(move) -> rpb_registry.RefEvent:
    return rpb_registry.RefEvent(seq=move.seq, artifact=move.artifact, ref=move.ref, revision=move.digest,
                                 at=timestamp(move.at))


def files_from_pb(entries) -> list[FileEntry]:
    return [FileEntry(e.path, e.sha256, int(e.size)) for e in entries]


def encoded_from_pb(entries) -> dict[str, str]:
    """CommitRevisionRequest.encoded: file sha256 -> container sha256 (one container per file)."""
    found: dict[str, str] = {}
    for e in entries:
        if found.setdefault(e.sha256, e.container) != e.container:
            raise InvalidInputError(f"file {e.sha256} is sent as two different deltas")
    return found


def plan_push_to_pb(missing: list[tuple[str, int, int]], session: str, delta_bases: list[str]) -> tpb.PlanPushResponse:
    return tpb.PlanPushResponse(
        missing=[upload_status_to_pb(s, n, o, False) for s, n, o in missing],
        bytes_to_send=sum(n - o for _, n, o in missing), session=session, delta_bases=delta_bases)


def upload_status_to_pb(sha256: str, size: int, offset: int, complete: bool) -> tpb.UploadStatus:
    return tpb.UploadStatus(sha256=sha256, size=size, offset=offset, complete=complete)


def pull_plan_to_pb(encodings) -> tpb.PlanPullResponse:
    return tpb.PlanPullResponse(encoded=[
        tpb.EncodedBlob(sha256=e.sha256, size=e.size, container=e.container, container_size=e.stored,
                        bases=list(e.bases)) for e in encodings])


def card_from_pb(card: pb.DomainCard) -> DomainCard:
    return DomainCard(card.description, tuple(card.samples))


def lineage_from_pb(lineage: pb.Lineage) -> Lineage:
    return Lineage.from_json_fields(lineage.parents, lineage.recipe_json, lineage.training_json, lineage.metrics_json)


def expected_from_pb(request, field: str = "expected_revision"):
    """An optional expected revision: UNSET when the field is absent ("" expects no revision at all)."""
    return getattr(request, field) if request.HasField(field) else UNSET


def commit_request_from_pb(req, created_by: str) -> CommitRequest:
    return CommitRequest(
        artifact=req.artifact, kind=kind_from_pb(req.kind), files=files_from_pb(req.files), base=req.base,
        card=card_from_pb(req.card), labels=dict(req.labels), lineage=lineage_from_pb(req.lineage),
        ref=req.ref or "main", expected_revision=expected_from_pb(req), tags=list(req.tags),
        created_by=created_by, session=req.session, allow_code=req.allow_code, encoded=encoded_from_pb(req.encoded),
    )


def ref_watch_from_pb(req) -> tuple[str | None, str | None, int]:
    """WatchRefs: the namespace and artifact to follow (None: any) and the event seq to start after (0: now)."""
    return req.namespace or None, req.artifact or None, req.after


def artifact_filter_from_pb(req) -> tuple[str | None, Kind | None]:
    """ListArtifacts: the namespace and kind to list (None: any)."""
    return req.namespace or None, kind_from_pb(req.kind, required=False)


def card_update_from_pb(req) -> tuple[DomainCard | None, dict[str, str], bool]:
    """UpdateCard: the new card (None keeps the old one), the labels, and whether they replace the old ones."""
    return (card_from_pb(req.card) if req.HasField("card") else None), dict(req.labels), req.replace_labels


def task_vector_request_from_pb(req, created_by: str) -> TaskVectorRequest:
    return TaskVectorRequest(
        finetuned=req.finetuned, base=req.base, out=req.out, rank=req.rank or None, energy=req.energy or None,
        card=card_from_pb(req.card), labels=dict(req.labels), ref=req.ref or "main", created_by=created_by,
    )


def gc_max_age_from_pb(req) -> float | None:
    """CollectGarbage: the age past which a partial upload is removed (None: the hub's default)."""
    return req.partial_upload_max_age_s or None


def held_from_pb(req) -> list[str]:
    """PlanPush and PlanPull: sha256 of the files the client holds."""
    return list(req.held)


def blob_range_from_pb(req) -> tuple[int, int | None]:
    """DownloadBlob: the first byte and how many (None: to the end)."""
    return req.offset, req.length or None


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



def committed_to_pb(rev: Revision, created: bool) -> rpb_registry.CommitRevisionResponse:
    return rpb_registry.CommitRevisionResponse(revision=revision_to_pb(rev), created=created)


def artifacts_to_pb(found: list[ArtifactInfo]) -> rpb_registry.ListArtifactsResponse:
    return rpb_registry.ListArtifactsResponse(artifacts=[artifact_to_pb(a) for a in found])


def revisions_to_pb(revs: list[Revision]) -> rpb_registry.ListRevisionsResponse:
    return rpb_registry.ListRevisionsResponse(revisions=[revision_to_pb(r) for r in revs])


def ref_updated_to_pb(ref: str, digest: str, previous: str | None) -> rpb_registry.UpdateRefResponse:
    return rpb_registry.UpdateRefResponse(ref=ref, digest=digest, previous=previous or "")


def ref_deleted_to_pb(digest: str) -> rpb_registry.DeleteRefResponse:
    return rpb_registry.DeleteRefResponse(digest=digest)


def deleted_to_pb(result: DeleteResult) -> rpb_registry.DeleteResponse:
    return rpb_registry.DeleteResponse(deleted_revisions=result.deleted_revisions, deleted_refs=result.deleted_refs,
                                       blobs_removed=result.blobs_removed, bytes_freed=result.bytes_freed)


def collected_to_pb(removed: int, freed: int, partials: int) -> rpb_registry.CollectGarbageResponse:
    return rpb_registry.CollectGarbageResponse(blobs_removed=removed, bytes_freed=freed, partial_uploads_removed=partials)


def uploaded_to_pb(sha256: str, size: int, offset: int, complete: bool) -> tpb.UploadBlobResponse:
    return tpb.UploadBlobResponse(status=upload_status_to_pb(sha256, size, offset, complete))


def blob_chunk_to_pb(data: bytes) -> tpb.BlobChunk:
    return tpb.BlobChunk(data=data)


# -- merges --------------------------------------------------------
def params_from_json(text: str, field: str = "params_json") -> dict:
    """A request field that carries a JSON object (method parameters, a trainer config)."""
    return jsondoc.loads_object(text, field) if text else {}


def input_params_from_json(text: str) -> list[dict] | None:
    """``input_params_json``: a JSON list of one object per input."""
    if not text:
        return None
    doc = jsondoc.loads(text, "input_params_json")
    if not isinstance(doc, list) or not all(isinstance(p, dict) for p in doc):
        raise InvalidInputError("input_params_json must be a JSON list of one object per input")
    return doc


def merge_request_from_pb(req, created_by: str):
    params = params_from_json(req.params_json)
    return MergeRequest(
        method=req.method, inputs=list(req.inputs), out=req.out, base=req.base,
        weights=list(req.weights) or None, params=params, input_params=input_params_from_json(req.input_params_json),
        max_error=req.max_error or None, form=req.form or "model", data=req.data,
        rank=req.rank or None, energy=req.energy or None, device=req.device or "auto", dtype=req.dtype,
        ref=req.ref or "main", tags=list(req.tags), card=card_from_pb(req.card), labels=dict(req.labels),
        created_by=created_by,
    )


def evaluation_request_from_pb(req) -> tuple[str, str, str]:
    """Evaluate: the model or adapter to score, the dataset, and the device (auto unless given)."""
    return req.target, req.data, req.device or "auto"


def task_vector_to_pb(revision, result: dict, job_id: str):
    return rpb_registry.CreateTaskVectorResponse(revision=revision_to_pb(revision), created=bool(result.get("created")),
                                                 relative_error=result.get("relative_error", 0.0), job=job_id)


def evaluation_to_pb(result: dict, job_id: str) -> mpb.EvaluateResponse:
    """An evaluate job's result (deltahub.builds.evaluate) as the Evaluate call answers it."""
    return mpb.EvaluateResponse(
        target=result["target"], data=result["data"], metric=result["metric"], score=result["score"],
        samples=result["samples"], loss=result.get("loss") or 0.0, perplexity=result.get("perplexity") or 0.0,
        accuracy=result.get("accuracy") or 0.0, job=job_id,
    )


def method_to_pb(spec):
    doc = spec.to_dict()
    return mpb.MethodInfo(name=spec.name, title=spec.title, paper=spec.paper, url=spec.url, source=spec.source,
                          needs_data=spec.needs_data, params_json=json.dumps(doc["params"], default=str))



def methods_to_pb(specs) -> mpb.ListMethodsResponse:
    return mpb.ListMethodsResponse(methods=[method_to_pb(spec) for spec in specs])


def merge_started_to_pb(job, created: bool) -> mpb.StartMergeResponse:
    return mpb.StartMergeResponse(job=job_to_pb(job), created=created)


# -- routing -----------------------------------------------------------------------
def _route_from_pb(queries, options, resolve_base: Callable[[str], str]) -> RouteRequest:
    return RouteRequest(
        queries=list(queries), k=options.k if options.HasField("k") else DEFAULT_K,
        base=resolve_base(options.base) if options.base else "", namespace=options.namespace,
        labels=dict(options.labels),
        temperature=options.temperature if options.HasField("temperature") else DEFAULT_TEMPERATURE,
        min_score=options.min_score if options.HasField("min_score") else None,
        scoring=options.scoring or DEFAULT_SCORING,
    )


def route_request_from_pb(req, resolve_base: Callable[[str], str]) -> RouteRequest:
    """Route; ``resolve_base`` turns the options' base name into the revision spec it stands for."""
    return _route_from_pb(req.queries, req.options, resolve_base)


def assemble_request_from_pb(req, resolve_base: Callable[[str], str], created_by: str) -> AssembleRequest:
    """Assemble: its query is routed as :func:`route_request_from_pb` reads a route."""
    return AssembleRequest(
        query=req.query, adapters=list(req.adapters), weights=list(req.weights) or None,
        route=_route_from_pb([req.query], req.options, resolve_base),
        method=req.method or DEFAULT_METHOD, form=req.form or DEFAULT_FORM, params=params_from_json(req.params_json),
        rank=req.rank or None, energy=req.energy or None, out=req.out, created_by=created_by,
    )


def routed_to_pb(a) -> rpb.RoutedAdapter:
    return rpb.RoutedAdapter(artifact=a.artifact, digest=a.digest, score=a.score, weight=a.weight)


def route_answer_to_pb(answer) -> rpb.RouteResponse:
    routes = []
    for r in answer.routes:
        msg = rpb.QueryRoute(query=r.query, adapters=[routed_to_pb(a) for a in r.adapters],
                             serve_base=r.serve_base, reason=r.reason)
        if r.best_score is not None:
            msg.best_score = r.best_score
        routes.append(msg)
    return rpb.RouteResponse(
        routes=routes, embedder=answer.embedder, scoring=answer.scoring, candidates=answer.candidates,
        unrouted_count=answer.unrouted_count, unrouted=list(answer.unrouted), unrouted_reason=answer.unrouted_reason,
    )


def assembly_to_pb(a, job_id: str = "") -> rpb.AssembleResponse:
    return rpb.AssembleResponse(
        artifact=a.artifact, digest=a.digest, cached=a.cached, recipe_hash=a.recipe_hash,
        adapters=[routed_to_pb(x) for x in a.adapters], method=a.method, form=a.form, base=a.base,
        serve_base=a.serve_base, reason=a.reason, job=job_id,
    )



def router_status_to_pb(status: dict, embedders: list[str]) -> rpb.RouterStatus:
    return rpb.RouterStatus(embedder=status["embedder"], embedders=embedders, ready=status["ready"], dim=status["dim"],
                            indexed=status["indexed"], unrouted=status["unrouted"], search=status["search"],
                            error=status["error"])


# -- jobs and training -------------------------------------------------------------

def to_json(doc) -> str:
    return json.dumps(doc, sort_keys=True) if doc else ""


def job_to_pb(job) -> jpb.Job:
    return jpb.Job(
        id=job.id, kind=job.kind, state=jpb.JobState.Value(f"JOB_STATE_{job.state}"), spec_json=to_json(job.spec),
        attempts=job.attempts, max_attempts=job.max_attempts, worker=job.worker, device=job.device,
        stage=job.stage, done=job.done, total=job.total, unit=job.unit, metrics_json=to_json(job.metrics),
        checkpoint_json=to_json(job.checkpoint), error_code=job.error_code, error_class=job.error_class,
        error_message=job.error_message, result_json=to_json(job.result), cancel_requested=job.cancel_requested,
        idempotency_key=job.key, created_by=job.created_by, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, updated_at=job.updated_at,
    )


def jobs_to_pb(jobs) -> jpb.ListJobsResponse:
    return jpb.ListJobsResponse(jobs=[job_to_pb(j) for j in jobs])


def checkpoint_pinned_to_pb() -> jpb.PinCheckpointResponse:
    return jpb.PinCheckpointResponse()


def checkpoint_released_to_pb() -> jpb.ReleaseCheckpointResponse:
    return jpb.ReleaseCheckpointResponse()


def job_result_to_pb(found: bool, result: dict) -> jpb.CommitJobResultResponse:
    return jpb.CommitJobResultResponse(found=found, result_json=to_json(result))


def training_request_from_pb(req) -> TrainRequest:
    return TrainRequest(
        trainer=req.trainer, base=req.base, datasets=list(req.datasets), out=req.out,
        config=params_from_json(req.config_json, "config_json"), replay=list(req.replay),
        resume_from=req.resume_from, card=card_from_pb(req.card), labels=dict(req.labels),
    )


def job_filter_from_pb(req) -> tuple[str | None, str | None, str | None, int]:
    """ListJobs: the namespace, kind and state to list (None: any), and how many at most (100 unless
    given, never over 10,000)."""
    if req.limit < 0:
        raise InvalidInputError(f"limit must be >= 0, not {req.limit}")
    if req.kind and req.kind not in KINDS:
        raise InvalidInputError(f"unknown job kind {req.kind!r}; known: {', '.join(KINDS)}")
    state = req.state.upper()
    if state and state not in STATES:
        raise InvalidInputError(f"unknown job state {req.state!r}; known: {', '.join(STATES)}")
    return req.namespace or None, req.kind or None, state or None, min(req.limit or 100, 10_000)


def training_submitted_to_pb(job, created: bool) -> trpb.SubmitJobResponse:
    return trpb.SubmitJobResponse(job=job_to_pb(job), created=created)


def trainers_to_pb(trainers) -> trpb.ListTrainersResponse:
    """``trainers``: (name, trainer class) pairs."""
    return trpb.ListTrainersResponse(trainers=[
        trpb.TrainerInfo(name=name, title=cls.title, paper=cls.paper, rank_adaptive=cls.rank_adaptive,
                         defaults_json=json.dumps(cls.config_cls().to_dict(), sort_keys=True),
                         help_json=json.dumps(cls.config_cls.help(), sort_keys=True)) for name, cls in trainers])
