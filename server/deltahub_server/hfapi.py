"""The part of the Hugging Face Hub's HTTP API that downloads use, read-only, over the hub's revisions.

``repo_id`` is an artifact name (``namespace/name``); ``revision`` a ref, a
tag or a revision id (a prefix of at least 12 hex digits works). The commit
id reported (``sha``, ``X-Repo-Commit``) is the revision id's first 40 hex
digits: the form huggingface_hub's commit-hash checks accept, and one that
resolves to the same revision, so a download by it pins the exact bytes.

Served on aiohttp in the gRPC server's own event loop; catalog reads run on
the same bounded pool as the gRPC calls, and files stream from the blob
store in chunks (a ``Range`` request resumes a download), so no request
holds a whole file in memory. Errors carry huggingface.co's ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the client
raises its own exception classes; a missing or unknown token on a hub with
tokens is 401, a token without read scope 403. What the client reads was
taken from huggingface_hub's ``file_download.py`` (``get_hf_file_metadata``:
``X-Repo-Commit``, ``ETag``, ``Content-Length``) and ``hf_api.py``
(``model_info``, ``list_repo_tree``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
from contextlib import aclosing

from aiohttp import web

from deltahub import auth as access
from deltahub.artifacts import Revision
from deltahub.auth import Scope, TokenTable
from deltahub.errors import (DeltahubError, InvalidInputError, LimitExceededError, NotFoundError,
                             PermissionDeniedError, UnauthenticatedError)
from deltahub.store import HubStore

COMMIT_CHARS = 40
CHUNK_BYTES = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def commit_id(rev: Revision) -> str:
    return rev.digest[:COMMIT_CHARS]


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return web.json_response({"error": message}, status=status, headers=headers)


class HfEndpoint:
    def __init__(self, store: HubStore, tokens: TokenTable, blocking, streams) -> None:
        """``streams``: the gRPC side's stream budget, so a download here counts against the same
        --max-streams-per-principal and --stream-idle-timeout as one over gRPC."""
        self.store, self.tokens, self.blocking, self.streams = store, tokens, blocking, streams
        self.idle_s = streams.limits.stream_idle_s

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        repo = "/{namespace}/{name}"
        app.router.add_get("/api/models" + repo, self.model_info)
        app.router.add_get("/api/models" + repo + "/revision/{revision}", self.model_info)
        app.router.add_get("/api/models" + repo + "/tree/{revision}", self.tree)
        app.router.add_get("/api/models" + repo + "/tree/{revision}/{path:.+}", self.tree)
        app.router.add_get(repo + "/resolve/{revision}/{filename:.+}", self.resolve)  # and HEAD
        return app

    # -- errors: one table, the client's codes ----------------------------------------
    @web.middleware
    async def _errors(self, request, handler):
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except UnauthenticatedError as err:
            return _error(401, str(err))
        except PermissionDeniedError as err:
            return _error(403, str(err))
        except _NotFound as err:
            return _error(404, str(err), err.code)
        except InvalidInputError as err:
            return _error(400, str(err))
        except LimitExceededError as err:
            return _error(429, str(err))
        except DeltahubError as err:  # any other refusal of the request (the gRPC side's FAILED_PRECONDITION, ...)
            return _error(400, str(err))

    # -- lookups ---------------------------------------------------------------------
    async def _revision(self, request) -> Revision:
        return (await self._lookup(request))[1]

    async def _lookup(self, request):
        principal = self.tokens.authenticate(_bearer(request))
        repo_id = f"{request.match_info['namespace']}/{request.match_info['name']}"
        revision = request.match_info.get("revision") or "main"

        def find() -> Revision:
            access.set_caller(principal)
            # scope first: a token that cannot read the namespace learns nothing of what is in it
            access.require(request.match_info["namespace"], Scope.READ)
            try:
                self.store.artifact(repo_id)
            except (NotFoundError, InvalidInputError) as err:
                raise _NotFound("RepoNotFound", f"Repository {repo_id} not found: {err}") from None
            try:
                return self.store.resolve(f"{repo_id}@{revision}")
            except (NotFoundError, InvalidInputError) as err:  # huggingface.co: an unknown or malformed rev id
                raise _NotFound("RevisionNotFound", f"Invalid rev id: {revision}: {err}") from None

        return principal, await self.blocking.run(find)

    # -- routes ----------------------------------------------------------------------
    async def model_info(self, request) -> web.Response:
        rev = await self._revision(request)
        siblings = [{"rfilename": f.path, "size": f.size, "blobId": f.sha256,
                     "lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 0}} for f in rev.files]
        return web.json_response({
            "_id": rev.digest, "id": rev.artifact, "modelId": rev.artifact, "sha": commit_id(rev),
            "private": bool(self.tokens), "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [rev.kind.value, *(f"{k}:{v}" for k, v in sorted(rev.labels.items()))],
            "lastModified": _iso(rev.created_at), "createdAt": _iso(rev.created_at),
            "siblings": siblings, "usedStorage": rev.size,
        })

    async def tree(self, request) -> web.Response:
        rev = await self._revision(request)
        under = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        prefix = under + "/" if under else ""
        entries, dirs = [], set()
        for f in rev.files:
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):]
            if "/" in rest and not recursive:
                dirs.add(prefix + rest.split("/", 1)[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                dirs.update(prefix + "/".join(parts[:i + 1]) for i in range(len(parts)))
            entries.append({"type": "file", "oid": f.sha256, "size": f.size, "path": f.path,
                            "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 0}})
        if under and not entries and not dirs:
            raise _NotFound("EntryNotFound", f"{under} does not exist in {rev.artifact}@{commit_id(rev)}")
        listing = [{"type": "directory", "oid": "", "size": 0, "path": d} for d in sorted(dirs)]
        return web.json_response(listing + sorted(entries, key=lambda e: e["path"]))

    async def resolve(self, request) -> web.StreamResponse:
        principal, rev = await self._lookup(request)
        async with self.streams.hold(principal.name, f"download of {request.match_info['filename'][:100]}"):
            return await self._send(request, rev)

    async def _send(self, request, rev: Revision) -> web.StreamResponse:
        filename = request.match_info["filename"]
        entry = next((f for f in rev.files if f.path == filename), None)
        if entry is None:
            raise _NotFound("EntryNotFound", f"{filename} does not exist in {rev.artifact}@{commit_id(rev)}")
        start, end = 0, entry.size - 1
        status = 200
        if "Range" in request.headers and entry.size:
            m = _RANGE.match(request.headers["Range"].strip())
            if not m or (not m[1] and not m[2]):
                return _error(416, f"Range {request.headers['Range'][:60]!r} is not bytes=START-[END]")
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else end, end)
            else:  # the last N bytes
                start = max(0, entry.size - int(m[2]))
            if start > end or start >= entry.size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{entry.size}"})
            status = 206
        headers = {
            "ETag": f'"{entry.sha256}"', "X-Repo-Commit": commit_id(rev), "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream", "Content-Length": str(end - start + 1 if entry.size else 0),
            "Content-Disposition": f'attachment; filename="{filename.rsplit("/", 1)[-1]}"',
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        response = web.StreamResponse(status=status, headers=headers)
        if request.method == "HEAD" or not entry.size:
            await response.prepare(request)
            return response
        # streamed from the blob store (an object store answers the range itself), one chunk at a time;
        # opened before the headers go, so a blob stored as a delta is rebuilt (or found corrupt) first
        chunks = await self.blocking.run(functools.partial(
            self.store.blobs.read_chunks, entry.sha256, offset=start, length=end - start + 1,
            chunk_size=CHUNK_BYTES))
        await response.prepare(request)
        async with aclosing(self.blocking.drain(chunks)) as stream:
            async for chunk in stream:
                # a reader that takes nothing for the stream idle timeout ends the download
                await asyncio.wait_for(response.write(chunk), timeout=self.idle_s)
        await response.write_eof()
        return response


class _NotFound(NotFoundError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _bearer(request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


async def start_http(endpoint: HfEndpoint, address: str) -> web.AppRunner:
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(endpoint.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]
