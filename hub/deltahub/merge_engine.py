"""The merge engine: from a merge request to a committed, cached revision.

Order of work, so that bad input costs nothing and stores nothing:
check the request (method, parameters, form, targets), resolve every input,
the base and the data, check they share the base, build and hash the
recipe; then, under the recipe's single-flight lock, return a cached
revision if the recipe was built before, or plan (methods that evaluate),
stream the merge and commit the result with its recipe as lineage.
"""

from __future__ import annotations

import math
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from deltahub.artifacts import DomainCard, Kind, Lineage, Revision
from deltahub.cache import SingleFlight
from deltahub.deltas.lowrank import check_target
from deltahub.errors import InvalidInputError, PreconditionError
from deltahub.evaluation import EvalResult, ModelProbe
from deltahub.formats.dataset import read_rows
from deltahub.formats.model import INDEX_FILE
from deltahub.merging import MERGE_METHODS
from deltahub.merging import executor
from deltahub.merging.outputs import DEFAULT_SHARD_BYTES, AdapterOutput, ModelOutput, TaskVectorOutput
from deltahub.merging.recipe import Recipe
from deltahub.merging.sources import AdapterSource, DeltaSource, ModelSource, TaskVectorSource
from deltahub.merging.spec import Plan
from deltahub.names import DEFAULT_REF, ArtifactName
from deltahub.store import CommitRequest, HubStore

FORMS = ("model", "task_vector", "adapter")
MAX_EVAL_ROWS = 2048

# stage, done, total, bytes
Progress = Callable[[str, int, int, int], None]


@dataclass
class MergeRequest:
    method: str
    inputs: list[str]
    out: str
    base: str = ""
    weights: list[float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    form: str = "model"
    data: str = ""
    rank: int | None = None
    energy: float | None = None
    device: str = "auto"
    ref: str = DEFAULT_REF
    tags: list[str] = field(default_factory=list)
    card: DomainCard = field(default_factory=DomainCard)
    labels: dict[str, str] = field(default_factory=dict)
    created_by: str = ""


@dataclass(frozen=True)
class MergeResult:
    revision: Revision
    cached: bool
    recipe_hash: str
    metrics: dict[str, Any]


@dataclass
class Resolved:
    method: Any
    params: dict[str, Any]
    inputs: list[Revision]
    base: Revision
    data: Revision | None
    recipe: Recipe


def _task_type(adapters: list[AdapterSource], base_config: dict) -> str | None:
    for a in adapters:
        if a.config.get("task_type"):
            return a.config["task_type"]
    archs = base_config.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "CAUSAL_LM"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "SEQ_CLS"
    return None


class MergeEngine:
    shard_bytes = DEFAULT_SHARD_BYTES  # model outputs are split into shards of at most this size

    def __init__(self, store: HubStore) -> None:
        self.store = store
        self.flights = SingleFlight(store.config.data_dir / "locks")

    # -- checking --------------------------------------------------------------
    def resolve(self, req: MergeRequest) -> Resolved:
        ArtifactName.parse(req.out)
        if req.form not in FORMS:
            raise InvalidInputError(f"unknown output form {req.form!r}; known forms: {', '.join(FORMS)}")
        method = MERGE_METHODS.get(req.method)
        if not req.inputs:
            raise InvalidInputError("a merge needs at least one input")
        weights = [float(w) for w in req.weights] if req.weights is not None else None
        if weights is not None and not all(math.isfinite(w) for w in weights):
            raise InvalidInputError(f"merge weights must be finite numbers, not {weights}")
        method.spec.check_inputs(len(req.inputs), weights)
        params = method.spec.resolve_params(req.params)
        method.validate(params, len(req.inputs))
        check_target(req.rank, req.energy)
        executor.resolve_device(req.device)  # a bad device fails the request, not the operation
        if (req.rank or req.energy) and req.form == "model":
            raise InvalidInputError("a rank or energy target applies to task_vector and adapter outputs, not to a model")
        inputs = [self.store.resolve(spec) for spec in req.inputs]
        for spec, rev in zip(req.inputs, inputs):
            if rev.kind is Kind.DATASET:
                raise InvalidInputError(f"input {spec} is a dataset; merge inputs are models, task vectors or adapters")
        base = self._base(req.base, inputs)
        for spec, rev in zip(req.inputs, inputs):
            if rev.base and rev.base != base.spec:
                raise PreconditionError(
                    f"input {spec} applies to base {rev.base}, not to {base.spec}; all inputs must share one base revision"
                )
        data = None
        if method.spec.needs_data:
            if not req.data:
                raise InvalidInputError(f"method {method.spec.name} needs held-out data: give a dataset (--eval NAMESPACE/NAME)")
            data = self.store.resolve(req.data)
            if data.kind is not Kind.DATASET:
                raise InvalidInputError(f"{req.data} is a {data.kind.value}, not a dataset")
        recipe = Recipe(
            method=method.spec.name, inputs=tuple(r.spec for r in inputs), base=base.spec, form=req.form,
            params=params, weights=tuple(weights) if weights is not None else None,
            data=data.spec if data else "", rank=req.rank or None, energy=req.energy or None,
        )
        return Resolved(method, params, inputs, base, data, recipe)

    def _base(self, spec: str, inputs: list[Revision]) -> Revision:
        if spec:
            return self.store.resolve_base(spec)
        declared = sorted({r.base for r in inputs if r.base})
        if len(declared) == 1:
            return self.store.resolve(declared[0])
        if not declared:
            raise InvalidInputError("no input declares a base model: give one with --base NAMESPACE/NAME[@REF]")
        raise PreconditionError(f"inputs apply to different bases {declared}; all inputs must share one base revision")

    # -- running -----------------------------------------------------------------
    def merge(self, req: MergeRequest, *, progress: Progress | None = None,
              cancelled: Callable[[], bool] | None = None) -> MergeResult:
        return self.run(req, self.resolve(req), progress=progress, cancelled=cancelled)

    def run(self, req: MergeRequest, r: Resolved, *, progress: Progress | None = None,
            cancelled: Callable[[], bool] | None = None) -> MergeResult:
        """Builds (or finds cached) a request already resolved, so inputs stay as they were when it was asked."""
        return self.once(r.recipe.hash, lambda where: self._reuse(req, r, where),
                         lambda: self._build(req, r, progress, cancelled))

    def once(self, recipe_hash: str, reuse: Callable[[tuple[str, str]], Any], build: Callable[[], Any]) -> Any:
        """Builds a recipe once: under its lock, ``reuse((artifact, digest))`` of an earlier build, else ``build()``."""
        with self.flights.hold(recipe_hash):
            cached = self.store.catalog.revisions_with_recipe(recipe_hash)
            return reuse(cached[0]) if cached else build()

    def _commit(self, req: MergeRequest, r: Resolved, files, metrics: dict) -> Revision:
        parents = tuple(dict.fromkeys([*r.recipe.inputs, r.base.spec] + ([r.data.spec] if r.data else [])))
        rev, _ = self.store.commit(CommitRequest(
            artifact=req.out, kind=Kind(req.form), files=files,
            base="" if req.form == "model" else r.base.spec,
            card=req.card, labels=dict(req.labels),
            lineage=Lineage(parents=parents, recipe={**r.recipe.to_dict(), "hash": r.recipe.hash}, metrics=metrics),
            ref=req.ref, tags=list(req.tags), created_by=req.created_by,
        ))
        return rev

    def _reuse(self, req: MergeRequest, r: Resolved, where: tuple[str, str]) -> MergeResult:
        built = self.store.catalog.get_revision(*where)
        if built.artifact == req.out and not req.tags and self.store.catalog.refs(req.out).get(req.ref) == built.digest:
            return MergeResult(built, True, r.recipe.hash, built.lineage.metrics)  # nothing to move: no write
        rev = self._commit(req, r, list(built.files), built.lineage.metrics)
        return MergeResult(rev, True, r.recipe.hash, built.lineage.metrics)

    def _build(self, req: MergeRequest, r: Resolved, progress: Progress | None,
               cancelled: Callable[[], bool] | None) -> MergeResult:
        started = time.monotonic()
        store = self.store
        base_info = store.base_info(r.base)
        base_files = store.local_files(r.base)
        device = executor.resolve_device(req.device)
        with ExitStack() as stack:
            resized_ok = r.method.spec.name == "instruction_vector" and bool(r.params.get("skip_embeddings"))
            sources = self._sources(r.inputs, base_info, stack, resized_first=resized_ok)
            plan = Plan()
            if r.method.spec.needs_data:
                if progress:
                    progress("planning", 0, 0, 0)
                probe = self._probe(r.base, sources, r.data, device, stack)
                plan = r.method.prepare(probe, r.params, r.recipe.weights)
                del probe  # the model it holds is not needed while streaming
            order = list(base_info.weight_files)
            output = self._output(req, r, sources, base_info, order)
            job = executor.MergeJob(
                method=r.method, params=r.params, plan=plan, weights=r.recipe.weights,
                base_files=base_files, base_weight_files=base_info.weight_files, order=order,
                sources=sources, output=output, lora_space=(req.form == "adapter"),
            )
            report = (lambda done, total, nbytes: progress("merging", done, total, nbytes)) if progress else None
            try:
                executor.run(job, device=str(device), progress=report, cancelled=cancelled)
                files, metrics = output.finish()
            except BaseException:
                store.discard_unused(output.written)
                raise
        metrics = {**metrics, **plan.report, "device": device.type, "seconds": round(time.monotonic() - started, 3)}
        if progress:
            progress("committing", len(order), len(order), 0)
        try:
            rev = self._commit(req, r, files, metrics)
        except BaseException:
            store.discard_unused([f.sha256 for f in files])
            raise
        return MergeResult(rev, False, r.recipe.hash, metrics)

    def _sources(self, inputs: list[Revision], base_info, stack: ExitStack, *,
                 resized_first: bool = False) -> list[DeltaSource]:
        """One delta source per input; only the first (a domain model) may have a resized vocabulary."""
        sources: list[DeltaSource] = []
        for i, rev in enumerate(inputs):
            files = self.store.local_files(rev)
            if rev.kind is Kind.MODEL:
                sources.append(ModelSource(rev.spec, self.store.base_info(rev), files, base_info, stack,
                                           allow_resized_embeddings=resized_first and i == 0))
            elif rev.kind is Kind.TASK_VECTOR:
                sources.append(TaskVectorSource(rev.spec, files, stack))
            else:
                sources.append(AdapterSource(rev.spec, files, stack))
        return sources

    def _probe(self, base: Revision, sources, data: Revision, device, stack: ExitStack) -> ModelProbe:
        """The base model loaded from a checkout of its revision, with the inputs' deltas and the data's rows."""
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=self.store.config.data_dir / "tmp")))
        self.store.checkout(base, folder / "base")
        rows = read_rows(self.store.local_files(data), limit=MAX_EVAL_ROWS)
        return ModelProbe(folder / "base", sources, rows, device=device)

    def _output(self, req: MergeRequest, r: Resolved, sources, base_info, order):
        blobs, spool = self.store.blobs, str(self.store.config.data_dir / "tmp")
        if req.form == "task_vector":
            return TaskVectorOutput(blobs, rank=req.rank, energy=req.energy, spool_dir=spool)
        if req.form == "adapter":
            adapters = [s for s in sources if isinstance(s, AdapterSource)]
            rank, energy = req.rank, req.energy
            if not (rank or energy):  # what non-linear merges are compressed to when no target is given
                ranks = [max(a.ranks.values(), default=0) for a in adapters]
                rank, energy = (max(ranks), None) if any(ranks) else (None, 0.99)
            return AdapterOutput(blobs, base_spec=r.base.spec, task_type=_task_type(adapters, base_info.config),
                                 rank=rank, energy=energy, compress_exact=bool(req.rank or req.energy), spool_dir=spool)
        resized = {n: s for s in sources if isinstance(s, ModelSource) for n in s.resized}
        layout = []
        for name in order:
            info = resized[name].info if name in resized else base_info  # a resized tensor keeps its own layout
            layout.append((name, info.dtypes[name], tuple(info.shapes[name])))
        # config and tokenizer: the base's, or the domain model's when it resized the vocabulary
        donor = next((rev for rev, s in zip(r.inputs, sources) if isinstance(s, ModelSource) and s.resized), r.base)
        other = [f for f in donor.files if f.path != INDEX_FILE and not f.path.endswith(".safetensors")]
        return ModelOutput(blobs, layout, other, shard_bytes=self.shard_bytes)

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, spec: str, data: str, *, device: str = "auto") -> tuple[Revision, Revision, EvalResult]:
        dev = executor.resolve_device(device)
        rev = self.store.resolve(spec)
        data_rev = self.store.resolve(data)
        if data_rev.kind is not Kind.DATASET:
            raise InvalidInputError(f"{data} is a {data_rev.kind.value}, not a dataset")
        if rev.kind is Kind.DATASET:
            raise InvalidInputError(f"{spec} is a dataset; evaluate a model, adapter or task vector")
        base = rev if rev.kind is Kind.MODEL else self.store.resolve(rev.base)
        with ExitStack() as stack:
            inputs = [] if rev.kind is Kind.MODEL else [rev]
            sources = self._sources(inputs, self.store.base_info(base), stack)
            result = self._probe(base, sources, data_rev, dev, stack).evaluate()
        return rev, data_rev, result
