"""The delta paths as a hostile or careless gRPC client meets them: every refusal has its status and a
message naming the problem, nothing is stored, and no tenant reaches another's revision through them."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from deltahub.auth import TokenTable
from deltahub.v1 import common_pb2, registry_pb2, registry_pb2_grpc, transfer_pb2, transfer_pb2_grpc
from deltahub_client import Hub
from tests.conftest import store_state
from tests.helpers import local_hub, make_tiny_llama

TOKENS = """
tokens:
  - {name: admin, token: adm, scopes: {'*': admin}}
  - {name: bob, token: bob, scopes: {B: write, base: read}}
"""
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return (make_tiny_llama(root / "base", seed=0),
            make_tiny_llama(root / "ft", seed=0, perturb=1e-5, perturb_seed=1),
            make_tiny_llama(root / "ft2", seed=0, perturb=1e-5, perturb_seed=2))


@pytest.fixture()
def hub(tmp_path, models):
    base, ft, _ = models
    with local_hub(tmp_path / "d", tokens=TokenTable.parse(TOKENS), delta_encoding=False,
                   inputs=_inputs(max_held_blobs=8)) as (_, store, address):
        with Hub(address, "adm", progress=False) as admin:
            b = admin.push(base, "base/llama", kind="model").revision
            f = admin.push(ft, "fin/llama", kind="model", base="base/llama", base_dir=base).revision
            channel = grpc.insecure_channel(address)
            yield store, b, f, registry_pb2_grpc.RegistryStub(channel), transfer_pb2_grpc.TransferStub(channel)
            channel.close()


def _inputs(**kw):
    from deltahub.limits import InputLimits

    return InputLimits(**kw)


def _as(token: str):
    return (("authorization", f"Bearer {token}"),)


def _refused(call, request, token, code, text):
    with pytest.raises(grpc.RpcError) as info:
        call(request, metadata=_as(token))
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details(), info.value.details()


def _upload(transfer, data: bytes, token: str = "bob", session: str = "") -> str:
    sha = hashlib.sha256(data).hexdigest()
    step = 1 << 20  # the hub's largest chunk
    transfer.UploadBlob(iter([transfer_pb2.UploadChunk(sha256=sha, size=len(data), offset=at, data=data[at:at + step],
                                                       session=session) for at in range(0, len(data), step)]),
                        metadata=_as(token))
    return sha


def test_plan_pull_refuses_odd_held_lists_and_other_tenants_revisions(hub):
    store, b, f, _, transfer = hub
    base_sha = b.file(WEIGHTS).sha256
    _refused(transfer.PlanPull, transfer_pb2.PlanPullRequest(revision=f.spec, held=["../etc/passwd"]), "adm",
             grpc.StatusCode.INVALID_ARGUMENT, "sha256")
    _refused(transfer.PlanPull, transfer_pb2.PlanPullRequest(revision=f.spec, held=["a" * 64] * 9), "adm",
             grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-held-blobs")
    _refused(transfer.PlanPull, transfer_pb2.PlanPullRequest(revision="fin/none", held=[base_sha]), "adm",
             grpc.StatusCode.NOT_FOUND, "does not exist")
    # bob reads base/ but not fin/: the plan of fin/llama is not his to see
    _refused(transfer.PlanPull, transfer_pb2.PlanPullRequest(revision=f.spec, held=[base_sha]), "bob",
             grpc.StatusCode.PERMISSION_DENIED, "fin")
    plan = transfer.PlanPull(transfer_pb2.PlanPullRequest(revision=f.spec, held=[base_sha]), metadata=_as("adm"))
    assert [e.sha256 for e in plan.encoded] == [f.file(WEIGHTS).sha256]


def _entries(folder):
    return [common_pb2.FileEntry(path=p.name, sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                                 size=p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file()]


def test_commits_naming_bad_deltas_are_refused_and_store_nothing(hub, models):
    store, b, f, registry, transfer = hub
    files = _entries(models[2])  # a fine-tune the hub has not seen: its weights are what a delta would bring
    weights = next(e for e in files if e.path == WEIGHTS)
    junk = _upload(transfer, b"DHDL\x01\x00\x00\x00" + b"\x00" * 64)
    not_a_container = b.file("config.json").sha256  # a blob the hub has, but no container
    cases = [
        ([registry_pb2.EncodedFile(sha256="x", container=junk)], grpc.StatusCode.INVALID_ARGUMENT, "sha256"),
        ([registry_pb2.EncodedFile(sha256="c" * 64, container=junk)], grpc.StatusCode.INVALID_ARGUMENT,
         "which no file of this revision has"),
        ([registry_pb2.EncodedFile(sha256=weights.sha256, container=junk),
          registry_pb2.EncodedFile(sha256=weights.sha256, container="d" * 64)], grpc.StatusCode.INVALID_ARGUMENT,
         "two different deltas"),
        ([registry_pb2.EncodedFile(sha256=weights.sha256, container=junk)], grpc.StatusCode.INVALID_ARGUMENT,
         "not an encoded file"),
        ([registry_pb2.EncodedFile(sha256=weights.sha256, container=not_a_container)],
         grpc.StatusCode.INVALID_ARGUMENT, "not an encoded file"),
        ([registry_pb2.EncodedFile(sha256=weights.sha256, container="e" * 64)], grpc.StatusCode.FAILED_PRECONDITION,
         "has not been uploaded"),
        ([], grpc.StatusCode.FAILED_PRECONDITION, "have not been uploaded"),
    ]
    before = store_state(store)
    for encoded, code, text in cases:
        _refused(registry.CommitRevision, registry_pb2.CommitRevisionRequest(
            artifact="B/llama", kind=common_pb2.ARTIFACT_KIND_MODEL, files=files, encoded=encoded), "bob", code, text)
    after = store_state(store)
    assert after[0] == before[0]  # no revision, file or ref
    assert set(after[1]) <= set(before[1])  # the junk upload may be gone; nothing was added
    assert store.catalog.encoding(weights.sha256) is None and not store.blobs.has(weights.sha256)


def test_a_delta_of_a_file_the_hub_has_is_dropped_and_the_commit_stands(hub):
    store, _, f, registry, transfer = hub
    files = [common_pb2.FileEntry(path=x.path, sha256=x.sha256, size=x.size) for x in f.files]
    session = transfer.PlanPush(transfer_pb2.PlanPushRequest(
        artifact="B/llama", kind=common_pb2.ARTIFACT_KIND_MODEL, files=files), metadata=_as("bob")).session
    junk = _upload(transfer, b"not needed: the hub holds the file", session=session)
    registry.CommitRevision(registry_pb2.CommitRevisionRequest(
        artifact="B/llama", kind=common_pb2.ARTIFACT_KIND_MODEL, files=files, session=session,
        encoded=[registry_pb2.EncodedFile(sha256=f.file(WEIGHTS).sha256, container=junk)]), metadata=_as("bob"))
    assert not store.blobs.inner.has(junk)


def test_plan_push_refuses_odd_held_lists(hub):
    _, _, f, _, transfer = hub
    files = [common_pb2.FileEntry(path=x.path, sha256=x.sha256, size=x.size) for x in f.files]
    request = dict(artifact="B/llama", kind=common_pb2.ARTIFACT_KIND_MODEL, files=files)
    _refused(transfer.PlanPush, transfer_pb2.PlanPushRequest(**request, held=["nope"]), "bob",
             grpc.StatusCode.INVALID_ARGUMENT, "sha256")
    _refused(transfer.PlanPush, transfer_pb2.PlanPushRequest(**request, held=["a" * 64] * 9), "bob",
             grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-held-blobs")


def test_download_ranges_past_the_end_or_oversize_are_clipped_and_odd_names_refused(hub):
    store, b, _, _, transfer = hub
    entry = b.file(WEIGHTS)

    def got(offset, length):
        return b"".join(c.data for c in transfer.DownloadBlob(
            transfer_pb2.DownloadBlobRequest(sha256=entry.sha256, offset=offset, length=length), metadata=_as("bob")))

    whole = got(0, 0)
    assert hashlib.sha256(whole).hexdigest() == entry.sha256
    assert got(entry.size - 3, (1 << 64) - 1) == whole[-3:]  # a length past the end reads to the end
    assert got(entry.size + 10, 5) == b"" and got((1 << 64) - 1, 1) == b""  # past the end: nothing
    assert got(7, 1) == whole[7:8]
    with pytest.raises(grpc.RpcError) as info:
        list(transfer.DownloadBlob(
            transfer_pb2.DownloadBlobRequest(sha256="../" + entry.sha256[3:], length=5), metadata=_as("bob")))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


def _repeated_container(ft_weights, base_weights, times: int) -> tuple[bytes, int]:
    """A well-formed container whose file is the fine-tune's ``times`` over: each copy's regions against
    the same base tensors, its frames sent again (with frames of zeros it would be a few KB a copy)."""
    import io
    import json

    from deltahub.deltas import filedelta

    packed = io.BytesIO()
    filedelta.encode_file(ft_weights, {hashlib.sha256(base_weights.read_bytes()).hexdigest(): base_weights}, packed)
    data = packed.getvalue()
    index = filedelta.read_index(io.BytesIO(data))
    (index_len,) = filedelta.TRAILER.unpack(data[-filedelta.TRAILER.size:])
    frames = data[filedelta.PREFIX.size:len(data) - filedelta.TRAILER.size - index_len]
    size = index["file_size"]
    index["regions"] = [{**r, "start": r["start"] + k * size} for k in range(times) for r in index["regions"]]
    index["file_size"] = times * size
    raw = json.dumps(index).encode()
    return (filedelta.PREFIX.pack(filedelta.MAGIC, filedelta.VERSION) + frames * times + raw
            + filedelta.TRAILER.pack(len(raw))), times * size


def test_a_delta_declaring_more_than_its_file_or_its_bases_allow_is_refused_before_it_is_decoded(
        hub, models, monkeypatch):
    store, b, _, registry, transfer = hub
    files = _entries(models[2])
    weights = next(e for e in files if e.path == WEIGHTS)
    base_weights = models[0] / WEIGHTS
    decoded = []
    monkeypatch.setattr(store.blobs, "rebuild", lambda *a, **kw: decoded.append(a))  # never reached
    before = store_state(store)
    one, _ = _repeated_container(models[2] / WEIGHTS, base_weights, 1)
    times = (2 * base_weights.stat().st_size + (1 << 20)) // weights.size + 2
    bomb, bomb_size = _repeated_container(models[2] / WEIGHTS, base_weights, times)
    for size, container, code, text in (
            (weights.size + 1, one, grpc.StatusCode.INVALID_ARGUMENT, f"the file has {weights.size + 1}"),
            (bomb_size, bomb, grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-delta-growth")):
        declared = [common_pb2.FileEntry(path=e.path, sha256=e.sha256 if e.path != WEIGHTS else "f" * 64,
                                         size=e.size if e.path != WEIGHTS else size) for e in files]
        _refused(registry.CommitRevision, registry_pb2.CommitRevisionRequest(
            artifact="B/llama", kind=common_pb2.ARTIFACT_KIND_MODEL, files=declared,
            encoded=[registry_pb2.EncodedFile(sha256="f" * 64, container=_upload(transfer, container))]),
            "bob", code, text)
    assert decoded == [] and store_state(store)[0] == before[0]
