"""The one place where gRPC errors become deltahub exceptions, client side.

The server sends each :class:`deltahub.errors.DeltahubError` as the status in
its ``code``; this maps the status back to the same class, keeping the
server's message, so callers catch ``NotFoundError`` and not ``RpcError``.
"""

from __future__ import annotations

import functools

import grpc

from deltahub.errors import CLASS_BY_NAME, CLASS_FOR_CODE, ERROR_CLASS_KEY, DeltahubError, UnavailableError


def translate(err: grpc.RpcError, *, address: str = "") -> DeltahubError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f"cannot reach the hub at {address or '?'}: {message}")
    named = dict(err.trailing_metadata() or ()).get(ERROR_CLASS_KEY) if hasattr(err, "trailing_metadata") else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and named is None:  # the client's own deadline
        return UnavailableError(f"the hub at {address or '?'} did not answer in time: {message}")
    cls = CLASS_BY_NAME.get(named) or CLASS_FOR_CODE.get(code.name, DeltahubError)
    if cls.code != code.name:  # never trust a name that contradicts the status
        cls = CLASS_FOR_CODE.get(code.name, DeltahubError)
    return cls(message or code.name)


def translated(fn):
    """Decorates a Hub method so RpcErrors surface as deltahub errors."""

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except grpc.RpcError as err:
            raise translate(err, address=self.address) from None

    return call
