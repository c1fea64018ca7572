"""The streaming executor: one base parameter at a time, from memory maps to the output.

Peak memory is about one parameter group (the base tensor, one delta per
input and the result), not a model: groups merged concurrently by the workers
together hold no more base elements than the largest parameter. Parameters
are visited in the base's file and offset order so the memory maps are read
sequentially. Arithmetic runs on
``device`` (CPU by default, CUDA when asked for and present).
"""

from __future__ import annotations


import os
import re
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from deltahub.errors import CancelledError, DeltahubError, InvalidInputError
from deltahub.formats.tensors import TensorFiles
from deltahub.merging.sources import DeltaSource, work_dtype
from deltahub.merging.settings import TensorSettings
from deltahub.merging.spec import MergeMethod, ParamGroup, Plan

Progress = Callable[[int, int, int], None]  # tensors done, tensors total, base bytes done


@dataclass
class MergeJob:
    method: MergeMethod
    settings: TensorSettings  # each tensor's parameters and weights
    plan: Plan
    base_files: dict[str, Path]
    base_weight_files: dict[str, str]  # parameter -> file path in the base revision
    order: list[str]
    sources: list[DeltaSource]
    output: object  # ModelOutput | TaskVectorOutput | AdapterOutput
    lora_space: bool = False


def check_device_name(device: str | None) -> None:
    """A device a worker could have: checked where the request arrives (the hub may have no GPU itself)."""
    if device in (None, "", "auto"):
        return
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise InvalidInputError(f"device {str(device)[:40]!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_device(device: str | None) -> torch.device:
    """The device on this machine (the worker's): auto is CUDA when present."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(device)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device cuda was asked for but this machine has no CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidInputError(f"device {device} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]{1,2})?)$")


def _combine_factors(factors: list, coeffs: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """sum_i c_i B_i A_i as one (B, A) pair of rank sum r_i; None when no input contributes."""
    pairs = [(f[0] * c, f[1]) for f, c in zip(factors, coeffs) if f is not None and c != 0]
    if not pairs:
        return None
    return torch.cat([b for b, _ in pairs], dim=1), torch.cat([a for _, a in pairs], dim=0)


def default_workers(dev: torch.device) -> int:
    """Parameter groups merged at once: one per core on CPU, at most 4 (some kernels,
    e.g. the argsort under TIES' magnitude pruning, run on one core), one on CUDA."""
    return 1 if dev.type == "cuda" else max(1, min(4, os.cpu_count() or 1))


@dataclass
class _Pending:
    name: str
    base: torch.Tensor
    future: Future
    size: int


def run(job: MergeJob, *, device: str | None = None, progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None, workers: int | None = None) -> None:
    """Merges every parameter of ``job.order`` into ``job.output``.

    Workers compute parameter groups concurrently; the output receives them in
    ``order``, so the bytes written do not depend on the number of workers.
    Groups in flight (computing, or done and waiting for their turn) hold at
    most as many base elements as the largest parameter, so peak memory stays
    that of the largest group. A ``stochastic`` method runs one group at a
    time, each under a seed derived from the parameter's name.
    """
    dev = resolve_device(device)
    n_workers = 1 if job.method.stochastic else (workers or default_workers(dev))
    total = len(job.order)
    done = done_bytes = 0

    with ExitStack() as stack:
        io = TensorFiles(stack)
        paths = [job.base_files[job.base_weight_files[name]] for name in job.order]
        budget = max((io.numel(path, name) for path, name in zip(paths, job.order)), default=0)
        pool = stack.enter_context(ThreadPoolExecutor(n_workers, thread_name_prefix="merge"))
        pending: deque[_Pending] = deque()
        in_flight = 0

        def finish_oldest() -> None:
            nonlocal in_flight, done, done_bytes
            p = pending.popleft()
            _apply(job.output, p.name, p.base, p.future.result())
            in_flight -= p.size
            done += 1
            done_bytes += p.base.numel() * p.base.element_size()
            if progress is not None:
                progress(done, total, done_bytes)

        try:
            for name, path in zip(job.order, paths):
                if cancelled is not None and cancelled():
                    raise CancelledError(f"merge cancelled after {done} of {total} tensors")
                size = io.numel(path, name)
                while pending and (in_flight + size > budget or len(pending) >= 2 * n_workers):
                    finish_oldest()
                base = io.get(path, name)
                pending.append(_Pending(name, base, pool.submit(_merge_one, job, name, base, dev), size))
                in_flight += size
            while pending:
                finish_oldest()
        except Exception:
            for p in pending:
                p.future.cancel()
            pool.shutdown(wait=True)
            job.output.abort()
            raise


def _apply(output, name: str, base: torch.Tensor, outcome: tuple[str, object]) -> None:
    kind, value = outcome
    if kind == "replacement":
        output.add_replacement(name, value)
    elif kind == "unchanged":
        output.add_unchanged(name, base)
    elif kind == "factors":
        output.add_factors(name, *value)
    else:
        output.add_prepared(name, base, value)


# One process-wide generator feeds mergekit's random masks: a stochastic
# parameter seeds it and draws under this lock, so concurrent merges cannot
# interleave their draws.
_RNG_LOCK = threading.Lock()


def _merge_one(job: MergeJob, name: str, base: torch.Tensor, dev: torch.device) -> tuple[str, object]:
    """What the output receives for one parameter: ``(kind, value)``."""
    replacement = next((r for s in job.sources if (r := s.replacement(name)) is not None), None)
    if replacement is not None:
        return "replacement", replacement
    if not base.is_floating_point():  # integer buffers are not weights: the base's stand
        return "unchanged", None
    n = len(job.sources)
    params, weights = job.settings.at(name)
    coeffs = job.method.coefficients(name, n, weights, params, job.plan)
    if coeffs is not None or job.method.wants_thetas(params):
        thetas = [s.theta(name, base) for s in job.sources]
        if all(t is not None for t in thetas):  # every input is a full model
            if all(t is base for t in thetas):
                return "unchanged", None
            if coeffs is not None:
                merged = _linear_from_thetas(base.to(dev), [t.to(dev) for t in thetas], coeffs)
            else:
                group = ParamGroup(name=name, base=base.to(dev), deltas=[], weights=weights,
                                   thetas=[t.to(dev) for t in thetas])
                merged = _run_method(job, group, params)
            return "delta", job.output.prepare(name, base, merged.cpu())
    factors = [s.factors(name) for s in job.sources] if job.lora_space else [None] * n
    deltas = [s.delta(name, base) if f is None else None for s, f in zip(job.sources, factors)]
    touched = [f is not None or d is not None for f, d in zip(factors, deltas)]
    if not any(touched):
        return "unchanged", None
    if coeffs is not None and job.lora_space and all(d is None for d in deltas):  # all low-rank, linear method
        exact = _combine_factors(factors, coeffs)
        if exact is not None:
            return "factors", exact
    deltas = [f[0] @ f[1] if f is not None else d for f, d in zip(factors, deltas)]
    work = work_dtype(base.dtype)
    group = ParamGroup(
        name=name,
        base=base.to(dev, work),
        deltas=[d.to(dev, work) if d is not None else torch.zeros(base.shape, dtype=work, device=dev) for d in deltas],
        weights=weights,
    )
    return "delta", job.output.prepare(name, base, _run_method(job, group, params).cpu())


def _linear_from_thetas(base: torch.Tensor, thetas: list[torch.Tensor], coeffs: Sequence[float]) -> torch.Tensor:
    """sum_i c_i (theta_i - theta_0) as (sum_i c_i theta_i) - (sum_i c_i) theta_0, accumulated in
    float32 straight from the stored tensors: n + 1 passes and no per-input float32 copy."""
    out = torch.zeros(base.shape, dtype=work_dtype(base.dtype), device=base.device)
    total = 0.0
    for theta, c in zip(thetas, coeffs):
        if c and theta is not base:
            out.add_(theta, alpha=float(c))
            total += float(c)
    if total:
        out.add_(base, alpha=-total)
    return out


def _run_method(job: MergeJob, group: ParamGroup, params: dict) -> torch.Tensor:
    try:
        if job.method.stochastic:
            # fork_rng: the global state is restored afterwards, so other work in
            # the process (a trainer's dropout) continues its own sequence
            devices = [group.base.device.index or 0] if group.base.is_cuda else []
            with _RNG_LOCK, torch.random.fork_rng(devices=devices):
                torch.manual_seed(zlib.crc32(group.name.encode()))
                merged = job.method.merge(group, params, job.plan)
        else:
            merged = job.method.merge(group, params, job.plan)
    except DeltahubError:
        raise
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidInputError(f"method {job.method.spec.name} failed on parameter {group.name}: {err}") from None
    return merged
