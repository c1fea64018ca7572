"""The merge engine through the SDK against a real server: outputs, cache, errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltahub.errors import CancelledError, InvalidInputError, NotFoundError, PreconditionError
from deltahub.merge_engine import MergeEngine, MergeRequest
from tests.conftest import run_cli, store_state
from tests.helpers import TINY_LLAMA, make_adapter, make_dataset, make_tiny_llama

TEXTS = ["the market rallied", "bonds fell sharply", "rates rose the market fell", "the court ruled",
         "the patient took a dose", "equity yield rose"] * 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    base = make_tiny_llama(root / "base")
    ds = root / "ds"
    ds.mkdir()
    return {
        "base": base,
        "ft1": make_tiny_llama(root / "ft1", perturb=0.01, perturb_seed=1),
        "ft2": make_tiny_llama(root / "ft2", perturb=0.01, perturb_seed=2),
        "ft3": make_tiny_llama(root / "ft3", perturb=0.01, perturb_seed=3),
        "a1": make_adapter(base, root / "a1", r=4, seed=1),
        "a2": make_adapter(base, root / "a2", r=2, seed=2, targets=("q_proj", "o_proj")),
        "data": make_dataset(ds, TEXTS),
        "other_base": make_tiny_llama(root / "other", seed=5),
    }


@pytest.fixture()
def world(server, folders):
    hub, store, address = server
    hub.push(folders["base"], "base/tiny", kind="model")
    for name in ("ft1", "ft2", "ft3"):
        hub.push(folders[name], f"ft/{name}", kind="model")
    hub.push(folders["a1"], "ad/one", kind="adapter", base="base/tiny")
    hub.push(folders["a2"], "ad/two", kind="adapter", base="base/tiny")
    hub.push(folders["data"], "data/fin", kind="dataset")
    return hub, store


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_task_arithmetic_matches_mergekit(world, folders, tmp_path):
    from mergekit.merge_methods.api import merge_state_dicts

    hub, _ = world
    res = hub.merge("task_arithmetic", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/ta", weights=[0.7, 0.5],
                    params={"lambda": 0.8})
    assert not res.cached and res.revision.kind.value == "model"
    ours = weights_of(hub.pull("m/ta", tmp_path / "ta"))
    sds = {k: weights_of(folders[k]) for k in ("base", "ft1", "ft2")}
    theirs = merge_state_dicts(sds, "task_arithmetic", base="base",
                               parameters={"weight": {"ft1": 0.7, "ft2": 0.5}, "lambda": 0.8})
    assert ours.keys() == theirs.keys()
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-6
    # the folder loads in transformers and the recipe names mergekit's method
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "ta")
    assert "merge_method: task_arithmetic" in hub.recipe_yaml("m/ta")


def test_lora_space_linear_merge_equals_dense_merge(world, folders, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hub, _ = world
    ad = hub.merge("uniform_soup", ["ad/one", "ad/two"], out="m/soup-lora", form="adapter")
    assert ad.metrics["relative_error"] == 0 and ad.metrics["exact_modules"] == ad.metrics["modules"]
    dense = hub.merge("uniform_soup", ["ad/one", "ad/two"], out="m/soup-model", form="model")
    assert dense.revision.lineage.recipe["base"].startswith("base/tiny@")
    path = hub.pull("m/soup-lora", tmp_path / "lora")
    import json

    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["rank_pattern"]["model.layers.0.self_attn.q_proj"] == 6  # rank = 4 + 2 (concatenated)
    assert cfg["rank_pattern"]["model.layers.0.self_attn.v_proj"] == 4
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folders["base"]), path).merge_and_unload()
    want = weights_of(hub.pull("m/soup-model", tmp_path / "dense"))
    got = merged.state_dict()
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5


def _peft_merged(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).merge_and_unload().state_dict()


@pytest.mark.parametrize("kind", ["rank_pattern_rslora", "adalora"])
def test_adapter_deltas_follow_peft(world, folders, tmp_path, kind):
    from peft import AdaLoraConfig, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hub, _ = world
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(folders["base"])
    if kind == "adalora":
        config = AdaLoraConfig(init_r=4, target_r=2, total_step=10, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    else:
        config = LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj"],
                            rank_pattern={"model.layers.1.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3},
                            init_lora_weights=False)
    pm = get_peft_model(model, config)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.1)
    if kind == "adalora":  # prune to a rank pattern as the allocator would
        pm.peft_config["default"].rank_pattern = {
            f"model.layers.{i}.self_attn.{m}.lora_E": [True, False, True, False]
            for i in range(2) for m in ("q_proj", "v_proj")}
    pm.save_pretrained(tmp_path / "ad")
    hub.push(tmp_path / "ad", f"ad/{kind}", kind="adapter", base="base/tiny")
    hub.merge("uniform_soup", [f"ad/{kind}"], out=f"m/{kind}", form="model")
    got = weights_of(hub.pull(f"m/{kind}", tmp_path / "out"))
    want = _peft_merged(folders["base"], tmp_path / "ad")
    assert max(float((got[k] - want[k]).abs().max()) for k in got) < 1e-5


def test_nonlinear_merge_to_adapter_is_svd_compressed(world, folders, tmp_path):
    hub, store = world
    # an approximation past the default tolerance is refused, naming the parameter, and nothing is stored
    with pytest.raises(PreconditionError, match=r"parameter model\.layers\..*relative error 0\.\d+.*--max-error"):
        hub.merge("magmax", ["ad/one", "ad/two"], out="m/mm-lora", form="adapter", rank=2)
    with pytest.raises(NotFoundError):
        hub.show("m/mm-lora")
    res = hub.merge("magmax", ["ad/one", "ad/two"], out="m/mm-lora", form="adapter", rank=2, max_error=1)
    assert 0 < res.metrics["relative_error"] < 1 and res.metrics["max_rank"] == 2
    errors = res.metrics["parameter_errors"]
    values = [e for _, e in errors]
    assert errors and res.metrics["max_parameter_error"] == values[0] <= 1
    assert values == sorted(values, reverse=True)  # the worst first
    # the cached result is refused to a caller who allows less, and the CLI prints the worst parameters
    with pytest.raises(PreconditionError, match="built before"):
        hub.merge("magmax", ["ad/one", "ad/two"], out="m/mm-lora2", form="adapter", rank=2, max_error=0.05)
    done = run_cli("merge", "magmax", "ad/one", "ad/two", "--out", "m/mm-lora", "--form", "adapter", "--rank", "2",
                   "--max-error", "1", env={"DELTAHUB_ADDRESS": hub.address})
    assert done.returncode == 0, done.stderr
    assert "largest per parameter" in done.stdout and errors[0][0] in done.stdout
    _peft_merged(folders["base"], hub.pull("m/mm-lora", tmp_path / "mm"))  # plain peft loads it
    hub.merge("magmax", ["ft/ft1", "ft/ft2", "ft/ft3"], base="base/tiny", out="m/mm-tv", form="task_vector")
    deltas = load_file(hub.pull("m/mm-tv", tmp_path / "tv") / "task_vector.safetensors")
    b, fts = weights_of(folders["base"]), [weights_of(folders[k]) for k in ("ft1", "ft2", "ft3")]
    name = "model.layers.0.mlp.up_proj.weight"
    stacked = torch.stack([f[name] - b[name] for f in fts])
    best = stacked.gather(0, stacked.abs().argmax(0, keepdim=True))[0]
    assert torch.allclose(deltas[name], 0.5 * best, atol=1e-7)


def test_same_recipe_is_built_once(world):
    hub, _ = world
    results = []

    def go(out):
        results.append(hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out=out, params={"density": 0.5}))

    threads = [threading.Thread(target=go, args=("m/ties",)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.cached for r in results) == [False, True, True]
    assert len({r.revision.digest for r in results}) == 1
    again = hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/ties-copy", params={"density": 0.5})
    assert again.cached and again.revision.digest == results[0].revision.digest
    other = hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/ties", params={"density": 0.6})
    assert not other.cached and other.recipe_hash != results[0].recipe_hash


def test_greedy_soup_recall_and_eval(world):
    hub, _ = world
    ev = hub.evaluate("ad/one", "data/fin")
    assert ev.metric == "loss" and ev.loss > 0 and ev.perplexity > 1 and ev.samples == len(TEXTS)
    gs = hub.merge("greedy_soup", ["ad/one", "ad/two", "ft/ft1"], out="m/greedy", data="data/fin")
    m = gs.metrics
    assert m["metric"] == "loss" and len(m["ingredient_scores"]) == 3 and m["kept"][0] == max(
        range(3), key=lambda i: m["ingredient_scores"][i])
    rc = hub.merge("recall", ["ad/one", "ad/two"], out="m/recall", form="adapter", data="data/fin", params={"k": 3})
    rows = rc.metrics["layer_weights"]
    assert len(rows) == TINY_LLAMA["num_hidden_layers"] + 1 and all(abs(sum(r) - 1) < 1e-5 for r in rows)
    assert len(rc.metrics["typical_samples"]) == 3 and rc.metrics["relative_error"] == 0


def test_bad_merges_get_clear_statuses_and_store_nothing(world, folders):
    hub, store = world
    hub.push(folders["other_base"], "base/other", kind="model")
    hub.push(folders["a1"], "ad/on-other", kind="adapter", base="base/other")
    before = store_state(store)
    with pytest.raises(PreconditionError, match="ad/on-other"):
        hub.merge("uniform_soup", ["ad/one", "ad/on-other"], base="base/tiny", out="m/x")
    with pytest.raises(InvalidInputError, match="known: .*magmax"):
        hub.merge("magmix", ["ad/one"], out="m/x")
    with pytest.raises(InvalidInputError, match="needs held-out data"):
        hub.merge("greedy_soup", ["ad/one", "ad/two"], out="m/x")
    with pytest.raises(InvalidInputError, match="2 weights given for 1 inputs"):
        hub.merge("uniform_soup", ["ad/one"], out="m/x", weights=[1, 2])
    with pytest.raises(NotFoundError):
        hub.merge("uniform_soup", ["ad/missing"], out="m/x")
    with pytest.raises(InvalidInputError, match="form"):
        hub.merge("uniform_soup", ["ad/one"], out="m/x", form="onnx")
    small = dict(TINY_LLAMA, intermediate_size=96)
    from transformers import LlamaConfig, LlamaForCausalLM

    odd = folders["base"].parent / "odd"
    LlamaForCausalLM(LlamaConfig(**small)).save_pretrained(odd)
    hub.push(odd, "ft/odd", kind="model")
    before = store_state(store)
    with pytest.raises(PreconditionError, match="ft/odd.*shape"):
        hub.merge("task_arithmetic", ["ft/ft1", "ft/odd"], base="base/tiny", out="m/x")
    assert store_state(store) == before


def test_cancelled_merge_stores_nothing(world):
    _, store = world
    before = store_state(store)
    engine = MergeEngine(store)
    with pytest.raises(CancelledError):
        engine.merge(MergeRequest(method="magmax", inputs=["ft/ft1", "ft/ft2"], base="base/tiny", out="m/cancel"),
                     cancelled=lambda: True)
    assert store_state(store)[0] == before[0]
    assert store_state(store)[1] == before[1]


def test_merge_jobs_report_progress_in_tensors_and_bytes(world):
    hub, _ = world
    job = hub.merge("uniform_soup", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/op", wait=False)
    assert job.id.startswith("m/") and job.kind == "merge" and job.unit == "tensor"
    events = list(hub.watch_job(job.id))
    final = events[-1]
    assert final.state == "SUCCEEDED" and final.done == final.total > 0 and final.result["artifact"] == "m/op"
    assert final.metrics["bytes"] > 0 and final.device == "cpu" and final.result["metrics"]["device"] == "cpu"
    assert any(e.stage == "merging" for e in events) or final.attempts == 1
    assert any(j.id == job.id for j in hub.jobs("m", kind="merge"))
    assert hub.jobs("m", kind="train") == [] and hub.jobs("m", state="FAILED") == []
    assert hub.cancel_job(job.id).state == "SUCCEEDED"  # cancelling a finished one changes nothing
    again = hub.merge("uniform_soup", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/op", wait=False)
    assert again.state == "SUCCEEDED" and again.result["cached"] and again.worker == ""  # answered by the hub


def test_mergekit_runs_a_yaml_naming_magmax(world, folders, tmp_path):
    """magmax registered into mergekit's registry: mergekit's own run_merge executes it."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    hub, _ = world
    config = {"merge_method": "magmax", "base_model": str(folders["base"]), "dtype": "float32",
              "models": [{"model": str(folders[k])} for k in ("ft1", "ft2")]}
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"), options=MergeOptions(lazy_unpickle=False))
    ours = weights_of(hub.pull(hub.merge("magmax", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/mm").revision.spec,
                               tmp_path / "ours"))
    theirs = weights_of(tmp_path / "mk")
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-6
    # and our YAML path: a mergekit config whose models are hub revisions
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "magmax", "base_model": "base/tiny",
                                      "models": [{"model": "ft/ft1"}, {"model": "ft/ft2"}]}))
    assert hub.merge_recipe(recipe, out="m/mm2").cached
    # and a plain command line: `deltahub mergekit-yaml` is mergekit-yaml with deltahub's methods registered
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(config))
    done = run_cli("mergekit-yaml", str(local), str(tmp_path / "cli-out"))
    assert done.returncode == 0, done.stderr
    cli = weights_of(tmp_path / "cli-out")
    assert max(float((cli[k] - theirs[k]).abs().max()) for k in cli) < 1e-6


def test_instruction_vector_keeps_an_extended_vocabulary(world, folders, tmp_path):
    """Chat-vector style: the domain model's larger embeddings and head pass through untouched."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    hub, _ = world
    torch.manual_seed(3)
    domain = LlamaForCausalLM(LlamaConfig(**dict(TINY_LLAMA, vocab_size=TINY_LLAMA["vocab_size"] + 8)))
    domain.save_pretrained(tmp_path / "domain")
    hub.push(tmp_path / "domain", "ft/domain", kind="model")
    with pytest.raises(PreconditionError, match="shape"):
        hub.merge("instruction_vector", ["ft/domain", "ft/ft1"], base="base/tiny", out="m/iv")
    hub.merge("instruction_vector", ["ft/domain", "ft/ft1"], base="base/tiny", out="m/iv",
              params={"skip_embeddings": True})
    path = hub.pull("m/iv", tmp_path / "iv")
    got, dom = weights_of(path), weights_of(tmp_path / "domain")
    b, instruct = weights_of(folders["base"]), weights_of(folders["ft1"])
    assert torch.equal(got["model.embed_tokens.weight"], dom["model.embed_tokens.weight"])
    assert torch.equal(got["lm_head.weight"], dom["lm_head.weight"])
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(got[name], dom[name] + (instruct[name] - b[name]), atol=1e-6)
    assert AutoConfig.from_pretrained(path).vocab_size == TINY_LLAMA["vocab_size"] + 8
    AutoModelForCausalLM.from_pretrained(path)


def test_merged_adapters_name_their_base_as_loaders_accept_it(world, tmp_path):
    from peft import AutoPeftModelForCausalLM

    hub, _ = world
    merged = hub.merge("linear", ["ad/one", "ad/two"], out="m/lin", form="adapter")
    folder = hub.pull(merged.revision.spec, tmp_path / "lin")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base/tiny"  # a repo id, not name@digest
    assert merged.revision.base == hub.show("base/tiny").spec  # the digest that pins it stays the hub's
    hub.pull("base/tiny", tmp_path / "base" / "tiny")
    config["base_model_name_or_path"] = str(tmp_path / "base" / "tiny")  # offline: the local copy of that repo
    (folder / "adapter_config.json").write_text(json.dumps(config))
    AutoPeftModelForCausalLM.from_pretrained(str(folder))


def test_dora_merges_exactly_in_full_delta_space(world, folders, tmp_path):
    """A DoRA adapter's merged weight is m / ||W0 + dW|| * (W0 + dW): exact in a model or a dense task vector,
    refused at StartMerge for an adapter unless the caller allows the approximation."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hub, _ = world
    model = AutoModelForCausalLM.from_pretrained(folders["base"])
    torch.manual_seed(11)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():  # a trained magnitude: not the base's norms
        for name, p in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
    peft_model.save_pretrained(tmp_path / "dora")
    hub.push(tmp_path / "dora", "ad/dora", kind="adapter", base="base/tiny")
    before = len(hub.jobs("m"))
    with pytest.raises(PreconditionError, match=r"ad/dora is a DoRA adapter.*--form model or task_vector.*--max-error"):
        hub.merge("linear", ["ad/one", "ad/dora"], out="m/dora", form="adapter")
    assert len(hub.jobs("m")) == before  # refused at StartMerge: no job
    base = weights_of(folders["base"])
    want = {k: (a + b) / 2 for (k, a), b in zip(_peft_merged(folders["base"], folders["a1"]).items(),
                                               _peft_merged(folders["base"], tmp_path / "dora").values())}
    got = weights_of(hub.pull(hub.merge("linear", ["ad/one", "ad/dora"], out="m/dora").revision.spec, tmp_path / "m"))
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5
    tv = hub.merge("linear", ["ad/dora"], out="m/dora-tv", form="task_vector")
    deltas = load_file(hub.pull(tv.revision.spec, tmp_path / "tv") / "task_vector.safetensors")
    alone = _peft_merged(folders["base"], tmp_path / "dora")
    name = "model.layers.1.mlp.down_proj.weight"
    assert torch.allclose(deltas[name], alone[name] - base[name], atol=1e-6) and tv.metrics["relative_error"] == 0
    # into an adapter with leave: measured and reported per parameter
    ad = hub.merge("linear", ["ad/dora"], out="m/dora-ad", form="adapter", max_error=1)
    assert ad.metrics["max_parameter_error"] > 0 and ad.metrics["parameter_errors"]
    # DoRA on an embedding too (peft saves the layer beside it): one magnitude per embedding dimension
    model = AutoModelForCausalLM.from_pretrained(folders["base"])
    emb = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights=False,
                                           target_modules=["embed_tokens", "q_proj"]))
    with torch.no_grad():
        for name, p in emb.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
    emb.save_pretrained(tmp_path / "dora-emb")
    hub.push(tmp_path / "dora-emb", "ad/dora-emb", kind="adapter", base="base/tiny")
    got = weights_of(hub.pull(hub.merge("linear", ["ad/dora-emb"], out="m/dora-emb").revision.spec, tmp_path / "e"))
    want = _peft_merged(folders["base"], tmp_path / "dora-emb")
    assert not torch.allclose(want["model.embed_tokens.weight"], base["model.embed_tokens.weight"], atol=1e-3)
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5


def _run_mergekit(config: dict, out: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(config), str(out), options=MergeOptions(lazy_unpickle=False))
    return weights_of(out)


# shaped like mergekit's examples/ties.yml and gradient-slerp.yml: per-model gradients, filters, global values
MERGEKIT_CONFIGS = {
    "ties": {"merge_method": "ties", "parameters": {"normalize": True, "int8_mask": True},
             "models": [{"model": "ft1", "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
                        {"model": "ft2", "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
                        {"model": "ft3", "parameters": {"density": 0.33, "weight": [
                            {"filter": "mlp", "value": 0.5}, {"value": 0}]}}]},
    "slerp": {"merge_method": "slerp", "models": [{"model": "ft1"}],
              "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                   {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}},
    "task_arithmetic": {"merge_method": "task_arithmetic", "parameters": {"lambda": [0.5, 1.0]},
                        "models": [{"model": "ft1", "parameters": {"weight": [{"filter": "q_proj", "value": 2.0},
                                                                                 {"value": 0.5}]}},
                                   {"model": "ft2", "parameters": {"weight": 0.3}}]},
}


@pytest.mark.parametrize("name", sorted(MERGEKIT_CONFIGS))
def test_mergekit_settings_match_mergekit_tensor_for_tensor(world, folders, tmp_path, name):
    """Gradients over layers, filters and per-model values: the hub's result equals mergekit's run_merge
    on the same local folders, tensor for tensor."""
    import copy

    import yaml

    hub, _ = world
    config = MERGEKIT_CONFIGS[name]
    local = copy.deepcopy(config)
    local.update(base_model=str(folders["base"]), dtype="float32")
    for m in local["models"]:
        m["model"] = str(folders[m["model"]])
    theirs = _run_mergekit(local, tmp_path / "mk")
    ours_cfg = copy.deepcopy(config)
    ours_cfg["base_model"] = "base/tiny"
    for m in ours_cfg["models"]:
        m["model"] = f"ft/{m['model']}"
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(ours_cfg))
    res = hub.merge_recipe(path, out=f"m/mk-{name}")
    ours = weights_of(hub.pull(res.revision.spec, tmp_path / "ours"))
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    assert worst < 1e-6, worst
    # the stored recipe says the same to mergekit, and the same config is one recipe
    back = yaml.safe_load(hub.recipe_yaml(res.revision.spec))
    assert back["merge_method"] == name
    assert hub.merge_recipe(path, out=f"m/mk-{name}-again").cached


def test_mergekit_settings_are_one_recipe_however_written_and_checked_per_tensor(world, tmp_path):
    hub, _ = world
    a = hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/g1", params={"density": [0.5, 0.5]})
    b = hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/g2", params={"density": ".5"})
    assert b.cached and a.recipe_hash == b.recipe_hash  # an all-equal gradient is that value
    c = hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/g3",
                  input_params=[{"density": 0.5}, {"density": "5e-1"}])
    assert not c.cached  # per-input values are their own recipe (mergekit's precedence differs from a global one)
    before = len(hub.jobs("m"))
    # a required value no filter gives some tensor: refused at the call, naming the tensor
    with pytest.raises(InvalidInputError, match=r"Missing required parameter t for .*give it for every tensor"):
        hub.merge("slerp", ["ft/ft1"], base="base/tiny", out="m/s", params={"t": [{"filter": "mlp", "value": 0.5}]})
    with pytest.raises(InvalidInputError, match=r"not a mergekit parameter setting"):
        hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/s", params={"density": {"nope": 1}})
    with pytest.raises(InvalidInputError, match=r"lambda of task_arithmetic is one for all inputs"):
        hub.merge("task_arithmetic", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/s",
                  input_params=[{"lambda": 1}, {}])
    with pytest.raises(InvalidInputError, match=r"magmax takes no per-input parameters"):
        hub.merge("magmax", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/s", input_params=[{"lambda": 1}, {}])
    with pytest.raises(InvalidInputError, match=r"takes one float: gradients"):
        hub.merge("magmax", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/s", params={"lambda": [0, 1]})
    assert len(hub.jobs("m")) == before  # nothing queued


def test_mergekit_slices_are_refused_with_what_to_do(world, tmp_path):
    import yaml

    hub, _ = world
    path = tmp_path / "passthrough.yml"
    path.write_text(yaml.safe_dump({"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": "ft/ft1", "layer_range": [0, 2]}]}, {"sources": [{"model": "ft/ft2", "layer_range": [1, 2]}]}]}))
    done = run_cli("merge", "--recipe", str(path), "--out", "m/f", env={"DELTAHUB_ADDRESS": hub.address})
    assert done.returncode == 1 and "slices" in done.stderr and "deltahub mergekit-yaml" in done.stderr
    assert "Traceback" not in done.stderr


def _peft_adapter(base_dir, dest, *, seed, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **lora))
    with torch.no_grad():  # a trained head or embedding: not the base's
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(dest)  # peft's defaults (save_embedding_layers="auto")
    return dest


def _logits(model_dir, adapter_dir=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    with torch.no_grad():
        return model(torch.arange(1, 17).unsqueeze(0)).logits


@pytest.mark.parametrize("lora", [
    {"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]},
    {"target_modules": ["q_proj", "embed_tokens"]},
], ids=["modules_to_save", "embedding_lora"])
def test_adapter_outputs_keep_whole_tensors_exactly(world, folders, tmp_path, lora):
    from safetensors import safe_open

    hub, _ = world
    special = _peft_adapter(folders["base"], tmp_path / "special", seed=5, **lora)
    keys = list(safe_open(str(special / "adapter_model.safetensors"), "pt").keys())
    if "embed_tokens" in lora["target_modules"]:
        assert any(k.endswith("embed_tokens.base_layer.weight") for k in keys)  # what peft saves by default
    hub.push(special, "ad/special", kind="adapter", base="base/tiny")  # accepted
    as_adapter = hub.merge("linear", ["ad/one", "ad/special"], out="m/ad", form="adapter")
    assert as_adapter.metrics["max_parameter_error"] < 1e-6 and as_adapter.metrics["relative_error"] < 1e-6
    whole = "lm_head" if "modules_to_save" in lora else "model.embed_tokens"
    assert as_adapter.metrics["whole_modules"] == [whole]
    as_model = hub.merge("linear", ["ad/one", "ad/special"], out="m/full", form="model")
    adapter_dir = hub.pull(as_adapter.revision.spec, tmp_path / "ad")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["modules_to_save"] == [whole]
    base_dir = hub.pull("base/tiny", tmp_path / "base")
    got = _logits(base_dir, adapter_dir)
    want = _logits(hub.pull(as_model.revision.spec, tmp_path / "full"))
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    merged, base = weights_of(tmp_path / "full"), weights_of(base_dir)
    key = "lm_head.weight" if whole == "lm_head" else "model.embed_tokens.weight"
    assert not torch.equal(merged[key], base[key])  # the whole tensor's change is in both forms
    assert not torch.allclose(got, _logits(base_dir, hub.pull("ad/one", tmp_path / "one")), atol=1e-4)


def test_parameters_are_canonical_before_hashing(world, tmp_path):
    import yaml

    hub, _ = world
    sdk = hub.merge("ties", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/t", params={"density": 0.5})
    recipe = tmp_path / "ties.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "ties", "base_model": "base/tiny", "parameters": {"density": 0.5},
                                      "models": [{"model": "ft/ft1"}, {"model": "ft/ft2"}]}))
    from_yaml = hub.merge_recipe(recipe, out="m/t")
    assert not sdk.cached and from_yaml.cached and from_yaml.recipe_hash == sdk.recipe_hash
    cli = run_cli("merge", "ties", "ft/ft1", "ft/ft2", "--base", "base/tiny", "--out", "m/t", "--param",
                  "density=.5", "--json", env={"DELTAHUB_ADDRESS": hub.address})
    assert cli.returncode == 0, cli.stderr
    doc = json.loads(cli.stdout)
    assert doc["cached"] and doc["recipe_hash"] == sdk.recipe_hash  # .5, "0.5" and 0.5 are one recipe
    assert hub.show("m/t").lineage.recipe["params"]["density"] == 0.5


def test_dtype_is_honoured_and_part_of_the_recipe(world, tmp_path):
    from safetensors import safe_open

    hub, _ = world
    plain = hub.merge("task_arithmetic", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/dt")
    same = hub.merge("task_arithmetic", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/dt", dtype="float32")
    assert same.cached and same.recipe_hash == plain.recipe_hash  # the base is float32 already
    half = hub.merge("task_arithmetic", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/dt16", dtype="float16")
    assert not half.cached and half.recipe_hash != plain.recipe_hash and half.revision.lineage.recipe["dtype"] == "float16"
    folder = hub.pull(half.revision.spec, tmp_path / "half")
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "float16"
    full = weights_of(hub.pull(plain.revision.spec, tmp_path / "full"))
    for name, t in weights_of(folder).items():
        assert torch.equal(t, full[name].to(torch.float16))  # accumulated in float32, stored in float16
    with pytest.raises(InvalidInputError, match="dtype sets how a model output is stored"):
        hub.merge("linear", ["ad/one"], out="m/x", form="adapter", dtype="float16")
    bad = run_cli("merge", "linear", "ft/ft1", "--base", "base/tiny", "--out", "m/x", "--dtype", "int8",
                  env={"DELTAHUB_ADDRESS": hub.address})
    assert bad.returncode == 2 and "int8" in bad.stderr


def test_the_client_reads_and_writes_recipes_without_importing_mergekit(world, tmp_path):
    import subprocess
    import sys

    import yaml

    hub, _ = world
    hub.merge("task_arithmetic", ["ft/ft1", "ft/ft2"], base="base/tiny", out="m/ta")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": "base/tiny",
                                      "models": [{"model": "ft/ft1"}, {"model": "ft/ft2"}]}))
    code = (f"import sys; from deltahub_client import Hub; h = Hub({hub.address!r}, progress=False); "
            f"print(h.recipe_yaml('m/ta')); r = h.merge_recipe({str(recipe)!r}, out='m/ta'); "
            "assert r.cached; assert 'mergekit' not in sys.modules and 'torch' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "merge_method: task_arithmetic" in done.stdout
