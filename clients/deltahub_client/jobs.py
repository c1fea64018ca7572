"""The SDK's job verbs: follow, list, wait for and cancel long-running work of every kind; what workers call.

A mixin of :class:`deltahub_client.hub.Hub`, kept apart so each file holds one idea.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from deltahub.artifacts import FileEntry
from deltahub.jobs.model import SUCCEEDED, Job
from deltahub_client import convert
from deltahub_client.errors import translated
from deltahub_client.files import hash_files

SHOWN_METRICS = ("loss", "lr", "tokens_per_s", "total_rank")


class JobBar:
    """One progress bar for every kind of job: done/total in the job's unit, the stage, the last metrics."""

    def __init__(self, job_id: str, enabled: bool) -> None:
        self.bar = tqdm(total=0, desc=job_id.split("/")[0], disable=None if enabled else True)

    def show(self, job: Job) -> None:
        bar = self.bar
        if bar.disable:  # no terminal, or progress off: a disabled bar holds no state to set
            return
        if job.unit and bar.unit != job.unit:
            bar.unit = job.unit
        if job.total and bar.total != job.total:
            bar.total = job.total
        bar.n = job.done
        bar.set_description(f"{job.kind} {job.stage}".strip())
        post = {"state": job.state.lower()}
        for key in SHOWN_METRICS:
            if isinstance(job.metrics.get(key), (int, float)):
                post[key] = f"{job.metrics[key]:.4g}"
        if job.metrics.get("bytes"):
            post["MiB"] = f"{job.metrics['bytes'] / 2**20:.1f}"
        bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()


class JobVerbs:
    @translated
    def job(self, job_id: str) -> Job:
        return convert.job_from_pb(self._unary(self._jobs.GetJob, convert.job_request(job_id)))

    @translated
    def jobs(self, namespace: str | None = None, *, kind: str | None = None, state: str | None = None,
             limit: int = 100) -> list[Job]:
        """Jobs of every kind the caller may read, newest first; ``kind`` and ``state`` filter."""
        return convert.jobs_from_pb(self._unary(self._jobs.ListJobs,
                                                convert.list_jobs_request(namespace, kind, state, limit)))

    @translated
    def watch_job(self, job_id: str) -> Iterator[Job]:
        """The job now and at every change (progress included), until it is final.

        The hub ends a watch after a while (``--max-watch``); this watches again until the job is final.
        """
        while True:  # a watch opened again starts with the job as it is now
            for msg in self._jobs.WatchJob(convert.watch_job_request(job_id), metadata=self._metadata):
                job = convert.job_from_pb(msg)
                yield job
                if job.finished:
                    return

    def wait_job(self, job_id: str, *, check: bool = False) -> Job:
        """Follows a job to its end with a progress bar; returns the final job.

        With ``check``, a job that failed or was cancelled raises its error: the class, code and message
        the direct call would have raised.
        """
        job = None
        bar = JobBar(job_id, self.progress)
        try:
            for job in self.watch_job(job_id):
                bar.show(job)
        finally:
            bar.close()
        if check and job.state != SUCCEEDED:
            raise job.error()
        return job

    @translated
    def cancel_job(self, job_id: str) -> Job:
        return convert.job_from_pb(self._unary(self._jobs.CancelJob, convert.cancel_job_request(job_id)))

    # -- for workers -----------------------------------------------------------------
    @translated
    def upload_files(self, files: dict[str, Path]) -> list[FileEntry]:
        """Uploads files as blobs (those the hub lacks); returns their entries. Nothing is committed."""
        entries = hash_files(files, progress=False)
        todo = []
        for e in {e.sha256: e for e in entries}.values():  # equal files are asked about and sent once
            offset, complete = convert.upload_status_from_pb(
                self._unary(self._transfer.GetUploadStatus, convert.upload_status_request(e.sha256)))
            if not complete:
                todo.append((e.sha256, e.size, offset, files[e.path]))
        self._upload_all(todo, sum(size - offset for _, size, offset, _ in todo))
        return entries

    @translated
    def pin_checkpoint(self, job_id: str, worker: str, entries: list[FileEntry]) -> None:
        self._unary(self._jobs.PinCheckpoint, convert.pin_checkpoint_request(job_id, worker, entries))

    @translated
    def release_checkpoint(self, job_id: str, worker: str = "") -> None:
        """Drops a job's checkpoint: a finished job's, or (``worker`` = its lease holder) a running one's."""
        self._unary(self._jobs.ReleaseCheckpoint, convert.release_checkpoint_request(job_id, worker))

    @translated
    def commit_job_result(self, job_id: str, worker: str, files: list[FileEntry] | None = None,
                          metrics: dict | None = None) -> dict | None:
        """Has the hub commit what a job built (blobs uploaded before); returns the job's result.

        With no files, looks the merge job's recipe up in the hub's cache instead: None when never built.
        """
        request = convert.commit_job_result_request(job_id, worker, files or [], metrics or {})
        return convert.job_result_from_pb(self._jobs.CommitJobResult(request, timeout=None, metadata=self._metadata))
