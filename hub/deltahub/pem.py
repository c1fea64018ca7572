"""Reading the PEM files TLS is configured with (certificates, keys, CAs), on both sides of the wire."""

from __future__ import annotations

import os
from pathlib import Path

from deltahub.errors import InvalidInputError


def read_pem(path: str | os.PathLike | None, flag: str) -> bytes | None:
    """The file's bytes, None for no path; an unreadable file names the flag it came from."""
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InvalidInputError(f"{flag} {path}: {err.strerror}") from None
