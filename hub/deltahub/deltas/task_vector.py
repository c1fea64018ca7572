"""Builds a task vector (finetuned - base) one parameter at a time.

Choices: deltas are computed and stored in float32 (float64 stays float64),
since the difference of two bf16 weights is generally not a bf16 number;
with a rank or energy target every 2-D delta is factored by truncated SVD
and 1-D deltas (norms, biases) stay dense. The relative error reported is
over the whole vector: sqrt(sum of squared residuals / sum of squared deltas).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from deltahub.deltas.lowrank import check_target, factor
from deltahub.errors import PreconditionError
from deltahub.formats.model import BaseModelInfo
from deltahub.formats.safetensors_writer import SafetensorsWriter
from deltahub.formats.task_vector import FORMAT, LOW_RANK_A, LOW_RANK_B
from deltahub.formats.tensors import TensorFiles


@dataclass(frozen=True)
class TaskVectorStats:
    parameters: int
    low_rank: int
    relative_error: float
    ranks: dict[str, int]


def delta_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_compatible(ft_info: BaseModelInfo, base_info: BaseModelInfo) -> None:
    """The finetuned model has the base's parameters with the base's shapes (headers only: no tensor read)."""
    extra = sorted(set(ft_info.shapes) - set(base_info.shapes))
    if extra:
        raise PreconditionError(f"the finetuned model has parameters the base lacks: {extra[:5]}")
    for name, shape in ft_info.shapes.items():
        if base_info.shapes[name] != shape:
            raise PreconditionError(
                f"parameter {name!r} has shape {list(shape)} in the finetuned model and "
                f"{list(base_info.shapes[name])} in the base (was the vocabulary extended?)"
            )


def build_task_vector(
    finetuned: tuple[BaseModelInfo, dict[str, Path]],
    base: tuple[BaseModelInfo, dict[str, Path]],
    writer: SafetensorsWriter,
    *,
    rank: int | None = None,
    energy: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TaskVectorStats:
    ft_info, ft_files = finetuned
    base_info, base_files = base
    check_target(rank, energy)
    check_compatible(ft_info, base_info)
    names = sorted(ft_info.shapes)
    err_sq = norm_sq = 0.0
    ranks: dict[str, int] = {}
    with ExitStack() as stack:
        io = TensorFiles(stack)

        def tensor(info: BaseModelInfo, files: dict[str, Path], name: str) -> torch.Tensor:
            return io.get(files[info.weight_files[name]], name)

        for i, name in enumerate(names):
            ft = tensor(ft_info, ft_files, name)
            dtype = delta_dtype(ft.dtype)
            delta = ft.to(dtype) - tensor(base_info, base_files, name).to(dtype)
            if (rank or energy) and delta.ndim == 2:
                f = factor(delta, rank=rank, energy=energy)
                writer.add(name + LOW_RANK_A, f.A)
                writer.add(name + LOW_RANK_B, f.B)
                err_sq += f.error_sq
                norm_sq += f.norm_sq
                ranks[name] = f.rank
            else:
                writer.add(name, delta)
                norm_sq += float(delta.double().pow(2).sum())
            if progress:
                progress(i + 1, len(names))
    rel = (err_sq / norm_sq) ** 0.5 if norm_sq > 0 else 0.0
    return TaskVectorStats(len(names), len(ranks), rel, ranks)


def task_vector_metadata(form: str) -> dict[str, str]:
    return {"format": FORMAT, "form": form}
