"""The SDK's training verbs: submit training jobs and list the trainers (jobs are followed with JobVerbs).

A mixin of :class:`deltahub_client.hub.Hub`, kept apart so each file holds one idea.
"""

from __future__ import annotations

from typing import Any, Sequence

from deltahub.artifacts import DomainCard
from deltahub.jobs.model import Job
from deltahub_client import convert
from deltahub_client.errors import translated


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
            PreconditionError: the base is not a model or has no tokenizer; resume_from has another base;
                the idempotency key was used for another request.
        """
        datasets = [data] if isinstance(data, str) else list(data)
        request = convert.submit_job_request(
            trainer, base=base, datasets=datasets, out=out, config=config, replay=replay, resume_from=resume_from,
            card=card, labels=labels, idempotency_key=idempotency_key, max_attempts=max_attempts)
        return convert.submitted_from_pb(self._unary(self._train.SubmitJob, request))

    def train(self, trainer: str, *, base: str, data: str | Sequence[str], out: str, wait: bool = False,
              **options) -> Job:
        """Queues a training job (see :meth:`submit_job`); with ``wait``, follows it to its end."""
        job, _ = self.submit_job(trainer, base=base, data=data, out=out, **options)
        return self.wait_job(job.id) if wait else job

    @translated
    def trainers(self) -> list[dict[str, Any]]:
        return convert.trainers_from_pb(self._unary(self._train.ListTrainers, convert.trainers_request()))
