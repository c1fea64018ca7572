"""Hostile input, as a raw client would send it: each case gets its own status and a message naming the
problem, quickly, and leaves the store as it was. INTERNAL never answers bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import grpc
import pytest
import torch

from deltahub.errors import (
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    UnsafeFormatError,
)
from deltahub.artifacts import Lineage
from deltahub.limits import InputLimits, TrainingLimits, UploadLimits
from deltahub.v1 import common_pb2, merge_pb2, merge_pb2_grpc, registry_pb2, registry_pb2_grpc, train_pb2
from deltahub.v1 import train_pb2_grpc, transfer_pb2, transfer_pb2_grpc
from tests.conftest import store_state
from tests.helpers import local_hub, make_dataset, make_tiny_llama, write_safetensors


def _copy(src, tmp_path, name):
    dest = tmp_path / name
    shutil.copytree(src, dest)
    return dest


def _set_config(folder, **changes):
    path = folder / "adapter_config.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return folder


def _refused(hub, store, folder, artifact, exc, match, **kw):
    before = store_state(store)
    t = time.monotonic()
    with pytest.raises(exc, match=match):
        hub.push(folder, artifact, **kw)
    assert time.monotonic() - t < 10
    assert store_state(store) == before


@pytest.mark.parametrize("pattern, match", [
    ("(.+)+X", "repeats a repeated group"),
    ("(a|aa)*(b|bb)*c*$(.*)*", "repeats a repeated group"),
    ("(.*", "not a valid pattern"),
    (r"(q)\1", "not a valid pattern"),
])
def test_adapter_module_patterns_cannot_backtrack(server, pushed_base, tiny_adapter, tmp_path, pattern, match):
    hub, store, _ = server
    bad = _set_config(_copy(tiny_adapter, tmp_path, "a"), target_modules=pattern)
    _refused(hub, store, bad, "fin/re", InvalidInputError, match, kind="adapter", base="base/tiny-llama")


def test_adapter_config_values_are_checked(server, pushed_base, tiny_adapter, tmp_path):
    hub, store, _ = server
    for i, (changes, match) in enumerate([({"r": -1}, "r must be an integer >= 1"),
                                          ({"r": True}, "r must be an integer >= 1"),
                                          ({"lora_alpha": "big"}, "lora_alpha must be a finite number"),
                                          ({"rank_pattern": {"nope_proj": 4}}, "matches no module"),
                                          ({"rank_pattern": {"q_proj": 0}}, "integer >= 1"),
                                          ({"alpha_pattern": {"(x+)+": 2}}, "repeats a repeated group")]):
        bad = _set_config(_copy(tiny_adapter, tmp_path, f"c{i}"), **changes)
        _refused(hub, store, bad, "fin/cfg", InvalidInputError, match, kind="adapter", base="base/tiny-llama")
    ok = _set_config(_copy(tiny_adapter, tmp_path, "ok"), target_modules="model\\.layers\\.\\d+\\.self_attn\\.(q|v)_proj",
                     rank_pattern={"q_proj": 4})
    assert hub.push(ok, "fin/ok", kind="adapter", base="base/tiny-llama").created


def test_deeply_nested_json_is_invalid_argument_everywhere(server, pushed_base, tiny_adapter, tmp_path):
    hub, store, address = server
    deep = "[" * 20000 + "]" * 20000
    bad = _copy(tiny_adapter, tmp_path, "deep")
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "x": ' + deep + "}")
    _refused(hub, store, bad, "fin/deep", InvalidInputError, "nested", kind="adapter", base="base/tiny-llama")
    with grpc.insecure_channel(address) as ch:
        merge = merge_pb2_grpc.MergeStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            merge.StartMerge(merge_pb2.MergeRequest(method="linear", inputs=["base/tiny-llama"], out="x/y",
                                                         params_json='{"a": ' + deep + "}"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nested" in info.value.details()
        registry = registry_pb2_grpc.RegistryStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            registry.CommitRevision(registry_pb2.CommitRevisionRequest(
                artifact="x/y", kind=common_pb2.ARTIFACT_KIND_DATASET,
                files=[common_pb2.FileEntry(path="a.jsonl", sha256="0" * 64, size=1)],
                lineage=common_pb2.Lineage(recipe_json='{"a": ' + deep + "}")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        train = train_pb2_grpc.TrainStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            train.SubmitJob(train_pb2.SubmitJobRequest(trainer="lora", base="base/tiny-llama", out="x/y",
                                                       config_json='{"steps": NaN}'))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "NaN" in info.value.details()


def test_safetensors_header_tricks(server, pushed_base, tiny_adapter, tmp_path):
    hub, store, _ = server
    header = json.dumps({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}).encode()
    bad = _copy(tiny_adapter, tmp_path, "bool")
    (bad / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    _refused(hub, store, bad, "fin/h", InvalidInputError, "invalid shape", kind="adapter", base="base/tiny-llama")


def test_dataset_rows_are_bounded_and_checked(tmp_path):
    with local_hub(tmp_path / "d", inputs=InputLimits(max_dataset_line_bytes=10_000)) as (hub, store, _):
        for i, (line, exc, match) in enumerate([
            (json.dumps({"text": "x" * 20_000}), LimitExceededError, "longer than 10000 bytes"),
            ('{"text": "a", "label": ' + "9" * 5000 + "}", InvalidInputError, "not valid JSON"),
            ('{"text": "a", "text": "b"}', InvalidInputError, "appears twice"),
        ]):
            folder = tmp_path / f"ds{i}"
            folder.mkdir()
            (folder / "train.jsonl").write_text(line + "\n")
            _refused(hub, store, folder, "d/x", exc, match, kind="dataset")


def test_cards_and_labels_are_bounded(server, tiny_dataset):
    hub, store, _ = server
    card = {"description": "big", "samples": [f"sample {i}" for i in range(7500)]}
    _refused(hub, store, tiny_dataset, "d/card", LimitExceededError, "7500 samples; the limit is 256", kind="dataset",
             card=card)
    _refused(hub, store, tiny_dataset, "d/lab", LimitExceededError, "--max-labels", kind="dataset",
             labels={f"k{i}": "v" for i in range(100)})
    _refused(hub, store, tiny_dataset, "d/res", InvalidInputError, "reserved", kind="dataset",
             labels={"deltahub.allow_code": "true"})


@pytest.mark.parametrize("paths, match", [
    (["a.jsonl", "a.jsonl/b.jsonl"], "both a file and a folder"),
    (["x" * 300 + ".jsonl"], "longer than 255 bytes"),
    (["a\x1bb.jsonl"], "control"),
    (["a\u202eb.jsonl"], "control"),
])
def test_unusable_paths_are_refused_before_upload(server, paths, match):
    _, store, address = server
    with grpc.insecure_channel(address) as ch:
        transfer = transfer_pb2_grpc.TransferStub(ch)
        files = [common_pb2.FileEntry(path=p, sha256=hashlib.sha256(p.encode()).hexdigest(), size=3) for p in paths]
        with pytest.raises(grpc.RpcError) as info:
            transfer.PlanPush(transfer_pb2.PlanPushRequest(artifact="d/p", kind=common_pb2.ARTIFACT_KIND_DATASET,
                                                           files=files))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in info.value.details()


def test_pickles_are_refused_by_name_and_by_content(server, tiny_base, tmp_path):
    import gzip
    import pickle

    hub, store, _ = server
    for name in ("model.pth.tar", "weights.bin.gz", "last.ckpt.bak"):
        folder = _copy(tiny_base, tmp_path, name)
        (folder / name).write_bytes(b"x")
        _refused(hub, store, folder, "base/p", UnsafeFormatError, "pickle", kind="model")
    for name, data in (("notes.txt", pickle.dumps({"a": 1})), ("readme.dat", gzip.compress(pickle.dumps([1])))):
        folder = _copy(tiny_base, tmp_path, "c-" + name)
        (folder / name).write_bytes(data)
        _refused(hub, store, folder, "base/p", UnsafeFormatError, "pickled data", kind="model")
    zipped = _copy(tiny_base, tmp_path, "zip")
    torch.save({"w": torch.zeros(2)}, zipped / "archive.dat")
    _refused(hub, store, zipped, "base/p", UnsafeFormatError, "pickled data", kind="model")


def test_code_in_a_model_needs_the_opt_in_and_is_recorded(server, tiny_base, tmp_path):
    hub, store, _ = server
    folder = _copy(tiny_base, tmp_path, "code")
    (folder / "modeling_evil.py").write_text("import os\n")
    _refused(hub, store, folder, "base/code", UnsafeFormatError, "--allow-code", kind="model")
    rev = hub.push(folder, "base/code", kind="model", allow_code=True).revision
    assert rev.labels["deltahub.allow_code"] == "true"
    # the record cannot be edited away
    updated = hub.update_card("base/code", labels={"x": "y"}, replace_labels=True)
    assert updated.labels == {"x": "y", "deltahub.allow_code": "true"}


def test_task_vectors_hold_one_float_delta_per_parameter(server, pushed_base, tmp_path):
    hub, store, _ = server
    name = "model.layers.0.mlp.down_proj.weight"
    cases = [({name: torch.zeros(64, 128, dtype=torch.int32)}, "floating point"),
             ({name: torch.zeros(64, 128), name + ".delta_A": torch.zeros(2, 128), name + ".delta_B": torch.zeros(64, 2)},
              "more than one delta")]
    for i, (tensors, match) in enumerate(cases):
        folder = tmp_path / f"tv{i}"
        folder.mkdir()
        write_safetensors(folder / "task_vector.safetensors", tensors)
        _refused(hub, store, folder, "tv/x", InvalidInputError, match, kind="task_vector", base="base/tiny-llama")


def test_lineage_parents_must_exist(server, tiny_dataset):
    hub, store, _ = server
    _refused(hub, store, tiny_dataset, "d/l", NotFoundError, "does not exist", kind="dataset",
             lineage=Lineage(parents=("ghost/data@main",)))


def test_float8_models_are_stored_and_checked(server, tmp_path):
    hub, _, _ = server
    for dtype, label in ((torch.float8_e4m3fn, "e4m3"), (torch.float8_e5m2, "e5m2")):
        folder = make_tiny_llama(tmp_path / label)
        for shard in folder.glob("*.safetensors"):
            from safetensors.torch import load_file, save_file

            tensors = {k: v.to(dtype) for k, v in load_file(shard).items()}
            save_file(tensors, shard, metadata={"format": "pt"})
        assert hub.push(folder, f"base/{label}", kind="model").created
        bad = make_tiny_llama(tmp_path / f"{label}-nan")
        for shard in bad.glob("*.safetensors"):
            from safetensors.torch import load_file, save_file

            tensors = {k: v.to(dtype) for k, v in load_file(shard).items()}
            first = next(iter(tensors))
            tensors[first] = tensors[first].float().fill_(float("nan")).to(dtype)
            save_file(tensors, shard, metadata={"format": "pt"})
        with pytest.raises(InvalidInputError, match="NaN"):
            hub.push(bad, f"base/{label}-nan", kind="model")


def test_sizes_and_partial_uploads_are_bounded(tmp_path):
    uploads = UploadLimits(max_partial_uploads=2)
    with local_hub(tmp_path / "d", uploads=uploads) as (_, _, address):
        with grpc.insecure_channel(address) as ch:
            transfer = transfer_pb2_grpc.TransferStub(ch)
            huge = common_pb2.FileEntry(path="a.jsonl", sha256="1" * 64, size=2**63)
            with pytest.raises(grpc.RpcError) as info:
                transfer.PlanPush(transfer_pb2.PlanPushRequest(artifact="d/x", kind=common_pb2.ARTIFACT_KIND_DATASET,
                                                               files=[huge]))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in info.value.details()
            codes = []
            for i in range(3):
                sha = hashlib.sha256(str(i).encode()).hexdigest()
                try:
                    transfer.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=sha, size=100, data=b"x")]))
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name + ": " + err.details())
            assert codes[:2] == ["OK", "OK"]
            assert codes[2].startswith("RESOURCE_EXHAUSTED") and "--max-partial-uploads" in codes[2]
            # a refused stream leaves no empty part file behind
            bad = hashlib.sha256(b"zz").hexdigest()
            with pytest.raises(grpc.RpcError):
                transfer.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=bad, size=10, offset=5, data=b"x")]))
        assert not (tmp_path / "d" / "uploads" / f"{bad}.part").exists()


def test_bad_devices_and_weights_are_invalid_argument(server, pushed_base, tiny_adapter):
    hub, _, address = server
    hub.push(tiny_adapter, "fin/lora", kind="adapter", base="base/tiny-llama")
    with grpc.insecure_channel(address) as ch:
        merge = merge_pb2_grpc.MergeStub(ch)
        for request, match in [
            (merge_pb2.MergeRequest(method="linear", inputs=["fin/lora"], out="x/y", device="x y"), "device"),
            (merge_pb2.EvaluateRequest(target="fin/lora", data="fin/lora", device="cuda:x"), "device"),
            (merge_pb2.MergeRequest(method="linear", inputs=["fin/lora"], out="x/y", weights=[float("nan")]),
             "finite"),
        ]:
            call = merge.StartMerge if isinstance(request, merge_pb2.MergeRequest) else merge.Evaluate
            with pytest.raises(grpc.RpcError) as info:
                call(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert match in info.value.details()


def test_weights_that_cancel_out_merge_or_fail_cleanly(server, pushed_base, tiny_adapter):
    hub, _, _ = server
    hub.push(tiny_adapter, "fin/lora", kind="adapter", base="base/tiny-llama")
    for form in ("adapter", "task_vector"):
        try:
            res = hub.merge("linear", ["fin/lora", "fin/lora"], weights=[1, -1], out=f"x/{form}", form=form, rank=2)
        except InvalidInputError as err:  # the delta is zero or not finite: said plainly, never INTERNAL
            assert "weights" in str(err) or "zero" in str(err)
        else:
            assert res.revision.digest


def test_training_knobs_are_bounded(server, pushed_base, tiny_dataset):
    hub, _, _ = server
    hub.push(tiny_dataset, "data/d", kind="dataset")
    for config, exc, match in [
        ({"steps": 10**12}, LimitExceededError, "--max-train-steps"),
        ({"batch_size": 10**9}, LimitExceededError, "--max-train-batch-size"),
        ({"epochs": 1e308}, LimitExceededError, "--max-train-epochs"),
        ({"max_length": 10**7}, LimitExceededError, "--max-train-length"),
        ({"r": 10**6}, LimitExceededError, "--max-train-rank"),
        ({"lr": 10.0}, LimitExceededError, "--max-train-lr"),
        ({"target_modules": "(.+)+X"}, InvalidInputError, "repeats a repeated group"),
        ({"target_modules": "(.*"}, InvalidInputError, "not a valid pattern"),
        ({"target_modules": "nothing_here"}, InvalidInputError, "matches no module"),
    ]:
        with pytest.raises(exc, match=match):
            hub.submit_job("lora", base="base/tiny-llama", data="data/d", out="fin/x",
                           config={"max_length": 16, **config} if "max_length" not in config else config)
    assert hub.jobs() == []
    job, _ = hub.submit_job("lora", base="base/tiny-llama", data="data/d", out="fin/x",
                            config={"steps": 1, "target_modules": ".*\\.(q|v)_proj"})
    assert job.spec["config"]["target_modules"] == [f"model.layers.{i}.self_attn.{m}_proj" for i in (0, 1) for m in "qv"]


def test_epochs_are_bounded_by_the_steps_they_come_to(tmp_path, tiny_base, tiny_dataset):
    with local_hub(tmp_path / "d", training_limits=TrainingLimits(max_steps=100)) as (hub, _, _):
        hub.push(tiny_base, "base/t", kind="model")
        hub.push(tiny_dataset, "data/d", kind="dataset")
        with pytest.raises(LimitExceededError, match="epochs=50 come to 150 steps"):
            hub.submit_job("lora", base="base/t", data="data/d", out="fin/x", config={"epochs": 50, "batch_size": 1})
        assert hub.jobs() == []


def test_a_job_cancelled_before_its_first_step_stops_within_seconds(server, pushed_base, tiny_dataset):
    hub, _, _ = server
    hub.push(tiny_dataset, "data/d", kind="dataset")
    for _ in range(2):
        job, _ = hub.submit_job("lora", base="base/tiny-llama", data="data/d", out="fin/c",
                                config={"steps": 100000, "max_length": 16})
        hub.cancel_job(job.id)
        t = time.monotonic()
        while not (j := hub.job(job.id)).finished and time.monotonic() - t < 20:
            time.sleep(0.1)
        assert j.state == "CANCELLED" and time.monotonic() - t < 20
    # the worker is free again: a small job runs to the end
    done = hub.train("lora", base="base/tiny-llama", data="data/d", out="fin/after",
                     config={"steps": 1, "max_length": 16}, wait=True)
    assert done.state == "SUCCEEDED"


def test_a_merge_and_a_job_started_together_after_start_up(tmp_path, tiny_base, tiny_adapter, tiny_dataset):
    from concurrent.futures import ThreadPoolExecutor

    with local_hub(tmp_path / "d") as (hub, _, _):
        hub.push(tiny_base, "base/t", kind="model")
        hub.push(tiny_adapter, "fin/lora", kind="adapter", base="base/t")
        hub.push(tiny_dataset, "data/d", kind="dataset")
        with ThreadPoolExecutor(2) as pool:
            merged = pool.submit(hub.merge, "linear", ["fin/lora"], out="fin/m", form="model")
            trained = pool.submit(hub.train, "lora", base="base/t", data="data/d", out="fin/t",
                                  config={"steps": 1, "max_length": 16}, wait=True)
            assert merged.result().revision.digest and trained.result().state == "SUCCEEDED"


def test_a_repeated_dataset_name_in_another_namespace_is_its_own(server, tmp_path):
    # make_dataset used here so the helper is exercised on an odd name too
    hub, _, _ = server
    folder = tmp_path / "odd"
    folder.mkdir()
    make_dataset(folder, ["a b"])
    assert hub.push(folder, "n1/x", kind="dataset").created and hub.push(folder, "n2/x", kind="dataset").created


def test_limit_flags_and_allow_code_from_the_command_line(tmp_path, tiny_base, tiny_dataset):
    from tests.conftest import run_cli
    from tests.test_cli import ServeProcess

    s = ServeProcess(tmp_path / "data", "--max-card-samples", "2", "--max-train-steps", "5")
    try:
        card = tmp_path / "card.yaml"
        card.write_text("description: d\nsamples: [a, b, c]\n")
        proc = run_cli("push", str(tiny_dataset), "d/x", "--kind", "dataset", "--card", str(card), env=s.env)
        assert proc.returncode == 1 and "3 samples; the limit is 2 (--max-card-samples)" in proc.stderr
        code = tmp_path / "code"
        shutil.copytree(tiny_base, code)
        (code / "modeling_x.py").write_text("x = 1\n")
        proc = run_cli("push", str(code), "base/c", "--kind", "model", "-q", env=s.env)
        assert proc.returncode == 1 and "--allow-code" in proc.stderr
        proc = run_cli("push", str(code), "base/c", "--kind", "model", "-q", "--allow-code", "--json", env=s.env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["revision"]["labels"]["deltahub.allow_code"] == "true"
        assert run_cli("push", str(tiny_dataset), "d/x", "--kind", "dataset", "-q", env=s.env).returncode == 0
        proc = run_cli("train", "lora", "--base", "base/c", "--data", "d/x", "--out", "f/l", "--set", "steps=6",
                       env=s.env)
        assert proc.returncode == 1 and "--max-train-steps" in proc.stderr
    finally:
        s.stop()
