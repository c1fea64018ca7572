"""The auth interceptor: every RPC passes through one table of required scopes.

Interceptors see only the method name and metadata, so this one wraps the
method handler instead: the wrapper reads the request, asks the table which
scope on which namespace the call needs, and checks the bearer token before
the servicer runs. Health checks and reflection stay open.
"""

from __future__ import annotations

import inspect
from typing import Callable

import grpc

from deltahub.auth import ANONYMOUS, Principal, Scope, TokenTable, current_caller, set_caller
from deltahub.errors import PermissionDeniedError
from deltahub.routing.assembly import DEFAULT_NAMESPACE as ASSEMBLED_NAMESPACE
from deltahub_server.errors import abort


OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

Needs = list[tuple[str | None, Scope]]


def _ns(text: str) -> str:
    return text.split("@", 1)[0].split("/", 1)[0]


def _on(field: str, scope: Scope) -> Callable[[object], Needs]:
    return lambda req: [(_ns(getattr(req, field)), scope)]


def _anywhere(scope: Scope) -> Callable[[object], Needs]:
    return lambda req: [(None, scope)]


def _listing(req) -> Needs:
    return [(req.namespace or None, Scope.READ)]


def _task_vector(req) -> Needs:
    return [(_ns(req.finetuned), Scope.READ), (_ns(req.base), Scope.READ), (_ns(req.out), Scope.WRITE)]


def _commit(req) -> Needs:
    needs = [(_ns(req.artifact), Scope.WRITE)]
    if req.base:
        needs.append((_ns(req.base), Scope.READ))
    return needs


def _merge(req) -> Needs:
    reads = [*req.inputs, *(x for x in (req.base, req.data) if x)]
    return [(_ns(req.out), Scope.WRITE), *((_ns(x), Scope.READ) for x in reads)]


def _evaluate(req) -> Needs:
    return [(_ns(req.target), Scope.READ), (_ns(req.data), Scope.READ)]


def _route(req) -> Needs:
    # answers are filtered to the namespaces the caller reads; a filter names one it must read
    options = req.options
    needs: Needs = [(options.namespace or None, Scope.READ)]
    if options.base:
        needs.append((_ns(options.base), Scope.READ))
    return needs


def _assemble(req) -> Needs:
    out = _ns(req.out) if req.out else ASSEMBLED_NAMESPACE
    return [(out, Scope.WRITE), *_route(req), *((_ns(a), Scope.READ) for a in req.adapters)]


def _watch_refs(req) -> Needs:
    # moves are filtered to the namespaces the caller reads; a filter names one it must read
    needs: Needs = [(req.namespace or None, Scope.READ)]
    if req.artifact:
        needs.append((_ns(req.artifact), Scope.READ))
    return needs


def _submit_job(req) -> Needs:
    reads = [req.base, *req.datasets, *req.replay, *([req.resume_from] if req.resume_from else [])]
    return [(_ns(req.out), Scope.WRITE), *((_ns(x), Scope.READ) for x in reads if x)]


RULES: dict[str, Callable[[object], Needs]] = {
    "/deltahub.v1.Registry/CommitRevision": _commit,
    "/deltahub.v1.Registry/ListArtifacts": _listing,
    "/deltahub.v1.Registry/GetArtifact": _on("artifact", Scope.READ),
    "/deltahub.v1.Registry/ListRevisions": _on("artifact", Scope.READ),
    "/deltahub.v1.Registry/GetRevision": _on("spec", Scope.READ),
    "/deltahub.v1.Registry/UpdateRef": _on("artifact", Scope.WRITE),
    "/deltahub.v1.Registry/DeleteRef": _on("artifact", Scope.WRITE),
    "/deltahub.v1.Registry/WatchRefs": _watch_refs,
    "/deltahub.v1.Registry/DeleteRevision": _on("artifact", Scope.ADMIN),
    "/deltahub.v1.Registry/DeleteArtifact": _on("artifact", Scope.ADMIN),
    "/deltahub.v1.Registry/UpdateCard": _on("spec", Scope.WRITE),
    "/deltahub.v1.Registry/CreateTaskVector": _task_vector,
    "/deltahub.v1.Registry/CollectGarbage": lambda req: [("*", Scope.ADMIN)],
    "/deltahub.v1.Transfer/PlanPush": _commit,
    # Blobs are addressed by content: knowing a sha256 is the capability.
    "/deltahub.v1.Transfer/UploadBlob": _anywhere(Scope.WRITE),
    "/deltahub.v1.Transfer/GetUploadStatus": _anywhere(Scope.WRITE),
    "/deltahub.v1.Transfer/DownloadBlob": _anywhere(Scope.READ),
    "/deltahub.v1.Transfer/PlanPull": _on("revision", Scope.READ),
    "/deltahub.v1.Merge/StartMerge": _merge,
    "/deltahub.v1.Merge/ListMethods": _anywhere(Scope.READ),
    "/deltahub.v1.Merge/Evaluate": _evaluate,
    "/deltahub.v1.Router/Route": _route,
    "/deltahub.v1.Router/Assemble": _assemble,
    "/deltahub.v1.Router/GetRouterStatus": _anywhere(Scope.READ),
    "/deltahub.v1.Train/SubmitJob": _submit_job,
    "/deltahub.v1.Train/ListTrainers": _anywhere(Scope.READ),
    # a job's id starts with the namespace it writes to (reads, for an evaluation)
    "/deltahub.v1.Jobs/GetJob": _on("id", Scope.READ),
    "/deltahub.v1.Jobs/WatchJob": _on("id", Scope.READ),
    "/deltahub.v1.Jobs/CancelJob": _on("id", Scope.WRITE),
    "/deltahub.v1.Jobs/ListJobs": _listing,
    # for workers: the lease holder of a job, with a token that writes its namespace
    "/deltahub.v1.Jobs/PinCheckpoint": _on("job_id", Scope.WRITE),
    "/deltahub.v1.Jobs/ReleaseCheckpoint": _on("job_id", Scope.WRITE),
    "/deltahub.v1.Jobs/CommitJobResult": _on("job_id", Scope.WRITE),
}


def current_principal() -> Principal:
    return current_caller() or ANONYMOUS


def bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return None


def register_rule(method: str, rule: Callable[[object], Needs]) -> None:
    """Services added by later modules declare their scopes here; duplicates are errors."""
    if method in RULES:
        raise ValueError(f"auth rule for {method} registered twice")
    RULES[method] = rule


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        rule = RULES.get(details.method)
        token = bearer_token(details.invocation_metadata)

        async def admit(request, context) -> None:
            try:
                if rule is None:  # a method nobody declared scopes for is closed, not open
                    raise PermissionDeniedError(f"{details.method} is not covered by any auth rule")
                principal = self.tokens.authenticate(token)
                for namespace, scope in rule(request):
                    self.tokens.authorize(principal, namespace, scope)
            except Exception as exc:  # noqa: BLE001
                await abort(context, exc)
            set_caller(principal)  # each call runs in its own task, so this ends with it

        # Streaming requests carry no namespace up front (their rules ignore
        # the request); a streaming response is an async generator, or a
        # coroutine that writes on the context (to bound each write in time).
        for attr, factory, request_first, stream_out in _SHAPES:
            inner = getattr(handler, attr)
            if inner is not None:
                break

        if stream_out and inspect.isasyncgenfunction(inner):

            async def behaviour(request, context):
                await admit(request if request_first else None, context)
                async for item in inner(request, context):
                    yield item

        else:

            async def behaviour(request, context):
                await admit(request if request_first else None, context)
                return await inner(request, context)

        return factory(behaviour, handler.request_deserializer, handler.response_serializer)


# (handler attribute, handler factory, request is a message, response is a stream)
_SHAPES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, True, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, False, True),
)
