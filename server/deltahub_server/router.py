"""Router service: Route, Assemble and the router's status."""

from __future__ import annotations

import asyncio

from deltahub.auth import Scope
from deltahub.routing.assembly import DEFAULT_FORM, DEFAULT_METHOD, AssembleRequest, Assembler
from deltahub.routing.embedders import EMBEDDERS
from deltahub.routing.router import Router
from deltahub.store import HubStore
from deltahub.v1 import router_pb2 as rpb
from deltahub.v1 import router_pb2_grpc as rgrpc
from deltahub_server import convert
from deltahub_server.auth import current_principal
from deltahub_server.errors import rpc_method
from deltahub_server.runtime import Blocking


class RouterServicer(rgrpc.RouterServicer):
    def __init__(self, store: HubStore, router: Router, assembler: Assembler, blocking: Blocking) -> None:
        self.blocking = blocking
        self.store = store
        self.router = router
        self.assembler = assembler

    def _route_request(self, queries, options):
        base = self.store.resolve_base(options.base).spec if options.base else ""
        return convert.route_request_from_pb(queries, options, base)

    @rpc_method
    def Route(self, request, context):
        # Answers hold only adapters the caller may read.
        readable = current_principal().namespaces_with(Scope.READ)
        answer = self.router.route(self._route_request(request.queries, request.options), namespaces=readable)
        return convert.route_answer_to_pb(answer)

    @rpc_method
    async def Assemble(self, request, context):
        # A merge that the client gave up on (deadline, cancel) stops and stores nothing.
        gone = asyncio.Event()
        context.add_done_callback(lambda _: gone.set())
        return await self.blocking.run(self._assemble, request, gone.is_set, heavy=True)

    def _assemble(self, request, cancelled):
        principal = current_principal()
        req = AssembleRequest(
            query=request.query, adapters=list(request.adapters), weights=list(request.weights) or None,
            route=self._route_request([request.query], request.options),
            method=request.method or DEFAULT_METHOD, form=request.form or DEFAULT_FORM,
            params=convert.params_from_json(request.params_json), rank=request.rank or None,
            energy=request.energy or None, out=request.out, created_by=principal.name,
        )
        assembly = self.assembler.assemble(req, namespaces=principal.namespaces_with(Scope.READ), cancelled=cancelled)
        return convert.assembly_to_pb(assembly)

    @rpc_method
    def GetRouterStatus(self, request, context):
        s = self.router.status()
        return rpb.RouterStatus(embedder=s["embedder"], embedders=EMBEDDERS.names(), ready=s["ready"], dim=s["dim"],
                                indexed=s["indexed"], unrouted=s["unrouted"], search=s["search"], error=s["error"])
