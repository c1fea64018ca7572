"""The merge engine, the hub's side: from a merge request to a job spec, and from a build to a revision.

Order of work, so that bad input costs nothing and stores nothing: check
the request (method, parameters, form, targets), resolve every input, the
base and the data, check they share the base, build and hash the recipe
(:meth:`MergeEngine.resolve`, in the API process, before any job exists).
The build itself (``deltahub.builds.build_merge``) runs on a worker; the
hub commits what it sends back with the recipe as lineage, or answers from
the recipe cache when the recipe was built before. :meth:`MergeEngine.merge`
does all of it in this process, for library users and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from deltahub.artifacts import DomainCard, Kind, Lineage, Revision
from deltahub.builds import FLOAT_DTYPES, STORED_DTYPES, Progress, build_merge
from deltahub.deltas.lowrank import check_target
from deltahub.errors import InvalidInputError, PreconditionError
from deltahub.formats.adapter import CONFIG_FILE
from deltahub.formats.model import load_json
from deltahub.jobs.specs import EvaluateSpec, MergeSpec
from deltahub.merging import MERGE_METHODS
from deltahub.merging import executor
from deltahub.merging.outputs import DEFAULT_MAX_ERROR, DEFAULT_SHARD_BYTES
from deltahub.merging.recipe import Recipe
from deltahub.merging.settings import TensorSettings
from deltahub.names import DEFAULT_REF, ArtifactName
from deltahub.store import CommitRequest, HubStore
from deltahub.workspace import StoreWorkspace

FORMS = ("model", "task_vector", "adapter")
DTYPES = ("float32", "float16", "bfloat16")  # what a model output may be stored in (mergekit's `dtype`)


@dataclass
class MergeRequest:
    method: str
    inputs: list[str]
    out: str
    base: str = ""
    weights: list[float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    input_params: list[dict[str, Any]] | None = None  # one mapping per input (mergekit's per-model parameters)
    max_error: float | None = None      # per parameter; None: DEFAULT_MAX_ERROR
    form: str = "model"
    data: str = ""
    rank: int | None = None
    energy: float | None = None
    device: str = "auto"
    dtype: str = ""                     # "": the base's dtypes
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

    def to_dict(self) -> dict[str, Any]:
        """As a job's result keeps it."""
        return {"artifact": self.revision.artifact, "digest": self.revision.digest, "cached": self.cached,
                "recipe_hash": self.recipe_hash, "metrics": self.metrics}


@dataclass
class Resolved:
    method: Any
    params: dict[str, Any]
    inputs: list[Revision]
    base: Revision
    data: Revision | None
    recipe: Recipe


class MergeEngine:
    shard_bytes = DEFAULT_SHARD_BYTES  # model outputs are split into shards of at most this size

    def __init__(self, store: HubStore) -> None:
        self.store = store

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
        input_params = method.resolve_input_params(req.input_params, len(req.inputs))
        if not input_params:
            method.validate(params, len(req.inputs))  # before any input is looked up; per tensor once the base is known
        check_target(req.rank, req.energy)
        if req.max_error is not None and not (math.isfinite(req.max_error) and req.max_error > 0):
            raise InvalidInputError(f"max_error must be a positive number (1 allows any error), not {req.max_error}")
        executor.check_device_name(req.device)  # a bad name fails the request; a worker without it fails the job
        if req.dtype and req.dtype not in DTYPES:
            raise InvalidInputError(f"dtype {req.dtype[:40]!r} is not one of {', '.join(DTYPES)}")
        if req.dtype and req.form != "model":
            raise InvalidInputError(f"dtype sets how a model output is stored; a {req.form} keeps float32 "
                                    "deltas: give no dtype, or --form model")
        if (req.rank or req.energy) and req.form == "model":
            raise InvalidInputError("a rank or energy target applies to task_vector and adapter outputs, not to a model")
        inputs = [self.store.resolve(spec) for spec in req.inputs]
        for spec, rev in zip(req.inputs, inputs):
            if rev.kind is Kind.DATASET:
                raise InvalidInputError(f"input {spec} is a dataset; merge inputs are models, task vectors or adapters")
            if rev.kind is Kind.ADAPTER:
                self._check_adapter(spec, rev, req)
        base = self._base(req.base, inputs)
        for spec, rev in zip(req.inputs, inputs):
            if rev.base and rev.base != base.spec:
                raise PreconditionError(
                    f"input {spec} applies to base {rev.base}, not to {base.spec}; all inputs must share one base revision"
                )
        names = list(self.store.base_info(base).weight_files)
        TensorSettings(method, params, input_params, weights, names).check(names, len(inputs))
        data = None
        if method.spec.needs_data:
            if not req.data:
                raise InvalidInputError(f"method {method.spec.name} needs held-out data: give a dataset (--eval NAMESPACE/NAME)")
            data = self.store.resolve(req.data)
            if data.kind is not Kind.DATASET:
                raise InvalidInputError(f"{req.data} is a {data.kind.value}, not a dataset")
        dtype = req.dtype or None
        if dtype:  # the base's own dtype changes nothing: one recipe with the request that names none
            floats = {d for d in self.store.base_info(base).dtypes.values() if d in FLOAT_DTYPES}
            if floats == {STORED_DTYPES[dtype]}:
                dtype = None
        recipe = Recipe(
            method=method.spec.name, inputs=tuple(r.spec for r in inputs), base=base.spec, form=req.form,
            params=params, weights=tuple(weights) if weights is not None else None, input_params=input_params,
            data=data.spec if data else "", rank=req.rank or None, energy=req.energy or None,
            dtype=dtype,
        )
        return Resolved(method, params, inputs, base, data, recipe)

    def _check_adapter(self, spec: str, rev: Revision, req: MergeRequest) -> None:
        """What a build would refuse, refused now. A DoRA adapter's delta (magnitude times the normalised
        direction, less the base) is full rank: merged exactly into a model or a dense task vector, only
        approximated by a LoRA, so an adapter output needs the caller's leave (an explicit max_error)."""
        files = self.store.local_files(rev)
        if CONFIG_FILE not in files or not load_json(files[CONFIG_FILE], CONFIG_FILE).get("use_dora"):
            return
        if req.form == "adapter" and req.max_error is None:
            raise PreconditionError(
                f"input {spec} is a DoRA adapter: its merged delta is full rank, which a LoRA adapter holds only "
                "approximately; ask for --form model or task_vector (exact), or allow the approximation with "
                "--max-error E")
        if (req.rank or req.energy) and req.form == "task_vector" and req.max_error is None:
            raise PreconditionError(f"input {spec} is a DoRA adapter: a low-rank task vector approximates its "
                                    "delta; drop --rank/--energy, or allow the approximation with --max-error E")

    def _base(self, spec: str, inputs: list[Revision]) -> Revision:
        if spec:
            return self.store.resolve_base(spec)
        declared = sorted({r.base for r in inputs if r.base})
        if len(declared) == 1:
            return self.store.resolve(declared[0])
        if not declared:
            raise InvalidInputError("no input declares a base model: give one with --base NAMESPACE/NAME[@REF]")
        raise PreconditionError(f"inputs apply to different bases {declared}; all inputs must share one base revision")

    def spec(self, req: MergeRequest, r: Resolved) -> MergeSpec:
        """The job spec of a resolved request: the recipe, and where the result goes."""
        return MergeSpec(recipe=r.recipe.to_dict(), hash=r.recipe.hash, out=req.out, ref=req.ref,
                         tags=tuple(req.tags), card=req.card.to_dict(), labels=dict(req.labels),
                         created_by=req.created_by, device=req.device,
                         max_error=req.max_error if req.max_error is not None else DEFAULT_MAX_ERROR)

    # -- results (the hub's side of a merge job) -------------------------------------
    def cached(self, spec: MergeSpec) -> MergeResult | None:
        """The result of a recipe built before, committed under this spec's name if it is elsewhere."""
        built = self.store.catalog.revisions_with_recipe(spec.hash)
        return self._reuse(spec, built[0]) if built else None

    def commit(self, spec: MergeSpec, files, metrics: dict) -> MergeResult:
        """Commits what a worker built, with the recipe as lineage (the recipe comes from the job, not the worker)."""
        return MergeResult(self._commit(spec, list(files), metrics), False, spec.hash, metrics)

    def _commit(self, spec: MergeSpec, files, metrics: dict) -> Revision:
        recipe = spec.recipe
        parents = tuple(dict.fromkeys([*recipe["inputs"], recipe["base"]] + ([recipe["data"]] if recipe.get("data")
                                                                             else [])))
        form = recipe["form"]
        rev, _ = self.store.commit(CommitRequest(
            artifact=spec.out, kind=Kind(form), files=files,
            base="" if form == "model" else recipe["base"],
            card=DomainCard.from_dict(spec.card), labels=dict(spec.labels),
            lineage=Lineage(parents=parents, recipe={**recipe, "hash": spec.hash}, metrics=metrics),
            ref=spec.ref, tags=list(spec.tags), created_by=spec.created_by, index_recipe=True,
        ))
        return rev

    def _reuse(self, spec: MergeSpec, where: tuple[str, str]) -> MergeResult:
        built = self.store.catalog.get_revision(*where)
        metrics = built.lineage.metrics
        worst = float(metrics.get("max_parameter_error", metrics.get("relative_error", 0.0)) or 0.0)
        if worst > spec.max_error:  # built under a looser allowance than this caller gives
            name = next((n for n, _ in metrics.get("parameter_errors") or []), "a parameter")
            raise PreconditionError(
                f"this recipe was built before ({built.spec}) with {name} at relative error {worst:.3g}, more than "
                f"the allowed {spec.max_error:g}; allow it with --max-error {worst * 1.05:.2g}, or ask for another "
                "--rank/--energy or --form")
        if built.artifact == spec.out and not spec.tags and self.store.catalog.refs(spec.out).get(spec.ref) == built.digest:
            return MergeResult(built, True, spec.hash, built.lineage.metrics)  # nothing to move: no write
        rev = self._commit(spec, list(built.files), built.lineage.metrics)
        return MergeResult(rev, True, spec.hash, built.lineage.metrics)

    # -- in this process (tests, benchmarks, the hub's own library users) -------------
    def merge(self, req: MergeRequest, *, progress: Progress | None = None,
              cancelled: Callable[[], bool] | None = None) -> MergeResult:
        """Resolves, builds (once per recipe: a lock per recipe hash) and commits, here and now."""
        spec = self.spec(req, self.resolve(req))
        return self.once(spec.hash, lambda where: self._reuse(spec, where),
                         lambda: self.build_here(spec, progress=progress, cancelled=cancelled))

    def build_here(self, spec: MergeSpec, *, progress: Progress | None = None,
                   cancelled: Callable[[], bool] | None = None) -> MergeResult:
        files, metrics = build_merge(spec, StoreWorkspace(self.store), progress=progress, cancelled=cancelled,
                                     shard_bytes=self.shard_bytes)
        if progress:
            progress("committing", 0, 0, 0)
        try:
            return self.commit(spec, files, metrics)
        except BaseException:
            self.store.discard_unused([f.sha256 for f in files])
            raise

    def once(self, recipe_hash: str, reuse: Callable[[tuple[str, str]], Any], build: Callable[[], Any]) -> Any:
        """Builds a recipe once: under its lock, ``reuse((artifact, digest))`` of an earlier build, else ``build()``.

        The lock is the catalog's, so it holds across every replica sharing it: a second request for the
        recipe, on any of them, waits and then finds the first one's result in the catalog."""
        with self.store.catalog.lock(f"recipe:{recipe_hash}"):
            cached = self.store.catalog.revisions_with_recipe(recipe_hash)
            return reuse(cached[0]) if cached else build()

    # -- evaluation ------------------------------------------------------------------
    def evaluation_spec(self, spec: str, data: str, *, device: str = "auto") -> EvaluateSpec:
        executor.check_device_name(device)  # a bad name fails the request; availability is the worker's
        rev = self.store.resolve(spec)
        data_rev = self.store.resolve(data)
        if data_rev.kind is not Kind.DATASET:
            raise InvalidInputError(f"{data} is a {data_rev.kind.value}, not a dataset")
        if rev.kind is Kind.DATASET:
            raise InvalidInputError(f"{spec} is a dataset; evaluate a model, adapter or task vector")
        base = rev if rev.kind is Kind.MODEL else self.store.resolve(rev.base)
        return EvaluateSpec(target=rev.spec, data=data_rev.spec, base=base.spec, device=device)
