"""The SDK's training verbs: submit jobs, follow them, cancel them; and what workers need.

A mixin of :class:`deltahub_client.hub.Hub`, kept apart so each file holds one idea.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm

from deltahub.artifacts import DomainCard, FileEntry
from deltahub.jobs.model import Job
from deltahub.v1 import train_pb2 as trpb
from deltahub.v1 import transfer_pb2 as tpb
from deltahub_client import convert
from deltahub_client.errors import translated
from deltahub_client.files import hash_files


class TrainVerbs:
    @translated
    def submit_job(
        self,
        trainer: str,
        *,
        base: str,
        data: str | Sequence[str],
        out: str,
        config: dict[str, Any] | None = None,
        replay: Sequence[str] = (),
        resume_from: str | None = None,
        card: DomainCard | dict | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int = 0,
    ) -> tuple[Job, bool]:
        """Queues a training job; returns (job, created). A repeated idempotency key returns the first job.

        Raises:
            InvalidInputError: unknown trainer (lists the known ones), bad config (e.g. init_r <= target_r).
            NotFoundError: the base or a dataset does not exist.
            PreconditionError: the base is not a model or has no tokenizer; resume_from has another base.
        """
        datasets = [data] if isinstance(data, str) else list(data)
        resp = self._unary(self._train.SubmitJob, trpb.SubmitJobRequest(
            trainer=trainer, base=base, datasets=datasets, out=out, config_json=json.dumps(config or {}),
            replay=list(replay), resume_from=resume_from or "", card=convert.card_to_pb(card), labels=labels or {},
            idempotency_key=idempotency_key or "", max_attempts=max_attempts,
        ))
        return convert.job_from_pb(resp.job), resp.created

    def train(self, trainer: str, *, base: str, data: str | Sequence[str], out: str, wait: bool = False,
              **options) -> Job:
        """Queues a training job (see :meth:`submit_job`); with ``wait``, follows it to its end."""
        job, _ = self.submit_job(trainer, base=base, data=data, out=out, **options)
        return self.wait_job(job.id) if wait else job

    @translated
    def job(self, job_id: str) -> Job:
        return convert.job_from_pb(self._unary(self._train.GetJob, trpb.GetJobRequest(id=job_id)))

    @translated
    def jobs(self, namespace: str | None = None, *, limit: int = 100) -> list[Job]:
        resp = self._unary(self._train.ListJobs, trpb.ListJobsRequest(namespace=namespace or "", limit=limit))
        return [convert.job_from_pb(j) for j in resp.jobs]

    @translated
    def watch_job(self, job_id: str) -> Iterator[Job]:
        """The job now and at every change (progress included), until it is final.

        The hub ends a watch after a while (``--max-watch``); this watches again until the job is final.
        """
        while True:  # a watch opened again starts with the job as it is now
            for msg in self._train.WatchJob(trpb.WatchJobRequest(id=job_id), metadata=self._metadata):
                job = convert.job_from_pb(msg)
                yield job
                if job.finished:
                    return

    def wait_job(self, job_id: str) -> Job:
        """Follows a job to its end with a progress bar (steps, loss, rank); returns the final job."""
        job = None
        with tqdm(total=0, unit="step", desc=job_id.split("/")[0], disable=None if self.progress else True) as bar:
            for job in self.watch_job(job_id):
                if job.total and bar.total != job.total:
                    bar.total = job.total
                bar.n = job.step
                post = {"state": job.state.lower()}
                for key in ("loss", "lr", "tokens_per_s", "total_rank"):
                    if key in job.metrics:
                        post[key] = f"{job.metrics[key]:.4g}"
                bar.set_postfix(post, refresh=True)
        return job

    @translated
    def cancel_job(self, job_id: str) -> Job:
        return convert.job_from_pb(self._unary(self._train.CancelJob, trpb.CancelJobRequest(id=job_id)))

    @translated
    def trainers(self) -> list[dict[str, Any]]:
        resp = self._unary(self._train.ListTrainers, trpb.ListTrainersRequest())
        return [{"name": t.name, "title": t.title, "paper": t.paper, "rank_adaptive": t.rank_adaptive,
                 "defaults": json.loads(t.defaults_json), "help": json.loads(t.help_json)} for t in resp.trainers]

    # -- for workers -----------------------------------------------------------------
    @translated
    def upload_files(self, files: dict[str, Path]) -> list[FileEntry]:
        """Uploads files as blobs (those the hub lacks); returns their entries. Nothing is committed."""
        entries = hash_files(files, progress=False)
        todo = []
        for e in {e.sha256: e for e in entries}.values():  # equal files are asked about and sent once
            status = self._unary(self._transfer.GetUploadStatus, tpb.GetUploadStatusRequest(sha256=e.sha256))
            if not status.complete:
                todo.append((e.sha256, e.size, status.offset, files[e.path]))
        self._upload_all(todo, sum(size - offset for _, size, offset, _ in todo))
        return entries

    @translated
    def pin_checkpoint(self, job_id: str, worker: str, entries: list[FileEntry]) -> None:
        self._unary(self._train.PinCheckpoint, trpb.PinCheckpointRequest(
            job_id=job_id, worker=worker, files=convert.files_to_pb(entries)))

    @translated
    def release_checkpoint(self, job_id: str, worker: str = "") -> None:
        """Drops a job's checkpoint: a finished job's, or (``worker`` = its lease holder) a running one's."""
        self._unary(self._train.ReleaseCheckpoint, trpb.ReleaseCheckpointRequest(job_id=job_id, worker=worker))
