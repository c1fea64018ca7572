"""The merge commands as a user types them, against a `deltahub serve` process."""

from __future__ import annotations

import json

from tests.conftest import cli_json, run_cli
from tests.helpers import make_dataset, make_tiny_llama
from tests.test_cli import ServeProcess


def test_merge_eval_methods_and_jobs_from_the_command_line(tmp_path, tiny_base, tiny_adapter):
    served = ServeProcess(tmp_path / "data")
    env = served.env
    try:
        cli_json("push", str(tiny_base), "base/tiny", "--kind", "model", env=env)
        cli_json("push", str(tiny_adapter), "fin/lora", "--kind", "adapter", "--base", "base/tiny", env=env)
        ft = make_tiny_llama(tmp_path / "ft", perturb=0.01)
        cli_json("push", str(ft), "fin/full", "--kind", "model", env=env)
        ds = tmp_path / "ds"
        ds.mkdir()
        cli_json("push", str(make_dataset(ds, ["the market rallied", "bonds fell"])), "fin/data", "--kind", "dataset", env=env)

        names = [m["name"] for m in cli_json("methods", env=env)]
        assert {"magmax", "uniform_soup", "greedy_soup", "recall", "instruction_vector", "ties", "slerp"} <= set(names)

        out = cli_json("merge", "task_arithmetic", "fin/lora", "fin/full", "--base", "base/tiny", "--out", "fin/merged",
                       "--weights", "0.5,0.5", "--param", "lambda=1.0", env=env)
        assert out["cached"] is False and out["revision"]["kind"] == "model"
        again = cli_json("merge", "task_arithmetic", "fin/lora", "fin/full", "--base", "base/tiny", "--out",
                         "fin/merged", "--weights", "0.5,0.5", "--param", "lambda=1.0", env=env)
        assert again["cached"] is True and again["revision"]["digest"] == out["revision"]["digest"]

        recipe = run_cli("show", "fin/merged", "--recipe", env=env)
        assert recipe.returncode == 0 and "merge_method: task_arithmetic" in recipe.stdout
        (tmp_path / "r.yaml").write_text(recipe.stdout)
        from_yaml = cli_json("merge", "--recipe", str(tmp_path / "r.yaml"), "--out", "fin/merged-yaml", env=env)
        assert from_yaml["cached"] is True  # the YAML round trip is the same recipe

        lora = cli_json("merge", "magmax", "fin/lora", "--out", "fin/mm", "--form", "adapter", "--rank", "2", "--max-error", "1", env=env)
        assert lora["revision"]["kind"] == "adapter" and lora["metrics"]["max_rank"] == 2

        ev = cli_json("eval", "fin/lora", "--data", "fin/data", env=env)
        assert ev["metric"] == "loss" and ev["loss"] > 0

        started = cli_json("merge", "uniform_soup", "fin/lora", "fin/full", "--out", "fin/soup", "--base", "base/tiny",
                           "--no-wait", env=env)
        assert started["kind"] == "merge" and started["id"].startswith("fin/")
        watched = cli_json("jobs", "watch", started["id"], env=env)
        assert watched["state"] == "SUCCEEDED" and watched["result"]["artifact"] == "fin/soup"
        assert watched["unit"] == "tensor" and watched["done"] == watched["total"] > 0
        listed = cli_json("jobs", "ls", "--kind", "merge", env=env)
        assert started["id"] in [j["id"] for j in listed] and all(j["kind"] == "merge" for j in listed)
        assert any(j["kind"] == "evaluate" for j in cli_json("jobs", "ls", "--state", "succeeded", env=env))
        text = run_cli("jobs", env=env).stdout
        assert started["id"] in text and "merge" in text and "evaluate" in text

        bad = run_cli("merge", "magmix", "fin/lora", "--out", "fin/x", env=env)
        assert bad.returncode == 1 and "known:" in bad.stderr and "magmax" in bad.stderr
        no_data = run_cli("merge", "greedy_soup", "fin/lora", "fin/full", "--base", "base/tiny", "--out", "fin/x", env=env)
        assert no_data.returncode == 1 and "held-out data" in no_data.stderr
        assert json.loads(run_cli("ls", "--json", env=env).stdout)  # the hub still answers
    finally:
        served.stop()
