"""Shared fixtures: tiny models built in-process (no network), a real server on port 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tests.helpers import local_hub, make_adapter, make_dataset, make_tiny_llama  # noqa: E402

REDIS_URL = os.environ.get("DELTAHUB_TEST_REDIS", "redis://127.0.0.1:6379/15")


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("base"), seed=0)


@pytest.fixture(scope="session")
def tiny_finetuned(tmp_path_factory) -> Path:
    """The base with every weight nudged: a stand-in for a full fine-tune."""
    return make_tiny_llama(tmp_path_factory.mktemp("ft"), seed=0, perturb=0.01, perturb_seed=1)


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_base) -> Path:
    return make_adapter(tiny_base, tmp_path_factory.mktemp("adapter"), r=4, seed=3)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"), ["the market rallied", "bonds fell", "rates rose"])


@pytest.fixture()
def server(tmp_path):
    """A real server on 127.0.0.1:0 over a fresh data folder; yields (hub client, store, address)."""
    with local_hub(tmp_path / "data") as world:
        yield world


@pytest.fixture()
def pushed_base(server, tiny_base):
    hub, _, _ = server
    return hub.push(tiny_base, "base/tiny-llama", kind="model").revision


def store_state(store) -> tuple:
    """Everything visible: catalog rows and blob files (partial uploads excluded)."""
    db = store.catalog
    rows = tuple(
        tuple(tuple(r) for r in db._query(f"SELECT * FROM {t} ORDER BY 1, 2"))
        for t in ("artifacts", "revisions", "files", "refs")
    )
    blobs = tuple(sorted(sha for sha, _, _ in store.blobs.iter_blobs()))
    return rows, blobs


@pytest.fixture(scope="session")
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"],
            check=True,
        )
        client.ping()
    return REDIS_URL


def run_cli(*args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Runs the installed ``deltahub`` command as a user would."""
    full_env = {**os.environ, **(env or {})}
    exe = Path(sys.executable).with_name("deltahub")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, input=input, timeout=300)


def cli_json(*args: str, env: dict | None = None):
    proc = run_cli(*args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
