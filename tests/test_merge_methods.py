"""Merge methods as pure tensor functions: hand-computed cases and properties."""

from __future__ import annotations

import pytest
import torch

from deltahub.errors import InvalidInputError
from deltahub.merging import MERGE_METHODS, ParamGroup, Plan
from deltahub.merging.greedy_soup import greedy_select
from deltahub.merging.magmax import magmax
from deltahub.mergekit_yaml import from_mergekit_yaml, to_mergekit_yaml
from deltahub.merging.recall import layer_row, layer_weights, rbf_similarity, typical_samples


def run(name, deltas, weights=None, **params):
    m = MERGE_METHODS.get(name)
    p = m.spec.resolve_params(params)
    return m.merge(ParamGroup("model.layers.0.mlp.up_proj.weight", torch.zeros_like(deltas[0]), deltas, weights), p, Plan())


def test_magmax_by_hand():
    t1, t2 = torch.tensor([1.0, -3.0, 2.0, 0.5]), torch.tensor([-2.0, 1.0, 2.0, -0.5])
    # |.| max: -2 (t2), -3 (t1), tie 2 -> later (t2), tie |0.5| -> later (-0.5); times lambda 0.5
    assert torch.equal(magmax([t1, t2], scale=0.5), torch.tensor([-1.0, -1.5, 1.0, -0.25]))
    assert torch.equal(run("magmax", [t1, t2]), torch.tensor([-1.0, -1.5, 1.0, -0.25]))


def test_magmax_picks_argmax_magnitude():
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(50, generator=g) for _ in range(4)]
    out = run("magmax", deltas, **{"lambda": 1.0})
    stacked = torch.stack(deltas)
    idx = stacked.abs().argmax(0)
    assert torch.equal(out, stacked.gather(0, idx[None])[0])


def test_one_input_returns_it():
    d = torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(run("uniform_soup", [d]), d)
    assert torch.equal(run("magmax", [d], **{"lambda": 1.0}), d)
    assert torch.allclose(run("task_arithmetic", [d]), d)


def test_soups_are_permutation_invariant_and_average():
    a, b, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0]), torch.tensor([-1.0, 3.0])
    assert torch.allclose(run("uniform_soup", [a, b, c]), torch.tensor([1.0, 1.0]))
    assert torch.allclose(run("uniform_soup", [c, a, b]), run("uniform_soup", [a, b, c]))
    assert torch.allclose(run("uniform_soup", [a, b], weights=[3, 1]), torch.tensor([1.5, 1.0]))


def test_instruction_vector_by_hand():
    domain, instruct = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    assert torch.allclose(run("instruction_vector", [domain, instruct]), torch.tensor([1.5, 1.0]))
    assert torch.allclose(run("instruction_vector", [domain, instruct], alpha=0.5), torch.tensor([1.25, 1.5]))
    m = MERGE_METHODS.get("instruction_vector")
    p = m.spec.resolve_params({"skip_embeddings": "true"})
    assert m.coefficients("model.embed_tokens.weight", 2, None, p, Plan()) == [1.0, 0.0]
    assert m.coefficients("model.layers.1.self_attn.q_proj.weight", 2, None, p, Plan()) == [1.0, 1.0]


def test_greedy_select_keeps_only_strict_improvements():
    # ingredient scores 0.5, 0.9, 0.7; soups: {1,2} -> 0.95 kept, {1,2,0} -> 0.95 (not strictly better) dropped
    table = {(0,): 0.5, (1,): 0.9, (2,): 0.7, (1, 2): 0.95, (0, 1, 2): 0.95}
    kept, own, best = greedy_select(3, lambda idx: table[tuple(sorted(idx))])
    assert kept == [1, 2] and own == [0.5, 0.9, 0.7] and best == 0.95


def test_recall_pieces():
    reps = torch.zeros(2, 3, 4, 5)  # models, layers, samples, d
    reps[0, 1] += 1.0               # model 0 differs from the new model (1) at layer 1 only
    sims = rbf_similarity(reps, 1)
    assert torch.allclose(sims[:, 1], torch.ones(3, dtype=torch.float64))
    assert sims[0, 0] == 1 and sims[2, 0] == 1 and sims[1, 0] < 1
    w = layer_weights(sims, 1.0)
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(w[0], torch.tensor([0.5, 0.5], dtype=torch.float64)) and w[1, 1] > w[1, 0]
    assert layer_row("model.embed_tokens.weight", 3) == 0
    assert layer_row("model.layers.0.mlp.up_proj.weight", 3) == 1
    assert layer_row("model.layers.1.input_layernorm.weight", 3) == 2
    assert layer_row("lm_head.weight", 3) == 2 and layer_row("model.norm.weight", 3) == 2
    x = torch.cat([torch.zeros(5, 2), torch.ones(5, 2) * 10])
    picked = typical_samples(x, 2)
    assert len(picked) == 2 and {i // 5 for i in picked} == {0, 1}  # one sample per cluster


def test_unknown_method_and_parameters_are_clear():
    with pytest.raises(InvalidInputError, match="known: .*magmax"):
        MERGE_METHODS.get("nope")
    with pytest.raises(InvalidInputError, match="its parameters: lambda"):
        MERGE_METHODS.get("magmax").spec.resolve_params({"lamda": 1})
    with pytest.raises(InvalidInputError, match="not a float"):
        MERGE_METHODS.get("magmax").spec.resolve_params({"lambda": "big"})
    with pytest.raises(InvalidInputError, match="needs parameter t"):
        MERGE_METHODS.get("slerp").validate(MERGE_METHODS.get("slerp").spec.resolve_params({}), 1)


def test_mergekit_yaml_round_trip():
    text = """
merge_method: ties
base_model: base/tiny
models:
  - model: ft/one
    parameters: {weight: 0.7, density: 0.5}
  - model: ft/two
    parameters: {weight: 0.3, density: 0.8}
parameters: {normalize: true}
"""
    doc = from_mergekit_yaml(text)
    assert doc == {"method": "ties", "inputs": ["ft/one", "ft/two"], "base": "base/tiny", "weights": [0.7, 0.3],
                   "params": {"normalize": True}, "input_params": [{"density": 0.5}, {"density": 0.8}], "dtype": ""}
    back = from_mergekit_yaml(to_mergekit_yaml({**doc, "base": doc["base"]}))
    assert back == {**doc, "dtype": "float32"}  # what deltahub accumulates in, said to mergekit
    with pytest.raises(InvalidInputError, match="mergekit has no method"):
        to_mergekit_yaml({"method": "greedy_soup", "inputs": ["a/b"], "base": "c/d"})


def test_settings_resolve_per_tensor_as_mergekit_reads_them():
    from deltahub.merging.settings import TensorSettings, canonical, layer_positions

    names = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight",
             "model.layers.2.mlp.up_proj.weight", "lm_head.weight"]
    assert list(layer_positions(names).values()) == [0.0, 0.0, 0.5, 1.0, 0.0]  # outside the stack: t = 0
    assert canonical("density", [0.5, "5e-1"], float) == 0.5          # an all-equal gradient is that value
    assert canonical("density", "[1, .7]", float) == [1.0, 0.7]         # text read as YAML
    assert canonical("w", {"filter": "mlp", "value": "0.5"}, float) == [{"filter": "mlp", "value": 0.5}]
    ties = MERGE_METHODS.get("ties")
    params = ties.spec.resolve_params({"density": [0, 1]})
    s = TensorSettings(ties, params, [{"weight": [{"filter": "mlp", "value": 2}, {"value": 1}]}, {}], [1.0, 3.0],
                       names)
    at = {n: s.at(n) for n in names}
    assert at[names[2]][0]["density"] == 0.5 and at[names[3]][0]["density"] == 1.0 and at[names[0]][0]["density"] == 0
    assert at[names[1]][1] == [2.0, 3.0] and at[names[2]][1] == [1.0, 3.0]  # input 0's filter, input 1's plain weight
