"""Training jobs against a real server: the in-process worker, Redis workers killed mid-job, cancel, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltahub.errors import ConflictError, InvalidInputError, NotFoundError, PreconditionError
from deltahub.errors import error_record
from deltahub.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, TRAIN
from deltahub.jobs.catalog_queue import CatalogQueue
from deltahub.storage.catalog import Catalog
from tests.conftest import cli_json, run_cli
from tests.helpers import local_hub, make_adapter, make_dataset

FINANCE = "market bonds rates rose fell rallied stock equity yield inflation".split()


def texts(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(FINANCE) for _ in range(12)) for _ in range(n)]


@pytest.fixture()
def finance(server, pushed_base, tmp_path):
    hub, _, _ = server
    folder = tmp_path / "finance"
    folder.mkdir()
    return hub.push(make_dataset(folder, texts(48)), "data/finance", kind="dataset").revision


def wait_for(predicate, timeout=120.0, every=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


# Enough steps that training outlasts a few of the watch's polls (0.2 s) and of the worker's progress
# reports (at most every 0.5 s): 12 steps of the tiny model can finish between two polls, and the
# stream then shows no step of them.
STEPS = 200


def test_in_process_worker_trains_and_commits_with_lineage(server, finance, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hub, store, _ = server
    job, created = hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/lora",
                                  config={"steps": STEPS, "checkpoint_every": 25, "r": 4}, idempotency_key="k1")
    assert created and job.state == QUEUED
    again, created_again = hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/lora",
                                          config={"steps": STEPS, "checkpoint_every": 25, "r": 4}, idempotency_key="k1")
    assert again.id == job.id and not created_again
    events = list(hub.watch_job(job.id))
    final = events[-1]
    assert final.state == SUCCEEDED, final.error_message
    assert any(e.state == RUNNING and e.metrics.get("loss") for e in events)  # progress streamed
    assert "loss" in final.metrics  # the last progress report stays on the job
    assert final.attempts == 1 and final.device == "cpu" and "/in-process-" in final.worker
    assert final.kind == TRAIN and final.unit == "step" and final.done == STEPS
    rev = hub.show("fin/lora")
    assert rev.spec == f"{final.result['artifact']}@{final.result['digest']}"
    assert rev.lineage.parents == (hub.show("base/tiny-llama").spec, finance.spec)
    assert rev.lineage.training["trainer"] == "lora" and rev.lineage.training["config"]["r"] == 4
    assert rev.lineage.metrics["steps"] == STEPS and "train_loss" in rev.lineage.metrics
    assert rev.card.samples[:3] == tuple(texts(48)[:3])  # the router's card: the training data
    assert store.pinned(job.id) == []  # the checkpoint is released
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hub.pull("base/tiny-llama", tmp_path / "b")),
                              str(hub.pull("fin/lora", tmp_path / "a")))
    assert [j.id for j in hub.jobs("fin")] == [job.id]


def test_bad_jobs_are_refused_at_submit_and_nothing_is_queued(server, finance, tiny_base, tmp_path):
    hub, _, _ = server
    with pytest.raises(InvalidInputError, match="unknown trainer 'qlora'; known: adalora, increlora, lora, rank_selective"):
        hub.submit_job("qlora", base="base/tiny-llama", data="data/finance", out="fin/x")
    with pytest.raises(InvalidInputError, match="init_r.*must exceed.*target_r"):
        hub.submit_job("adalora", base="base/tiny-llama", data="data/finance", out="fin/x",
                       config={"init_r": 4, "target_r": 8})
    with pytest.raises(NotFoundError, match="dataset 'data/missing' does not exist"):
        hub.submit_job("lora", base="base/tiny-llama", data="data/missing", out="fin/x")
    with pytest.raises(PreconditionError, match="is a model, not a dataset"):
        hub.submit_job("lora", base="base/tiny-llama", data="base/tiny-llama", out="fin/x")
    # an adapter of another base cannot be continued on this one
    from tests.helpers import make_tiny_llama

    other = hub.push(make_tiny_llama(tmp_path / "other", seed=3), "base/other", kind="model").revision
    adapter = make_adapter(tmp_path / "other", tmp_path / "ad")
    hub.push(adapter, "fin/old", kind="adapter", base="base/other")
    with pytest.raises(PreconditionError, match=f"applies to base {other.spec}"):
        hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/x", resume_from="fin/old")
    with pytest.raises(InvalidInputError, match="replay_fraction > 0 needs replay datasets"):
        hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/x",
                       config={"replay_fraction": 0.5})
    assert hub.jobs() == []


def test_cancel_stops_a_running_job_and_commits_nothing(server, finance):
    hub, store, _ = server
    job, _ = hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/cancelled",
                            config={"steps": 100000, "checkpoint_every": 10})
    wait_for(lambda: store.pinned(job.id))  # running, with a checkpoint
    # a running job's checkpoint is dropped by its lease holder only
    with pytest.raises(ConflictError, match="is running; its checkpoint is still needed"):
        hub.release_checkpoint(job.id)
    with pytest.raises(ConflictError, match="held by .*in-process-., not intruder"):
        hub.release_checkpoint(job.id, "intruder")
    assert store.pinned(job.id)
    hub.cancel_job(job.id)
    final = list(hub.watch_job(job.id))[-1]
    assert final.state == "CANCELLED" and final.done < 100000
    with pytest.raises(NotFoundError):
        hub.show("fin/cancelled")
    assert store.pinned(job.id) == []


def test_cli_train_watch_and_jobs_show(server, finance):
    _, _, address = server
    env = {"DELTAHUB_ADDRESS": address}
    done = cli_json("train", "rank_selective", "--base", "base/tiny-llama", "--data", "data/finance",
                    "--out", "fin/rs", "--set", "steps=10", "--set", "r=4", "--set", "target_modules=[q_proj, v_proj]",
                    "--watch", env=env)
    assert done["state"] == SUCCEEDED and done["result"]["artifact"] == "fin/rs"
    shown = cli_json("jobs", "show", done["id"], env=env)
    for key in ("state", "kind", "attempts", "worker", "done", "total", "unit", "metrics", "created_at"):
        assert key in shown
    assert shown["metrics"]["total_rank"] <= 4 * 4 and shown["done"] == 10  # 4 modules of rank 4 at most
    listed = cli_json("jobs", "ls", env=env)
    assert [j["id"] for j in listed] == [done["id"]]
    bad = run_cli("train", "adalora", "--base", "base/tiny-llama", "--data", "data/finance", "--out", "fin/a",
                  "--set", "init_r=2", "--set", "target_r=4", env=env)
    assert bad.returncode != 0 and "init_r" in bad.stderr


def test_catalog_queue_retries_then_fails_with_the_last_error(tmp_path):
    queue = CatalogQueue(Catalog(tmp_path / "catalog.sqlite"), lease_s=30)
    job, _ = queue.submit(TRAIN, "ns", {"trainer": "lora", "out": "ns/out"}, max_attempts=2)
    for attempt in (1, 2):
        taken = queue.claim("w", "cpu", timeout_s=0.1)
        assert taken.id == job.id and taken.attempts == attempt
        after = queue.fail(job.id, "w", error_record(ConflictError(f"boom {attempt}")), retry=True)
    # the last attempt's error, exactly as the direct call would have raised it
    assert after.state == FAILED and after.error_message == "boom 2" and after.error_class == "ConflictError"
    assert queue.claim("w", "cpu", timeout_s=0.1) is None


# -- Redis: workers in other processes -------------------------------------------------------
@pytest.fixture()
def redis_hub(tmp_path, redis_url, tiny_base):
    import redis

    url = redis_url
    client = redis.Redis.from_url(url)
    stale = list(client.scan_iter("deltahub:job*"))  # no jobs left over from other runs
    if stale:
        client.delete(*stale)
    procs: list[subprocess.Popen] = []
    with local_hub(tmp_path / "data", redis_url=url, lease_s=2.0) as (hub, store, address):
        hub.push(tiny_base, "base/tiny-llama", kind="model")
        (tmp_path / "fin").mkdir()
        hub.push(make_dataset(tmp_path / "fin", texts(48)), "data/finance", kind="dataset")

        def start_worker(name: str) -> subprocess.Popen:
            exe = Path(sys.executable).with_name("deltahub")
            log = open(tmp_path / f"{name}.log", "w")
            proc = subprocess.Popen([str(exe), "--hub", address, "worker", "--redis", url, "--lease", "2",
                                     "--device", "cpu", "--name", name, "--cache-dir", str(tmp_path / name)],
                                    stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        try:
            yield hub, store, start_worker, tmp_path
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                p.wait()


def test_a_killed_worker_s_job_is_finished_by_another_from_its_checkpoint(redis_hub):
    hub, store, start_worker, tmp_path = redis_hub
    workers = {name: start_worker(name) for name in ("w1", "w2")}
    job, _ = hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/resumed",
                            config={"steps": 400, "checkpoint_every": 20})
    running = wait_for(lambda: (j := hub.job(job.id)).checkpoint.get("step", 0) >= 40 and j)
    victim = running.worker
    os.kill(workers[victim].pid, signal.SIGKILL)
    final = wait_for(lambda: (j := hub.job(job.id)).finished and j, timeout=180)
    assert final.state == SUCCEEDED, final.error_message
    assert final.attempts == 2 and final.worker != victim
    survivor_log = (tmp_path / f"{final.worker}.log").read_text()
    assert "resumed lora from the checkpoint at step" in survivor_log
    assert len(hub.revisions("fin/resumed")) == 1  # exactly one revision
    assert store.pinned(job.id) == []


def test_a_job_that_kills_its_workers_fails_after_max_attempts(redis_hub):
    hub, _, start_worker, _ = redis_hub
    job, _ = hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/poison",
                            config={"steps": 100000, "checkpoint_every": 1000}, max_attempts=2)
    for attempt in (1, 2):
        worker = start_worker(f"p{attempt}")
        wait_for(lambda: (j := hub.job(job.id)).attempts == attempt and j.done > 0, timeout=120)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    start_worker("p3")
    final = wait_for(lambda: (j := hub.job(job.id)).finished and j, timeout=60)
    assert final.state == FAILED and final.attempts == 2
    assert "gave up after 2 attempt(s)" in final.error_message and "stopped renewing the lease" in final.error_message
    with pytest.raises(NotFoundError):
        hub.show("fin/poison")


def test_redis_cancel_reaches_the_remote_worker(redis_hub):
    hub, _, start_worker, _ = redis_hub
    start_worker("c1")
    job, _ = hub.submit_job("lora", base="base/tiny-llama", data="data/finance", out="fin/stop",
                            config={"steps": 100000})
    wait_for(lambda: hub.job(job.id).done > 0, timeout=120)
    hub.cancel_job(job.id)
    final = wait_for(lambda: (j := hub.job(job.id)).finished and j, timeout=60)
    assert final.state == "CANCELLED"
    assert json.loads(json.dumps(final.to_dict()))["cancel_requested"] is True
