"""The one hierarchy of deltahub errors.

Every class subclasses a built-in as well, so callers that know nothing of
deltahub can still catch ``LookupError`` or ``ValueError``. The server maps
each class to one gRPC status (``deltahub_server.errors``) and the client maps
the status back to the same class (``deltahub_client.errors``): both tables
are keyed by :attr:`DeltahubError.code`, the status name, so they cannot drift.
"""

from __future__ import annotations


class DeltahubError(Exception):
    """Base of every error deltahub raises on purpose."""

    code = "INTERNAL"


class NotFoundError(DeltahubError, LookupError):
    """An artifact, revision, ref, blob or job does not exist."""

    code = "NOT_FOUND"


class InvalidInputError(DeltahubError, ValueError):
    """The request itself is wrong: bad name, bad file, bad tensor, bad config."""

    code = "INVALID_ARGUMENT"


class ChecksumMismatchError(InvalidInputError):
    """Bytes received do not hash to the sha256 they were declared with."""


class UnsafeFormatError(InvalidInputError):
    """A pickle-based weight file (.bin, .pt, ...): never unpickled, never stored."""


class PreconditionError(DeltahubError, RuntimeError):
    """The request is well formed but the hub's state does not allow it
    (blobs missing at commit, mismatched base, revision still referenced)."""

    code = "FAILED_PRECONDITION"


class AlreadyExistsError(DeltahubError, FileExistsError):
    """Something that must be new already exists."""

    code = "ALREADY_EXISTS"


class ConflictError(DeltahubError, RuntimeError):
    """A concurrent change got there first; retrying may succeed."""

    code = "ABORTED"


class StaleRefError(ConflictError):
    """Compare-and-swap on a ref failed: it no longer points where the caller expected."""


class LimitExceededError(DeltahubError, OverflowError):
    """A configured limit (upload size, revision size) would be exceeded."""

    code = "RESOURCE_EXHAUSTED"


class UnauthenticatedError(DeltahubError, PermissionError):
    """No token, or a token the hub does not know."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(DeltahubError, PermissionError):
    """A known token without the scope the call needs on that namespace."""

    code = "PERMISSION_DENIED"


class CancelledError(DeltahubError, RuntimeError):
    """Long work was cancelled by its caller."""

    code = "CANCELLED"


class DeadlineExceededError(DeltahubError, TimeoutError):
    """A call or stream ran past a time limit the hub sets (an idle or too slow stream)."""

    code = "DEADLINE_EXCEEDED"


class UnavailableError(DeltahubError, ConnectionError):
    """The hub cannot be reached."""

    code = "UNAVAILABLE"


class IntegrityError(DeltahubError, RuntimeError):
    """Stored or downloaded bytes are corrupt (sha256 differs from the manifest)."""

    code = "DATA_LOSS"


ALL_ERRORS: tuple[type[DeltahubError], ...] = (
    NotFoundError,
    InvalidInputError,
    ChecksumMismatchError,
    UnsafeFormatError,
    PreconditionError,
    AlreadyExistsError,
    ConflictError,
    StaleRefError,
    LimitExceededError,
    UnauthenticatedError,
    PermissionDeniedError,
    CancelledError,
    DeadlineExceededError,
    UnavailableError,
    IntegrityError,
)

# The server names the class in trailing metadata under this key, so the
# client raises the same class; without it, the code picks the general one.
ERROR_CLASS_KEY = "deltahub-error"
CLASS_BY_NAME: dict[str, type[DeltahubError]] = {cls.__name__: cls for cls in ALL_ERRORS}
CLASS_FOR_CODE: dict[str, type[DeltahubError]] = {}
for _cls in ALL_ERRORS:
    CLASS_FOR_CODE.setdefault(_cls.code, _cls)


# -- the error record of long-running work --------------------------------------
INTERNAL_MESSAGE = "internal error ({name}); see the server log"


def error_record(exc: BaseException) -> dict[str, str]:
    """What a failure of long-running work keeps: the status name, the class and the message a direct
    call would have raised. Anything that is not a deltahub error is a bug: INTERNAL, without internals."""
    if isinstance(exc, DeltahubError):
        name = type(exc).__name__
        return {"code": exc.code, "class": name if name in CLASS_BY_NAME else "", "message": str(exc)}
    return {"code": "INTERNAL", "class": "", "message": INTERNAL_MESSAGE.format(name=type(exc).__name__)}


def from_record(code: str, cls: str, message: str) -> DeltahubError:
    """The exception a record stands for: its class when it names one of the code's, else the code's class."""
    known = CLASS_BY_NAME.get(cls)
    if known is None or known.code != code:  # never trust a name that contradicts the code
        known = CLASS_FOR_CODE.get(code, DeltahubError)
    return known(message or code)
