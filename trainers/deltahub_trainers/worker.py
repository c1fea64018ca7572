"""The worker: take a job from the queue, train, checkpoint to the hub, commit the adapter.

A worker talks to the queue (Redis, or the server's in-process queue) for
jobs, leases and progress, and to the hub over gRPC for everything else: it
downloads the base and the data (cached by digest), uploads checkpoints as
blobs the hub pins for the job, and pushes the result. The in-process worker
of ``deltahub serve`` is this same class on a loopback connection.

Exactly one revision per job: when training ends the adapter itself is
checkpointed before it is pushed, so a worker that dies between the push and
the job's final state leaves the next worker the same bytes to push - the
same digest, the same revision.
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
from deltahub.errors import CancelledError, DeltahubError, InvalidInputError, NotFoundError, PreconditionError
from deltahub.formats.dataset import read_rows
from deltahub.jobs import Job, JobQueue, LeaseLostError
from deltahub_trainers import make_trainer
from deltahub_trainers.loop import Hooks, Progress, TrainInputs, pick_device, train

log = logging.getLogger("deltahub.worker")

CARD_SAMPLES = 16
VERIFIED = ".deltahub-verified"  # written into a cached revision folder once every file checked out
# errors that another attempt cannot fix: the job fails at once
PERMANENT = (InvalidInputError, PreconditionError, NotFoundError)


CANCEL_POLL_S = 1.0


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


class Worker:
    def __init__(self, hub, queue: JobQueue, *, device: str = "auto", name: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.hub, self.queue = hub, queue
        self.device = device
        self.device_type = pick_device(device)[0].type
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "deltahub-worker-cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        self._shutdown = threading.Event()

    def run(self, stop: threading.Event, *, max_jobs: int | None = None, claim_timeout_s: float = 1.0) -> int:
        """Takes and runs jobs until ``stop`` is set (or ``max_jobs`` ran); returns how many ran.

        A job running when ``stop`` is set stops at its next step without changing its state: its lease
        lapses and another worker resumes it from its last checkpoint.
        """
        self._shutdown = stop
        done = 0
        log.info("worker %s ready on %s", self.name, self.device_type)
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            job = self.queue.claim(self.name, self.device_type, timeout_s=claim_timeout_s)
            if job is not None:
                self.run_job(job)
                done += 1
        return done

    # -- one job ---------------------------------------------------------------
    def run_job(self, job: Job) -> Job | None:
        log.info("worker %s took %s (attempt %d of %d)", self.name, job.id, job.attempts, job.max_attempts)
        work = Path(tempfile.mkdtemp(prefix="deltahub-job-"))
        try:
            with _Lease(self.queue, job, self.name, self._shutdown) as lease:
                try:
                    return self._run(job, work, lease)
                except LeaseLostError:
                    log.warning("lost the lease of %s; another worker carries on", job.id)
                    return None
                except CancelledError:
                    if lease.given_up:
                        log.warning("left %s (lease lost or shutting down); another worker carries on", job.id)
                        return None
                    # released before the final state is recorded, so whoever sees the state sees no pin;
                    # should this worker die in between, the job is cancelled on its next claim anyway
                    self._release(job.id)
                    return self.queue.cancelled(job.id, self.name)
                except PERMANENT as err:
                    self._release(job.id)  # a permanent failure is never retried: nothing to resume from
                    return self.queue.fail(job.id, self.name, err.code, str(err), retry=False)
                except Exception as err:  # noqa: BLE001 - anything else may pass on another attempt
                    log.exception("job %s failed on %s", job.id, self.name)
                    code = err.code if isinstance(err, DeltahubError) else "INTERNAL"
                    final = self.queue.fail(job.id, self.name, code, f"{type(err).__name__}: {err}", retry=True)
                    if final.finished:
                        self._release(job.id)
                    return final
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _release(self, job_id: str) -> None:
        try:
            self.hub.release_checkpoint(job_id, self.name)
        except DeltahubError:
            log.warning("could not release the checkpoint of %s", job_id, exc_info=True)

    def _fetch(self, spec: str) -> tuple[object, Path]:
        """A revision in the worker's cache, downloaded and verified once (revisions are immutable)."""
        rev = self.hub.show(spec)
        folder = self.cache / rev.digest
        if not (folder / VERIFIED).exists():
            self.hub.download(rev, folder)
            (folder / VERIFIED).touch()
        return rev, folder

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

    def _run(self, job: Job, work: Path, lease: _Lease) -> Job:
        spec = job.spec
        trainer = make_trainer(spec.trainer, spec.config)
        rows = [r for d in spec.datasets for r in read_rows(self.hub_files(d))]
        ckpt = job.checkpoint
        if ckpt.get("done"):
            # trained by an attempt that died before its commit: push the same bytes
            adapter = self._fetch_blobs(ckpt["files"], work / "resume") / "adapter"
            metrics, rank_pattern = ckpt.get("metrics", {}), ckpt.get("rank_pattern")
        else:
            _, base_dir = self._fetch(spec.base)
            replay = [r for d in spec.replay for r in read_rows(self.hub_files(d))]
            resume_adapter = self._fetch(spec.resume_from)[1] if spec.resume_from else None
            resume = self._fetch_blobs(ckpt["files"], work / "resume") if ckpt.get("files") else None
            if lease.stopping:  # cancelled while the inputs came down: stop before loading the model
                raise CancelledError("stopped before the first step")

            def progress(p: Progress) -> None:
                lease.seen(self.queue.progress(job.id, self.name, p.step, p.total, p.to_dict()))

            hooks = Hooks(progress=progress, should_stop=lambda: lease.stopping,
                          checkpoint=lambda folder, step: self._save_checkpoint(job, folder, step, {}))
            result = train(trainer, TrainInputs(base_dir, rows, replay, resume_adapter, resume, self.device),
                           work, hooks)
            adapter, metrics, rank_pattern = result.adapter_dir, result.metrics, result.rank_pattern
            self._save_checkpoint(job, adapter, metrics["steps"],
                                  {"done": True, "metrics": metrics, "rank_pattern": rank_pattern}, prefix="adapter/")
        if lease.stopping:
            raise CancelledError("stopped before the commit")
        pushed = self.hub.push(adapter, spec.out, kind="adapter", base=spec.base, card=self._card(spec, rows),
                               labels={"trainer": spec.trainer, **spec.labels},
                               lineage=self._lineage(job, trainer, metrics, rank_pattern))
        # Released before the success is recorded (so whoever sees SUCCEEDED sees no pin): safe, since the
        # checkpoint's adapter blobs are now the committed revision's, and a retry re-pushes those same blobs.
        self._release(job.id)
        final = self.queue.succeed(job.id, self.name, {"artifact": pushed.revision.artifact,
                                                       "digest": pushed.revision.digest})
        log.info("job %s committed %s (%s)", job.id, pushed.revision.spec, "new" if pushed.created else "existing")
        return final

    def hub_files(self, spec: str) -> dict[str, Path]:
        rev, folder = self._fetch(spec)
        return {f.path: folder / f.path for f in rev.files}

    @staticmethod
    def _card(spec, rows: list[dict]) -> DomainCard:
        # the router's card: as given, else the first texts of the domain data
        if spec.card and (spec.card.get("description") or spec.card.get("samples")):
            return DomainCard.from_dict(spec.card)
        return DomainCard("", tuple(r["text"] for r in rows[:CARD_SAMPLES]))

    def _lineage(self, job: Job, trainer, metrics: dict, rank_pattern) -> Lineage:
        spec = job.spec
        parents = (spec.base, *spec.datasets, *spec.replay, *((spec.resume_from,) if spec.resume_from else ()))
        training = {"trainer": spec.trainer, "config": trainer.config.to_dict(), "job": job.id,
                    "datasets": list(spec.datasets), "replay": list(spec.replay), "resume_from": spec.resume_from}
        final = dict(metrics)
        if rank_pattern is not None:
            final["rank_pattern"] = rank_pattern
        return Lineage(parents=parents, training=training, metrics=final)
