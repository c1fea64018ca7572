"""The `deltahub` command as a user runs it, against a real `deltahub serve` process."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import cli_json, run_cli
from tests.helpers import ServeProcess


@pytest.fixture()
def served(tmp_path):
    s = ServeProcess(tmp_path / "data")
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_full_lifecycle_from_the_command_line(served, tiny_base, tiny_adapter, tiny_finetuned, tmp_path):
    env = served.env
    assert any("no tokens configured" in line for line in served.log)
    assert any("deltahub --hub" in line for line in served.log)  # says how to connect
    base = cli_json("push", str(tiny_base), "base/tiny", "--kind", "model", env=env)
    assert base["created"] and base["revision"]["kind"] == "model"
    card = tmp_path / "card.yaml"
    card.write_text("description: finance news\nsamples: [the market rallied, bonds fell]\n")
    ad = cli_json("push", str(tiny_adapter), "finance/lora", "--kind", "adapter", "--base", "base/tiny@main",
                  "--card", str(card), "--tag", "v1", "--label", "domain=finance", env=env)
    rev = ad["revision"]
    assert rev["base"] == f"base/tiny@{base['revision']['digest']}"
    assert rev["card"]["samples"] == ["the market rallied", "bonds fell"] and rev["labels"] == {"domain": "finance"}
    again = cli_json("push", str(tiny_adapter), "finance/lora", "--kind", "adapter", "--base", "base/tiny", env=env)
    assert again["bytes_sent"] == 0 and not again["created"]

    listing = cli_json("ls", env=env)
    assert [a["name"] for a in listing] == ["base/tiny", "finance/lora"]
    assert [a["name"] for a in cli_json("ls", "finance", env=env)] == ["finance/lora"]
    shown = cli_json("show", "finance/lora@v1", env=env)
    assert shown["digest"] == rev["digest"] and set(shown["refs"]) == {"main", "v1"}
    text = run_cli("show", "finance/lora", env=env).stdout
    assert "finance news" in text and "adapter_model.safetensors" in text

    pulled = cli_json("pull", "finance/lora@v1", str(tmp_path / "out"), env=env)
    assert (Path(pulled["path"]) / "adapter_config.json").is_file()

    tagged = cli_json("tag", "finance/lora", "prod", "--revision", "v1", "--expect", "", env=env)
    assert tagged["digest"] == rev["digest"] and tagged["previous"] == ""
    stale = run_cli("tag", "finance/lora", "prod", "--revision", "v1", "--expect", "0" * 64, env=env)
    assert stale.returncode == 1 and "not the expected" in stale.stderr

    run_cli("push", str(tiny_finetuned), "finance/tiny-ft", "--kind", "model", "-q", env=env)
    tv = cli_json("task-vector", "finance/tiny-ft", "base/tiny", "--out", "finance/tv", "--rank", "2", env=env)
    assert 0 < tv["relative_error"] < 1

    card2 = tmp_path / "card2.json"
    card2.write_text(json.dumps({"description": "bond markets", "samples": ["yields rose"]}))
    updated = cli_json("card", "finance/lora", "--card", str(card2), env=env)
    assert updated["card"]["description"] == "bond markets"

    assert cli_json("rm", "finance/lora@prod", env=env)["deleted_refs"] == ["prod"]
    refused = run_cli("rm", "finance/lora@" + rev["digest"][:12], env=env)
    assert refused.returncode == 1 and "still the target of refs" in refused.stderr
    gone = cli_json("rm", "finance/lora", "--yes", env=env)
    assert gone["deleted_revisions"] == [rev["digest"]]
    assert cli_json("health", env=env)["status"] == "SERVING"
    assert served.stop() == 0  # SIGTERM drains and exits cleanly
    assert any("stopped" in line for line in served.log)


def test_errors_exit_nonzero_with_the_servers_message(served, tiny_adapter, tmp_path):
    env = served.env
    missing = run_cli("show", "base/nothing", env=env)
    assert missing.returncode == 1 and "artifact base/nothing does not exist" in missing.stderr
    bad = run_cli("push", str(tiny_adapter), "finance/x", "--kind", "adapter", "--base", "base/none", env=env)
    assert bad.returncode == 1 and "base 'base/none' does not exist" in bad.stderr
    usage = run_cli("push", str(tiny_adapter), "finance/x", "--kind", "lora", env=env)
    assert usage.returncode == 2 and "lora" in usage.stderr
    down = run_cli("ls", env={"DELTAHUB_ADDRESS": "127.0.0.1:1"})
    assert down.returncode == 1 and "cannot reach the hub at 127.0.0.1:1" in down.stderr
    # --hub wins over the environment
    assert run_cli("--hub", served.address, "ls", env={"DELTAHUB_ADDRESS": "127.0.0.1:1"}).returncode == 0


def test_tokens_from_the_command_line(tmp_path, tiny_base):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: [{name: ops, token: t0k, scopes: {'*': admin}}]\n")
    s = ServeProcess(tmp_path / "data", "--tokens", str(tokens))
    try:
        assert any("1 token(s) loaded" in line for line in s.log)
        denied = run_cli("ls", env=s.env)
        assert denied.returncode == 1 and "needs a bearer token" in denied.stderr
        assert run_cli("--token", "t0k", "ls", env=s.env).returncode == 0
        assert cli_json("push", str(tiny_base), "base/t", "--kind", "model",
                        env={**s.env, "DELTAHUB_TOKEN": "t0k"})["revision"]["created_by"] == "ops"
    finally:
        s.stop()


def test_server_killed_mid_push_shows_no_partial_revision(tmp_path):
    data_dir = tmp_path / "data"
    ds = tmp_path / "big"
    ds.mkdir()
    row = json.dumps({"text": "x" * 1000}) + "\n"
    with open(ds / "train.jsonl", "w") as fh:
        fh.write(row * 60_000)  # ~60 MB: long enough to kill in the middle
    total = (ds / "train.jsonl").stat().st_size
    s = ServeProcess(data_dir)
    env = s.env
    pusher = subprocess.Popen([str(Path(sys.executable).with_name("deltahub")), "push", str(ds), "data/big",
                               "--kind", "dataset", "-q"], env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = data_dir / "uploads"
    deadline = time.time() + 60
    while time.time() < deadline:
        sizes = [p.stat().st_size for p in parts.glob("*.part")] if parts.exists() else []
        if sizes and 0 < sizes[0] < total // 2:
            break
        time.sleep(0.005)
    s.stop(signal.SIGKILL)
    _, err = pusher.communicate(timeout=60)
    assert pusher.returncode == 1, err
    held = sum(p.stat().st_size for p in parts.glob("*.part"))
    assert 0 < held < total

    restarted = ServeProcess(data_dir)
    try:
        assert cli_json("ls", env=restarted.env) == []
        assert run_cli("show", "data/big", env=restarted.env).returncode == 1
        resumed = cli_json("push", str(ds), "data/big", "--kind", "dataset", env=restarted.env)
        assert resumed["created"] and resumed["bytes_sent"] == total - held  # resumed, not restarted
        assert cli_json("gc", "--max-partial-age", "0", env=restarted.env)["blobs_removed"] == 0
    finally:
        restarted.stop()
