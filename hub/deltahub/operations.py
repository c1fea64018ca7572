"""Long-running operations: run work in the background, report progress, allow cancelling.

An operation's id is ``namespace/hex``, the namespace being the one the
work writes to, so access rules can be checked from the id alone.
Operations live in memory: a server restart forgets them (the revisions
they committed stay; a merge asked again is answered from the recipe cache).
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from deltahub.errors import CancelledError, DeltahubError, NotFoundError

RUNNING, SUCCEEDED, FAILED, CANCELLED = "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
FINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Operation:
    id: str
    kind: str
    state: str = RUNNING
    stage: str = "queued"
    done: int = 0
    total: int = 0
    bytes: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    error_code: str = ""
    error_message: str = ""
    result: dict[str, Any] | None = None
    version: int = 0  # bumps on every change; watchers (the server polls) send each new one

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def finished(self) -> bool:
        return self.state in FINAL


# (stage, done, total, bytes) -> None
Report = Callable[[str, int, int, int], None]


class OperationManager:
    def __init__(self, *, workers: int = 2, keep_finished: int = 1000) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deltahub-op")
        self._ops: dict[str, Operation] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()  # watchers poll versions; nobody waits on a change
        self._keep = keep_finished

    def start(self, kind: str, namespace: str, work: Callable[[Report, Callable[[], bool]], dict]) -> Operation:
        op = Operation(id=f"{namespace}/{uuid.uuid4().hex}", kind=kind)
        cancel = threading.Event()
        with self._lock:
            self._ops[op.id] = op
            self._cancel[op.id] = cancel
            self._trim()
        self._pool.submit(self._run, op.id, work, cancel)
        return op

    def _update(self, op_id: str, **changes) -> None:
        with self._lock:
            op = self._ops[op_id]
            self._ops[op_id] = replace(op, version=op.version + 1, **changes)

    def _run(self, op_id: str, work, cancel: threading.Event) -> None:
        def report(stage: str, done: int, total: int, nbytes: int) -> None:
            self._update(op_id, stage=stage, done=done, total=total, bytes=nbytes)

        try:
            result = work(report, cancel.is_set)
        except CancelledError as err:
            self._update(op_id, state=CANCELLED, stage="done", finished_at=time.time(),
                         error_code=err.code, error_message=str(err))
        except DeltahubError as err:
            self._update(op_id, state=FAILED, stage="done", finished_at=time.time(),
                         error_code=err.code, error_message=str(err))
        except Exception as err:  # noqa: BLE001 - a bug: reported as INTERNAL, not a hung operation
            import logging

            logging.getLogger("deltahub.operations").exception("operation %s failed", op_id)
            self._update(op_id, state=FAILED, stage="done", finished_at=time.time(),
                         error_code="INTERNAL", error_message=f"internal error ({type(err).__name__}); see the server log")
        else:
            self._update(op_id, state=SUCCEEDED, stage="done", finished_at=time.time(), result=result)

    def get(self, op_id: str) -> Operation:
        with self._lock:
            if op_id not in self._ops:
                raise NotFoundError(f"operation {op_id!r} does not exist (operations are kept in memory until restart)")
            return self._ops[op_id]

    def list(self, namespace: str | None = None) -> list[Operation]:
        with self._lock:
            ops = list(self._ops.values())
        return [o for o in ops if namespace is None or o.namespace == namespace]

    def cancel(self, op_id: str) -> Operation:
        op = self.get(op_id)
        if not op.finished:
            self._cancel[op_id].set()
        return self.get(op_id)

    def _trim(self) -> None:
        done = [o for o in self._ops.values() if o.finished]
        for o in sorted(done, key=lambda o: o.finished_at)[: max(0, len(done) - self._keep)]:
            self._ops.pop(o.id, None)
            self._cancel.pop(o.id, None)

    def shutdown(self) -> None:
        """Cancels running operations and waits for their threads; queued ones never start."""
        for event in self._cancel.values():
            event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
