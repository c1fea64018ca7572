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

from deltahub.errors import ERROR_CLASS_KEY, DeltahubError, error_record

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
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "DATA_LOSS": grpc.StatusCode.DATA_LOSS,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


async def abort(context: grpc.aio.ServicerContext, exc: BaseException):
    if isinstance(exc, grpc.aio.AbortError):  # an abort already under way (the auth check's)
        raise exc
    if not isinstance(exc, DeltahubError):
        log.exception("unexpected error", exc_info=exc)
    record = error_record(exc)  # the same record a failed job keeps
    if record["class"]:
        context.set_trailing_metadata(((ERROR_CLASS_KEY, record["class"]),))
    await context.abort(STATUS.get(record["code"], grpc.StatusCode.INTERNAL), record["message"])


def rpc_method(fn=None, *, heavy: bool = False):
    """Wraps a servicer method so errors become statuses, whatever its shape.

    A plain function is blocking work: it runs on the servicer's bounded pool
    (``heavy`` ones on the pool that small reads never wait behind). Coroutines
    and async generators run on the event loop and must not block.
    """
    if fn is None:
        return functools.partial(rpc_method, heavy=heavy)
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self, request, context):
            try:
                async for item in fn(self, request, context):
                    yield item
            except Exception as exc:  # noqa: BLE001 - the one translation point
                await abort(context, exc)

        return stream

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def coroutine(self, request, context):
            try:
                return await fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - the one translation point
                await abort(context, exc)

        return coroutine

    @functools.wraps(fn)
    async def blocking(self, request, context):
        try:
            return await self.blocking.run(fn, self, request, context, heavy=heavy)
        except Exception as exc:  # noqa: BLE001 - the one translation point
            await abort(context, exc)

    return blocking
