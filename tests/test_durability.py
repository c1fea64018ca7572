"""Long-running work survives: kill -9 of the hub (embedded default) and of workers (Redis) mid-job.

Every job ends with exactly one result; merges wait for a worker when the
hub has none; two workers never build the same recipe; a failure reaches the
SDK and the CLI as the class a direct call raises.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltahub.errors import InvalidInputError, PreconditionError, StaleRefError, error_record
from deltahub.jobs import EVALUATE, FAILED, MERGE, QUEUED, RUNNING, SUCCEEDED, TRAIN
from deltahub.jobs.catalog_queue import CatalogQueue
from deltahub.storage.catalog import Catalog
from tests.conftest import run_cli
from tests.helpers import ServeProcess, make_dataset, make_tiny_llama

# big enough that a merge takes a noticeable while on two cores (~100 MB of float32 per model)
BIG = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, vocab_size=4096, num_attention_heads=8,
           num_key_value_heads=4)
TEXTS = [f"market bonds rates rose {i} fell rallied stock equity yield" for i in range(48)]


def wait_for(predicate, timeout=120.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="module")
def big_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    return {name: make_tiny_llama(root / name, perturb=perturb, perturb_seed=seed, **BIG)
            for name, perturb, seed in (("base", 0.0, 1), ("a", 0.01, 2), ("b", 0.01, 3))}


def _push_big(hub, big_models) -> None:
    hub.push(big_models["base"], "base/big", kind="model")
    hub.push(big_models["a"], "ft/a", kind="model")
    hub.push(big_models["b"], "ft/b", kind="model")


def _merging(hub, job_id):
    job = hub.job(job_id)
    return job.state == RUNNING and job.stage == "merging" and job.done < job.total and job


# -- the embedded default: kill -9 of `deltahub serve` ---------------------------------------
def test_kill_9_mid_training_then_restart_resumes_from_the_checkpoint(tmp_path, tiny_base):
    from deltahub_client import Hub

    served = ServeProcess(tmp_path / "data")
    with Hub(served.address, progress=False) as hub:
        hub.push(tiny_base, "base/tiny", kind="model")
        (tmp_path / "d").mkdir()
        hub.push(make_dataset(tmp_path / "d", TEXTS), "data/fin", kind="dataset")
        job, _ = hub.submit_job("lora", base="base/tiny", data="data/fin", out="fin/lora",
                                config={"steps": 300, "checkpoint_every": 20})
        wait_for(lambda: hub.job(job.id).checkpoint.get("step", 0) >= 40)
    served.kill()
    served = ServeProcess(tmp_path / "data")
    try:
        assert any("queued again" in line for line in served.log)
        with Hub(served.address, progress=False) as hub:
            listed = hub.jobs(kind=TRAIN)
            assert [j.id for j in listed] == [job.id] and listed[0].state in (QUEUED, RUNNING)
            final = hub.wait_job(job.id)
            assert final.state == SUCCEEDED, final.error_message
            assert final.attempts == 2 and final.done == 300
            assert len(hub.revisions("fin/lora")) == 1
            assert hub.show("fin/lora").lineage.training["job"] == job.id
        assert any("resumed lora from the checkpoint at step" in line for line in served.log)
    finally:
        served.stop()


def test_kill_9_mid_merge_then_restart_redoes_it_once(tmp_path, big_models):
    from deltahub_client import Hub

    served = ServeProcess(tmp_path / "data")
    with Hub(served.address, progress=False) as hub:
        _push_big(hub, big_models)
        job = hub.merge("task_arithmetic", ["ft/a", "ft/b"], base="base/big", out="m/big", wait=False)
        caught = wait_for(lambda: _merging(hub, job.id), timeout=60, every=0.01)
        served.kill()
    assert 0 <= caught.done < caught.total  # killed while tensors were being merged
    served = ServeProcess(tmp_path / "data")
    try:
        with Hub(served.address, progress=False) as hub:
            assert job.id in [j.id for j in hub.jobs(kind=MERGE)]
            final = hub.wait_merge(job.id)
            assert final.revision.artifact == "m/big" and not final.cached
            assert hub.job(job.id).attempts == 2 and hub.job(job.id).state == SUCCEEDED
            assert len(hub.revisions("m/big")) == 1
    finally:
        served.stop()


# -- Redis: the hub computes nothing, workers come and go --------------------------------------
@pytest.fixture()
def redis_world(tmp_path, redis_url):
    """A hub with --redis and no in-process workers; ``start_worker(name)`` runs `deltahub worker`."""
    import redis

    from deltahub_client import Hub
    from deltahub_server import ServerConfig, create_server

    client = redis.Redis.from_url(redis_url)
    stale = list(client.scan_iter("deltahub:*"))
    if stale:
        client.delete(*stale)
    procs: list[subprocess.Popen] = []
    state = {}

    def start_hub():
        running = create_server(ServerConfig(data_dir=tmp_path / "data", address="127.0.0.1:0", redis_url=redis_url,
                                             lease_s=2.0, local_workers=0))
        state["running"] = running
        state["hub"] = Hub(f"127.0.0.1:{running.port}", progress=False)
        return state["hub"]

    def stop_hub():
        state["hub"].close()
        state["running"].stop(grace=None)

    def start_worker(name: str) -> subprocess.Popen:
        exe = Path(sys.executable).with_name("deltahub")
        log = open(tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen([str(exe), "--hub", f"127.0.0.1:{state['running'].port}", "worker", "--redis",
                                 redis_url, "--lease", "2", "--device", "cpu", "--name", name,
                                 "--cache-dir", str(tmp_path / name)], stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    start_hub()
    try:
        yield state, start_hub, stop_hub, start_worker
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
        stop_hub()


def test_merges_wait_for_a_worker_survive_a_hub_restart_and_a_worker_killed_mid_merge(redis_world, big_models):
    state, start_hub, stop_hub, start_worker = redis_world
    hub = state["hub"]
    _push_big(hub, big_models)
    job = hub.merge("task_arithmetic", ["ft/a", "ft/b"], base="base/big", out="m/big", wait=False)
    time.sleep(2.0)
    assert hub.job(job.id).state == QUEUED  # --workers 0: the hub computes no tensor, the merge waits
    stop_hub()
    hub = start_hub()  # a hub restart loses nothing: the job is in Redis
    assert hub.job(job.id).state == QUEUED and job.id in [j.id for j in hub.jobs(kind=MERGE)]
    first = start_worker("w1")
    wait_for(lambda: _merging(hub, job.id), timeout=120, every=0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    start_worker("w2")
    final = hub.wait_merge(job.id)
    done = hub.job(job.id)
    assert done.state == SUCCEEDED and done.attempts == 2 and done.worker == "w2" and done.device == "cpu"
    assert final.revision.artifact == "m/big" and len(hub.revisions("m/big")) == 1


def test_two_workers_never_build_the_same_recipe(redis_world, big_models):
    state, _, _, start_worker = redis_world
    hub = state["hub"]
    _push_big(hub, big_models)
    for name in ("w1", "w2"):
        start_worker(name)
    time.sleep(3.0)  # both workers up and waiting for jobs
    jobs = [hub.merge("task_arithmetic", ["ft/a", "ft/b"], base="base/big", out=out, wait=False)
            for out in ("m/one", "m/two")]
    results = [hub.wait_merge(j.id) for j in jobs]
    assert sorted(r.cached for r in results) == [False, True]  # one build; the other job took its result
    assert results[0].revision.files == results[1].revision.files
    finals = [hub.job(j.id) for j in jobs]
    assert {f.worker for f in finals} == {"w1", "w2"}  # each worker held one of the jobs at once
    built = next(f for f in finals if not f.result["cached"])
    waited = next(f for f in finals if f.result["cached"])
    assert waited.metrics.get("building_in") == built.id  # it waited on the flight of the recipe


# -- one error record ------------------------------------------------------------------------
def test_a_failed_job_raises_the_class_a_direct_call_raises(tmp_path, tiny_base):
    from deltahub.builds import evaluate
    from deltahub.workspace import StoreWorkspace
    from tests.helpers import local_hub

    with local_hub(tmp_path / "data", local_workers=0) as (hub, store, address):
        hub.push(tiny_base, "base/tiny", kind="model")
        (tmp_path / "d").mkdir()
        hub.push(make_dataset(tmp_path / "d", ["x"] * 4), "data/short", kind="dataset")  # nothing to predict
        # the direct call: the evaluation run here, in this process
        from deltahub.merge_engine import MergeEngine

        spec = MergeEngine(store).evaluation_spec("base/tiny", "data/short", device="cpu")
        with pytest.raises(InvalidInputError) as direct:
            evaluate(spec, StoreWorkspace(store))
        # the same through a job a worker runs (this test is the worker: the hub has none of its own):
        # the class, code and message arrive unchanged
        queue = CatalogQueue(store.catalog)
        job, _ = queue.submit(EVALUATE, "base", spec.to_dict())
        taken = queue.claim("test-worker", "cpu", timeout_s=1)
        assert taken.id == job.id
        queue.fail(job.id, "test-worker", error_record(direct.value), retry=False)
        with pytest.raises(InvalidInputError) as through_job:
            hub.wait_job(job.id, check=True)
        assert type(through_job.value) is type(direct.value) and str(through_job.value) == str(direct.value)
        # a subclass keeps its class (a StaleRefError is not flattened to ConflictError)
        job2, _ = queue.submit(MERGE, "m", {"recipe": {"method": "linear"}, "out": "m/x"})
        queue.claim("test-worker", "cpu", timeout_s=1)
        queue.fail(job2.id, "test-worker", error_record(StaleRefError("ref main of m/x moved")), retry=False)
        with pytest.raises(StaleRefError, match="ref main of m/x moved"):
            hub.wait_merge(job2.id)
        shown = run_cli("jobs", "show", job2.id, env={"DELTAHUB_ADDRESS": address})
        assert "ABORTED (StaleRefError): ref main of m/x moved" in shown.stdout
        watched = run_cli("jobs", "watch", job2.id, env={"DELTAHUB_ADDRESS": address})
        assert watched.returncode == 1 and "StaleRefError" in watched.stdout
        assert hub.job(job2.id).state == FAILED


def test_evaluation_runs_as_a_job_with_row_progress(server, pushed_base, tmp_path):
    hub, _, _ = server
    (tmp_path / "d").mkdir()
    hub.push(make_dataset(tmp_path / "d", TEXTS), "data/fin", kind="dataset")
    result = hub.evaluate("base/tiny-llama", "data/fin", device="cpu")
    job = hub.job(result.job)
    assert job.kind == EVALUATE and job.state == SUCCEEDED and job.unit == "row"
    assert job.done == job.total == len(TEXTS) and job.result["loss"] == pytest.approx(result.loss)
    with pytest.raises(InvalidInputError, match="not a dataset"):  # checked before any job exists
        hub.evaluate("base/tiny-llama", "base/tiny-llama")
    assert len(hub.jobs(kind=EVALUATE)) == 1


# -- one key, one request; bounded retention -----------------------------------------------
def test_an_idempotency_key_with_another_request_is_refused(server, pushed_base, tmp_path):
    hub, _, address = server
    (tmp_path / "d").mkdir()
    hub.push(make_dataset(tmp_path / "d", TEXTS), "data/fin", kind="dataset")
    first, created = hub.submit_job("lora", base="base/tiny-llama", data="data/fin", out="fin/k",
                                    config={"steps": 2}, idempotency_key="nightly")
    again, created_again = hub.submit_job("lora", base="base/tiny-llama", data="data/fin", out="fin/k",
                                          config={"steps": 2}, idempotency_key="nightly")
    assert created and not created_again and again.id == first.id
    with pytest.raises(PreconditionError, match="idempotency key 'nightly' was used for another request"):
        hub.submit_job("lora", base="base/tiny-llama", data="data/fin", out="fin/k", config={"steps": 3},
                       idempotency_key="nightly")
    refused = run_cli("train", "lora", "--base", "base/tiny-llama", "--data", "data/fin", "--out", "fin/k",
                      "--set", "steps=4", "--key", "nightly", env={"DELTAHUB_ADDRESS": address})
    assert refused.returncode != 0 and "give a new key for a different request" in refused.stderr
    assert len(hub.jobs(kind=TRAIN)) == 1


def test_finished_jobs_are_kept_within_the_retention_limits(tmp_path):
    queue = CatalogQueue(Catalog(tmp_path / "catalog.sqlite"), lease_s=30)
    ids = []
    for i in range(4):
        job, _ = queue.submit(MERGE, "m", {"i": i}, result={"artifact": "m/x", "digest": str(i)})
        ids.append(job.id)
    running, _ = queue.submit(MERGE, "m", {"i": "running"})
    assert queue.claim("w", "cpu", timeout_s=1).id == running.id
    assert queue.trim(keep=2, max_age_s=3600) == 2
    assert {j.id for j in queue.list()} == {running.id, *ids[2:]}  # the newest finished, and the running one
    assert queue.trim(keep=100, max_age_s=0) == 2  # too old: every finished job goes, the running one stays
    assert [j.id for j in queue.list()] == [running.id]


@pytest.mark.gpu
def test_a_cuda_worker_merges_on_the_gpu_like_the_cpu(tmp_path, tiny_base, tiny_finetuned):
    """The same recipe on CUDA (float32 accumulation) and on CPU: one cache entry, results within rounding."""
    from safetensors.torch import load_file

    from tests.helpers import local_hub

    with local_hub(tmp_path / "data", worker_device="cuda", local_workers=1) as (hub, _, _):
        hub.push(tiny_base, "base/tiny", kind="model")
        hub.push(tiny_finetuned, "ft/one", kind="model")
        on_gpu = hub.merge("task_arithmetic", ["ft/one"], base="base/tiny", out="m/gpu", device="cuda")
        job = hub.job(on_gpu.job)
        assert job.device == "cuda" and on_gpu.metrics["device"] == "cuda"
        gpu_dir = hub.pull("m/gpu", tmp_path / "gpu")
    with local_hub(tmp_path / "cpu-data", local_workers=1) as (hub, _, _):
        hub.push(tiny_base, "base/tiny", kind="model")
        hub.push(tiny_finetuned, "ft/one", kind="model")
        on_cpu = hub.merge("task_arithmetic", ["ft/one"], base="base/tiny", out="m/cpu", device="cpu")
        assert on_cpu.metrics["device"] == "cpu" and on_cpu.recipe_hash == on_gpu.recipe_hash
        cpu_dir = hub.pull("m/cpu", tmp_path / "cpu")
    gpu = {k: v for f in gpu_dir.glob("*.safetensors") for k, v in load_file(f).items()}
    cpu = {k: v for f in cpu_dir.glob("*.safetensors") for k, v in load_file(f).items()}
    assert gpu.keys() == cpu.keys()
    for name in cpu:
        assert torch_allclose(gpu[name], cpu[name]), name


def torch_allclose(a, b) -> bool:
    import torch

    return torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)


def test_a_device_the_worker_lacks_fails_the_job_with_what_to_do(server, pushed_base, tiny_finetuned):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    hub, _, _ = server
    hub.push(tiny_finetuned, "ft/one", kind="model")
    with pytest.raises(InvalidInputError, match="not one of auto, cpu, cuda"):  # a bad name: refused at once
        hub.merge("task_arithmetic", ["ft/one"], base="base/tiny-llama", out="m/x", device="tpu")
    # a name a worker could have: queued (the hub itself needs no GPU); this CPU worker fails it, not retried
    job = hub.merge("task_arithmetic", ["ft/one"], base="base/tiny-llama", out="m/x", device="cuda", wait=False)
    with pytest.raises(InvalidInputError, match="no CUDA device"):
        hub.wait_merge(job.id)
    assert hub.job(job.id).attempts == 1


def test_worker_calls_from_a_client_that_holds_no_lease_are_refused(server, pushed_base, tiny_finetuned):
    import grpc

    from deltahub.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

    hub, _, address = server
    hub.push(tiny_finetuned, "ft/one", kind="model")
    job = hub.merge("task_arithmetic", ["ft/one"], base="base/tiny-llama", out="m/x", wait=False)
    hub.wait_job(job.id)
    with grpc.insecure_channel(address) as ch:
        stub = jobs_pb2_grpc.JobsStub(ch)
        for call in (
            lambda: stub.CommitJobResult(jobs_pb2.CommitJobResultRequest(job_id=job.id, worker="intruder", files=[
                common_pb2.FileEntry(path="model.safetensors", sha256="0" * 64, size=1)])),
            lambda: stub.PinCheckpoint(jobs_pb2.PinCheckpointRequest(job_id=job.id, worker="intruder")),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.ABORTED and "not intruder" in err.value.details()
        for request, code in ((jobs_pb2.ListJobsRequest(kind="x" * 5000), grpc.StatusCode.INVALID_ARGUMENT),
                              (jobs_pb2.ListJobsRequest(state="DONE"), grpc.StatusCode.INVALID_ARGUMENT),
                              (jobs_pb2.ListJobsRequest(limit=-1), grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListJobs(request)
            assert err.value.code() == code
        with pytest.raises(grpc.RpcError) as err:
            stub.CommitJobResult(jobs_pb2.CommitJobResultRequest(job_id="m/" + "0" * 32, worker="w"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(hub.revisions("m/x")) == 1
