"""What keeps the serving path free: bounded pools for blocking work, stream budgets, stream timeouts.

The server runs on ``grpc.aio``: a call waiting on its client (a stalled
upload, a slow reader, a watcher) costs a coroutine, not a thread. Store
calls block (disk, SQLite, Redis, tensors), so they run on bounded thread
pools; heavy ones (evaluation, task vectors, assembly, resolving a merge)
on a pool of their own, so they cannot take every thread that small reads
need. Long-lived streams are counted per principal; each is bounded in
idle time and, for uploads, in rate.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Iterator, TypeVar

import grpc

from deltahub.errors import CancelledError, DeadlineExceededError, LimitExceededError
from deltahub.limits import StreamLimits

T = TypeVar("T")


class Blocking:
    """Two bounded pools for blocking calls; the caller's context variables (its principal) go along."""

    def __init__(self, workers: int = 16, heavy_workers: int = 2) -> None:
        self._light = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deltahub-rpc")
        self._heavy = ThreadPoolExecutor(max_workers=heavy_workers, thread_name_prefix="deltahub-heavy")

    async def run(self, fn: Callable[..., T], *args, heavy: bool = False) -> T:
        ctx = contextvars.copy_context()
        pool = self._heavy if heavy else self._light
        return await asyncio.get_running_loop().run_in_executor(pool, ctx.run, fn, *args)

    async def settled(self, fn: Callable[..., T], *args, orphan: Callable[[T], None] | None = None) -> T:
        """Like :meth:`run`, but a call cancelled meanwhile (its client went away) first lets the thread
        finish, so nobody cleans up under it; what it returned goes to ``orphan`` (to close it)."""
        fut = asyncio.ensure_future(self.run(fn, *args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait({fut})
            if orphan is not None and not fut.cancelled() and fut.exception() is None:
                orphan(fut.result())
            raise

    async def drain(self, chunks: Iterator[T]) -> AsyncIterator[T]:
        """The items of a blocking iterator (a blob's chunks), each taken on the pool; closed at the end,
        and after the ``next`` under way when the stream is cancelled (closing a generator while it
        runs fails: a reader that leaves mid-chunk must not make that an error)."""
        try:
            while item := await self.settled(next, chunks, None):
                yield item
        finally:
            chunks.close()

    def shutdown(self) -> None:
        self._light.shutdown(wait=False, cancel_futures=True)
        self._heavy.shutdown(wait=False, cancel_futures=True)


class StreamBudget:
    """Counts each principal's open streams; one more than the limit is RESOURCE_EXHAUSTED."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self._open: Counter[str] = Counter()

    @asynccontextmanager
    async def hold(self, principal: str, what: str) -> AsyncIterator[None]:
        limit = self.limits.max_streams_per_principal
        if self._open[principal] >= limit:
            raise LimitExceededError(
                f"token {principal!r} already has {self._open[principal]} streams open (uploads, downloads, "
                f"watches); the limit is {limit} (--max-streams-per-principal): finish or close some, then "
                f"retry this {what}"
            )
        self._open[principal] += 1
        try:
            yield
        finally:
            self._open[principal] -= 1
            if not self._open[principal]:
                del self._open[principal]

    def open_streams(self, principal: str) -> int:
        return self._open[principal]


class RequestStream:
    """A call's request stream read with an idle bound, ending as soon as the client goes away.

    grpc.aio does not wake a pending read when the client cancels, so each
    read races the call's end (its done callback).
    """

    def __init__(self, stream, context, idle_s: float) -> None:
        self._stream, self.idle_s = stream.__aiter__(), idle_s
        self._gone = asyncio.Event()
        context.add_done_callback(lambda _: self._gone.set())

    async def next(self, what: str):
        """The next message, or None at the end; CancelledError once the client is gone."""
        read = asyncio.ensure_future(self._stream.__anext__())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            done, _ = await asyncio.wait({read, gone}, timeout=self.idle_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if read in done:
            try:
                return read.result()
            except StopAsyncIteration:
                return None
        read.cancel()
        if gone in done or self._gone.is_set():
            raise CancelledError(f"{what}: the client went away; what arrived is kept, resume from there")
        raise DeadlineExceededError(
            f"{what}: no message for {self.idle_s:g} s (--stream-idle-timeout); what arrived is kept, resume from there"
        )


async def write_within(context, message, idle_s: float, what: str) -> None:
    """Sends one message of a response stream; a reader that takes none for ``idle_s`` ends the call."""
    try:
        await asyncio.wait_for(context.write(message), timeout=idle_s)
    except asyncio.TimeoutError:
        raise DeadlineExceededError(
            f"{what}: the client read nothing for {idle_s:g} s (--stream-idle-timeout); the stream was ended"
        ) from None
    except grpc.aio.InternalError:
        # gRPC refused the write because the call has ended: the client went away, perhaps before
        # context.done() says so (a reader that cancels mid-stream); not a fault of the hub
        raise CancelledError(f"{what}: the client went away") from None
    except Exception:
        if context.done():  # the client went away (a killed worker's download): not a fault of the hub
            raise CancelledError(f"{what}: the client went away") from None
        raise


class RateFloor:
    """Ends an upload that averages below a floor after a grace period (a slow client holding a blob's lock)."""

    def __init__(self, floor_bytes_per_s: int, grace_s: float) -> None:
        self.floor = floor_bytes_per_s
        self.grace_s = grace_s
        self.start = time.monotonic()
        self.received = 0

    def add(self, n: int, what: str) -> None:
        self.received += n
        elapsed = time.monotonic() - self.start
        if self.floor and elapsed > self.grace_s and self.received < self.floor * elapsed:
            raise DeadlineExceededError(
                f"{what}: {self.received} bytes in {elapsed:.0f} s is below the floor of {self.floor} bytes/s "
                "(--min-upload-rate); what arrived is kept, resume from there on a faster link"
            )


async def watch(streams: StreamBudget, blocking: Blocking, context, what: str, get: Callable[[], T],
                poll_s: float = 0.2) -> AsyncIterator[T]:
    """Yields a versioned record (a job) now and at each new version until it is finished.

    Polls instead of waiting on the writer's condition, so a watcher holds no
    thread between looks; it counts as one of its principal's streams and ends
    after ``max_watch_s`` (the client watches again).
    """
    from deltahub_server.auth import current_principal

    async with streams.hold(current_principal().name, f"watch of a {what}"):
        seen = -1
        deadline = time.monotonic() + streams.limits.max_watch_s
        while not context.done() and time.monotonic() < deadline:
            item = await blocking.run(get)
            if item.version != seen:
                seen = item.version
                yield item
                if item.finished:
                    return
            await asyncio.sleep(poll_s)
