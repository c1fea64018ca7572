"""The four trainers on a tiny Llama built in-process: quality, exact export, rank behaviour, replay, resume."""

from __future__ import annotations

import random

import pytest
import torch

from deltahub.errors import InvalidInputError
from deltahub_trainers import TRAINERS, make_trainer
from deltahub_trainers.increlora.allocator import choose
from deltahub_trainers.loop import Hooks, TrainInputs, train
from deltahub_trainers.rank_selective.prox import l1_weight, soft_threshold
from deltahub_trainers.schedule import lr_factor
from tests.helpers import make_tiny_llama

TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
FINANCE = "market bonds rates rose fell rallied stock equity yield inflation".split()
GENERAL = "the a court law judge patient doctor dose treatment contract".split()


def rows(words, n, seed):
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(words) for _ in range(12))} for _ in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # initializer_range 0.2: with the default 0.02 the random head's logits are too flat for any adapter to move
    return make_tiny_llama(tmp_path_factory.mktemp("base"), initializer_range=0.2)


def lm_loss(model, tokenizer, texts) -> float:
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    with torch.no_grad():
        return float(model(**enc, labels=labels).loss)


def run(trainer, base, data, tmp_path, **kw):
    seen = []
    hooks = Hooks(progress=seen.append, progress_every_s=0.0)
    return train(trainer, TrainInputs(base, data, **kw), tmp_path, hooks), seen


COMMON = {"steps": 60, "batch_size": 8, "lr": 1e-2, "target_modules": TARGETS}


@pytest.mark.parametrize("name", ["lora", "adalora", "increlora", "rank_selective"])
def test_trainer_learns_the_domain_and_saves_a_plain_peft_adapter(name, base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = make_trainer(name, COMMON)
    result, _ = run(trainer, base, rows(FINANCE, 96, 0), tmp_path)
    tok = AutoTokenizer.from_pretrained(base)
    held_out = [r["text"] for r in rows(FINANCE, 16, 99)]
    base_loss = lm_loss(AutoModelForCausalLM.from_pretrained(base), tok, held_out)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(result.adapter_dir)).eval()
    adapted_loss = lm_loss(loaded, tok, held_out)
    assert adapted_loss < base_loss - 1.0, (base_loss, adapted_loss)  # the data's own entropy is ln(10) = 2.3
    enc = tok(held_out[:4], return_tensors="pt", padding=True)
    with torch.no_grad():
        trained = trainer.model(**enc).logits if hasattr(trainer, "model") else None
        reloaded = loaded(**enc).logits
        merged = loaded.merge_and_unload()(**enc).logits
    torch.testing.assert_close(merged, reloaded, atol=1e-4, rtol=1e-4)
    if trained is not None:  # the rank-adaptive trainers keep their training model: the export is exact
        torch.testing.assert_close(reloaded, trained, atol=1e-4, rtol=1e-4)
    if TRAINERS.get(name).rank_adaptive:
        import json

        config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["rank_pattern"] and config["alpha_pattern"]


def test_adalora_ends_on_its_budget_with_different_ranks(base, tmp_path):
    trainer = make_trainer("adalora", {**COMMON, "init_r": 12, "target_r": 4})
    result, seen = run(trainer, base, rows(FINANCE, 96, 0), tmp_path)
    pattern = result.rank_pattern
    assert sum(pattern.values()) == 4 * len(TARGETS) * 2  # 2 layers
    assert len(set(pattern.values())) > 1
    assert seen[0].rank_pattern and sum(seen[0].rank_pattern.values()) == 12 * 10  # starts at init_r


def test_increlora_grows_only_at_allocations_to_exactly_the_budget(base, tmp_path):
    trainer = make_trainer("increlora", {**COMMON, "init_r": 2, "target_r": 6, "interval": 5, "init_warmup": 6})
    result, seen = run(trainer, base, rows(FINANCE, 96, 0), tmp_path)
    totals = [sum(p.rank_pattern.values()) for p in seen]
    assert totals[0] == 2 * 10
    assert all(b >= a for a, b in zip(totals, totals[1:]))  # never falls
    grew_at = {p.step - 1 for a, p in zip(totals, seen[1:]) if sum(p.rank_pattern.values()) > a}
    assert grew_at and grew_at <= {h["step"] for h in trainer.history}
    assert totals[-1] == 6 * 10 == sum(result.rank_pattern.values())
    for h in trainer.history:  # each round grows the top-scored modules
        best = sorted(h["scores"], key=lambda k: -h["scores"][k])[: len(h["grown"])]
        assert set(h["grown"]) == set(best) or len(h["grown"]) < trainer._top_h


def test_rank_selective_prunes_more_with_a_larger_threshold(base, tmp_path):
    pruned = {}
    for l1 in (1.0, 3.0):
        trainer = make_trainer("rank_selective", {**COMMON, "steps": 80, "r": 8, "l1": l1})
        result, _ = run(trainer, base, rows(FINANCE, 96, 0), tmp_path / str(l1))
        pattern = result.rank_pattern
        assert sum(pattern.values()) < 8 * 10
        assert len(set(pattern.values())) > 1
        pruned[l1] = sum(pattern.values())
    assert pruned[3.0] < pruned[1.0]


def test_replay_keeps_general_loss_far_below_no_replay(base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    general = rows(GENERAL, 96, 1)
    held_general = [r["text"] for r in rows(GENERAL, 16, 77)]
    losses = {}
    for fraction in (0.0, 0.5):
        trainer = make_trainer("lora", {**COMMON, "steps": 80, "lr": 2e-2, "r": 16, "replay_fraction": fraction})
        result, _ = run(trainer, base, rows(FINANCE, 96, 0), tmp_path / str(fraction),
                        replay_rows=general if fraction else [])
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(result.adapter_dir))
        losses[fraction] = lm_loss(model, tok, held_general)
    assert losses[0.5] < losses[0.0] - 1.0, losses


@pytest.mark.parametrize("name", ["adalora", "increlora"])
def test_resuming_from_a_checkpoint_gives_the_unbroken_result(name, base, tmp_path):
    from safetensors.torch import load_file

    config = {**COMMON, "steps": 30, "checkpoint_every": 12}
    data = rows(FINANCE, 64, 0)
    unbroken, _ = run(make_trainer(name, config), base, data, tmp_path / "a")
    kept = tmp_path / "kept"

    def keep(folder, step):
        if step == 12:
            import shutil

            shutil.copytree(folder, kept)

    train(make_trainer(name, config), TrainInputs(base, data), tmp_path / "b", Hooks(checkpoint=keep))
    resumed = train(make_trainer(name, config), TrainInputs(base, data, checkpoint=kept), tmp_path / "c")
    a = load_file(str(unbroken.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert unbroken.rank_pattern == resumed.rank_pattern


def test_config_errors_are_clear():
    with pytest.raises(InvalidInputError, match="init_r.*must exceed.*target_r"):
        make_trainer("adalora", {"init_r": 4, "target_r": 8})
    with pytest.raises(InvalidInputError, match="unknown trainer 'qlora'; known: adalora, increlora, lora, rank_selective"):
        make_trainer("qlora")
    with pytest.raises(InvalidInputError, match=r"unknown config key\(s\) \['rank'\] \(deltahub's names: rank -> r\); known: .*\br\b"):
        make_trainer("lora", {"rank": 8})
    assert make_trainer("lora", {"lr": "2e-4", "steps": "3"}).config.lr == pytest.approx(2e-4)  # YAML 1.1 text
    with pytest.raises(InvalidInputError, match="'lr' must be float"):
        make_trainer("lora", {"lr": "fast"})
    with pytest.raises(InvalidInputError, match="tinit \\+ tfinal < steps"):
        make_trainer("adalora", {"tinit": 5, "tfinal": 5}).config.phases(10)


def test_pure_pieces_by_hand():
    assert soft_threshold(torch.tensor([0.5, -0.2, 0.05]), 0.1).tolist() == pytest.approx([0.4, -0.1, 0.0])
    assert l1_weight(2, 10, dense_steps=3, l1=1.0) == 0.0
    assert l1_weight(9, 10, dense_steps=4, l1=1.0) == 1.0
    assert lr_factor(0, 100, warmup=10, schedule="cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(10, 100, warmup=10, schedule="cosine", min_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, warmup=10, schedule="linear", min_ratio=0.1) == pytest.approx(0.1)
    grown = choose({"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 8, "b": 2, "c": 2}, top_h=2, add=2, max_r=8, remaining=3)
    assert grown == {"b": 2, "c": 1}  # a is full; the last round adds only what the budget has left


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["lora", "adalora", "increlora", "rank_selective"])
def test_trainers_run_on_cuda_in_bf16(name, base, tmp_path):
    trainer = make_trainer(name, COMMON)
    result, seen = run(trainer, base, rows(FINANCE, 96, 0), tmp_path, device="cuda")
    assert result.metrics["device"] == "cuda"
    assert seen[-1].loss < seen[0].loss
    assert next(p for p in trainer.model.parameters() if not p.requires_grad).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["lora", "rank_selective"])
def test_classification_head_is_trained_and_saved(name, base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = [{**r, "label": "finance"} for r in rows(FINANCE, 48, 0)] + [{**r, "label": "general"}
                                                                        for r in rows(GENERAL, 48, 1)]
    trainer = make_trainer(name, {**COMMON, "objective": "classification", "steps": 40})
    result, _ = run(trainer, base, data, tmp_path)
    assert result.metrics["labels"] == ["finance", "general"]
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    model.config.pad_token_id = tok.pad_token_id
    loaded = PeftModel.from_pretrained(model, str(result.adapter_dir)).eval()
    probe = [r["text"] for r in rows(FINANCE, 8, 5) + rows(GENERAL, 8, 6)]
    with torch.no_grad():
        predicted = loaded(**tok(probe, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()
    assert sum(p == want for p, want in zip(predicted, [0] * 8 + [1] * 8)) >= 14
