"""The three output forms of a merge, each written as the executor streams.

* :class:`ModelOutput`: a full HF model folder: the base's layout and dtypes,
  weights written shard by shard straight into blobs (header first, no
  spool), config/tokenizer files shared with the base (same blobs).
* :class:`TaskVectorOutput`: the merged deltas, dense float32, or factored
  to a rank / energy target per 2-D parameter; all-zero deltas are left out.
* :class:`AdapterOutput`: a LoRA adapter that plain peft loads. Exact
  factors come from LoRA-space merging (``add_factors``); other deltas are
  compressed by truncated SVD. Per-module ranks go to ``rank_pattern`` and
  ``alpha_pattern`` is set equal to them so every module's scale is 1.
  Parameters an input holds whole (``modules_to_save``, a saved embedding
  layer) and deltas a LoRA cannot hold (1-D norms, input embeddings) are
  stored whole, exactly, as peft's ``modules_to_save``: nothing is dropped.

Each output splits taking a merged delta in two: ``prepare`` (the tensor
work: adding the base, casting, SVD; pure, run by the executor's workers in
parallel) and ``add_prepared`` (writing and bookkeeping, called in parameter
order from one thread).

Every output reports the relative Frobenius error of what it stored against
the merged deltas, sqrt(sum of squared residuals / sum of squared deltas),
overall and per parameter (``parameter_errors``: [name, error] pairs, the largest first). A
parameter whose own error passes ``max_error`` fails the merge there, before
anything is committed: an approximation is stored only where the caller
allowed it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from deltahub.artifacts import FileEntry
from deltahub.deltas.lowrank import factor
from deltahub.errors import PreconditionError
from deltahub.formats.adapter import CONFIG_FILE, PREFIX, WEIGHTS_FILE
from deltahub.formats.model import INDEX_FILE
from deltahub.formats.safetensors_writer import DTYPE_SIZES, TORCH_DTYPES, PlannedSafetensorsWriter, SafetensorsWriter
from deltahub.formats.task_vector import DEFAULT_FILE as TASK_VECTOR_FILE
from deltahub.formats.task_vector import LOW_RANK_A, LOW_RANK_B
from deltahub.merging.params import module_of
from deltahub.merging.sources import work_dtype
from deltahub.storage.blobs import BlobStore

DEFAULT_SHARD_BYTES = 5 << 30  # as transformers' save_pretrained
# what an approximation may lose per parameter unless the caller allows more (SVD truncation of a full-rank
# delta loses far more than this; float32 rounding of an exact product far less)
DEFAULT_MAX_ERROR = 0.01
REPORTED_PARAMETERS = 50  # parameter_errors in the metrics: the largest ones


def _sq(delta: torch.Tensor) -> float:
    return float(delta.double().pow(2).sum())


class _Errors:
    def __init__(self, max_error: float = DEFAULT_MAX_ERROR) -> None:
        self.residual_sq = 0.0
        self.norm_sq = 0.0
        self.max_error = max_error
        self.per_parameter: dict[str, float] = {}

    def add(self, name: str, norm_sq: float, residual_sq: float = 0.0) -> None:
        """One parameter stored: exact (no residual) or approximated, refused past ``max_error``."""
        self.norm_sq += norm_sq
        self.residual_sq += residual_sq
        if residual_sq <= 0 or norm_sq <= 0:
            return
        err = (residual_sq / norm_sq) ** 0.5
        self.per_parameter[name] = err
        if err > self.max_error:
            raise PreconditionError(
                f"parameter {name}: the stored form would have relative error {err:.3g}, more than the allowed "
                f"{self.max_error:g}; allow it with --max-error {_ceil(err)} (SDK: max_error=), raise --rank or "
                "--energy, or ask for --form model or task_vector, which hold the merged delta exactly")

    @property
    def relative_error(self) -> float:
        return (self.residual_sq / self.norm_sq) ** 0.5 if self.norm_sq > 0 else 0.0

    def metrics(self) -> dict:
        worst = sorted(self.per_parameter.items(), key=lambda kv: -kv[1])
        return {"relative_error": self.relative_error,
                "max_parameter_error": worst[0][1] if worst else 0.0,
                "parameter_errors": [[name, err] for name, err in worst[:REPORTED_PARAMETERS]]}


def _ceil(err: float) -> str:
    """A --max-error that lets this error pass, written short."""
    return f"{float(f'{err * 1.05:.2g}'):g}"


def _refuse_resized(name: str, what: str) -> None:
    raise PreconditionError(f"{name} was resized (extended vocabulary): {what} cannot hold it; ask for a model")


class ModelOutput:
    def __init__(self, blobs: BlobStore, layout: list[tuple[str, str, tuple[int, ...]]],
                 other_files: list[FileEntry], *, shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        self._blobs = blobs
        self._other = other_files
        self._shards: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
        size = self.total_bytes = 0
        for entry in layout:
            n = DTYPE_SIZES[entry[1]] * torch.Size(entry[2]).numel()
            if self._shards[-1] and size + n > shard_bytes:
                self._shards.append([])
                size = 0
            self._shards[-1].append(entry)
            size += n
            self.total_bytes += n
        self._dtype = {name: TORCH_DTYPES[dtype] for name, dtype, _ in layout}
        self._shard = -1
        self._blob = None
        self._writer: PlannedSafetensorsWriter | None = None
        self._left = 0
        self._done: list[FileEntry] = []
        self._weight_map: dict[str, str] = {}
        self.written: list[str] = []

    def _name(self, i: int) -> str:
        n = len(self._shards)
        return "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"

    def _next_shard(self) -> None:
        self._close_shard()
        self._shard += 1
        layout = self._shards[self._shard]
        self._blob = self._blobs.writer().__enter__()
        self._writer = PlannedSafetensorsWriter(self._blob, layout, {"format": "pt"})
        self._left = len(layout)

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.finish()
        self._blob.__exit__(None, None, None)
        self._done.append(FileEntry(self._name(self._shard), self._blob.sha256, self._blob.size))
        self.written.append(self._blob.sha256)
        self._writer = self._blob = None

    def _write(self, name: str, tensor: torch.Tensor) -> None:
        if self._writer is None or self._left == 0:
            self._next_shard()
        self._writer.add(name, tensor.to(self._dtype[name]))
        self._weight_map[name] = self._name(self._shard)
        self._left -= 1

    def add_unchanged(self, name: str, base: torch.Tensor) -> None:
        self._write(name, base)

    def add_replacement(self, name: str, tensor: torch.Tensor) -> None:
        self._write(name, tensor)

    def prepare(self, name: str, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The merged tensor in the base's dtype (consumes ``delta``)."""
        return delta.add_(base).to(self._dtype[name])

    def add_prepared(self, name: str, base: torch.Tensor, prepared: torch.Tensor) -> None:
        self._write(name, prepared)

    def add_delta(self, name: str, base: torch.Tensor, delta: torch.Tensor) -> None:
        self.add_prepared(name, base, self.prepare(name, base, delta))

    def abort(self) -> None:
        if self._blob is not None:
            self._blob.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._writer = self._blob = None

    def finish(self) -> tuple[list[FileEntry], dict]:
        self._close_shard()
        files = list(self._done)
        if len(self._shards) > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(self._weight_map.items()))}
            sha, size = self._blobs.put_bytes(json.dumps(index, indent=2).encode())
            self.written.append(sha)
            files.append(FileEntry(INDEX_FILE, sha, size))
        taken = {f.path for f in files}
        files += [f for f in self._other if f.path not in taken]
        return files, {"relative_error": 0.0, "max_parameter_error": 0.0, "shards": len(self._shards)}


class TaskVectorOutput:
    def __init__(self, blobs: BlobStore, *, rank: int | None = None, energy: float | None = None,
                 spool_dir: str | None = None, max_error: float = DEFAULT_MAX_ERROR) -> None:
        from deltahub.deltas.task_vector import task_vector_metadata

        self._blobs = blobs
        self._rank, self._energy = rank, energy
        self.form = "lowrank" if (rank or energy) else "dense"
        self._writer = SafetensorsWriter(metadata=task_vector_metadata(self.form), spool_dir=spool_dir)
        self.errors = _Errors(max_error)
        self.written: list[str] = []
        self.ranks: dict[str, int] = {}

    def add_unchanged(self, name: str, base: torch.Tensor) -> None:
        pass  # a zero delta is simply absent

    def add_replacement(self, name: str, tensor: torch.Tensor) -> None:
        _refuse_resized(name, "a task vector")

    def prepare(self, name: str, base, delta: torch.Tensor):
        """None for an all-zero delta, its factors for a low-rank form, else (delta, squared norm)."""
        if not torch.any(delta):
            return None
        if self.form == "lowrank" and delta.ndim == 2:
            return factor(delta, rank=self._rank, energy=self._energy)
        return delta, _sq(delta)

    def add_prepared(self, name: str, base, prepared) -> None:
        if prepared is None:
            return
        if isinstance(prepared, tuple):
            delta, sq = prepared
            self.errors.add(name, sq)
            self._writer.add(name, delta)
            return
        f = prepared
        self.errors.add(name, f.norm_sq, f.error_sq)
        self._writer.add(name + LOW_RANK_A, f.A)
        self._writer.add(name + LOW_RANK_B, f.B)
        self.ranks[name] = f.rank

    def add_delta(self, name: str, base: torch.Tensor, delta: torch.Tensor) -> None:
        self.add_prepared(name, base, self.prepare(name, base, delta))

    def abort(self) -> None:
        pass

    def finish(self) -> tuple[list[FileEntry], dict]:
        with self._blobs.writer() as blob:
            self._writer.finish(blob)
        self.written.append(blob.sha256)
        metrics = {**self.errors.metrics(), "form": self.form}
        if self.ranks:
            metrics["max_rank"] = max(self.ranks.values())
        return [FileEntry(TASK_VECTOR_FILE, blob.sha256, blob.size)], metrics


@dataclass(frozen=True)
class _Whole:
    tensor: torch.Tensor   # the merged parameter, in the base's dtype
    norm_sq: float         # of its delta


class AdapterOutput:
    def __init__(self, blobs: BlobStore, *, base_name: str, task_type: str | None, rank: int | None,
                 energy: float | None, compress_exact: bool = False, spool_dir: str | None = None,
                 whole: set[str] | frozenset[str] = frozenset(), max_error: float = DEFAULT_MAX_ERROR) -> None:
        """``whole``: base parameters some input holds as whole tensors (modules_to_save, saved embedding
        layers); they, and any delta a LoRA cannot hold, are stored whole (peft's modules_to_save), exactly."""
        self._blobs = blobs
        self._whole_params = set(whole)
        self._whole: dict[str, torch.Tensor] = {}  # parameter -> merged tensor, stored as modules_to_save
        self._compress_exact = compress_exact
        self.written: list[str] = []
        self._base_name, self._task_type = base_name, task_type
        self._rank, self._energy = rank, energy
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._spool = spool_dir
        self.errors = _Errors(max_error)
        self.exact_modules = 0

    def add_unchanged(self, name: str, base: torch.Tensor) -> None:
        pass

    def add_replacement(self, name: str, tensor: torch.Tensor) -> None:
        _refuse_resized(name, "an adapter")

    def add_factors(self, name: str, B: torch.Tensor, A: torch.Tensor) -> None:
        """An exact LoRA of this parameter's merged delta (LoRA-space merging)."""
        module = module_of(name)
        if self._compress_exact:  # a target was asked for: compress the exact product too
            self.add_delta(name, None, B @ A)
            return
        self._factors[module] = (B.to(torch.float32), A.to(torch.float32))
        # ||B A||_F^2 = sum((B^T B) * (A A^T)): r x r products, not the (out x in) delta
        B64, A64 = B.double(), A.double()
        self.errors.add(name, float(((B64.T @ B64) * (A64 @ A64.T)).sum()))
        self.exact_modules += 1

    def prepare(self, name: str, base, delta: torch.Tensor):
        """None for an all-zero delta; the merged tensor itself (to store whole) for a parameter an input
        holds whole or a LoRA cannot hold (embeddings, 1-D weights); else the delta's factors."""
        if not torch.any(delta):
            return None
        if name in self._whole_params or module_of(name) is None or delta.ndim != 2:
            work = work_dtype(base.dtype)
            return _Whole((base.to(work) + delta.to(work)).to(base.dtype), _sq(delta))
        return factor(delta, rank=self._rank, energy=self._energy)

    def add_prepared(self, name: str, base, prepared) -> None:
        if prepared is None:
            return
        if isinstance(prepared, _Whole):  # exact: nothing of it is residual
            self._whole[name] = prepared.tensor
            self.errors.add(name, prepared.norm_sq)
            return
        f = prepared
        self.errors.add(name, f.norm_sq, f.error_sq)
        self._factors[module_of(name)] = (f.B, f.A)

    def add_delta(self, name: str, base, delta: torch.Tensor) -> None:
        self.add_prepared(name, base, self.prepare(name, base, delta))

    def abort(self) -> None:
        pass

    def config(self) -> dict:
        from peft import LoraConfig

        ranks = {m: int(a.shape[0]) for m, (_, a) in sorted(self._factors.items())}
        top = max(ranks.values())
        cfg = LoraConfig(
            r=top, lora_alpha=top, target_modules=sorted(ranks), rank_pattern=dict(ranks),
            alpha_pattern={m: float(r) for m, r in ranks.items()}, lora_dropout=0.0, bias="none",
            task_type=self._task_type, base_model_name_or_path=self._base_name,
            modules_to_save=self._whole_modules() or None,
        ).to_dict()
        return json.loads(json.dumps(cfg, default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v)))

    def _whole_modules(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[0] for name in self._whole})

    def finish(self) -> tuple[list[FileEntry], dict]:
        if not self._factors:
            raise PreconditionError("the merged delta touches no module a LoRA adapter can target; ask for a task_vector or model")
        both = sorted(set(self._whole_modules()) & set(self._factors))
        if both:  # peft cannot hold one module as a LoRA and whole at once
            raise PreconditionError(
                f"modules {both[:5]} have both a low-rank delta and a whole one (e.g. a bias); an adapter cannot "
                "hold that: ask for --form model or task_vector")
        writer = SafetensorsWriter(metadata={"format": "pt"}, spool_dir=self._spool)
        for module, (B, A) in sorted(self._factors.items()):
            writer.add(f"{PREFIX}{module}.lora_A.weight", A.contiguous())
            writer.add(f"{PREFIX}{module}.lora_B.weight", B.contiguous())
        for name, tensor in sorted(self._whole.items()):  # peft's layout for modules_to_save
            writer.add(f"{PREFIX}{name}", tensor.contiguous())
        with self._blobs.writer() as blob:
            writer.finish(blob)
        self.written.append(blob.sha256)
        sha, size = self._blobs.put_bytes(json.dumps(self.config(), indent=2, sort_keys=True).encode())
        self.written.append(sha)
        ranks = {m: int(a.shape[0]) for m, (_, a) in self._factors.items()}
        metrics = {
            **self.errors.metrics(), "modules": len(ranks), "max_rank": max(ranks.values()),
            "exact_modules": self.exact_modules, "whole_modules": self._whole_modules(),
        }
        return [FileEntry(WEIGHTS_FILE, blob.sha256, blob.size), FileEntry(CONFIG_FILE, sha, size)], metrics
