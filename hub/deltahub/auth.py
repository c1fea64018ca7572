"""Bearer tokens with scopes per namespace. Pure: no transport here.

A token file (YAML or JSON) lists tokens, each with scopes by namespace::

    tokens:
      - name: ci
        token: "s3cret"          # or  sha256: "<hex digest of the token>"
        scopes: {"*": read, finance: write}

Scopes are ordered: read < write < admin; ``*`` is every namespace. A token
may be given in clear or as its sha256 so the file need not hold secrets.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from deltahub.errors import InvalidInputError, PermissionDeniedError, UnauthenticatedError

ANY_NAMESPACE = "*"
# Namespaces the hub itself writes for everyone (assembled models): reading a
# revision there needs read on every namespace its lineage draws from as well.
SHARED_NAMESPACES = frozenset({"assembled"})


class Scope(enum.IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> "Scope":
        try:
            return cls[str(text).upper()]
        except KeyError:
            raise InvalidInputError(f"unknown scope {text!r}; known scopes: read, write, admin") from None


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: dict[str, Scope] = field(default_factory=dict)

    def scope_in(self, namespace: str) -> Scope | None:
        return max(
            (s for ns, s in self.scopes.items() if ns in (namespace, ANY_NAMESPACE)),
            default=None,
        )

    def namespaces_with(self, scope: Scope) -> frozenset[str] | None:
        """The namespaces this principal holds ``scope`` in; None when that is every namespace."""
        if (self.scopes.get(ANY_NAMESPACE) or 0) >= scope:
            return None
        return frozenset(ns for ns, s in self.scopes.items() if s >= scope)

    def allows(self, namespace: str | None, scope: Scope) -> bool:
        """namespace None means 'somewhere': any namespace granting the scope will do."""
        if namespace is None:
            return any(s >= scope for s in self.scopes.values())
        have = self.scope_in(namespace)
        return have is not None and have >= scope


ANONYMOUS = Principal("anonymous", {ANY_NAMESPACE: Scope.ADMIN})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """Maps bearer tokens to principals; empty means the hub is open (loopback only)."""

    def __init__(self, entries: dict[str, Principal] | None = None) -> None:
        self._by_digest = dict(entries or {})

    def add(self, token: str, principal: Principal) -> None:
        """Adds one token (the server's own, for its in-process worker)."""
        self._by_digest[_digest(token)] = principal

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def parse(cls, text: str, *, source: str = "tokens") -> "TokenTable":
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InvalidInputError(f"{source}: not valid YAML/JSON ({err})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
            raise InvalidInputError(f"{source}: expected a mapping with a 'tokens' list")
        entries: dict[str, Principal] = {}
        for i, item in enumerate(doc["tokens"]):
            if not isinstance(item, dict):
                raise InvalidInputError(f"{source}: tokens[{i}] must be a mapping")
            name = str(item.get("name") or f"token-{i}")
            if "token" in item:
                digest = _digest(str(item["token"]))
            elif "sha256" in item:
                digest = str(item["sha256"]).lower()
            else:
                raise InvalidInputError(f"{source}: tokens[{i}] ({name}) has neither 'token' nor 'sha256'")
            scopes = item.get("scopes")
            if not isinstance(scopes, dict) or not scopes:
                raise InvalidInputError(f"{source}: tokens[{i}] ({name}) needs a 'scopes' mapping of namespace -> scope")
            entries[digest] = Principal(name, {str(ns): Scope.parse(s) for ns, s in scopes.items()})
        return cls(entries)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, environ: dict[str, str] | None = None) -> "TokenTable":
        """From a file, else from ``DELTAHUB_TOKENS`` (inline YAML/JSON) or ``DELTAHUB_TOKENS_FILE``."""
        env = os.environ if environ is None else environ
        if path:
            p = Path(path)
            if not p.is_file():
                raise InvalidInputError(f"tokens file {p} does not exist")
            return cls.parse(p.read_text(), source=str(p))
        if env.get("DELTAHUB_TOKENS"):
            return cls.parse(env["DELTAHUB_TOKENS"], source="DELTAHUB_TOKENS")
        if env.get("DELTAHUB_TOKENS_FILE"):
            return cls.load(env["DELTAHUB_TOKENS_FILE"], environ={})
        return cls()

    def authenticate(self, token: str | None) -> Principal:
        if not self:
            return ANONYMOUS
        if not token:
            raise UnauthenticatedError("this hub needs a bearer token (--token or DELTAHUB_TOKEN)")
        digest = _digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise UnauthenticatedError("the bearer token is not known to this hub")

    @staticmethod
    def authorize(principal: Principal, namespace: str | None, scope: Scope) -> None:
        if not principal.allows(namespace, scope):
            where = f"namespace {namespace!r}" if namespace else "any namespace"
            raise PermissionDeniedError(f"token {principal.name!r} lacks {scope.name.lower()} scope on {where}")



# The principal a request runs as, set by the transport for the whole request
# (threads it hands work to included); None for the hub's own work.
_caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("deltahub_caller", default=None)


def set_caller(principal: Principal | None) -> None:
    _caller.set(principal)


def current_caller() -> Principal | None:
    return _caller.get()


@contextlib.contextmanager
def acting_as_hub() -> Iterator[None]:
    """The hub's own work inside a request (keeping the router's index current): no caller to check."""
    token = _caller.set(None)
    try:
        yield
    finally:
        _caller.reset(token)


def require(namespace: str, scope: Scope) -> None:
    """Raises PermissionDeniedError unless the current caller (if any) holds ``scope`` on ``namespace``."""
    principal = _caller.get()
    if principal is not None:
        TokenTable.authorize(principal, namespace, scope)


def require_read(artifact: str, parents: tuple[str, ...] = ()) -> None:
    """Read access to one revision: its namespace, and for a shared namespace every parent's too."""
    namespace = artifact.split("/", 1)[0]
    require(namespace, Scope.READ)
    principal = _caller.get()
    if principal is None or namespace not in SHARED_NAMESPACES:
        return
    for parent in parents:
        source = parent.split("/", 1)[0]
        if not principal.allows(source, Scope.READ):
            raise PermissionDeniedError(
                f"{artifact} was built from {parent.split('@', 1)[0]}, and token {principal.name!r} lacks read "
                f"scope on namespace {source!r}: ask for read there, or assemble into a namespace you own (--out)"
            )
