"""The quickstart as a new user meets it: a relative data folder, the README's own --set values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltahub.errors import InvalidInputError
from tests.conftest import run_cli
from tests.helpers import local_hub, make_dataset

TEXTS = [f"market bonds rates rose {i} fell rallied stock equity yield" for i in range(24)]


def test_a_relative_data_dir_serves_evaluation_and_data_merges(tmp_path, monkeypatch, tiny_base):
    monkeypatch.chdir(tmp_path)  # `make serve` passes --data-dir ./data
    with local_hub(Path("data")) as (hub, store, _):
        assert store.config.data_dir.is_absolute()
        hub.push(tiny_base, "base/tiny", kind="model")
        (tmp_path / "d").mkdir()
        hub.push(make_dataset(tmp_path / "d", TEXTS), "data/fin", kind="dataset")
        result = hub.evaluate("base/tiny", "data/fin")  # links a checkout of the base: absolute targets
        assert result.loss > 0 and result.samples == len(TEXTS)


def test_readme_set_values_and_hugging_face_names(server, pushed_base, tmp_path):
    hub, _, address = server
    (tmp_path / "d").mkdir()
    hub.push(make_dataset(tmp_path / "d", TEXTS), "data/fin", kind="dataset")
    env = {"DELTAHUB_ADDRESS": address}
    ok = run_cli("train", "lora", "--base", "base/tiny-llama", "--data", "data/fin", "--out", "fin/l", "--set", "lr=2e-4",
                 "--set", "steps=2", "--set", "target_modules=q_proj,v_proj", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    job = hub.job(json.loads(ok.stdout)["id"])
    assert job.spec["config"]["target_modules"] == ["q_proj", "v_proj"]
    hf = run_cli("train", "lora", "--base", "base/tiny-llama", "--data", "data/fin", "--out", "fin/l",
                 "--set", "max_steps=3", env=env)
    assert hf.returncode != 0 and "max_steps -> steps" in hf.stderr
    with pytest.raises(InvalidInputError, match="match no module of the base model"):
        hub.submit_job("lora", base="base/tiny-llama", data="data/fin", out="fin/l",
                       config={"target_modules": ["q_proj", "nothing_proj"]})
    assert hub.wait_job(job.id).state == "SUCCEEDED"
    assert hub.show("fin/l").lineage.training["config"]["lr"] == pytest.approx(2e-4)  # a number, as trained


def test_pull_keeps_the_umask_and_refuses_to_overwrite_other_bytes(server, pushed_base, tmp_path):
    import os
    import stat

    from deltahub.errors import AlreadyExistsError

    hub, _, address = server
    dest = hub.pull("base/tiny-llama", tmp_path / "one")
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in dest.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~mask}  # not mkstemp's 0600
    clash = tmp_path / "two"
    clash.mkdir()
    (clash / "config.json").write_text("{}")
    with pytest.raises(AlreadyExistsError, match="already holds other files at \\['config.json'\\]"):
        hub.pull("base/tiny-llama", clash)
    assert (clash / "config.json").read_text() == "{}"  # nothing replaced
    env = {"DELTAHUB_ADDRESS": address}
    refused = run_cli("pull", "base/tiny-llama", str(clash), env=env)
    assert refused.returncode == 1 and "--force" in refused.stderr
    forced = run_cli("pull", "base/tiny-llama", str(clash), "--force", "-q", env=env)
    assert forced.returncode == 0 and forced.stdout == ""  # -q: nothing printed
    assert (clash / "config.json").read_text() != "{}"
    hub.pull("base/tiny-llama", dest)  # the same bytes already there: kept, no error


def test_a_card_given_with_unchanged_files_is_kept_and_cards_follow_the_artifact(server, pushed_base, tiny_adapter,
                                                                                  tmp_path):
    hub, _, address = server
    first = hub.push(tiny_adapter, "fin/lora", kind="adapter", base="base/tiny-llama", labels={"team": "fin"})
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"description": "Finance: bonds and rates.", "samples": ["bond yields rose"]}))
    again = run_cli("push", str(tiny_adapter), "fin/lora", "--kind", "adapter", "--base", "base/tiny-llama",
                    "--card", str(card), env={"DELTAHUB_ADDRESS": address})
    assert again.returncode == 0 and "unchanged files" in again.stdout and "card and labels updated" in again.stdout
    rev = hub.show("fin/lora")
    assert rev.digest == first.revision.digest and rev.card.description == "Finance: bonds and rates."
    assert rev.labels["team"] == "fin"
    # new files, no card or labels given: the artifact's card and labels carry over to the new revision
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(tiny_adapter, changed)
    cfg = json.loads((changed / "adapter_config.json").read_text())
    (changed / "adapter_config.json").write_text(json.dumps({**cfg, "lora_dropout": 0.07}))
    new = hub.push(changed, "fin/lora", kind="adapter", base="base/tiny-llama")
    assert new.created and new.revision.card.description == "Finance: bonds and rates."
    assert new.revision.labels == {"team": "fin"}
