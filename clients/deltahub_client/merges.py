"""The SDK's merge verbs: start and follow merges, list methods, evaluate.

A mixin of :class:`deltahub_client.hub.Hub`, kept apart so each file holds one idea.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from deltahub.artifacts import DomainCard
from deltahub.jobs.model import Job
from deltahub_client import convert
from deltahub_client.errors import translated
from deltahub_client.results import EvalResult, MergeResult


class MergeVerbs:
    @translated
    def merge(
        self,
        method: str,
        inputs: Sequence[str],
        *,
        out: str,
        base: str | None = None,
        weights: Sequence[float] | None = None,
        params: dict[str, Any] | None = None,
        input_params: Sequence[dict[str, Any]] | None = None,
        max_error: float | None = None,
        form: str = "model",
        data: str | None = None,
        rank: int = 0,
        energy: float = 0.0,
        device: str = "auto",
        ref: str = "main",
        tags: Sequence[str] = (),
        card: DomainCard | dict | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        dtype: str | None = None,
        wait: bool = True,
    ) -> MergeResult | Job:
        """Merges stored models, task vectors or adapters into ``out``.

        Args:
            method: a name from :meth:`merge_methods` (``magmax``, ``ties``, ...).
            inputs: revisions ``namespace/name[@ref]``, in order (task order for MagMax).
            base: the base model revision; inferred from adapter/task-vector inputs when omitted.
            weights: one per input.
            params: method parameters, each as mergekit reads it: a scalar, a gradient over layers
                (``[0, 0.5, 1]``), or filters (``[{"filter": "self_attn", "value": 0.3}, {"value": 0.5}]``).
            input_params: one mapping per input (mergekit's per-model ``parameters``, ``weight`` included),
                taking precedence over ``params``.
            max_error: the largest relative error one parameter may have where the result approximates
                the merged delta (compression into an adapter or a low-rank task vector); the hub's default
                (0.01) when omitted. A merge past it fails and stores nothing.
            form: ``model``, ``task_vector`` or ``adapter``.
            data: a dataset revision (held-out data for ``greedy_soup``, new-domain texts for ``recall``).
            rank, energy: compression target for ``task_vector``/``adapter`` outputs.
            dtype: how a ``model`` output is stored (``float32``, ``float16``, ``bfloat16``); the base's by default.
            idempotency_key: a repeated key returns the first job; another request with it is refused.
            wait: follow the job (with a progress bar) and return the result; else return the queued job.
        Returns:
            :class:`MergeResult` (``cached`` tells whether the recipe was built before), or the job.
        Raises:
            InvalidInputError, NotFoundError, PreconditionError (inputs of different bases), CancelledError;
            a failure while the merge runs raises the same class as a failure when it is asked.
        """
        request = convert.merge_request_to_pb(
            method, inputs, out=out, base=base, weights=weights, params=params, input_params=input_params,
            max_error=max_error, form=form, data=data, rank=rank, energy=energy, device=device, ref=ref, tags=tags,
            card=card, labels=labels, idempotency_key=idempotency_key, dtype=dtype)
        job, _ = convert.submitted_from_pb(self._unary(self._merge.StartMerge, request))
        return self.wait_merge(job.id) if wait else job

    def merge_recipe(self, recipe: str | os.PathLike, *, out: str, **kwargs) -> MergeResult | Job:
        """Runs a mergekit YAML configuration (a path or the YAML text) whose models are hub revisions."""
        from deltahub.mergekit_yaml import from_mergekit_yaml

        text = Path(recipe).read_text() if isinstance(recipe, os.PathLike) or Path(str(recipe)).is_file() else str(recipe)
        doc = from_mergekit_yaml(text, validate=False)  # the hub checks method and parameters: no mergekit here
        kwargs.setdefault("dtype", doc["dtype"] or None)
        return self.merge(doc["method"], doc["inputs"], out=out, base=doc["base"] or None, weights=doc["weights"],
                          params=doc["params"], input_params=doc["input_params"], **kwargs)

    def recipe_yaml(self, spec: str) -> str:
        """A merged revision's recipe as mergekit YAML (for methods mergekit knows)."""
        from deltahub.mergekit_yaml import INTO_MERGEKIT, to_mergekit_yaml

        known = {m["name"] for m in self.merge_methods() if m["source"] == "mergekit"} | set(INTO_MERGEKIT)
        return to_mergekit_yaml(self.show(spec).lineage.recipe, known)  # the hub's list: no mergekit here

    @translated
    def wait_merge(self, job_id: str) -> MergeResult:
        """Follows a merge job to its end; raises its error (the direct call's class) if it failed."""
        job = self.wait_job(job_id, check=True)
        r = job.result
        return MergeResult(self.show(f"{r['artifact']}@{r['digest']}"), bool(r.get("cached")), r.get("recipe_hash", ""),
                           r.get("metrics") or {}, job.id)

    @translated
    def merge_methods(self) -> list[dict[str, Any]]:
        return convert.methods_from_pb(self._unary(self._merge.ListMethods, convert.methods_request()))

    @translated
    def evaluate(self, target: str, data: str, *, device: str = "auto") -> EvalResult:
        """The held-out metric of a model, adapter or task vector on a dataset (what the greedy soup uses).

        Computed by a worker (an ``evaluate`` job); returns when it ends."""
        return convert.evaluation_from_pb(self._merge.Evaluate(convert.evaluate_request(target, data, device),
                                                               timeout=None, metadata=self._metadata))
