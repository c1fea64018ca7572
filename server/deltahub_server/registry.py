"""Registry service: commits, artifacts, revisions, refs, cards, task vectors."""

from __future__ import annotations

import asyncio
import time

from deltahub.jobs import TASK_VECTOR
from deltahub.names import ArtifactName, check_namespace
from deltahub.store import HubStore
from deltahub.v1 import registry_pb2_grpc as rgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.jobs import JobBoard
from deltahub_server.runtime import Blocking, StreamBudget, write_within
from deltahub.auth import Scope
from deltahub.errors import InvalidInputError
from deltahub.events import EVENT_SEQ_HEADER

REF_POLL_S = 0.2  # how often a ref watch looks at the catalog's event log (a read of the newest rows)


class RegistryServicer(rgrpc.RegistryServicer):
    def __init__(self, store: HubStore, board: JobBoard, blocking: Blocking, streams: StreamBudget) -> None:
        self.store = store
        self.board = board
        self.blocking = blocking
        self.streams = streams

    @rpc_method
    async def WatchRefs(self, request, context):
        principal = current_principal()
        namespace, artifact, after = convert.ref_watch_from_pb(request)
        if namespace:  # read scope on it was checked with the call (auth.RULES)
            check_namespace(namespace)
        if artifact:
            ArtifactName.parse(artifact)
        if after < 0:
            raise InvalidInputError(f"after must be an event seq (0: from now), not {after}")
        cursor = after or await self.blocking.run(self.store.last_event)
        limits = self.streams.limits
        async with self.streams.hold(principal.name, "watch of refs"):
            await context.send_initial_metadata(((EVENT_SEQ_HEADER, str(cursor)),))
            deadline = time.monotonic() + limits.max_watch_s
            while not context.done() and time.monotonic() < deadline:
                moves = await self.blocking.run(lambda: self.store.ref_moves(
                    cursor, namespace=namespace, artifact=artifact))
                for move in moves:
                    cursor = move.seq
                    if principal.allows(move.artifact.split("/", 1)[0], Scope.READ):
                        await write_within(context, convert.ref_move_to_pb(move), limits.stream_idle_s,
                                           "watch of refs")
                if not moves:
                    await asyncio.sleep(REF_POLL_S)

    @rpc_method
    def CommitRevision(self, request, context):
        rev, created = self.store.commit(convert.commit_request_from_pb(request, current_principal().name))
        return convert.committed_to_pb(rev, created)

    @rpc_method
    def ListArtifacts(self, request, context):
        namespace, kind = convert.artifact_filter_from_pb(request)
        if namespace:
            check_namespace(namespace)
        principal = current_principal()
        found = [
            a
            for a in self.store.list_artifacts(namespace, kind)
            if principal.allows(a.name.split("/")[0], Scope.READ)
        ]
        return convert.artifacts_to_pb(found)

    @rpc_method
    def GetArtifact(self, request, context):
        return convert.artifact_to_pb(self.store.artifact(request.artifact))

    @rpc_method
    def ListRevisions(self, request, context):
        revs = self.store.list_revisions(request.artifact)
        return convert.revisions_to_pb(revs)

    @rpc_method
    def GetRevision(self, request, context):
        return convert.revision_to_pb(self.store.resolve(request.spec))

    @rpc_method
    def UpdateRef(self, request, context):
        digest, previous = self.store.update_ref(request.artifact, request.ref, request.revision,
                                                 convert.expected_from_pb(request))
        return convert.ref_updated_to_pb(request.ref, digest, previous)

    @rpc_method
    def DeleteRef(self, request, context):
        digest = self.store.delete_ref(request.artifact, request.ref, convert.expected_from_pb(request))
        return convert.ref_deleted_to_pb(digest)

    @rpc_method
    def DeleteRevision(self, request, context):
        return convert.deleted_to_pb(self.store.delete_revision(request.artifact, request.revision))

    @rpc_method
    def DeleteArtifact(self, request, context):
        return convert.deleted_to_pb(self.store.delete_artifact(request.artifact))

    @rpc_method
    def UpdateCard(self, request, context):
        card, labels, replace = convert.card_update_from_pb(request)
        rev = self.store.update_card(request.spec, card, labels, replace_labels=replace)
        return convert.revision_to_pb(rev)

    @rpc_method
    async def CreateTaskVector(self, request, context):
        """Extracted by a worker as a ``task_vector`` job; answered when the job ends."""
        req = convert.task_vector_request_from_pb(request, current_principal().name)
        tv = await self.blocking.run(self.store.task_vector_spec, req, heavy=True)
        job, _ = await self.blocking.run(self.board.submit, TASK_VECTOR, tv.out.split("/", 1)[0], tv.to_dict())
        done = await self.board.finished(job.id)
        rev = await self.blocking.run(self.store.catalog.get_revision, done.result["artifact"], done.result["digest"])
        return convert.task_vector_to_pb(rev, done.result, done.id)

    @rpc_method(heavy=True)
    def CollectGarbage(self, request, context):
        removed, freed, partials = self.store.collect_garbage(
            partial_upload_max_age_s=convert.gc_max_age_from_pb(request))
        return convert.collected_to_pb(removed, freed, partials)
