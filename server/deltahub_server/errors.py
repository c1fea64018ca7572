"""The one place where exceptions become gRPC statuses.

Expected failures are :class:`deltahub.errors.DeltahubError` subclasses and
carry their status name; anything else is a bug: logged with its traceback
and answered INTERNAL without leaking internals.
"""

from __future__ import annotations

import functools
import inspect
import logging

import grpc

from deltahub.errors import CLASS_BY_NAME, ERROR_CLASS_KEY, DeltahubError

log = logging.getLogger("deltahub.server")

STATUS = {
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "ABORTED": grpc.StatusCode.ABORTED,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "CANCELLED": grpc.StatusCode.CANCELLED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "DATA_LOSS": grpc.StatusCode.DATA_LOSS,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, DeltahubError):
        return STATUS.get(exc.code, grpc.StatusCode.INTERNAL), str(exc)
    log.exception("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def abort(context: grpc.ServicerContext, exc: BaseException):
    code, message = status_for(exc)
    if type(exc).__name__ in CLASS_BY_NAME:
        context.set_trailing_metadata(((ERROR_CLASS_KEY, type(exc).__name__),))
    context.abort(code, message)


def rpc_method(fn):
    """Wraps a servicer method (unary or streaming response) so errors become statuses."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self, request, context):
            try:
                yield from fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - the one translation point
                abort(context, exc)

        return stream

    @functools.wraps(fn)
    def unary(self, request, context):
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the one translation point
            abort(context, exc)

    return unary
