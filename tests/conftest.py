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


PG_ADMIN_URL = os.environ.get("DELTAHUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_generate_tests(metafunc):
    """``@pytest.mark.backends("embedded", "shared")`` runs a test over each catalog and blob store pair."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", marker.args, indirect=True)


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


@pytest.fixture(scope="session")
def pg_database():
    """A database of this test run on the local PostgreSQL, dropped at the end; tests take a schema each."""
    import psycopg

    name = f"deltahub_test_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture()
def pg_url(pg_database):
    """A catalog URL over a fresh, empty schema."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    """A catalog on each backend: a SQLite file, and a fresh PostgreSQL schema."""
    return str(tmp_path / "c.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's standalone S3 server on loopback, with the standard AWS variables pointing at it."""
    from tests.helpers import MotoServer

    with MotoServer(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture()
def s3_url(s3_endpoint):
    """A fresh bucket on the S3 server: ``s3://bucket/prefix``."""
    import uuid

    import boto3

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/hub"


@pytest.fixture()
def backend(request):
    """embedded: SQLite and a local folder; shared: PostgreSQL and S3, as replicas run."""
    return getattr(request, "param", "embedded")


@pytest.fixture()
def backend_config(backend, request) -> dict:
    if backend == "embedded":
        return {}
    return {"catalog": request.getfixturevalue("pg_url"), "blob_store": request.getfixturevalue("s3_url")}


@pytest.fixture()
def server(tmp_path, backend_config):
    """A real server on 127.0.0.1:0 over a fresh data folder; yields (hub client, store, address)."""
    with local_hub(tmp_path / "data", **backend_config) as world:
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
