"""The tensor work that jobs run on a worker: merges, evaluation, task vectors.

Each function takes a job's spec (every revision named by digest) and a
:class:`deltahub.workspace.Workspace` to read inputs from and write output
blobs to, and returns what to commit (files and metrics) or the result.
Nothing here commits, resolves names or checks access: the hub did that
when the job was asked, and commits what the worker sends back.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from deltahub.artifacts import FileEntry, Kind, Revision
from deltahub.deltas.task_vector import build_task_vector, task_vector_metadata
from deltahub.errors import PreconditionError
from deltahub.evaluation import ModelProbe
from deltahub.formats.dataset import read_rows
from deltahub.formats.model import INDEX_FILE
from deltahub.formats.safetensors_writer import SafetensorsWriter
from deltahub.formats.task_vector import DEFAULT_FILE as TASK_VECTOR_FILE
from deltahub.jobs.specs import EvaluateSpec, MergeSpec, TaskVectorSpec
from deltahub.merging import MERGE_METHODS, executor
from deltahub.merging.outputs import DEFAULT_SHARD_BYTES, AdapterOutput, ModelOutput, TaskVectorOutput
from deltahub.merging.sources import AdapterSource, DeltaSource, ModelSource, TaskVectorSource
from deltahub.merging.settings import TensorSettings
from deltahub.merging.spec import Plan
from deltahub.workspace import Workspace, link_tree

MAX_EVAL_ROWS = 2048

# stage, done, total, bytes
Progress = Callable[[str, int, int, int], None]
Cancelled = Callable[[], bool]


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


def sources(ws: Workspace, inputs: list[Revision], base_info, stack: ExitStack, *,
            resized_first: bool = False) -> list[DeltaSource]:
    """One delta source per input; only the first (a domain model) may have a resized vocabulary."""
    out: list[DeltaSource] = []
    for i, rev in enumerate(inputs):
        files = ws.files(rev)
        if rev.kind is Kind.MODEL:
            out.append(ModelSource(rev.spec, ws.base_info(rev), files, base_info, stack,
                                   allow_resized_embeddings=resized_first and i == 0))
        elif rev.kind is Kind.TASK_VECTOR:
            out.append(TaskVectorSource(rev.spec, files, stack))
        else:
            out.append(AdapterSource(rev.spec, files, stack))
    return out


def probe(ws: Workspace, base: Revision, srcs, data: Revision, device, stack: ExitStack) -> ModelProbe:
    """The base model loaded from links to its files, with the inputs' deltas and the data's rows."""
    ws.tmp.mkdir(parents=True, exist_ok=True)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=ws.tmp)))
    link_tree(ws.files(base), folder / "base")
    rows = read_rows(ws.files(data), limit=MAX_EVAL_ROWS)
    return ModelProbe(folder / "base", srcs, rows, device=device)


# -- merges ------------------------------------------------------------------------
def build_merge(spec: MergeSpec, ws: Workspace, *, progress: Progress | None = None,
                cancelled: Cancelled | None = None,
                shard_bytes: int = DEFAULT_SHARD_BYTES) -> tuple[list[FileEntry], dict[str, Any]]:
    """Streams the merge a recipe describes; returns the output files (blobs in ``ws.blobs``) and metrics.

    Output blobs of a merge that fails or is cancelled are discarded.
    """
    started = time.monotonic()
    recipe = spec.recipe
    method = MERGE_METHODS.get(recipe["method"])
    params, weights = recipe["params"], tuple(recipe["weights"]) if recipe.get("weights") is not None else None
    inputs = [ws.revision(s) for s in recipe["inputs"]]
    base = ws.revision(recipe["base"])
    data = ws.revision(recipe["data"]) if recipe.get("data") else None
    base_info, base_files = ws.base_info(base), ws.files(base)
    device = executor.resolve_device(spec.device)
    form = recipe["form"]
    with ExitStack() as stack:
        resized_ok = method.spec.name == "instruction_vector" and bool(params.get("skip_embeddings"))
        srcs = sources(ws, inputs, base_info, stack, resized_first=resized_ok)
        plan = Plan()
        if method.spec.needs_data:
            if progress:
                progress("planning", 0, 0, 0)
            found = probe(ws, base, srcs, data, device, stack)
            plan = method.prepare(found, params, weights)
            del found  # the model it holds is not needed while streaming
        order = list(base_info.weight_files)
        output = _output(spec, ws, inputs, base, srcs, base_info, order, shard_bytes)
        settings = TensorSettings(method, params, recipe.get("input_params"), weights, order)
        job = executor.MergeJob(
            method=method, settings=settings, plan=plan,
            base_files=base_files, base_weight_files=base_info.weight_files, order=order,
            sources=srcs, output=output, lora_space=(form == "adapter"),
        )
        report = (lambda done, total, nbytes: progress("merging", done, total, nbytes)) if progress else None
        try:
            executor.run(job, device=str(device), progress=report, cancelled=cancelled)
            files, metrics = output.finish()
        except BaseException:
            ws.discard(output.written)
            raise
    metrics = {**metrics, **plan.report, "device": device.type, "seconds": round(time.monotonic() - started, 3)}
    return files, metrics


def _output(spec: MergeSpec, ws: Workspace, inputs: list[Revision], base: Revision, srcs, base_info, order,
            shard_bytes: int):
    recipe = spec.recipe
    ws.tmp.mkdir(parents=True, exist_ok=True)
    blobs, spool = ws.blobs, str(ws.tmp)
    rank, energy = recipe.get("rank"), recipe.get("energy")
    if recipe["form"] == "task_vector":
        return TaskVectorOutput(blobs, rank=rank, energy=energy, spool_dir=spool, max_error=spec.max_error)
    if recipe["form"] == "adapter":
        adapters = [s for s in srcs if isinstance(s, AdapterSource)]
        target_rank, target_energy = rank, energy
        if not (rank or energy):  # what non-linear merges are compressed to when no target is given
            ranks = [max(a.ranks.values(), default=0) for a in adapters]
            target_rank, target_energy = (max(ranks), None) if any(ranks) else (None, 0.99)
        # base_model_name_or_path: the base's name, which Hugging Face loaders accept as a repo id (the
        # digest that pins it is the revision's base, in the hub)
        return AdapterOutput(blobs, base_name=base.artifact, task_type=_task_type(adapters, base_info.config),
                             rank=target_rank, energy=target_energy, compress_exact=bool(rank or energy),
                             spool_dir=spool, whole={p for a in adapters for p in a.saved_params},
                             max_error=spec.max_error)
    resized = {n: s for s in srcs if isinstance(s, ModelSource) for n in s.resized}
    stored = STORED_DTYPES.get(recipe.get("dtype") or "")
    layout = []
    for name in order:
        info = resized[name].info if name in resized else base_info  # a resized tensor keeps its own layout
        dtype = info.dtypes[name]
        layout.append((name, stored if stored and dtype in FLOAT_DTYPES else dtype, tuple(info.shapes[name])))
    # config and tokenizer: the base's, or the domain model's when it resized the vocabulary
    donor = next((rev for rev, s in zip(inputs, srcs) if isinstance(s, ModelSource) and s.resized), base)
    other = [f for f in donor.files if f.path != INDEX_FILE and not f.path.endswith(".safetensors")]
    if stored:
        other = [_with_dtype(ws, donor, f, recipe["dtype"]) if f.path == "config.json" else f for f in other]
    return ModelOutput(blobs, layout, other, shard_bytes=shard_bytes)


STORED_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def _with_dtype(ws: Workspace, rev: Revision, entry: FileEntry, dtype: str) -> FileEntry:
    """The model's config.json saying the dtype its weights are stored in (what torch_dtype="auto" loads)."""
    import json

    from deltahub.formats.model import load_json

    config = load_json(ws.files(rev)[entry.path], entry.path)
    config["torch_dtype"] = dtype
    if "dtype" in config:
        config["dtype"] = dtype
    sha, size = ws.blobs.put_bytes(json.dumps(config, indent=2, sort_keys=True).encode())
    return FileEntry(entry.path, sha, size)


# -- evaluation --------------------------------------------------------------------
def evaluate(spec: EvaluateSpec, ws: Workspace, *, progress: Progress | None = None) -> dict[str, Any]:
    """The held-out metric of a model, adapter or task vector: EvalResult as a dict, with target and data."""
    device = executor.resolve_device(spec.device)
    target, data, base = ws.revision(spec.target), ws.revision(spec.data), ws.revision(spec.base)
    report = (lambda done, total: progress("evaluating", done, total, 0)) if progress else None
    with ExitStack() as stack:
        inputs = [] if target.kind is Kind.MODEL else [target]
        srcs = sources(ws, inputs, ws.base_info(base), stack)
        result = probe(ws, base, srcs, data, device, stack).evaluate(progress=report)
    return {"target": target.spec, "data": data.spec, "device": device.type, **result.to_dict()}


# -- task vectors ------------------------------------------------------------------
def build_task_vector_files(spec: TaskVectorSpec, ws: Workspace, *,
                            progress: Progress | None = None) -> tuple[list[FileEntry], dict[str, Any]]:
    """``finetuned - base`` (dense, or factored to a rank or energy target) as one safetensors blob."""
    ft, base = ws.revision(spec.finetuned), ws.revision(spec.base)
    for what, rev in (("finetuned", ft), ("base", base)):
        if rev.kind is not Kind.MODEL:
            raise PreconditionError(f"{what} {rev.artifact} is a {rev.kind.value}, not a model")
    form = "lowrank" if (spec.rank or spec.energy) else "dense"
    ws.tmp.mkdir(parents=True, exist_ok=True)
    writer = SafetensorsWriter(metadata=task_vector_metadata(form), spool_dir=str(ws.tmp))
    report = (lambda done, total: progress("extracting", done, total, 0)) if progress else None
    stats = build_task_vector((ws.base_info(ft), ws.files(ft)), (ws.base_info(base), ws.files(base)), writer,
                              rank=spec.rank, energy=spec.energy, progress=report)
    with ws.blobs.writer() as blob:
        writer.finish(blob)
    metrics = {"relative_error": stats.relative_error, "low_rank_parameters": stats.low_rank, "form": form}
    return [FileEntry(TASK_VECTOR_FILE, blob.sha256, blob.size)], metrics
