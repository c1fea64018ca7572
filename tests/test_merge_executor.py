"""The streaming executor: order, determinism and memory bound with several workers."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import save_file

from deltahub.errors import CancelledError
from deltahub.merging import MERGE_METHODS, Plan, executor
from deltahub.merging.settings import TensorSettings
from deltahub.merging.sources import DeltaSource

SHAPES = {"embed.weight": (64, 8), "l0.w": (8, 8), "l0.b": (8,), "l1.w": (8, 8), "l1.b": (8,), "head.weight": (64, 8)}


class DictSource(DeltaSource):
    """A full model held in memory: tau = theta - theta_0."""

    def __init__(self, label, thetas):
        self.label, self.thetas = label, thetas

    def delta(self, name, base):
        return self.thetas[name].float() - base.float()

    def theta(self, name, base):
        return self.thetas[name]


class Recorder:
    """An output that keeps what it is given, in the order given."""

    def __init__(self):
        self.got: list[tuple[str, torch.Tensor]] = []
        self.aborted = False

    def prepare(self, name, base, delta):
        return (base.to(delta.dtype) + delta).to(base.dtype)

    def add_prepared(self, name, base, merged):
        self.got.append((name, merged))

    def add_unchanged(self, name, base):
        self.got.append((name, base))

    def add_replacement(self, name, tensor):
        self.got.append((name, tensor))

    def add_factors(self, name, B, A):
        raise AssertionError("no low-rank inputs here")

    def abort(self):
        self.aborted = True


@pytest.fixture()
def models(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    save_file(base, str(tmp_path / "model.safetensors"))
    inputs = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(3)]
    return tmp_path / "model.safetensors", base, inputs


def merged(models, method, params=None, *, workers, cancelled=None, out=None):
    path, base, inputs = models
    m = MERGE_METHODS.get(method)
    out = out or Recorder()
    job = executor.MergeJob(
        method=m, settings=TensorSettings(m, m.spec.resolve_params(params or {}), None, None, list(SHAPES)), plan=Plan(),
        base_files={"model.safetensors": path}, base_weight_files={k: "model.safetensors" for k in SHAPES},
        order=list(SHAPES), sources=[DictSource(f"in{i}", t) for i, t in enumerate(inputs)], output=out,
    )
    executor.run(job, device="cpu", workers=workers, cancelled=cancelled)
    return out


@pytest.mark.parametrize("method, params", [("magmax", {}), ("ties", {"density": 0.5}), ("task_arithmetic", {})])
def test_workers_change_neither_order_nor_bytes(models, method, params):
    one = merged(models, method, params, workers=1)
    four = merged(models, method, params, workers=4)
    assert [n for n, _ in one.got] == [n for n, _ in four.got] == list(SHAPES)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(one.got, four.got))


def test_ties_runs_mergekit_kernel_on_the_models_own_tensors(models):
    from mergekit.merge_methods.api import merge_state_dicts

    _, base, inputs = models
    ours = dict(merged(models, "ties", {"density": 0.5}, workers=2).got)
    sds = {"base": base, **{f"m{i}": t for i, t in enumerate(inputs)}}
    theirs = merge_state_dicts(sds, "ties", base="base",
                               parameters={"weight": {f"m{i}": 1.0 for i in range(3)}, "density": 0.5})
    assert all(torch.equal(ours[k], theirs[k]) for k in SHAPES)


def test_stochastic_methods_rebuild_bit_for_bit(models):
    a = merged(models, "dare_ties", {"density": 0.5}, workers=4)
    torch.manual_seed(123)  # whatever the global generator held before
    state = torch.get_rng_state()
    b = merged(models, "dare_ties", {"density": 0.5}, workers=4)
    assert torch.equal(torch.get_rng_state(), state)  # other users of the generator are left their sequence
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a.got, b.got))
    base = dict(zip(SHAPES, (t for _, t in a.got)))
    assert not torch.equal(base["l0.w"], models[1]["l0.w"])  # it did merge


def test_in_flight_groups_hold_at_most_the_largest_parameter(models, monkeypatch):
    largest = max(torch.Size(s).numel() for s in SHAPES.values())
    live, peak, lock = [0], [0], threading.Lock()
    real = executor._merge_one

    def counting(job, name, base, dev):
        with lock:
            live[0] += base.numel()
            peak[0] = max(peak[0], live[0])
        try:
            return real(job, name, base, dev)
        finally:
            with lock:
                live[0] -= base.numel()

    monkeypatch.setattr(executor, "_merge_one", counting)
    merged(models, "magmax", workers=4)
    assert 0 < peak[0] <= largest


def test_cancel_and_failure_abort_the_output(models):
    calls, out = iter(range(100)), Recorder()
    with pytest.raises(CancelledError, match="cancelled"):
        merged(models, "magmax", workers=2, cancelled=lambda: next(calls) >= 2, out=out)
    assert out.aborted and len(out.got) <= 2
    path, base, inputs = models
    inputs[1]["l1.w"] = torch.zeros(3, 3)  # a worker fails (the engine checks shapes before this)
    out = Recorder()
    with pytest.raises(RuntimeError, match="size"):
        merged(models, "magmax", workers=2, out=out)
    assert out.aborted
