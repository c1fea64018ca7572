"""The worker: take a job of any kind from the queue, run it, hand its result to the hub.

A worker talks to the queue (Redis, or the hub's catalog for its in-process
workers) for jobs, leases and progress, and to the hub over gRPC for
everything else. Its workspace is where inputs are read and outputs
written: the hub's own store for the in-process workers of ``deltahub
serve`` (nothing copied), a download cache for ``deltahub worker``.

Kinds: ``train`` (checkpoints pinned in the hub; the adapter is checkpointed
before it is pushed, so a worker dying between the push and the job's final
state leaves the next one the same bytes: the same revision), ``merge`` and
``assemble`` (once per recipe: a recipe built before is answered from the
hub's cache, and a recipe another job is building is waited for, through
the queue's flight of the recipe hash), ``evaluate`` and ``task_vector``.
Every failure is kept as the error record a direct call would have raised.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from deltahub.artifacts import DomainCard, Lineage
from deltahub.builds import build_merge, build_task_vector_files, evaluate
from deltahub.errors import (
    CancelledError, DeltahubError, InvalidInputError, NotFoundError, PermissionDeniedError, PreconditionError,
    error_record,
)
from deltahub.formats.dataset import read_rows
from deltahub.jobs import ASSEMBLE, EVALUATE, MERGE, TASK_VECTOR, TRAIN, Job, JobQueue, LeaseLostError
from deltahub.jobs import model as jobs_model
from deltahub.jobs.specs import EvaluateSpec, MergeSpec, TaskVectorSpec, TrainSpec
from deltahub_trainers import make_trainer
from deltahub_trainers.loop import Hooks, Progress, TrainInputs, pick_device, train
from deltahub_trainers.workspace import HubWorkspace

log = logging.getLogger("deltahub.worker")

CARD_SAMPLES = 16
# errors that another attempt cannot fix: the job fails at once
PERMANENT = (InvalidInputError, PreconditionError, NotFoundError, PermissionDeniedError)
CANCEL_POLL_S = 1.0
REPORT_EVERY_S = 0.5   # progress is written at most this often (and always at the end of a stage)
FLIGHT_POLL_S = 0.5


class _Lease:
    """Renews the job's lease in the background; notices cancellation and a lost lease."""

    def __init__(self, queue: JobQueue, job: Job, worker: str, shutdown: threading.Event) -> None:
        self.queue, self.job_id, self.worker = queue, job.id, worker
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._shutdown = shutdown
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)

    def __enter__(self) -> "_Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def seen(self, job: Job) -> None:
        if job.cancel_requested:
            self.cancel.set()

    def _run(self) -> None:
        # a cancel is seen within a second (a read), whatever the lease; the lease is renewed every third of it
        beat_every = self.queue.lease_s / 3
        last_beat = time.monotonic()
        while not self._stop.wait(min(CANCEL_POLL_S, beat_every)):
            try:
                if time.monotonic() - last_beat >= beat_every:
                    self.seen(self.queue.heartbeat(self.job_id, self.worker))
                    last_beat = time.monotonic()
                else:
                    self.seen(self.queue.get(self.job_id))
            except LeaseLostError:
                self.lost.set()
                return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease has slack for two
                log.warning("could not renew the lease of %s", self.job_id, exc_info=True)

    @property
    def given_up(self) -> bool:
        """The lease is lost, or the worker is shutting down: leave the job to the next worker."""
        return self.lost.is_set() or self._shutdown.is_set()

    @property
    def stopping(self) -> bool:
        return self.cancel.is_set() or self.given_up

    def check(self, where: str) -> None:
        if self.stopping:
            raise CancelledError(f"stopped {where}")


class _Reporter:
    """Progress to the queue, at most every REPORT_EVERY_S (a stage's first and last report always go)."""

    def __init__(self, worker: "Worker", job: Job, lease: _Lease) -> None:
        self.worker, self.job, self.lease = worker, job, lease
        self._last = (0.0, "")
        self._counts = (0, 0)
        self._metrics: dict = {}

    def __call__(self, stage: str, done: int, total: int, nbytes: int = 0, metrics: dict | None = None) -> None:
        if total:
            self._counts = (done, total)
        else:  # a stage that counts nothing (committing, waiting) keeps what the last one counted
            done, total = self._counts
        if metrics is None and not nbytes:
            metrics = self._metrics
        now = time.monotonic()
        if stage == self._last[1] and now - self._last[0] < REPORT_EVERY_S and not (total and done >= total):
            return
        self._last = (now, stage)
        metrics = {**(metrics or {}), **({"bytes": nbytes} if nbytes else {})}
        self._metrics = metrics
        self.lease.seen(self.worker.queue.progress(self.job.id, self.worker.name, stage, done, total, metrics))


class Worker:
    def __init__(self, hub, queue: JobQueue, *, device: str = "auto", name: str | None = None,
                 cache_dir: str | os.PathLike | None = None, workspace=None) -> None:
        self.hub, self.queue = hub, queue
        self.device = device
        self.device_type = pick_device(device)[0].type
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "deltahub-worker-cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        # the hub's own store for in-process workers; a download cache for remote ones
        self.ws = workspace or HubWorkspace(hub, self.cache)
        self._shutdown = threading.Event()
        self._runners = {TRAIN: self._train, MERGE: self._merge, ASSEMBLE: self._merge, EVALUATE: self._evaluate,
                         TASK_VECTOR: self._task_vector}

    def run(self, stop: threading.Event, *, max_jobs: int | None = None, claim_timeout_s: float = 1.0) -> int:
        """Takes and runs jobs until ``stop`` is set (or ``max_jobs`` ran); returns how many ran.

        A job running when ``stop`` is set stops at its next step without changing its state: its lease
        lapses and another worker resumes it (from its last checkpoint, for training).
        """
        self._shutdown = stop
        done = 0
        log.info("worker %s ready on %s", self.name, self.device_type)
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            try:
                job = self.queue.claim(self.name, self.device_type, timeout_s=claim_timeout_s)
            except Exception:  # noqa: BLE001 - the queue may be briefly unreachable: try again
                log.warning("could not claim a job", exc_info=True)
                stop.wait(claim_timeout_s)
                continue
            if job is not None:
                self.run_job(job)
                done += 1
        return done

    # -- one job ---------------------------------------------------------------
    def run_job(self, job: Job) -> Job | None:
        log.info("worker %s took %s %s (attempt %d of %d)", self.name, job.kind, job.id, job.attempts,
                 job.max_attempts)
        work = Path(tempfile.mkdtemp(prefix="deltahub-job-"))
        try:
            with _Lease(self.queue, job, self.name, self._shutdown) as lease:
                try:
                    runner = self._runners.get(job.kind)
                    if runner is None:
                        raise PreconditionError(f"this worker does not run {job.kind} jobs; upgrade it")
                    return runner(job, work, lease, _Reporter(self, job, lease))
                except LeaseLostError:
                    log.warning("lost the lease of %s; another worker carries on", job.id)
                    return None
                except CancelledError:
                    if lease.given_up:
                        log.warning("left %s (lease lost or shutting down); another worker carries on", job.id)
                        return None
                    # released before the final state is recorded, so whoever sees the state sees no pin;
                    # should this worker die in between, the job is cancelled on its next claim anyway
                    self._release(job)
                    return self.queue.cancelled(job.id, self.name)
                except PERMANENT as err:
                    self._release(job)  # a permanent failure is never retried: nothing to resume from
                    return self.queue.fail(job.id, self.name, error_record(err), retry=False)
                except Exception as err:  # noqa: BLE001 - anything else may pass on another attempt
                    if lease.given_up:  # stopping (the hub it talks to may be gone already): not the job's fault
                        log.warning("left %s while stopping (%s); it runs again", job.id, type(err).__name__)
                        return None
                    if not isinstance(err, DeltahubError):
                        log.exception("job %s failed on %s", job.id, self.name)
                    final = self.queue.fail(job.id, self.name, error_record(err), retry=True)
                    if final.finished:
                        self._release(job)
                    return final
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _release(self, job: Job) -> None:
        if job.kind != TRAIN:
            return
        try:
            self.hub.release_checkpoint(job.id, self.name)
        except DeltahubError:
            log.warning("could not release the checkpoint of %s", job.id, exc_info=True)

    # -- merges and assemblies ---------------------------------------------------------
    def _merge(self, job: Job, work: Path, lease: _Lease, report: _Reporter) -> Job:
        spec = MergeSpec.from_dict(job.spec)
        while True:
            lease.check("before the merge")
            found = self.hub.commit_job_result(job.id, self.name)  # built before (by any job): reuse it
            if found is not None:
                return self.queue.succeed(job.id, self.name, found)
            holder = self.queue.acquire_flight(spec.hash, job.id)
            if holder == job.id:
                break
            report("waiting", 0, 0, metrics={"building_in": holder})  # another job builds this recipe: its result is ours
            while not lease.stopping and self._building(holder):
                time.sleep(FLIGHT_POLL_S)
        try:
            files, metrics = build_merge(spec, self.ws, progress=report, cancelled=lambda: lease.stopping)
            try:
                lease.check("before the commit")
                report("committing", 0, 0)
                self.ws.publish(files)
                result = self.hub.commit_job_result(job.id, self.name, files, metrics)
            except BaseException:
                self.ws.discard([f.sha256 for f in files])
                raise
        finally:
            self.queue.release_flight(spec.hash, job.id)
        return self.queue.succeed(job.id, self.name, result)

    def _building(self, job_id: str) -> bool:
        try:
            return jobs_model.live(self.queue.get(job_id), time.time())
        except NotFoundError:
            return False

    # -- evaluation and task vectors ---------------------------------------------------
    def _evaluate(self, job: Job, work: Path, lease: _Lease, report: _Reporter) -> Job:
        result = evaluate(EvaluateSpec.from_dict(job.spec), self.ws, progress=report)
        lease.check("after the evaluation")
        return self.queue.succeed(job.id, self.name, result)

    def _task_vector(self, job: Job, work: Path, lease: _Lease, report: _Reporter) -> Job:
        files, metrics = build_task_vector_files(TaskVectorSpec.from_dict(job.spec), self.ws, progress=report)
        try:
            lease.check("before the commit")
            report("committing", 0, 0)
            self.ws.publish(files)
            result = self.hub.commit_job_result(job.id, self.name, files, metrics)
        except BaseException:
            self.ws.discard([f.sha256 for f in files])
            raise
        return self.queue.succeed(job.id, self.name, result)

    # -- training ----------------------------------------------------------------------
    def _fetch_blobs(self, files: list, dest: Path) -> Path:
        for path, sha, _size in files:
            self.hub.download_blob(sha, dest / path)
        return dest

    def _save_checkpoint(self, job: Job, folder: Path, step: int, extra: dict, prefix: str = "") -> None:
        files = {f"{prefix}{p.relative_to(folder).as_posix()}": p for p in sorted(folder.rglob("*")) if p.is_file()}
        entries = self.hub.upload_files(files)
        self.hub.pin_checkpoint(job.id, self.name, entries)
        self.queue.checkpoint(job.id, self.name, {"step": step, "files": [[e.path, e.sha256, e.size] for e in entries],
                                                  **extra})

    def _rows(self, specs) -> list[dict]:
        return [r for d in specs for r in read_rows(self.ws.files(self.ws.revision(d)))]

    def _train(self, job: Job, work: Path, lease: _Lease, report: _Reporter) -> Job:
        spec = TrainSpec.from_dict(job.spec)
        trainer = make_trainer(spec.trainer, spec.config)
        report("downloading", 0, 0)
        rows = self._rows(spec.datasets)
        ckpt = job.checkpoint
        if ckpt.get("done"):
            # trained by an attempt that died before its commit: push the same bytes
            adapter = self._fetch_blobs(ckpt["files"], work / "resume") / "adapter"
            metrics, rank_pattern = ckpt.get("metrics", {}), ckpt.get("rank_pattern")
        else:
            base_dir = self.ws.folder(self.ws.revision(spec.base), work / "inputs")
            replay = self._rows(spec.replay)
            resume_adapter = (self.ws.folder(self.ws.revision(spec.resume_from), work / "inputs")
                              if spec.resume_from else None)
            resume = self._fetch_blobs(ckpt["files"], work / "resume") if ckpt.get("files") else None
            lease.check("before the first step")  # cancelled while the inputs came down: no model load

            def progress(p: Progress) -> None:
                report("training", p.step, p.total, metrics=p.to_dict())

            hooks = Hooks(progress=progress, should_stop=lambda: lease.stopping,
                          checkpoint=lambda folder, step: self._save_checkpoint(job, folder, step, {}))
            result = train(trainer, TrainInputs(base_dir, rows, replay, resume_adapter, resume, self.device),
                           work / "train", hooks)
            adapter, metrics, rank_pattern = result.adapter_dir, result.metrics, result.rank_pattern
            self._save_checkpoint(job, adapter, metrics["steps"],
                                  {"done": True, "metrics": metrics, "rank_pattern": rank_pattern}, prefix="adapter/")
        lease.check("before the commit")
        report("committing", 0, 0)
        pushed = self.hub.push(adapter, spec.out, kind="adapter", base=spec.base, card=self._card(spec, rows),
                               labels={"trainer": spec.trainer, **spec.labels},
                               lineage=self._lineage(job, spec, trainer, metrics, rank_pattern))
        # Released before the success is recorded (so whoever sees SUCCEEDED sees no pin): safe, since the
        # checkpoint's adapter blobs are now the committed revision's, and a retry re-pushes those same blobs.
        self._release(job)
        final = self.queue.succeed(job.id, self.name, {"artifact": pushed.revision.artifact,
                                                       "digest": pushed.revision.digest,
                                                       "created": pushed.created})
        log.info("job %s committed %s (%s)", job.id, pushed.revision.spec, "new" if pushed.created else "existing")
        return final

    @staticmethod
    def _card(spec: TrainSpec, rows: list[dict]) -> DomainCard:
        # the router's card: as given, else the first texts of the domain data
        if spec.card and (spec.card.get("description") or spec.card.get("samples")):
            return DomainCard.from_dict(spec.card)
        return DomainCard("", tuple(r["text"] for r in rows[:CARD_SAMPLES]))

    @staticmethod
    def _lineage(job: Job, spec: TrainSpec, trainer, metrics: dict, rank_pattern) -> Lineage:
        parents = (spec.base, *spec.datasets, *spec.replay, *((spec.resume_from,) if spec.resume_from else ()))
        training = {"trainer": spec.trainer, "config": trainer.config.to_dict(), "job": job.id,
                    "datasets": list(spec.datasets), "replay": list(spec.replay), "resume_from": spec.resume_from}
        final = dict(metrics)
        if rank_pattern is not None:
            final["rank_pattern"] = rank_pattern
        return Lineage(parents=parents, training=training, metrics=final)
