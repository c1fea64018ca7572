"""The streaming executor: one base parameter at a time, from memory maps to the output.

Peak memory is one parameter group (the base tensor, one delta per input and
the result), not a model. Parameters are visited in the base's file and
offset order so the memory maps are read sequentially. Arithmetic runs on
``device`` (CPU by default, CUDA when asked for and present).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from deltahub.errors import CancelledError, DeltahubError, InvalidInputError
from deltahub.formats.tensors import TensorFiles
from deltahub.merging.sources import DeltaSource, work_dtype
from deltahub.merging.spec import MergeMethod, ParamGroup, Plan

Progress = Callable[[int, int, int], None]  # tensors done, tensors total, base bytes done


@dataclass
class MergeJob:
    method: MergeMethod
    params: dict
    plan: Plan
    weights: Sequence[float] | None
    base_files: dict[str, Path]
    base_weight_files: dict[str, str]  # parameter -> file path in the base revision
    order: list[str]
    sources: list[DeltaSource]
    output: object  # ModelOutput | TaskVectorOutput | AdapterOutput
    lora_space: bool = False


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device cuda was asked for but this machine has no CUDA device")
    return dev


def _combine_factors(job: MergeJob, name: str, factors: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    """sum_i c_i B_i A_i as one (B, A) pair of rank sum r_i; None for a non-linear method."""
    coeffs = job.method.coefficients(name, len(job.sources), job.weights, job.params, job.plan)
    if coeffs is None:
        return None
    pairs = [(f[0] * c, f[1]) for f, c in zip(factors, coeffs) if f is not None and c != 0]
    if not pairs:
        return None
    return torch.cat([b for b, _ in pairs], dim=1), torch.cat([a for _, a in pairs], dim=0)


def run(job: MergeJob, *, device: str | None = None, progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None) -> None:
    dev = resolve_device(device)
    total = len(job.order)
    done_bytes = 0

    with ExitStack() as stack:
        io = TensorFiles(stack)
        try:
            for i, name in enumerate(job.order):
                if cancelled is not None and cancelled():
                    raise CancelledError(f"merge cancelled after {i} of {total} tensors")
                base = io.get(job.base_files[job.base_weight_files[name]], name)
                done_bytes += base.numel() * base.element_size()
                _merge_one(job, name, base, dev)
                if progress is not None:
                    progress(i + 1, total, done_bytes)
        except Exception:
            job.output.abort()
            raise


def _merge_one(job: MergeJob, name: str, base: torch.Tensor, dev: torch.device) -> None:
    replacement = next((r for s in job.sources if (r := s.replacement(name)) is not None), None)
    if replacement is not None:
        job.output.add_replacement(name, replacement)
        return
    if not base.is_floating_point():  # integer buffers are not weights: the base's stand
        job.output.add_unchanged(name, base)
        return
    n = len(job.sources)
    factors = [s.factors(name) for s in job.sources] if job.lora_space else [None] * n
    deltas = [s.delta(name, base) if f is None else None for s, f in zip(job.sources, factors)]
    touched = [f is not None or d is not None for f, d in zip(factors, deltas)]
    if not any(touched):
        job.output.add_unchanged(name, base)
        return
    if job.lora_space and all(d is None for d in deltas):  # every input touching it is low-rank
        exact = _combine_factors(job, name, factors)
        if exact is not None:
            job.output.add_factors(name, *exact)
            return
    deltas = [f[0] @ f[1] if f is not None else d for f, d in zip(factors, deltas)]
    work = work_dtype(base.dtype)
    group = ParamGroup(
        name=name,
        base=base.to(dev, work),
        deltas=[d.to(dev, work) if d is not None else torch.zeros(base.shape, dtype=work, device=dev) for d in deltas],
        weights=job.weights,
    )
    try:
        merged = job.method.merge(group, job.params, job.plan)
    except DeltahubError:
        raise
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidInputError(f"method {job.method.spec.name} failed on parameter {name}: {err}") from None
    job.output.add_delta(name, base, merged.cpu())
