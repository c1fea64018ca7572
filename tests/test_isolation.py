"""Tenants kept apart: what a request reaches indirectly needs read scope too; uploads belong to their session."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from deltahub.auth import TokenTable
from deltahub.errors import PermissionDeniedError, StaleRefError
from deltahub.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc, registry_pb2, registry_pb2_grpc
from deltahub.v1 import transfer_pb2, transfer_pb2_grpc
from deltahub_client import Hub
from tests.helpers import local_hub

TOKENS = """
tokens:
  - {name: admin, token: adm, scopes: {'*': admin}}
  - {name: bob, token: bob, scopes: {B: write}}
  - {name: shared-reader, token: rdr, scopes: {assembled: read, B: read, base: read}}
"""


# tenants are kept apart the same on the embedded default and on PostgreSQL + S3
pytestmark = pytest.mark.backends("embedded", "shared")


@pytest.fixture()
def tenants(tmp_path, tiny_base, tiny_adapter, backend_config):
    with local_hub(tmp_path / "d", tokens=TokenTable.parse(TOKENS), **backend_config) as (_, store, address):
        with Hub(address, "adm", progress=False) as admin:
            admin.push(tiny_base, "base/tiny", kind="model")
            admin.push(tiny_adapter, "B/lora", kind="adapter", base="base/tiny")
            admin.push(tiny_adapter, "fin/lora", kind="adapter", base="base/tiny")
            yield admin, store, address


def test_an_inferred_base_needs_read_scope(tenants):
    _, _, address = tenants
    with Hub(address, "bob", progress=False) as bob:
        # no base named: the merge would infer base/tiny from the adapter, which bob cannot read
        with pytest.raises(PermissionDeniedError, match="lacks read scope on namespace 'base'"):
            bob.merge("linear", ["B/lora"], out="B/full", form="model")
        assert [a.name for a in bob.list_artifacts()] == ["B/lora"]


def test_jobs_are_listed_only_where_readable(tenants):
    admin, _, address = tenants
    admin.merge("linear", ["fin/lora"], out="fin/merged", form="adapter")
    with grpc.insecure_channel(address) as ch:
        stub = jobs_pb2_grpc.JobsStub(ch)
        mine = stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=(("authorization", "Bearer bob"),))
        everyone = stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=(("authorization", "Bearer adm"),))
    assert [j.id for j in mine.jobs] == []
    assert any(j.id.startswith("fin/") and j.kind == "merge" for j in everyone.jobs)


def test_assembled_results_are_readable_only_with_their_inputs(tenants):
    admin, _, address = tenants
    built = admin.assemble(adapters=["fin/lora"], weights=[1.0])
    with Hub(address, "rdr", progress=False) as reader:
        with pytest.raises(PermissionDeniedError, match="built from fin/lora"):
            reader.show(built.spec)
        assert reader.revisions(built.artifact) == []
        # one built from what the reader can read is readable
        mine = admin.assemble(adapters=["B/lora"], weights=[1.0])
        assert reader.show(mine.spec).artifact == mine.artifact


def _raw_plan_and_upload(address, token: str, data: bytes) -> tuple[str, str]:
    """PlanPush + UploadBlob of one dataset file by hand; returns (session, sha256)."""
    sha = hashlib.sha256(data).hexdigest()
    meta = (("authorization", f"Bearer {token}"),)
    entry = common_pb2.FileEntry(path="train.jsonl", sha256=sha, size=len(data))
    with grpc.insecure_channel(address) as ch:
        transfer = transfer_pb2_grpc.TransferStub(ch)
        plan = transfer.PlanPush(transfer_pb2.PlanPushRequest(artifact="B/data", kind=common_pb2.ARTIFACT_KIND_DATASET,
                                                              files=[entry]), metadata=meta)
        transfer.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=sha, size=len(data), data=data,
                                                           session=plan.session)]), metadata=meta)
    return plan.session, sha


def test_a_refused_commit_never_deletes_another_sessions_upload(tenants, tmp_path):
    admin, store, address = tenants
    data = b'{"text": "the market rallied"}\n'
    session, sha = _raw_plan_and_upload(address, "bob", data)
    folder = tmp_path / "same"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(data)
    # another session pushes the same content, and loses its compare-and-swap
    with pytest.raises(StaleRefError):
        admin.push(folder, "B/data", kind="dataset", expected_revision="0" * 64)
    assert store.blobs.has(sha)
    # the first session commits what it uploaded
    meta = (("authorization", "Bearer bob"),)
    with grpc.insecure_channel(address) as ch:
        registry = registry_pb2_grpc.RegistryStub(ch)
        resp = registry.CommitRevision(registry_pb2.CommitRevisionRequest(
            artifact="B/data", kind=common_pb2.ARTIFACT_KIND_DATASET, session=session,
            files=[common_pb2.FileEntry(path="train.jsonl", sha256=sha, size=len(data))]), metadata=meta)
    assert resp.created


def test_a_refused_commit_removes_what_its_own_session_alone_uploaded(tenants, tmp_path):
    admin, store, _ = tenants
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "bonds fell"}\n')
    sha = hashlib.sha256((folder / "train.jsonl").read_bytes()).hexdigest()
    with pytest.raises(StaleRefError):
        admin.push(folder, "B/other", kind="dataset", expected_revision="0" * 64)
    assert not store.blobs.has(sha)
