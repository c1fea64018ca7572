"""Router service: Route, Assemble and the router's status."""

from __future__ import annotations

from deltahub.auth import Scope
from deltahub.jobs import ASSEMBLE
from deltahub.routing.assembly import Assembler
from deltahub.routing.embedders import EMBEDDERS
from deltahub.routing.router import Router
from deltahub.store import HubStore
from deltahub.v1 import router_pb2_grpc as rgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.jobs import JobBoard
from deltahub_server.runtime import Blocking


class RouterServicer(rgrpc.RouterServicer):
    def __init__(self, store: HubStore, router: Router, assembler: Assembler, board: JobBoard,
                 blocking: Blocking) -> None:
        self.blocking = blocking
        self.board = board
        self.store = store
        self.router = router
        self.assembler = assembler

    def _base_spec(self, name: str) -> str:
        return self.store.resolve_base(name).spec

    @rpc_method
    def Route(self, request, context):
        # Answers hold only adapters the caller may read.
        readable = current_principal().namespaces_with(Scope.READ)
        answer = self.router.route(convert.route_request_from_pb(request, self._base_spec), namespaces=readable)
        return convert.route_answer_to_pb(answer)

    @rpc_method
    async def Assemble(self, request, context):
        """Routed and checked here; built by a worker as an ``assemble`` job, answered when it ends. A client
        that gives up (deadline, cancel) cancels the job: it stops and stores nothing."""
        answer, spec = await self.blocking.run(self._prepare, request, heavy=True)
        if spec is None:
            return convert.assembly_to_pb(answer)
        job, _ = await self.blocking.run(self.board.submit, ASSEMBLE, spec.out.split("/", 1)[0], spec.to_dict())
        done = await self.board.finished(job.id)
        return convert.assembly_to_pb(Assembler.built(answer, done.result), done.id)

    def _prepare(self, request):
        principal = current_principal()
        req = convert.assemble_request_from_pb(request, self._base_spec, principal.name)
        return self.assembler.prepare(req, namespaces=principal.namespaces_with(Scope.READ))

    @rpc_method
    def GetRouterStatus(self, request, context):
        return convert.router_status_to_pb(self.router.status(), EMBEDDERS.names())
