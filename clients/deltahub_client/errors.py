"""The one place where gRPC errors become deltahub exceptions, client side.

The server sends each :class:`deltahub.errors.DeltahubError` as the status in
its ``code``; this maps the status back to the same class, keeping the
server's message, so callers catch ``NotFoundError`` and not ``RpcError``.
"""

from __future__ import annotations

import functools
import inspect

import grpc

from deltahub.errors import ERROR_CLASS_KEY, DeltahubError, UnavailableError, from_record


def translate(err: grpc.RpcError, *, address: str = "") -> DeltahubError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f"cannot reach the hub at {address or '?'}: {message}")
    named = dict(err.trailing_metadata() or ()).get(ERROR_CLASS_KEY) if hasattr(err, "trailing_metadata") else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and named is None:  # the client's own deadline
        return UnavailableError(f"the hub at {address or '?'} did not answer in time: {message}")
    return from_record(code.name, named or "", message)


def translated(fn):
    """Decorates a Hub method so RpcErrors surface as deltahub errors."""

    if inspect.isgeneratorfunction(fn):  # a stream: errors surface where the caller iterates
        @functools.wraps(fn)
        def stream(self, *args, **kwargs):
            try:
                yield from fn(self, *args, **kwargs)
            except grpc.RpcError as err:
                raise translate(err, address=self.address) from None

        return stream

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except grpc.RpcError as err:
            raise translate(err, address=self.address) from None

    return call
